"""role commands against a real PostgreSQL (no IAM mappings here: those need the sandbox)."""

from __future__ import annotations

import pytest

from tests.data.conftest import invoke, superconn, uniq

pytestmark = pytest.mark.postgres


def roles_named(dp_sql, *names):
    return {r for (r,) in dp_sql("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", [list(names)])}


def test_apply_twice_second_run_is_a_noop(dp_cli, dp_sql, tmp_path):
    app, readers, tbl = uniq("app"), uniq("readers"), uniq("acct")
    dp_sql(f"CREATE TABLE public.{tbl} (id int PRIMARY KEY, v int)")
    f = tmp_path / "roles.yaml"
    f.write_text(f"""
roles:
  - name: {readers}
    grants:
      - privileges: [SELECT]
        on: all tables in schema public
  - name: {app}
    login: true
    member_of: [{readers}]
    grants:
      - privileges: [SELECT, INSERT, UPDATE]
        on: table public.{tbl}
""")
    first = invoke(["-o", "json", "role", "apply", str(f)])
    assert first.exit_code == 0, first.stderr
    data = first.json()
    assert data["changed"] is True
    sqls = [s["sql"] for s in data["applied"]]
    assert sqls[:3] == [f'CREATE ROLE "{readers}" WITH NOLOGIN', f'CREATE ROLE "{app}" WITH LOGIN',
                        f'GRANT "{readers}" TO "{app}"']
    assert data["transactions"] == len(sqls)  # one DDL per transaction
    assert dp_sql("SELECT has_table_privilege(%s, %s, 'INSERT')", [app, f"public.{tbl}"]) == [(True,)]
    assert dp_sql("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", [app]) == [(True,)]

    second = invoke(["-o", "json", "role", "apply", str(f)])
    assert second.exit_code == 0, second.stderr
    assert second.json() == {"changed": False, "dry_run": False, "plan": [], "applied": []}
    assert "nothing to do: the cluster already matches" in second.stderr


def test_dry_run_prints_the_plan_and_changes_nothing(dp_cli, dp_sql, tmp_path):
    name = uniq("dry")
    f = tmp_path / "r.yaml"
    f.write_text(f"roles:\n  - name: {name}\n    login: true\n")
    r = invoke(["role", "apply", str(f), "--dry-run"])
    assert r.exit_code == 0, r.stderr
    assert f'CREATE ROLE "{name}" WITH LOGIN' in r.stdout
    assert "dry run: 1 statement(s) planned, nothing changed" in r.stderr
    assert not roles_named(dp_sql, name)


def test_bad_yaml_gives_a_line_numbered_error_and_changes_nothing(dp_cli, dp_sql, tmp_path):
    good, bad = uniq("good"), uniq("bad")
    f = tmp_path / "bad.yaml"
    f.write_text(f"roles:\n  - name: {good}\n    login: true\n  - name: {bad}\n    iam: [arn:aws:iam::1:role/x]\n")
    r = invoke(["role", "apply", str(f)])
    assert r.exit_code == 252
    assert f"error: {f}:5:11: not an IAM role or user ARN" in r.stderr
    assert not roles_named(dp_sql, good, bad)
    f.write_text(f"roles:\n  - name: {good}\n    login: [\n")
    r = invoke(["role", "apply", str(f)])
    assert r.exit_code == 252 and f"{f}:4:1: invalid YAML" in r.stderr
    assert not roles_named(dp_sql, good)


def test_unknown_table_is_refused_before_any_statement(dp_cli, dp_sql, tmp_path):
    name = uniq("early")
    f = tmp_path / "r.yaml"
    f.write_text(f"roles:\n  - name: {name}\n    grants:\n      - privileges: [SELECT]\n"
                 f"        on: table public.{uniq('missing')}\n")
    r = invoke(["role", "apply", str(f)])
    assert r.exit_code == 252 and "does not exist" in r.stderr and "nothing was changed" in r.stderr
    assert not roles_named(dp_sql, name)


def test_prune_drops_unlisted_roles_but_never_admin_or_protected(dp_cli, dp_sql, tmp_path):
    keep, old, protected = uniq("keep"), uniq("old"), uniq("prot")
    tbl = uniq("pr")
    dp_sql(f"CREATE TABLE public.{tbl} (id int PRIMARY KEY)")
    dp_sql(f"CREATE ROLE {old} LOGIN")
    dp_sql(f"GRANT SELECT ON public.{tbl} TO {old}")
    dp_sql(f"CREATE ROLE {protected}")
    # every other role of this server must be listed or protected, or --prune would drop it too
    others = [r for (r,) in dp_sql("SELECT rolname FROM pg_roles WHERE rolname NOT LIKE 'pg\\_%%' "
                                   "AND rolname NOT IN ('admin', 'postgres') AND rolname <> ALL(%s)",
                                   [[old]])]
    f = tmp_path / "r.yaml"
    f.write_text(f"protect: [{', '.join(others)}]\nroles:\n  - name: {keep}\n")
    plan = invoke(["-o", "json", "role", "apply", str(f), "--prune", "--dry-run"])
    assert plan.exit_code == 0, plan.stderr
    sqls = [s["sql"] for s in plan.json()["plan"]]
    assert sqls == [f'CREATE ROLE "{keep}" WITH NOLOGIN',
                    f'REVOKE SELECT ON TABLE "public"."{tbl}" FROM "{old}"', f'DROP ROLE "{old}"']
    refused = invoke(["role", "apply", str(f), "--prune"])  # no terminal, no --yes: refuse
    assert refused.exit_code == 252 and "refusing without --yes" in refused.stderr
    assert "will remove: DROP ROLE" in refused.stderr
    done = invoke(["role", "apply", str(f), "--prune", "--yes"])
    assert done.exit_code == 0, done.stderr
    assert roles_named(dp_sql, keep, old, protected, "admin") == {keep, protected, "admin"}


def test_failure_midway_reports_applied_and_not_applied_and_rerun_converges(dp_pg, dp_sql):
    from dsqlops.data.roles import ApplyError, apply_plan, parse_role_file, plan, read_catalog

    name, tbl = uniq("mid"), uniq("gone")
    dp_sql(f"CREATE TABLE public.{tbl} (id int PRIMARY KEY)")
    rf = parse_role_file(f"roles:\n  - name: {name}\n    login: true\n    grants:\n"
                         f"      - {{privileges: [SELECT], on: table public.{tbl}}}\n"
                         f"      - {{privileges: [USAGE], on: schema public}}\n")
    with superconn(dp_pg) as conn:
        conn.autocommit = False
        steps = plan(rf, read_catalog(conn))
        assert [s.action for s in steps] == ["create_role", "grant", "grant"]
        dp_sql(f"DROP TABLE public.{tbl}")  # the world changes between plan and apply
        with pytest.raises(ApplyError) as ei:
            apply_plan(conn, steps)
        e = ei.value
        assert [s.action for s in e.applied] == ["create_role"]
        assert [s.sql for s in e.not_applied] == [steps[1].sql, steps[2].sql]
        assert e.failed is steps[1] and not e.unknown
        assert "statement 2 of 3 failed: 42P01" in e.message and "1 applied, 2 not applied" in e.message
        # re-run: recreate what was missing, plan again from the catalog as it now is
        dp_sql(f"CREATE TABLE public.{tbl} (id int PRIMARY KEY)")
        steps2 = plan(rf, read_catalog(conn))
        assert [s.action for s in steps2] == ["grant", "grant"]
        apply_plan(conn, steps2)
        assert plan(rf, read_catalog(conn)) == []


def test_single_commands_create_grant_list_revoke_drop(dp_cli, dp_sql):
    name, tbl = uniq("one"), uniq("t1")
    dp_sql(f"CREATE TABLE public.{tbl} (id int PRIMARY KEY)")
    assert invoke(["role", "create", name, "--login"]).exit_code == 0
    again = invoke(["role", "create", name])
    assert again.exit_code == 254 and "already exists" in again.stderr
    r = invoke(["role", "grant", name, "SELECT,insert", "--on", f"table public.{tbl}"])
    assert r.exit_code == 0, r.stderr
    assert f'GRANT SELECT, INSERT ON TABLE "public"."{tbl}" TO "{name}"' in r.stdout
    bad = invoke(["role", "grant", name, "USAGE", "--on", f"table public.{tbl}"])
    assert bad.exit_code == 252 and "does not apply" in bad.stderr
    listed = invoke(["-o", "json", "role", "list"])
    row = next(x for x in listed.json() if x["name"] == name)
    assert row == {"name": name, "login": True, "superuser": False, "member_of": [], "iam": [], "protected": False}
    assert all(not x["name"].startswith("pg_") for x in listed.json())
    assert invoke(["role", "revoke", name, "INSERT", "--on", f"table public.{tbl}"]).exit_code == 0
    assert dp_sql("SELECT has_table_privilege(%s, %s, 'INSERT')", [name, f"public.{tbl}"]) == [(False,)]
    iam = invoke(["role", "grant-iam", name, "arn:aws:iam::123456789012:role/app"])
    assert iam.exit_code == 252 and "need a DSQL cluster" in iam.stderr
    refuse_admin = invoke(["role", "drop", "admin", "--yes"])
    assert refuse_admin.exit_code == 252
    dropped = invoke(["role", "drop", name, "--yes"])
    assert dropped.exit_code == 0, dropped.stderr
    assert "REVOKE SELECT" in dropped.stdout and f'DROP ROLE "{name}"' in dropped.stdout
    assert not roles_named(dp_sql, name)
    missing = invoke(["role", "drop", name, "--yes"])
    assert missing.exit_code == 254 and "does not exist" in missing.stderr


@pytest.mark.parametrize("name", ["pg_x", "a\x01b", "x" * 64, "admin", " lead"])
def test_b2_bad_role_names_are_refused_before_sql(dp_cli, name):
    r = invoke(["role", "create", name])
    assert r.exit_code == 252, r.stderr
