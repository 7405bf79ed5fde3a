"""The role file, its validation and the plan diff: pure, no database."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsqlops.data.roles import (
    TABLE_PRIVILEGES,
    Catalog,
    CatalogRole,
    GrantTarget,
    parse_aclitem,
    parse_role_file,
    parse_target,
    plan,
    split_qualified,
    stmt_iam_grant,
)
from dsqlops.errors import UsageError
from dsqlops.validate import validate_iam_arn, validate_role_name

ISSUE_EXAMPLE = """\
roles:
  - name: app
    login: true
    iam: [arn:aws:iam::123456789012:role/app]
    grants:
      - privileges: [SELECT, INSERT, UPDATE]
        on: table public.accounts
"""


def catalog(**kw) -> Catalog:
    cat = Catalog(current_user="admin", schemas={"public"}, tables={"public": {"accounts", "ledger"}})
    cat.roles = {"admin": CatalogRole("admin", True), "postgres": CatalogRole("postgres", True, True, True),
                 "pg_read_all_data": CatalogRole("pg_read_all_data", system=True)}
    for k, v in kw.items():
        setattr(cat, k, v)
    return cat


def test_issue_example_parses_and_plans_exact_statements():
    rf = parse_role_file(ISSUE_EXAMPLE)
    assert rf.roles[0].name == "app" and rf.roles[0].login is True
    steps = plan(rf, catalog())
    assert [s.sql for s in steps] == [
        'CREATE ROLE "app" WITH LOGIN',
        "AWS IAM GRANT \"app\" TO 'arn:aws:iam::123456789012:role/app'",
        'GRANT SELECT, INSERT, UPDATE ON TABLE "public"."accounts" TO "app"',
    ]


def test_converged_catalog_gives_empty_plan():
    rf = parse_role_file(ISSUE_EXAMPLE)
    cat = catalog()
    cat.roles["app"] = CatalogRole("app", login=True)
    cat.iam = {("app", "arn:aws:iam::123456789012:role/app")}
    cat.table_privileges = {("app", "public", "accounts", p) for p in ("SELECT", "INSERT", "UPDATE")}
    assert plan(rf, cat) == []
    assert plan(rf, cat, prune=True) == []


def test_only_missing_privileges_are_granted_and_login_is_altered():
    rf = parse_role_file(ISSUE_EXAMPLE)
    cat = catalog()
    cat.roles["app"] = CatalogRole("app", login=False)
    cat.iam = {("app", "arn:aws:iam::123456789012:role/app")}
    cat.table_privileges = {("app", "public", "accounts", "SELECT")}
    assert [s.sql for s in plan(rf, cat)] == [
        'ALTER ROLE "app" WITH LOGIN',
        'GRANT INSERT, UPDATE ON TABLE "public"."accounts" TO "app"',
    ]


def test_prune_revokes_extras_and_drops_unlisted_roles_but_never_protected_ones():
    rf = parse_role_file(ISSUE_EXAMPLE + "protect: [keepme]\n")
    cat = catalog()
    cat.roles.update({"app": CatalogRole("app", True), "old": CatalogRole("old", True),
                      "keepme": CatalogRole("keepme"), "root": CatalogRole("root", True, superuser=True)})
    cat.iam = {("app", "arn:aws:iam::123456789012:role/app"), ("app", "arn:aws:iam::123456789012:user/bob"),
               ("old", "arn:aws:iam::123456789012:role/old"), ("admin", "arn:aws:iam::123456789012:role/ops")}
    cat.table_privileges = {("app", "public", "accounts", p) for p in ("SELECT", "INSERT", "UPDATE", "DELETE")}
    cat.table_privileges |= {("old", "public", "ledger", "SELECT")}
    sqls = [s.sql for s in plan(rf, cat, prune=True)]
    assert sqls == [
        "AWS IAM REVOKE \"app\" FROM 'arn:aws:iam::123456789012:user/bob'",
        'REVOKE DELETE ON TABLE "public"."accounts" FROM "app"',
        "AWS IAM REVOKE \"old\" FROM 'arn:aws:iam::123456789012:role/old'",
        'REVOKE SELECT ON TABLE "public"."ledger" FROM "old"',
        'DROP ROLE "old"',
    ]
    assert not any("admin" in s or "keepme" in s or "root" in s or "pg_" in s or "postgres" in s for s in sqls)
    # without --prune nothing is removed
    assert plan(rf, cat) == []


def test_all_tables_in_schema_and_schema_grants_and_membership():
    rf = parse_role_file("""
roles:
  - name: readers
    grants:
      - {privileges: [SELECT], on: all tables in schema public}
      - {privileges: [USAGE], on: schema app}
  - name: app
    login: true
    member_of: [readers]
""")
    cat = catalog(schemas={"public", "app"})
    cat.table_privileges = {("readers", "public", "accounts", "SELECT")}
    assert [s.sql for s in plan(rf, cat)] == [
        'CREATE ROLE "readers" WITH NOLOGIN',
        'CREATE ROLE "app" WITH LOGIN',
        'GRANT "readers" TO "app"',
        'GRANT SELECT ON ALL TABLES IN SCHEMA "public" TO "readers"',
        'GRANT USAGE ON SCHEMA "app" TO "readers"',
    ]
    # converged once every existing table has SELECT
    cat.roles.update({"readers": CatalogRole("readers"), "app": CatalogRole("app", True)})
    cat.memberships = {("app", "readers")}
    cat.table_privileges |= {("readers", "public", "ledger", "SELECT")}
    cat.schema_privileges = {("readers", "app", "USAGE")}
    assert plan(rf, cat, prune=True) == []


def test_all_privileges_expand_in_canonical_order():
    rf = parse_role_file("roles:\n  - name: w\n    grants:\n      - privileges: [all]\n        on: table accounts\n")
    assert rf.roles[0].grants[0].privileges == (
        "SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
    assert rf.roles[0].grants[0].on == GrantTarget("table", "public", "accounts")


@pytest.mark.parametrize("text,line,fragment", [
    ("roles:\n  - name: app\n    login: maybe\n", 3, "login must be true or false"),
    ("roles:\n  - name: app\n    logn: true\n", 3, "unknown key 'logn'"),
    ("roles:\n  - name: app\n  - name: app\n", 3, "listed twice"),
    ("roles:\n  - name: app\n    iam: [arn:aws:iam::12345:role/x]\n", 3, "not an IAM role or user ARN"),
    ("roles:\n  - name: app\n    iam: ['arn:aws:iam::123456789012:role/*']\n", 3, "wildcards"),
    ("roles:\n  - name: pg_evil\n", 2, "reserved"),
    ("roles:\n  - name: \"a\\0b\"\n", 2, "NUL"),
    ("roles:\n  - name: app\n    grants:\n      - privileges: [SELECT]\n        on: view x\n", 5,
     "cannot read grant target"),
    ("roles:\n  - name: app\n    grants:\n      - privileges: [USAGE]\n        on: table t\n", 4,
     "does not apply to table"),
    ("roles:\n  - name: app\n   bad: [\n", 3, "invalid YAML"),
    ("roles: {name: app}\n", 1, "'roles' must be a list"),
    ("roles:\n  - login: true\n", 2, "has no 'name'"),
    ("roles:\n  - name: " + "x" * 64 + "\n", 2, "63"),
    ("roles:\n  - name: app\n    name: app2\n", 3, "duplicate key"),
])
def test_bad_files_give_line_numbered_errors(text, line, fragment):
    with pytest.raises(UsageError) as ei:
        parse_role_file(text, source="roles.yaml")
    msg = ei.value.message
    assert msg.startswith(f"roles.yaml:{line}:"), msg
    assert fragment in msg


def test_empty_file_and_missing_roles():
    with pytest.raises(UsageError, match="empty"):
        parse_role_file("", source="f.yaml")
    with pytest.raises(UsageError, match="no 'roles:'"):
        parse_role_file("protect: []\n", source="f.yaml")


def test_plan_refuses_unknown_tables_and_groups_before_anything_runs():
    rf = parse_role_file("roles:\n  - name: app\n    member_of: [ghost]\n    grants:\n"
                         "      - {privileges: [SELECT], on: table public.nope}\n", source="r.yaml")
    with pytest.raises(UsageError) as ei:
        plan(rf, catalog())
    assert "2 problem(s); nothing was changed" in ei.value.message
    assert "r.yaml:5: table public.nope does not exist" in ei.value.message
    assert "ghost" in ei.value.message


def test_iam_roles_need_a_dsql_catalog():
    rf = parse_role_file(ISSUE_EXAMPLE, source="r.yaml")
    with pytest.raises(UsageError, match=r"sys\.iam_pg_role_mappings"):
        plan(rf, catalog(iam_supported=False))


def test_managing_a_superuser_is_refused():
    rf = parse_role_file("roles:\n  - name: root\n", source="r.yaml")
    cat = catalog()
    cat.roles["root"] = CatalogRole("root", True, superuser=True)
    with pytest.raises(UsageError, match="system or superuser"):
        plan(rf, cat)


def test_b1_hostile_names_are_quoted_not_injected():
    step = stmt_iam_grant('ops"; DROP TABLE x; --', "arn:aws:iam::123456789012:role/ops")
    assert step.sql == "AWS IAM GRANT \"ops\"\"; DROP TABLE x; --\" TO 'arn:aws:iam::123456789012:role/ops'"
    with pytest.raises(UsageError):  # a quote can never reach the literal: the ARN validator refuses it
        stmt_iam_grant("ops", "arn:aws:iam::123456789012:role/it's-me")


@pytest.mark.parametrize("text,expected", [
    ("public.accounts", ("public", "accounts")),
    ("accounts", ("public", "accounts")),
    ('"My Schema"."Odd.Name"', ("My Schema", "Odd.Name")),
    ('app."we""ird"', ("app", 'we"ird')),
])
def test_split_qualified(text, expected):
    assert split_qualified(text) == expected


@pytest.mark.parametrize("text", ["a.b.c", "a.", '"open', "a b"])
def test_split_qualified_refuses(text):
    with pytest.raises(UsageError):
        split_qualified(text)


def test_parse_target_forms():
    assert parse_target("ALL TABLES IN SCHEMA app") == GrantTarget("all_tables", "app")
    assert parse_target("schema app") == GrantTarget("schema", "app")
    assert parse_target("table app.t") == GrantTarget("table", "app", "t")


# ------------------------------------------------------------------ hypothesis: names and ARNs

PARTITIONS = st.sampled_from(["aws", "aws-cn", "aws-us-gov"])
ACCOUNT = st.text(alphabet=string.digits, min_size=12, max_size=12)
IAM_NAME = st.text(alphabet=string.ascii_letters + string.digits + "+=,.@_-", min_size=1, max_size=64)


@given(PARTITIONS, ACCOUNT, st.sampled_from(["role", "user"]), IAM_NAME)
def test_valid_arns_are_accepted_and_round_trip_into_sql(partition, account, kind, name):
    arn = f"arn:{partition}:iam::{account}:{kind}/{name}"
    assert validate_iam_arn(arn) == arn
    assert stmt_iam_grant("app", arn).sql == f"AWS IAM GRANT \"app\" TO '{arn}'"


@given(st.text(min_size=0, max_size=80))
def test_arbitrary_text_is_never_an_arn_unless_it_matches(text):
    import re

    ok = re.fullmatch(r"arn:(aws|aws-cn|aws-us-gov):iam::\d{12}:(role|user)/([\w+=,.@-]+/)*[\w+=,.@-]{1,128}",
                      text, re.ASCII)
    if ok and "*" not in text:
        assert validate_iam_arn(text) == text
    else:
        with pytest.raises(UsageError):
            validate_iam_arn(text)


@given(ACCOUNT.filter(lambda a: True), st.sampled_from(["aws-xx", "aws-iso", "amazon", ""]))
def test_other_partitions_are_refused(account, partition):
    with pytest.raises(UsageError):
        validate_iam_arn(f"arn:{partition}:iam::{account}:role/app")


@given(st.integers(min_value=0, max_value=10**20).filter(lambda n: len(str(n)) != 12))
def test_accounts_must_have_12_digits(n):
    with pytest.raises(UsageError):
        validate_iam_arn(f"arn:aws:iam::{n}:role/app")


@settings(max_examples=300)
@given(st.text(min_size=1, max_size=40))
def test_role_names_are_validated_or_quoted_safely(name):
    try:
        validate_role_name(name)
    except UsageError as e:
        assert e.message  # a clear refusal, never a crash
        return
    # accepted: no NUL or control characters, fits in 63 bytes, not reserved
    assert "\x00" not in name and len(name.encode()) <= 63 and not name.lower().startswith("pg_")
    rf_text = __import__("yaml").safe_dump({"roles": [{"name": name}]}, allow_unicode=True)
    rf = parse_role_file(rf_text)
    assert rf.roles[0].name == name
    sql = plan(rf, catalog())[0].sql
    assert sql == 'CREATE ROLE "' + name.replace('"', '""') + '" WITH NOLOGIN'


@given(st.text(alphabet=string.ascii_lowercase, min_size=64, max_size=90))
def test_long_role_names_are_refused_not_truncated(name):
    with pytest.raises(UsageError, match="63"):
        validate_role_name(name)


@given(st.sampled_from(["\x00", "\x01", "\n", "\u200b", "\x7f"]), st.text(alphabet="abc", min_size=1, max_size=5))
def test_control_characters_are_refused(bad, base):
    with pytest.raises(UsageError):
        validate_role_name(base + bad + base)


@pytest.mark.parametrize("item,expected", [
    ("app=arw/admin", ("app", ["INSERT", "SELECT", "UPDATE"])),
    ("=r/admin", ("", ["SELECT"])),
    ('"we""ird name"=r*D/admin', ('we"ird name', ["SELECT", "TRUNCATE"])),
    ("readers=UC/admin", ("readers", ["USAGE", "CREATE"])),
    ("admin=rawdDxt/admin", ("admin", list(TABLE_PRIVILEGES))),
])
def test_acl_items(item, expected):
    assert parse_aclitem(item) == expected


@settings(max_examples=200)
@given(st.text(max_size=200))
def test_any_text_is_a_role_file_or_a_clear_error(text):
    try:
        rf = parse_role_file(text, source="f.yaml")
    except UsageError as e:
        assert e.message.startswith("f.yaml")
    else:
        assert isinstance(rf.roles, list)


@settings(max_examples=150)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=12),
                    lambda children: st.lists(children, max_size=3)
                    | st.dictionaries(st.sampled_from(["roles", "name", "login", "iam", "grants", "on",
                                                       "privileges", "member_of", "protect", "x"]),
                                      children, max_size=4), max_leaves=12))
def test_any_yaml_structure_is_a_role_file_or_a_line_numbered_error(data):
    import re

    import yaml

    text = yaml.safe_dump(data)
    try:
        parse_role_file(text, source="g.yaml")
    except UsageError as e:
        assert re.match(r"g\.yaml(:\d+:\d+)?: ", e.message), e.message
