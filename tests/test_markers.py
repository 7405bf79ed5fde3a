"""The server markers are added from fixtures, and a test that starts a server unmarked fails."""

from __future__ import annotations

import subprocess

import pytest

from tests.markers import server_started_by


@pytest.mark.parametrize(("argv", "need"), [
    (["/usr/lib/postgresql/16/bin/pg_ctl", "-D", "/d", "-l", "log", "-w", "start"], "postgres"),
    (["runuser", "-u", "postgres", "--", "/usr/lib/postgresql/16/bin/initdb", "-D", "/d"], "postgres"),
    (["/usr/lib/postgresql/16/bin/pg_ctl", "-D", "/d", "-m", "fast", "stop"], None),
    (["runuser", "-u", "postgres", "--", "/usr/lib/postgresql/16/bin/pg_ctl", "-D", "/d", "stop"], None),
    (["runuser", "-u", "postgres", "--", "/usr/lib/postgresql/16/bin/pg_ctl", "-D", "/d", "start"], "postgres"),
    (["/venv/bin/python", "-m", "dsqlops", "-o", "json", "sandbox", "start", "--dir", "/d"], "sandbox"),
    (["/venv/bin/dsqlops", "demo"], "sandbox"),
    (["/venv/bin/python", "-m", "dsqlops", "sandbox", "status"], None),
    (["/venv/bin/python", "-m", "dsqlops", "cluster", "list"], None),
    (["git", "status"], None),
])
def test_which_processes_are_servers(argv: list[str], need: str | None) -> None:
    assert server_started_by(argv) == need


def test_starting_a_server_without_the_marker_fails_the_test() -> None:
    # 'true' ignores its arguments: only the guard sees an initdb here
    with pytest.raises(pytest.fail.Exception, match=r"not marked: add @pytest.mark.postgres"):
        subprocess.run(["true", "--", "initdb"], check=True)


@pytest.mark.postgres
def test_starting_a_server_with_the_marker_is_allowed() -> None:
    subprocess.run(["true", "--", "initdb"], check=True)


@pytest.fixture()
def sandbox() -> None:
    """Stands in for the session sandbox: only its name matters to the marker hook."""


def test_a_server_fixture_marks_its_users(request: pytest.FixtureRequest, sandbox: None) -> None:
    assert request.node.get_closest_marker("sandbox") is not None
    assert request.node.get_closest_marker("postgres") is not None  # a sandbox runs a PostgreSQL
