-- The DSQL `sys` surface of one sandbox cluster database (installed by dsqlops.sandbox.sysschema).
-- Idempotent: every object is created with IF NOT EXISTS / OR REPLACE, run as a superuser in one
-- transaction. Objects whose name starts with '_' are internal to the sandbox.
SELECT pg_advisory_xact_lock(7406512, 1);

CREATE SCHEMA IF NOT EXISTS sys;
GRANT USAGE ON SCHEMA sys TO PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- base32 job ids: a job id is the RFC 4648 base32 (lower case, no padding) of a UUID: 26 chars.
CREATE OR REPLACE FUNCTION sys.uuid_to_base32_str(u uuid) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
  b bytea := decode(replace(u::text, '-', ''), 'hex');
  alphabet constant text := 'abcdefghijklmnopqrstuvwxyz234567';
  acc bigint := 0; bits int := 0; out text := '';
BEGIN
  FOR i IN 0..15 LOOP
    acc := (acc << 8) | get_byte(b, i);
    bits := bits + 8;
    WHILE bits >= 5 LOOP
      out := out || substr(alphabet, ((acc >> (bits - 5)) & 31)::int + 1, 1);
      bits := bits - 5;
    END LOOP;
    acc := acc & ((1::bigint << bits) - 1);
  END LOOP;
  IF bits > 0 THEN
    out := out || substr(alphabet, ((acc << (5 - bits)) & 31)::int + 1, 1);
  END IF;
  RETURN out;
END $$;

CREATE OR REPLACE FUNCTION sys.base32_str_to_uuid(s text) RETURNS uuid
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
  alphabet constant text := 'abcdefghijklmnopqrstuvwxyz234567';
  acc bigint := 0; bits int := 0; hex text := ''; v int;
BEGIN
  IF length(s) <> 26 THEN
    RAISE EXCEPTION USING ERRCODE = '22P02', MESSAGE = 'Unable to convert text to UUID';
  END IF;
  FOR i IN 1..26 LOOP
    v := strpos(alphabet, lower(substr(s, i, 1))) - 1;
    IF v < 0 THEN
      RAISE EXCEPTION USING ERRCODE = '22P02', MESSAGE = 'Unable to convert text to UUID';
    END IF;
    acc := (acc << 5) | v;
    bits := bits + 5;
    IF bits >= 8 THEN
      hex := hex || lpad(to_hex((acc >> (bits - 8)) & 255), 2, '0');
      bits := bits - 8;
      acc := acc & ((1::bigint << bits) - 1);
    END IF;
  END LOOP;
  RETURN hex::uuid;
END $$;

-- ---------------------------------------------------------------------------------------------
-- Jobs: the internal table, and DSQL's view of it.
CREATE TABLE IF NOT EXISTS sys._jobs (
  job_uuid      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  job_id        text GENERATED ALWAYS AS (sys.uuid_to_base32_str(job_uuid)) STORED UNIQUE,
  status        text NOT NULL DEFAULT 'submitted'
                CHECK (status IN ('submitted', 'processing', 'completed', 'failed', 'cancelled')),
  details       text,
  job_type      text NOT NULL CHECK (job_type IN ('INDEX_BUILD', 'VALIDATE_CONSTRAINT', 'DROP', 'ANALYZE')),
  class_id      oid,
  object_id     oid,
  object_name   text,
  schema_name   text,
  statement     text,           -- what the runner executes (NULL for DROP jobs)
  submitted_by  text NOT NULL DEFAULT session_user,
  attempts      int NOT NULL DEFAULT 0,
  start_time    timestamptz NOT NULL DEFAULT now(),
  update_time   timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE sys._jobs ADD COLUMN IF NOT EXISTS runner_pid int;  -- the backend running it (for DROP INDEX)
CREATE INDEX IF NOT EXISTS _jobs_status_idx ON sys._jobs (status, start_time);
REVOKE ALL ON sys._jobs FROM PUBLIC;

CREATE OR REPLACE VIEW sys.jobs AS
  SELECT job_id, status, details, job_type, class_id, object_id, object_name, start_time, update_time
  FROM sys._jobs;
GRANT SELECT ON sys.jobs TO PUBLIC;

-- CREATE INDEX ASYNC: record the build; the sandbox's JobRunner runs it. Returns the job id.
-- The table is resolved by the caller (a regclass argument, in the caller's search_path).
DROP FUNCTION IF EXISTS sys._create_index_async(regclass, text, text, boolean, boolean);  -- before key_columns
CREATE OR REPLACE FUNCTION sys._create_index_async(rel regclass, index_name text, build_sql text,
                                                    if_not_exists boolean, auto_named boolean,
                                                    key_columns text[] DEFAULT '{}')
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  owner oid;
  nsp text;
  name text := index_name;
  n int := 0;
  id text;
BEGIN
  SELECT c.relowner, n2.nspname INTO owner, nsp
    FROM pg_class c JOIN pg_namespace n2 ON n2.oid = c.relnamespace WHERE c.oid = rel;
  IF NOT pg_has_role(session_user, owner, 'USAGE') THEN
    RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = format('must be owner of table %s', rel);
  END IF;
  -- DSQL cannot index json/jsonb keys (INCLUDE columns are fine).
  SELECT format_type(a.atttypid, NULL) INTO name FROM pg_attribute a
   WHERE a.attrelid = rel AND a.attname = ANY (key_columns) AND NOT a.attisdropped
     AND a.atttypid IN ('json'::regtype, 'jsonb'::regtype) LIMIT 1;
  IF name IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = '0A000', MESSAGE = format('datatype %s is not supported in a key', name);
  END IF;
  -- DSQL's index limit per table (dsql.index_limit, DSQL: 24) counts the primary key and the
  -- builds not started yet (a started build is already in pg_index).
  IF (SELECT count(*) FROM pg_index i WHERE i.indrelid = rel)
     + (SELECT count(*) FROM sys._jobs j WHERE j.job_type = 'INDEX_BUILD' AND j.object_id = rel
          AND j.status IN ('submitted', 'processing')
          AND to_regclass(quote_ident(j.schema_name) || '.' || quote_ident(split_part(j.object_name, '.', 2))) IS NULL)
     >= coalesce(nullif(current_setting('dsql.index_limit', true), '')::int, 24) THEN
    RAISE EXCEPTION USING ERRCODE = '54000', MESSAGE = format('index limit of %s per table exceeded',
      coalesce(nullif(current_setting('dsql.index_limit', true), '')::int, 24));
  END IF;
  name := index_name;
  IF auto_named THEN
    WHILE EXISTS (SELECT 1 FROM pg_class c WHERE c.relname = name AND c.relnamespace = nsp::regnamespace)
       OR EXISTS (SELECT 1 FROM sys._jobs j WHERE j.job_type = 'INDEX_BUILD'
                  AND j.status IN ('submitted', 'processing') AND j.object_name = nsp || '.' || name) LOOP
      n := n + 1;
      name := index_name || n;
    END LOOP;
  ELSIF EXISTS (SELECT 1 FROM pg_class c WHERE c.relname = name AND c.relnamespace = nsp::regnamespace)
     OR EXISTS (SELECT 1 FROM sys._jobs j WHERE j.job_type = 'INDEX_BUILD'
                AND j.status IN ('submitted', 'processing') AND j.object_name = nsp || '.' || name) THEN
    -- IF NOT EXISTS on a name that is taken (or being built) starts no job, as in PostgreSQL.
    IF if_not_exists THEN
      RAISE NOTICE 'relation "%" already exists, skipping', name;
      RETURN NULL;
    END IF;
    RAISE EXCEPTION USING ERRCODE = '42P07', MESSAGE = format('relation "%s" already exists', name);
  END IF;
  INSERT INTO sys._jobs (job_type, class_id, object_id, object_name, schema_name, statement)
    VALUES ('INDEX_BUILD', 'pg_class'::regclass, rel, nsp || '.' || name, nsp,
            replace(replace(build_sql, '@@INDEX_NAME@@', quote_ident(name)), '@@TABLE@@', rel::text))
    RETURNING job_id INTO id;
  RETURN id;
END $$;

-- ALTER TABLE ASYNC … VALIDATE CONSTRAINT: record the validation job.
CREATE OR REPLACE FUNCTION sys._validate_constraint_async(rel regclass, constraint_name text)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  owner oid;
  nsp text;
  id text;
BEGIN
  IF rel IS NULL THEN  -- ALTER TABLE ASYNC IF EXISTS on a missing table
    RETURN NULL;
  END IF;
  SELECT c.relowner, n2.nspname INTO owner, nsp
    FROM pg_class c JOIN pg_namespace n2 ON n2.oid = c.relnamespace WHERE c.oid = rel;
  IF NOT pg_has_role(session_user, owner, 'USAGE') THEN
    RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = format('must be owner of table %s', rel);
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = rel AND conname = constraint_name) THEN
    RAISE EXCEPTION USING ERRCODE = '42704',
      MESSAGE = format('constraint "%s" of relation "%s" does not exist', constraint_name, rel);
  END IF;
  INSERT INTO sys._jobs (job_type, class_id, object_id, object_name, schema_name, statement)
    VALUES ('VALIDATE_CONSTRAINT', 'pg_constraint'::regclass,
            (SELECT oid FROM pg_constraint WHERE conrelid = rel AND conname = constraint_name),
            nsp || '.' || constraint_name, nsp,
            format('ALTER TABLE %s VALIDATE CONSTRAINT %I', rel::text, constraint_name))
    RETURNING job_id INTO id;
  RETURN id;
END $$;

-- CALL sys.wait_for_job('<job id>') blocks until the job ends; one row: succeeded boolean.
-- It commits between polls, so it must be called outside a transaction block.
CREATE OR REPLACE PROCEDURE sys.wait_for_job(job_id text, INOUT succeeded boolean DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
  u uuid := sys.base32_str_to_uuid(job_id);
  st text;
BEGIN
  LOOP
    SELECT j.status INTO st FROM sys.jobs j WHERE j.job_id = sys.uuid_to_base32_str(u);
    IF NOT FOUND THEN
      RAISE EXCEPTION USING ERRCODE = '42704', MESSAGE = format('job %s does not exist', job_id);
    END IF;
    IF st IN ('completed', 'failed', 'cancelled') THEN
      succeeded := (st = 'completed');
      RETURN;
    END IF;
    PERFORM pg_sleep(0.1);
    COMMIT;
  END LOOP;
END $$;

-- DROP INDEX cancels the ASYNC build of that index (DSQL's way to cancel a job): the job becomes
-- 'cancelled', a running build is cancelled (and waited for, at most 30 s). Returns the names (as
-- written) whose index does not exist yet, so the caller skips dropping them.
CREATE OR REPLACE FUNCTION sys._cancel_index_builds(names text[], caller_schemas name[]) RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  n text; parts text[]; s name; qual text; j record; skipped text[] := '{}'; waited int; hit boolean;
BEGIN
  FOREACH n IN ARRAY names LOOP
    parts := parse_ident(n);
    qual := NULL;
    IF cardinality(parts) = 2 THEN
      qual := parts[1] || '.' || parts[2];
    ELSE
      FOREACH s IN ARRAY caller_schemas LOOP
        IF to_regclass(quote_ident(s) || '.' || quote_ident(parts[1])) IS NOT NULL
           OR EXISTS (SELECT 1 FROM sys._jobs WHERE job_type = 'INDEX_BUILD' AND status IN ('submitted', 'processing')
                      AND object_name = s || '.' || parts[1]) THEN
          qual := s || '.' || parts[1];
          EXIT;
        END IF;
      END LOOP;
    END IF;
    CONTINUE WHEN qual IS NULL;
    hit := false;
    FOR j IN UPDATE sys._jobs SET status = 'cancelled', details = 'cancelled by DROP INDEX', update_time = now()
             WHERE job_type = 'INDEX_BUILD' AND status IN ('submitted', 'processing') AND object_name = qual
               AND pg_has_role(session_user, submitted_by, 'USAGE')
             RETURNING runner_pid LOOP
      hit := true;
      IF j.runner_pid IS NOT NULL THEN
        PERFORM pg_cancel_backend(j.runner_pid);
        waited := 0;
        PERFORM pg_stat_clear_snapshot();  -- pg_stat_activity is otherwise frozen for the transaction
        WHILE waited < 300 AND EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = j.runner_pid
                                       AND a.state = 'active' AND a.query ILIKE 'CREATE%INDEX CONCURRENTLY%') LOOP
          PERFORM pg_sleep(0.1);
          PERFORM pg_stat_clear_snapshot();
          waited := waited + 1;
        END LOOP;
      END IF;
    END LOOP;
    IF hit AND to_regclass(format('%I.%I', split_part(qual, '.', 1), split_part(qual, '.', 2))) IS NULL THEN
      skipped := skipped || n;
    END IF;
  END LOOP;
  RETURN skipped;
END $$;

-- DROP TABLE / DROP INDEX record a DROP job (DSQL cleans storage up asynchronously).
CREATE OR REPLACE FUNCTION sys._on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  INSERT INTO sys._jobs (job_type, class_id, object_id, schema_name)
    SELECT 'DROP', 'pg_class'::regclass, d.objid, d.schema_name
    FROM pg_event_trigger_dropped_objects() d
    WHERE d.object_type IN ('table', 'index') AND d.original AND NOT d.is_temporary
      AND d.schema_name IS DISTINCT FROM 'sys';
END $$;
DROP EVENT TRIGGER IF EXISTS dsql_sql_drop;
CREATE EVENT TRIGGER dsql_sql_drop ON sql_drop EXECUTE FUNCTION sys._on_sql_drop();

-- ---------------------------------------------------------------------------------------------
-- The per-transaction write limits (54000), counted by statement triggers on every user table:
-- rows (dsql.txn_row_limit, DSQL: 3,000), checked live: the statement that passes it fails; and
-- bytes (dsql.txn_byte_limit, DSQL: 10 MiB), checked at COMMIT, as DSQL does: passing it queues a
-- deferred trigger on sys._txn_oversize that fails the COMMIT. The limits are per-database
-- settings (dsqlops.sandbox.limits); the running totals live in transaction-local settings.
DROP FUNCTION IF EXISTS sys._count_rows(bigint);
CREATE TABLE IF NOT EXISTS sys._txn_oversize (marker int);
REVOKE ALL ON sys._txn_oversize FROM PUBLIC;

CREATE OR REPLACE FUNCTION sys._txn_too_big() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE lim bigint := coalesce(nullif(current_setting('dsql.txn_byte_limit', true), '')::bigint, 10485760);
BEGIN
  RAISE EXCEPTION USING ERRCODE = '54000', MESSAGE = format('transaction size limit %s exceeded',
    CASE WHEN lim % 1048576 = 0 THEN (lim / 1048576)::text || 'mb' ELSE lim::text || ' bytes' END);
END $$;
DROP TRIGGER IF EXISTS dsql_txn_too_big ON sys._txn_oversize;
CREATE CONSTRAINT TRIGGER dsql_txn_too_big AFTER INSERT ON sys._txn_oversize
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION sys._txn_too_big();

CREATE OR REPLACE FUNCTION sys._flag_txn_too_big() RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS $$
  INSERT INTO sys._txn_oversize VALUES (1);
$$;

CREATE OR REPLACE FUNCTION sys._count_rows(n bigint, nbytes bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  total bigint;
  total_bytes bigint;
BEGIN
  total := coalesce(nullif(current_setting('dsql.txn_rows', true), '')::bigint, 0) + n;
  IF total > coalesce(nullif(current_setting('dsql.txn_row_limit', true), '')::bigint, 3000) THEN
    RAISE EXCEPTION USING ERRCODE = '54000', MESSAGE = 'transaction row limit exceeded';
  END IF;
  PERFORM set_config('dsql.txn_rows', total::text, true);
  total_bytes := coalesce(nullif(current_setting('dsql.txn_bytes', true), '')::bigint, 0) + nbytes;
  PERFORM set_config('dsql.txn_bytes', total_bytes::text, true);
  IF total_bytes > coalesce(nullif(current_setting('dsql.txn_byte_limit', true), '')::bigint, 10485760)
     AND coalesce(current_setting('dsql.txn_too_big', true), '') <> 'on' THEN
    PERFORM set_config('dsql.txn_too_big', 'on', true);
    PERFORM sys._flag_txn_too_big();
  END IF;
END $$;

CREATE OR REPLACE FUNCTION sys._row_limit_new() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM sys._count_rows(count(*), coalesce(sum(pg_column_size(r.*)), 0)) FROM dsql_new_rows r;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION sys._row_limit_old() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM sys._count_rows(count(*), coalesce(sum(pg_column_size(r.*)), 0)) FROM dsql_old_rows r;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION sys._attach_row_limit(rel oid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  t text;
BEGIN
  SELECT c.oid::regclass::text INTO t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.oid = rel AND c.relkind = 'r' AND c.relpersistence = 'p' AND NOT c.relispartition
     AND n.nspname NOT IN ('sys', 'pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_%';
  IF t IS NULL OR EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = rel AND tgname = 'dsql_row_limit_ins') THEN
    RETURN;
  END IF;
  EXECUTE format('CREATE TRIGGER dsql_row_limit_ins AFTER INSERT ON %s REFERENCING NEW TABLE AS dsql_new_rows '
                 'FOR EACH STATEMENT EXECUTE FUNCTION sys._row_limit_new()', t);
  EXECUTE format('CREATE TRIGGER dsql_row_limit_upd AFTER UPDATE ON %s REFERENCING NEW TABLE AS dsql_new_rows '
                 'FOR EACH STATEMENT EXECUTE FUNCTION sys._row_limit_new()', t);
  EXECUTE format('CREATE TRIGGER dsql_row_limit_del AFTER DELETE ON %s REFERENCING OLD TABLE AS dsql_old_rows '
                 'FOR EACH STATEMENT EXECUTE FUNCTION sys._row_limit_old()', t);
END $$;

CREATE OR REPLACE FUNCTION sys._on_ddl_end() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
  FOR r IN SELECT objid FROM pg_event_trigger_ddl_commands()
           WHERE command_tag = 'CREATE TABLE' AND object_type = 'table' LOOP
    PERFORM sys._attach_row_limit(r.objid);
  END LOOP;
END $$;
DROP EVENT TRIGGER IF EXISTS dsql_ddl_end;
CREATE EVENT TRIGGER dsql_ddl_end ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
  EXECUTE FUNCTION sys._on_ddl_end();

SELECT sys._attach_row_limit(c.oid) FROM pg_class c WHERE c.relkind = 'r';

-- ---------------------------------------------------------------------------------------------
-- IAM ↔ PostgreSQL role mappings (AWS IAM GRANT / AWS IAM REVOKE).
CREATE SEQUENCE IF NOT EXISTS sys._iam_oid_seq START 16384;
CREATE TABLE IF NOT EXISTS sys._iam_mappings (
  iam_oid      oid PRIMARY KEY DEFAULT nextval('sys._iam_oid_seq')::oid,
  arn          text NOT NULL,
  pg_role_oid  oid NOT NULL,
  grantor_oid  oid NOT NULL,
  UNIQUE (arn, pg_role_oid)
);
REVOKE ALL ON sys._iam_mappings FROM PUBLIC;

CREATE OR REPLACE VIEW sys.iam_pg_role_mappings AS
  SELECT m.iam_oid, m.arn, m.pg_role_oid, r.rolname AS pg_role_name,
         m.grantor_oid AS grantor_pg_role_oid, g.rolname AS grantor_pg_role_name
  FROM sys._iam_mappings m
  JOIN pg_roles r ON r.oid = m.pg_role_oid
  LEFT JOIN pg_roles g ON g.oid = m.grantor_oid;
GRANT SELECT ON sys.iam_pg_role_mappings TO PUBLIC;

-- The front checks a non-admin login's mapping over one reused connection as this role: it may
-- log in and read the mappings view (granted to PUBLIC) and nothing else; the front refuses it
-- as a login name.
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dsqlops_login_check') THEN
    CREATE ROLE dsqlops_login_check LOGIN NOINHERIT CONNECTION LIMIT 4;
  END IF;
END $$;

CREATE OR REPLACE FUNCTION sys._check_iam_arn(arn text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF arn IS NULL OR arn !~ '^arn:aws(-[a-z]+)*:(iam|sts)::[0-9]{12}:(role|user|assumed-role)/[A-Za-z0-9+=,.@_/-]+$' THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('invalid IAM ARN: %s', arn),
      HINT = 'expected arn:aws:iam::<12-digit account>:role/<name> or :user/<name>';
  END IF;
END $$;

-- The checks AWS IAM GRANT and REVOKE share: a valid ARN, an existing role, and a caller allowed
-- to administer that role. Returns the role's oid.
CREATE OR REPLACE FUNCTION sys._iam_target_role(role_name text, arn text, verb text) RETURNS oid
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE r oid;
BEGIN
  PERFORM sys._check_iam_arn(arn);
  SELECT oid INTO r FROM pg_roles WHERE rolname = role_name;
  IF r IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = '42704', MESSAGE = format('role "%s" does not exist', role_name);
  END IF;
  IF NOT (pg_has_role(session_user, r, 'USAGE WITH ADMIN OPTION')
          OR EXISTS (SELECT 1 FROM pg_roles WHERE rolname = session_user AND (rolsuper OR rolcreaterole))) THEN
    RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = format('permission denied to %s role "%s"', verb, role_name);
  END IF;
  RETURN r;
END $$;

CREATE OR REPLACE PROCEDURE sys._iam_grant(role_name text, arn text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE r oid;
BEGIN
  r := sys._iam_target_role(role_name, arn, 'grant');
  INSERT INTO sys._iam_mappings (arn, pg_role_oid, grantor_oid)
    VALUES (arn, r, (SELECT oid FROM pg_roles WHERE rolname = session_user))
    ON CONFLICT (arn, pg_role_oid) DO NOTHING;
END $$;

CREATE OR REPLACE PROCEDURE sys._iam_revoke(role_name text, arn text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE r oid;
BEGIN
  r := sys._iam_target_role(role_name, arn, 'revoke');
  DELETE FROM sys._iam_mappings m WHERE m.arn = _iam_revoke.arn AND m.pg_role_oid = r;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = '42704',
      MESSAGE = format('IAM identity %s is not granted to role "%s"', arn, role_name);
  END IF;
END $$;

-- ---------------------------------------------------------------------------------------------
-- Small helpers DSQL exposes in `sys`, and the values the sandbox reports as DSQL's.
CREATE OR REPLACE FUNCTION sys.current_session_id() RETURNS text LANGUAGE sql STABLE AS $$
  SELECT sys.uuid_to_base32_str(md5(pg_backend_pid()::text || ':' ||
         (SELECT backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid()))::uuid)
$$;
CREATE OR REPLACE FUNCTION sys.current_transaction_id() RETURNS text LANGUAGE sql VOLATILE AS $$
  SELECT txid_current()::text
$$;
CREATE OR REPLACE FUNCTION sys.dsql_major_version() RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT 16 $$;
CREATE OR REPLACE FUNCTION sys.cluster_size() RETURNS bigint LANGUAGE sql STABLE AS $$
  SELECT pg_database_size(current_database())
$$;
CREATE OR REPLACE FUNCTION sys.cluster_size_limit() RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
  SELECT 10::bigint * 1024 * 1024 * 1024 * 1024
$$;
-- The same version everywhere: version(), SHOW server_version, current_setting() and the
-- server_version the front reports at login (dialect.SERVER_VERSION).
CREATE OR REPLACE FUNCTION sys.version() RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT 'PostgreSQL 16.15' $$;
CREATE OR REPLACE FUNCTION sys.current_database() RETURNS name LANGUAGE sql IMMUTABLE AS $$
  SELECT 'postgres'::name
$$;
CREATE OR REPLACE FUNCTION sys.current_setting(setting_name text) RETURNS text LANGUAGE sql STABLE AS $$
  SELECT CASE lower(setting_name)
           WHEN 'server_version' THEN '16.15'
           WHEN 'server_version_num' THEN '160015'
           ELSE pg_catalog.current_setting(setting_name) END
$$;
CREATE OR REPLACE FUNCTION sys.current_setting(setting_name text, missing_ok boolean) RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT CASE lower(setting_name)
           WHEN 'server_version' THEN '16.15'
           WHEN 'server_version_num' THEN '160015'
           ELSE pg_catalog.current_setting(setting_name, missing_ok) END
$$;

-- Database-wide defaults DSQL fixes: REPEATABLE READ, UTC, and a short lock wait (a write that
-- would wait for another transaction's row fails fast; the dialect turns that into DSQL's
-- commit-time 40001 OC000). The front's sessions wait longer (occ.LOCK_WAIT): the front releases
-- locks held by idle transactions within milliseconds, so they seldom wait at all.
DO $$
BEGIN
  EXECUTE format('ALTER DATABASE %I SET default_transaction_isolation = %L', current_database(), 'repeatable read');
  EXECUTE format('ALTER DATABASE %I SET timezone = %L', current_database(), 'UTC');
  EXECUTE format('ALTER DATABASE %I SET lock_timeout = %L', current_database(), '50ms');
END $$;
