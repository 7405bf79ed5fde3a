"""``token``, ``sql`` and ``connect`` end to end against the TLS PostgreSQL (``pg``), reached through
the host/hostaddr split with a DSQL endpoint name that the test certificate covers."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest

from .conftest import CLUSTER_HOST, FAKE_SESSION, invoke

pytestmark = pytest.mark.postgres

SQL = ["sql", "-c", CLUSTER_HOST, "--role", "postgres"]


def _q(token: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit("https://" + token).query)


# -- token ---------------------------------------------------------------------------------------

def test_token_table_prints_only_the_token(cli_env):
    r = invoke(["token", "-c", CLUSTER_HOST])
    assert r.exit_code == 0, r.stderr
    assert r.stderr == ""
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{CLUSTER_HOST}/?Action=DbConnectAdmin&")
    assert _q(lines[0])["X-Amz-Security-Token"] == [FAKE_SESSION]


def test_token_json_shape_and_role(cli_env):
    r = invoke(["-o", "json", "token", "-c", CLUSTER_HOST, "--role", "reader", "--expires-in", "300"])
    assert r.exit_code == 0, r.stderr
    doc = r.json()
    assert set(doc) == {"token", "host", "region", "user", "expires_in", "expires_at"}
    assert (doc["host"], doc["region"], doc["user"], doc["expires_in"]) == (CLUSTER_HOST, "us-east-1", "reader", 300)
    assert doc["expires_at"].endswith("Z")
    q = _q(doc["token"])
    assert q["Action"] == ["DbConnect"] and q["X-Amz-Expires"] == ["300"]


def test_token_by_id_uses_the_region(cli_env):
    r = invoke(["--region", "us-east-2", "token", "-c", "abcdefghijklmnopqrstuvwxyz"])
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("abcdefghijklmnopqrstuvwxyz.dsql.us-east-2.on.aws/?")


@pytest.mark.parametrize(("args", "code"), [
    (["token", "-c", CLUSTER_HOST, "--expires-in", "0"], 252),
    (["token", "-c", CLUSTER_HOST, "--expires-in", "604801"], 252),
    (["token", "-c", CLUSTER_HOST + ".evil.com"], 252),
    (["token", "-c", "test.dsql.us-east-1.on.aws"], 252),
    (["token"], 252),
    (["token", "-c", CLUSTER_HOST, "--role", "bad\x01role"], 252),
])
def test_token_refusals(cli_env, args, code):
    r = invoke(args)
    assert r.exit_code == code, (r.stdout, r.stderr)
    assert r.stdout == "" and "X-Amz" not in r.stderr


def test_token_refused_without_credentials(cli_env, monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    r = invoke(["token", "-c", CLUSTER_HOST])
    assert r.exit_code == 253, r.stderr
    assert r.stdout == "" and "credentials" in r.stderr


# -- sql -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["table", "json", "csv", "yaml"])
def test_sql_renders_rows_in_every_format(cli_env, fmt):
    r = invoke(["-o", fmt, *SQL, "select 1 as n, 'a,b' as s, 1.50::numeric as d, null as z "
                "union all select 2, 'c', 2, null order by 1"])
    assert r.exit_code == 0, r.stderr
    if fmt == "json":
        assert r.json() == [{"n": 1, "s": "a,b", "d": "1.50", "z": None}, {"n": 2, "s": "c", "d": "2", "z": None}]
    elif fmt == "csv":
        assert r.stdout.splitlines() == ["n,s,d,z", '1,"a,b",1.50,', "2,c,2,"]
    elif fmt == "yaml":
        import yaml

        assert yaml.safe_load(r.stdout)[0] == {"n": 1, "s": "a,b", "d": "1.50", "z": None}
    else:
        assert r.stdout.splitlines()[0].split() == ["n", "s", "d", "z"]


def test_sql_file_runs_statements_in_order_each_on_its_own(cli_env, tmp_path):
    t = f"t_{uuid.uuid4().hex[:10]}"
    script = tmp_path / "m.sql"
    # Two DDL statements in one file: DSQL refuses them in one transaction, so they must be split.
    script.write_text(f"""-- migration; with a semicolon in a comment
CREATE TABLE {t} (id int PRIMARY KEY, note text);
CREATE TABLE {t}_b (id int);
INSERT INTO {t} VALUES (1, 'semi;colon'), (2, $$dollar ; quoted$$);
SELECT id, note FROM {t} ORDER BY id;
SELECT count(*) AS n FROM {t}_b;
DROP TABLE {t}_b; DROP TABLE {t};
""")
    r = invoke(["-o", "json", *SQL, "-f", str(script)])
    assert r.exit_code == 0, r.stderr
    doc = r.json()
    assert [d["status"] for d in doc] == ["CREATE TABLE", "CREATE TABLE", "INSERT 0 2", "SELECT 2", "SELECT 1",
                                          "DROP TABLE", "DROP TABLE"]
    assert doc[3]["rows"] == [{"id": 1, "note": "semi;colon"}, {"id": 2, "note": "dollar ; quoted"}]
    assert doc[4]["columns"] == ["n"] and doc[1]["line"] == 3


def test_sql_table_mode_sends_status_to_stderr(cli_env):
    r = invoke([*SQL, "select 1 as a; select 2 as b, 3 as b"])
    assert r.exit_code == 0, r.stderr
    assert "a" in r.stdout and "b_2" in r.stdout


def test_sql_error_carries_sqlstate_and_says_what_ran(cli_env):
    t = f"t_{uuid.uuid4().hex[:10]}"
    r = invoke([*SQL, f"create table {t} (id int); insert into {t} values ('x'); drop table {t}"])
    assert r.exit_code == 254
    assert "22P02" in r.stderr and "statement 2 (line 1)" in r.stderr and "statements 1-1 already ran" in r.stderr
    invoke([*SQL, f"drop table {t}"])


def test_sql_params(cli_env):
    r = invoke(["-o", "json", *SQL, "select %s::int + 1 as n, %s::text as s", "--params", '[41, "x"]'])
    assert r.exit_code == 0, r.stderr
    assert r.json() == [{"n": 42, "s": "x"}]
    r = invoke(["-o", "json", *SQL, "select %(a)s::int as a", "--params", '{"a": 7}'])
    assert r.json() == [{"a": 7}]
    assert invoke([*SQL, "select %s", "--params", "nope"]).exit_code == 252
    assert invoke([*SQL, "select 1; select %s", "--params", "[1]"]).exit_code == 252


@pytest.mark.parametrize("args", [[], ["select 1", "-f", "x.sql"], ["-- only a comment"]])
def test_sql_usage_errors(cli_env, args):
    assert invoke([*SQL, *args]).exit_code == 252


def test_sql_stdin(cli_env):
    r = invoke(["-o", "json", *SQL, "-f", "-"], input="select 5 as five;")
    assert r.exit_code == 0, r.stderr
    assert r.json() == [{"five": 5}]


def test_sql_wrong_ca_is_a_tls_error(cli_env, monkeypatch, tmp_path):
    from dsqlops.sandbox.certs import ensure_certificates

    monkeypatch.setenv("DSQLOPS_SSLROOTCERT", str(ensure_certificates(tmp_path / "other").ca_cert))
    r = invoke([*SQL, "select 1"])
    assert r.exit_code == 253 and "TLS verification failed" in r.stderr


# -- connect -------------------------------------------------------------------------------------

def _fake_psql(tmp_path):
    """A psql stand-in that records its argv and whether it got PGPASSWORD (and its length)."""
    record = tmp_path / "record.json"
    script = tmp_path / "psql"
    script.write_text(f"""#!{sys.executable}
import json, os, sys
if sys.argv[1:] == ["--version"]:
    print("psql (PostgreSQL) 18.1"); sys.exit(0)
pw = os.environ.get("PGPASSWORD", "")
json.dump({{"argv": sys.argv[1:], "pw_prefix": pw.split("/?")[0], "pw_action": "Action=DbConnect" in pw}},
          open({str(record)!r}, "w"))
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, record


def test_connect_puts_the_token_in_the_environment_only(cli_env, tmp_path):
    psql, record = _fake_psql(tmp_path)
    env = {**os.environ, **cli_env}
    p = subprocess.run([sys.executable, "-m", "dsqlops", "connect", "-c", CLUSTER_HOST, "--psql", str(psql),
                        "--", "-c", "select 1"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    rec = json.loads(record.read_text())
    assert rec["pw_prefix"] == CLUSTER_HOST and rec["pw_action"]
    argv = " ".join(rec["argv"])
    assert "X-Amz" not in argv and "password" not in argv.lower()
    assert rec["argv"][-2:] == ["-c", "select 1"]
    conninfo = rec["argv"][1]
    for part in (f"host={CLUSTER_HOST}", "hostaddr=127.0.0.1", "sslmode=verify-full", "dbname=postgres",
                 "user=admin", f"sslrootcert={cli_env['DSQLOPS_SSLROOTCERT']}"):
        assert part in conninfo
    # hostaddr is set (a sandbox/proxy), so no direct TLS even with a libpq 18 psql.
    assert "sslnegotiation" not in conninfo


def test_connect_runs_real_psql_over_verify_full(cli_env):
    import shutil

    if not shutil.which("psql"):
        pytest.skip("psql not installed")
    env = {**os.environ, **cli_env}
    p = subprocess.run([sys.executable, "-m", "dsqlops", "connect", "-c", CLUSTER_HOST, "--role", "postgres", "--",
                        "-Atc", "select current_user || ' ' || ssl from pg_stat_ssl where pid = pg_backend_pid()"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "postgres true"


def test_connect_print_command_redacts(cli_env):
    r = invoke(["connect", "-c", CLUSTER_HOST, "--psql", sys.executable, "--print-command"])
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("PGPASSWORD=<redacted> ") and "X-Amz" not in r.stdout
    r = invoke(["-o", "json", "connect", "-c", CLUSTER_HOST, "--psql", sys.executable, "--print-command"])
    doc = r.json()
    assert doc["env"]["PGPASSWORD"].startswith("<redacted")
    assert "X-Amz" not in r.stdout


def test_connect_without_psql_is_a_config_error(cli_env, tmp_path):
    r = invoke(["connect", "-c", CLUSTER_HOST, "--psql", str(tmp_path / "no-psql")])
    assert r.exit_code == 253 and "psql was not found" in r.stderr


def test_sql_single_transaction_retries_occ_and_is_atomic(cli_env, tmp_path):
    t = f"t_{uuid.uuid4().hex[:10]}"
    assert invoke([*SQL, f"create table {t} (id int primary key, v int); insert into {t} values (1, 0); "
                         f"create sequence {t}_s"]).exit_code == 0
    script = tmp_path / "tx.sql"
    # The first attempt hits a real 40001 from the server (OC000 in the text); the sequence is not
    # rolled back, so the second attempt passes.
    script.write_text(f"""
UPDATE {t} SET v = v + 1 WHERE id = 1;
DO $$ BEGIN
  IF nextval('{t}_s') = 1 THEN
    RAISE EXCEPTION 'change conflicts with another transaction, retry as needed (OC000)' USING ERRCODE = '40001';
  END IF;
END $$;
SELECT v FROM {t} WHERE id = 1;
""")
    r = invoke(["-o", "json", *SQL, "--single-transaction", "-f", str(script)])
    assert r.exit_code == 0, r.stderr
    assert r.json()[2]["rows"] == [{"v": 1}]  # the first attempt's +1 was rolled back
    assert "committed after 1 OCC retry (OC000×1)" in r.stderr
    # A failure rolls back everything, and says so.
    r = invoke([*SQL, "--single-transaction", f"update {t} set v = 100; select 1/0"])
    assert r.exit_code == 254 and "nothing was committed" in r.stderr and "22012" in r.stderr
    assert invoke(["-o", "json", *SQL, f"select v from {t}"]).json() == [{"v": 1}]
    # Transaction control is refused in this mode.
    r = invoke([*SQL, "--single-transaction", "begin; select 1; commit"])
    assert r.exit_code == 252 and "transaction control" in r.stderr
    invoke([*SQL, f"drop table {t}; drop sequence {t}_s"])


def test_psql_gets_direct_tls_only_when_it_is_new_enough():
    from dsqlops.cli.connect import build_psql_command
    from dsqlops.data.connection import ConnectionTarget
    from dsqlops.data.tls import libpq_version

    if libpq_version() < 170000:
        pytest.skip("libpq < 17")
    real = ConnectionTarget(host=CLUSTER_HOST, region="us-east-1")
    assert "sslnegotiation=direct" in build_psql_command(real, "psql", (), 18)[2]
    assert "sslnegotiation" not in build_psql_command(real, "psql", (), 15)[2]
    proxied = ConnectionTarget(host=CLUSTER_HOST, region="us-east-1", hostaddr="127.0.0.1", port=15432)
    assert "sslnegotiation" not in build_psql_command(proxied, "psql", ("-X",), 18)[2]
    assert build_psql_command(proxied, "psql", ("-X",), 18)[-1] == "-X"
