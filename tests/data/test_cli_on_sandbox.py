"""Every data-plane command against the local DSQL sandbox (the real wire front, IAM tokens,
AWS IAM GRANT, CREATE INDEX ASYNC, sys.jobs and sys.wait_for_job)."""

from __future__ import annotations

import re
import threading

import psycopg
import pytest

from tests.data.conftest import invoke, uniq

pytestmark = pytest.mark.sandbox


def test_role_create_iam_grant_then_real_login(sb, cluster, admin, monkeypatch):
    role = uniq("app")
    arn, creds = sb.iam_identity(uniq("dp-app").replace("_", "-"), "role")
    assert invoke(["role", "create", role, "--login"]).exit_code == 0
    with pytest.raises(psycopg.OperationalError):  # no mapping yet: refused
        sb.connect(cluster, user=role, creds=creds).close()
    # role check with that identity explains the refusal
    with monkeypatch.context() as m:
        m.setenv("AWS_ACCESS_KEY_ID", creds["aws_access_key_id"])
        m.setenv("AWS_SECRET_ACCESS_KEY", creds["aws_secret_access_key"])
        m.setenv("AWS_SESSION_TOKEN", creds.get("aws_session_token", ""))
        chk = invoke(["-o", "json", "role", "check", "--role", role])
    assert chk.exit_code == 1, chk.stderr
    rep = chk.json()
    assert rep["ok"] is False and rep["principal_arn"] == arn
    assert "no mapping" in rep["summary"] and f"AWS IAM GRANT {role} TO '{arn}'" in rep["summary"]

    g = invoke(["role", "grant-iam", role, arn])
    assert g.exit_code == 0, g.stderr
    assert f"AWS IAM GRANT \"{role}\" TO '{arn}'" in g.stdout
    again = invoke(["role", "grant-iam", role, arn])
    assert again.exit_code == 0 and "already mapped" in again.stderr
    with sb.connect(cluster, user=role, creds=creds) as c:
        assert c.execute("SELECT current_user").fetchone() == (role,)
    with monkeypatch.context() as m:
        m.setenv("AWS_ACCESS_KEY_ID", creds["aws_access_key_id"])
        m.setenv("AWS_SECRET_ACCESS_KEY", creds["aws_secret_access_key"])
        m.setenv("AWS_SESSION_TOKEN", creds.get("aws_session_token", ""))
        ok = invoke(["-o", "json", "role", "check", "--role", role])
    assert ok.exit_code == 0, ok.stdout + ok.stderr
    assert ok.json()["ok"] is True
    listed = next(r for r in invoke(["-o", "json", "role", "list"]).json() if r["name"] == role)
    assert listed["iam"] == [arn] and listed["login"] is True
    assert invoke(["role", "revoke-iam", role, arn]).exit_code == 0
    with pytest.raises(psycopg.OperationalError):
        sb.connect(cluster, user=role, creds=creds).close()


def test_apply_with_iam_twice_is_a_noop_and_prune_revokes(sb, admin, tmp_path):
    tbl, app, ro = uniq("acct"), uniq("svc"), uniq("ro")
    admin.execute(f"CREATE TABLE {tbl} (id int PRIMARY KEY, v int)")
    f = tmp_path / "roles.yaml"
    f.write_text(f"""
roles:
  - name: {ro}
    grants:
      - {{privileges: [SELECT], on: all tables in schema public}}
  - name: {app}
    login: true
    member_of: [{ro}]
    iam: [arn:aws:iam::123456789012:role/{app}, arn:aws:iam::123456789012:user/{app}]
    grants:
      - privileges: [SELECT, INSERT, UPDATE]
        on: table public.{tbl}
""")
    first = invoke(["-o", "json", "role", "apply", str(f)])
    assert first.exit_code == 0, first.stderr
    assert sum(s["action"] == "iam_grant" for s in first.json()["applied"]) == 2
    mapped = admin.execute("SELECT arn FROM sys.iam_pg_role_mappings WHERE pg_role_name = %s ORDER BY arn",
                           [app]).fetchall()
    assert mapped == [(f"arn:aws:iam::123456789012:role/{app}",), (f"arn:aws:iam::123456789012:user/{app}",)]
    second = invoke(["-o", "json", "role", "apply", str(f)])
    assert second.exit_code == 0 and second.json()["changed"] is False
    assert "nothing to do" in second.stderr
    # drop one ARN from the file: only --prune removes the mapping
    f.write_text(f.read_text().replace(f", arn:aws:iam::123456789012:user/{app}", ""))
    assert invoke(["-o", "json", "role", "apply", str(f)]).json()["changed"] is False
    others = [r for (r,) in admin.execute(
        "SELECT rolname FROM pg_roles WHERE rolname NOT LIKE 'pg\\_%%' AND rolname <> ALL(%s)",
        [[app, ro, "admin", "postgres"]]).fetchall()]
    f.write_text(f"protect: [{', '.join(others) or 'nobody'}]\n" + f.read_text())
    pruned = invoke(["-o", "json", "role", "apply", str(f), "--prune", "--yes"])
    assert pruned.exit_code == 0, pruned.stderr
    assert [s["sql"] for s in pruned.json()["applied"]] == [
        f"AWS IAM REVOKE \"{app}\" FROM 'arn:aws:iam::123456789012:user/{app}'"]


def test_index_build_wait_succeeds(sb, admin):
    tbl = uniq("ib")
    admin.execute(f"CREATE TABLE {tbl} (id int PRIMARY KEY, email text, n int)")
    admin.execute(f"INSERT INTO {tbl} SELECT g, 'u' || g || '@x', g % 7 FROM generate_series(1, 500) g")
    r = invoke(["-o", "json", "index", "build", tbl, "email", "--unique", "--include", "n", "--name",
                f"{tbl}_email_uq", "--wait", "--timeout", "120"])
    assert r.exit_code == 0, r.stderr
    row = r.json()  # the same object shape as without --wait, plus the wait's outcome
    assert row["status"] == "completed" and row["succeeded"] is True and row["index"] == f"public.{tbl}_email_uq"
    assert row["sql"].startswith(f'CREATE UNIQUE INDEX ASYNC "{tbl}_email_uq"')
    assert f"job {row['job_id']}: building index public.{tbl}_email_uq" in r.stderr
    assert f"dsqlops job wait {row['job_id']}" in r.stderr
    lst = invoke(["-o", "json", "index", "list", "--table", tbl]).json()
    assert {(i["name"], i["state"]) for i in lst} == {(f"{tbl}_pkey", "valid"), (f"{tbl}_email_uq", "valid")}
    shown = invoke(["-o", "json", "job", "show", row["job_id"]])
    assert shown.exit_code == 0 and shown.json()["status"] == "completed"
    listed = invoke(["-o", "json", "job", "list", "--type", "INDEX_BUILD", "--since", "1h"]).json()
    assert row["job_id"] in {j["job_id"] for j in listed}
    exists = invoke(["-o", "json", "index", "build", tbl, "email", "--name", f"{tbl}_email_uq", "--if-not-exists"])
    assert exists.exit_code == 0, exists.stderr


def test_unique_build_over_duplicates_fails_then_repair_fixes_it(sb, admin):
    tbl = uniq("dup")
    admin.execute(f"CREATE TABLE {tbl} (id int PRIMARY KEY, code int)")
    admin.execute(f"INSERT INTO {tbl} SELECT g, g % 10 FROM generate_series(1, 50) g")
    name = f"{tbl}_code_uq"
    r = invoke(["index", "build", tbl, "code", "--unique", "--name", name, "--wait", "--timeout", "120"])
    assert r.exit_code == 1, r.stderr
    assert "failed" in r.stderr and "is duplicated" in r.stderr
    assert f"the invalid index public.{name} is left behind" in r.stderr
    inv = invoke(["-o", "json", "index", "list", "--invalid", "--table", tbl]).json()
    assert [(i["name"], i["state"]) for i in inv] == [(name, "INVALID")]
    dry = invoke(["-o", "json", "index", "repair", "--table", tbl, "--dry-run"])
    assert dry.exit_code == 0
    assert dry.json()[0]["rebuild_sql"] == f'CREATE UNIQUE INDEX ASYNC "{name}" ON "public"."{tbl}" (code)'
    admin.execute(f"DELETE FROM {tbl} WHERE id > 10")
    fixed = invoke(["index", "repair", "--table", tbl, "--yes", "--wait", "--timeout", "120"])
    assert fixed.exit_code == 0, fixed.stderr
    assert invoke(["-o", "json", "index", "list", "--invalid", "--table", tbl]).json() == []
    assert admin.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = %s::regclass",
                         [f"public.{name}"]).fetchone() == (True,)
    assert invoke(["index", "drop", f"public.{name}", "--yes"]).exit_code == 0


@pytest.mark.parametrize("method", ["call", "poll"])
def test_job_wait_times_out_cleanly_and_resumes_with_the_printed_command(sb, cluster, admin, method, monkeypatch):
    tbl = uniq("slow")
    admin.execute(f"CREATE TABLE {tbl} (id int PRIMARY KEY, v int)")
    su = sb.superuser_connect(cluster, sslmode="disable")
    su.execute(f"LOCK TABLE public.{tbl} IN ACCESS EXCLUSIVE MODE")  # the build cannot run while held
    try:
        job_id = admin.execute(f"CREATE INDEX ASYNC {tbl}_v_idx ON {tbl} (v)").fetchone()[0]
        r = invoke(["-o", "json", "job", "wait", job_id, "--timeout", "1.5", "--method", method])
        assert r.exit_code == 4, r.stderr
        (row,) = r.json()
        assert row["timed_out"] is True and row["status"] in ("submitted", "processing")
        # the hint names the cluster, so it works as printed from a shell with another default cluster
        (hint,) = re.findall(r"resume with '(dsqlops job wait [^']+)'", r.stderr)
        assert hint == f"dsqlops job wait {job_id} -c {sb.endpoint(cluster)}"
    finally:
        su.rollback()
        su.close()
    monkeypatch.delenv("DSQLOPS_CLUSTER")
    done = invoke(["-o", "json", *hint.split()[1:], "--timeout", "120", "--method", method])
    assert done.exit_code == 0, done.stderr
    assert done.json()[0]["status"] == "completed"


def test_job_wait_several_and_unknown_ids(sb, admin):
    t1, t2 = uniq("w1"), uniq("w2")
    ids = []
    for t in (t1, t2):
        admin.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, v int)")
        ids.append(admin.execute(f"CREATE INDEX ASYNC ON {t} (v)").fetchone()[0])
    r = invoke(["-o", "json", "job", "wait", *ids, "--timeout", "120"])
    assert r.exit_code == 0, r.stderr
    assert [x["status"] for x in r.json()] == ["completed", "completed"]
    t3 = uniq("w3")
    admin.execute(f"CREATE TABLE {t3} (id int PRIMARY KEY, v int)")
    admin.execute(f"INSERT INTO {t3} VALUES (1, 1), (2, 1)")
    bad_job = admin.execute(f"CREATE UNIQUE INDEX ASYNC ON {t3} (v)").fetchone()[0]
    mixed = invoke(["-o", "json", "job", "wait", ids[0], bad_job, "--timeout", "120"])
    assert mixed.exit_code == 1, mixed.stderr
    assert [(x["job_id"], x["succeeded"]) for x in mixed.json()] == [(ids[0], True), (bad_job, False)]
    assert "is duplicated" in mixed.json()[1]["details"]
    unknown = invoke(["job", "show", "a" * 26])
    assert unknown.exit_code == 254
    assert "not in sys.jobs" in unknown.stderr and "vanish from sys.jobs about 30 minutes" in unknown.stderr
    bad = invoke(["job", "show", "not-a-job"])
    assert bad.exit_code == 252


def test_stats_dump_stable_on_the_sandbox_and_analyze(sb, admin):
    tbl = uniq("st")
    admin.execute(f"CREATE TABLE {tbl} (id int PRIMARY KEY, k int)")
    admin.execute(f"INSERT INTO {tbl} SELECT g, g % 4 FROM generate_series(1, 300) g")
    assert invoke(["stats", "analyze", tbl]).exit_code == 0
    a = invoke(["-o", "json", "stats", "dump", "--table", tbl])
    b = invoke(["-o", "json", "stats", "dump", "--table", tbl])
    assert a.exit_code == 0, a.stderr
    assert a.stdout == b.stdout
    (t,) = a.json()["tables"]
    assert t["reltuples"] == 300 and {c["name"] for c in t["columns"]} == {"id", "k"}
    assert t["last_analyze"] is not None and t["last_analyze"].endswith("Z")


def test_explain_analyze_on_the_sandbox_reads_the_dpu_estimate(sb, admin):
    tbl = uniq("ex")
    admin.execute(f"CREATE TABLE {tbl} (id int PRIMARY KEY, k int)")
    admin.execute(f"INSERT INTO {tbl} SELECT g, g % 4 FROM generate_series(1, 200) g")
    r = invoke(["-o", "json", "explain", "--analyze", f"INSERT INTO {tbl} VALUES (%s, %s)", "--params", "1000",
                "--params", "1"])
    assert r.exit_code == 0, r.stderr
    d = r.json()
    assert d["rolled_back"] is True and d["dpu"] is not None
    assert float(d["dpu"]["write"]) > 0 and d["cost_per_execution"] is not None
    assert admin.execute(f"SELECT count(*) FROM {tbl} WHERE id = 1000").fetchone() == (0,)
    text = invoke(["explain", "--analyze", f"SELECT * FROM {tbl} WHERE k = 1"])
    assert text.exit_code == 0 and "DPU estimate (statement):" in text.stdout


def test_f17_concurrent_grants_survive_occ(sb, cluster, admin):
    """Two applies racing on the same table's ACL: a conflict (OC001) is retried, both converge."""
    from dsqlops.data.retry import RetryPolicy
    from dsqlops.data.roles import apply_plan, parse_role_file, plan, read_catalog

    tbl = uniq("occ")
    admin.execute(f"CREATE TABLE {tbl} (id int PRIMARY KEY)")
    files = [parse_role_file("roles:\n" + "".join(
        f"  - name: {uniq(f'c{i}')}\n    grants:\n      - {{privileges: [SELECT], on: table public.{tbl}}}\n"
        for _ in range(4))) for i in range(2)]
    errors: list[BaseException] = []
    stats: list[object] = []
    barrier = threading.Barrier(2)

    def run(rf):
        try:
            with sb.connect(cluster) as conn:
                steps = plan(rf, read_catalog(conn))
                barrier.wait(30)
                res = apply_plan(conn, steps, policy=RetryPolicy(max_attempts=20, base_delay=0.01, max_delay=0.2))
                stats.append(res)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(rf,)) for rf in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    with sb.connect(cluster) as conn:
        for rf in files:
            assert plan(rf, read_catalog(conn)) == []


def test_role_check_explains_an_expired_token(sb, cluster):
    import time

    from dsqlops.data.connection import ConnectionTarget
    from dsqlops.data.rolecheck import check_login

    stale = sb.token(cluster, "admin", expires_in=1)
    time.sleep(2.5)
    target = ConnectionTarget(host=sb.endpoint(cluster), region=sb.region, user="admin", hostaddr="127.0.0.1",
                              port=sb.port, sslrootcert=sb.ca_file, connect_timeout=30)
    rep = check_login(target, lambda _t: stale)
    assert not rep.ok
    assert "expired" in rep.summary
    assert [c["check"] for c in rep.checks] == ["identity", "token", "login"]


def test_role_check_of_a_role_that_does_not_exist(sb):
    r = invoke(["-o", "json", "role", "check", "--role", uniq("ghost")])
    assert r.exit_code == 1, r.stderr
    rep = r.json()
    assert "does not exist" in rep["summary"] and rep["principal_arn"]


def test_index_drop_cancels_a_build_in_progress(sb, cluster, admin):
    import time

    tbl = uniq("cx")
    name = f"{tbl}_v_idx"
    admin.execute(f"CREATE TABLE {tbl} (id int PRIMARY KEY, v int)")
    su = sb.superuser_connect(cluster, sslmode="disable")
    # EXCLUSIVE blocks the build (CREATE INDEX needs SHARE) but not catalog reads (ACCESS SHARE)
    su.execute(f"LOCK TABLE public.{tbl} IN EXCLUSIVE MODE")
    drop_result: list = []
    try:
        started = invoke(["-o", "json", "index", "build", tbl, "v", "--name", name])
        assert started.exit_code == 0, started.stderr
        job_id = started.json()["job_id"]
        lr = invoke(["-o", "json", "index", "list", "--table", tbl])
        assert lr.exit_code == 0, lr.stderr
        listed = lr.json()
        assert [(i["name"], i["state"], i["building_job"]) for i in listed if i["name"] == name] == [
            (name, "building", job_id)]
        t = threading.Thread(target=lambda: drop_result.append(invoke(["index", "drop", name, "--yes"])))
        t.start()
        # release the lock only once the drop is done (a build not started yet is only cancelled) or its
        # DROP INDEX is queued behind the lock (so the build cannot win the race)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and t.is_alive():
            waiting = su.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE NOT l.granted AND a.query ILIKE %s", ["%DROP INDEX%"]).fetchone()[0]
            if waiting:
                break
            time.sleep(0.1)
    finally:
        su.rollback()
        su.close()
    t.join(60)
    assert drop_result and drop_result[0].exit_code == 0, drop_result and drop_result[0].stderr
    waited = invoke(["-o", "json", "job", "wait", job_id, "--timeout", "60"])
    (row,) = waited.json()
    assert row["status"] == "cancelled" and waited.exit_code == 1
    assert invoke(["-o", "json", "index", "list", "--table", tbl]).json()[0]["name"] == f"{tbl}_pkey"
