"""How the runner tells a cluster that went away from a busy one."""

from __future__ import annotations

from dsqlops.bench.runner import _Health


def test_lost_connections_with_no_success_mean_the_cluster_is_gone() -> None:
    h = _Health(0.0)
    assert not h.gone()
    h.record(ok=False, lost=True, error="57P01 terminating connection")
    assert h.gone() and h.first_lost == "57P01 terminating connection"
    # an OCC give-up after the last lost connection does not hide that the cluster stopped answering
    # for long: the next lost connection makes it gone again
    h.record(ok=False, lost=False, error="40001 transaction conflicted on all 5 attempts")
    assert not h.gone()
    h.record(ok=False, lost=True, error="PoolTimeout: couldn't get a connection")
    assert h.gone()
    h.record(ok=True, lost=False, error=None)
    assert not h.gone() and h.first_lost is None


def test_a_recent_success_keeps_the_cluster_alive() -> None:
    h = _Health(3600.0)
    h.record(ok=False, lost=True, error="57P01")
    assert not h.gone()
