"""Fixtures for the control-plane tests: moto (us-east-1/us-east-2 only), a CLI runner that goes
through ``dsqlops.cli.main.main`` (the real error translation and exit codes), and helpers that
make moto report statuses it never emits (FAILED, IDLE, INACTIVE, PENDING_SETUP)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from tests.clirun import Run, invoke


@pytest.fixture()
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """moto for the whole test, region us-east-1, no user config, default transitions restored."""
    yield from moto_session(monkeypatch, tmp_path)


def moto_session(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """The body of the ``aws`` fixture, reusable by test modules outside tests/control."""
    from moto import mock_aws
    from moto.moto_api import state_manager

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        try:
            yield
        finally:
            state_manager.unset_transition("dsql::cluster")
            state_manager.unset_transition("dsql::stream")


@pytest.fixture()
def dsql(aws: None) -> Any:
    """A plain boto3 dsql client on the same moto backend (to arrange and inspect state)."""
    import boto3

    return boto3.client("dsql", region_name="us-east-1")


@pytest.fixture()
def run(aws: None) -> Callable[..., Run]:
    return invoke


def create(run: Callable[..., Run], *extra: str, region: str = "us-east-1") -> dict[str, Any]:
    r = run(["--region", region, "-o", "json", "cluster", "create", *extra])
    assert r.exit_code == 0, r.stderr
    return r.json()  # type: ignore[no-any-return]


def manual_transitions(times: int) -> None:
    """CREATING/DELETING last ``times`` GetCluster calls (moto's state manager)."""
    from moto.moto_api import state_manager

    state_manager.set_transition("dsql::cluster", {"progression": "manual", "times": times})


def fake_statuses(monkeypatch: pytest.MonkeyPatch, statuses: Sequence[str]) -> list[str]:
    """Make GetCluster (through dsqlops' clients) report ``statuses`` in turn, then the last one
    forever: moto never emits FAILED/IDLE/INACTIVE/PENDING_SETUP. Returns the log of reported
    statuses."""
    from dsqlops.aws import AwsContext

    orig = AwsContext.dsql
    seen: list[str] = []
    queue = list(statuses)

    def dsql(self: AwsContext, region: str | None = None) -> Any:
        client = orig(self, region)
        real = client.get_cluster

        def get_cluster(**kw: Any) -> Any:
            resp = real(**kw)
            status = queue.pop(0) if len(queue) > 1 else queue[0]
            resp["status"] = status
            seen.append(status)
            return resp

        client.get_cluster = get_cluster
        return client

    monkeypatch.setattr(AwsContext, "dsql", dsql)
    return seen
