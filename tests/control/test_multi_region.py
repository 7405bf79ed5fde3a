"""Multi-Region settings that cannot work are refused before any AWS call: a peer in the cluster's
own Region, a witness Region equal to a peer's (or the cluster's)."""

from __future__ import annotations

from typing import Any

import pytest

from dsqlops.aws import AwsContext
from dsqlops.errors import ExitCode
from tests.control.conftest import create

PEER_E2 = "arn:aws:dsql:us-east-2:123456789012:cluster/abcdefghijklmnopqrstuvwxyz"
PEER_E1 = "arn:aws:dsql:us-east-1:123456789012:cluster/bcdefghijklmnopqrstuvwxyza"


@pytest.fixture()
def calls(monkeypatch) -> list[str]:  # type: ignore[no-untyped-def]
    """Every HTTP request dsqlops sends to DSQL, by operation."""
    seen: list[str] = []
    orig = AwsContext.dsql

    def dsql(self: AwsContext, region: str | None = None) -> Any:
        client = orig(self, region)
        client.meta.events.register_first("before-send.dsql", lambda request, event_name, **_: seen.append(
            event_name.rsplit(".", 1)[-1]))
        return client

    monkeypatch.setattr(AwsContext, "dsql", dsql)
    return seen


@pytest.mark.parametrize(("args", "needle"), [
    (["--witness-region", "us-west-2", "--peer", PEER_E1], "is in the cluster's own Region (us-east-1)"),
    (["--witness-region", "us-east-2", "--peer", PEER_E2], "witness Region us-east-2 is the Region of peer"),
    (["--witness-region", "us-east-1", "--peer", PEER_E2], "must differ from the cluster's Region"),
])
def test_create_refuses_impossible_multi_region_before_any_call(run, dsql, calls, args, needle):
    for extra in ([], ["--dry-run"]):
        r = run(["cluster", "create", *args, *extra])
        assert r.exit_code == ExitCode.USAGE, r.stderr
        assert needle in r.stderr
    assert calls == []
    assert dsql.list_clusters()["clusters"] == []


@pytest.mark.parametrize(("args", "needle"), [
    (["--peer", PEER_E1], "is in the cluster's own Region (us-east-1)"),
    (["--witness-region", "us-east-2", "--peer", PEER_E2], "witness Region us-east-2 is the Region of peer"),
    (["--witness-region", "us-east-1"], "must differ from the cluster's Region"),
])
def test_update_refuses_impossible_multi_region_before_any_call(run, calls, args, needle):
    c = create(run, "--witness-region", "us-west-2", "--peer", PEER_E2)
    calls.clear()
    for extra in ([], ["--dry-run"]):
        r = run(["cluster", "update", c["id"], *args, *extra])
        assert r.exit_code == ExitCode.USAGE, r.stderr
        assert needle in r.stderr
    assert calls == []


def test_update_checks_the_merged_witness_against_new_peers(run, calls):
    """The witness kept from GetCluster (us-west-2) may not be the Region of a newly named peer."""
    c = create(run, "--witness-region", "us-west-2", "--peer", PEER_E2)
    calls.clear()
    peer_w2 = "arn:aws:dsql:us-west-2:123456789012:cluster/cdefghijklmnopqrstuvwxyzab"
    r = run(["cluster", "update", c["id"], "--peer", peer_w2])
    assert r.exit_code == ExitCode.USAGE and "witness Region us-west-2 is the Region of peer" in r.stderr
    assert calls == ["GetCluster"]  # read to learn the witness; UpdateCluster never sent
