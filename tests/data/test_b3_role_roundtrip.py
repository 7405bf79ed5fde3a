"""B3: any text as a role name, through the CLI into a real PostgreSQL. Valid names round-trip
through ``pg_roles`` exactly (no truncation at NUL or 63 bytes, no case folding, no injection);
invalid ones are refused with exit 252 before any SQL runs."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsqlops.errors import UsageError
from dsqlops.validate import validate_role_name
from tests.data.conftest import invoke

NAMES = st.text(min_size=0, max_size=40) | st.text(st.sampled_from("aé\"'; -_Z0$\x00\t"), min_size=1, max_size=70)


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(NAMES)
def test_b3_any_role_name_round_trips_exactly_or_is_refused_252(dp_cli, dp_sql, name) -> None:  # type: ignore[no-untyped-def]
    try:
        validate_role_name(name)
        valid = True
    except UsageError:
        valid = False
    before = dp_sql("SELECT count(*) FROM pg_roles")[0][0]
    r = invoke(["role", "create", "--", name])  # "--": a name may start with "-"
    if not valid:
        assert r.exit_code == 252, (name, r.exit_code, r.stderr)
        assert dp_sql("SELECT count(*) FROM pg_roles")[0][0] == before  # nothing ran
        return
    try:
        if r.exit_code == 254 and "already exists" in r.stderr:
            return  # drawn twice; the first draw checked it
        assert r.exit_code == 0, (name, r.stderr)
        rows = dp_sql("SELECT rolname FROM pg_roles WHERE rolname = %s", (name,))
        assert rows == [(name,)]
        assert dp_sql("SELECT count(*) FROM pg_roles")[0][0] == before + 1
    finally:
        if valid:
            from psycopg import sql as psql

            dp_sql(psql.SQL("DROP ROLE IF EXISTS {}").format(psql.Identifier(name)).as_string(None))
