"""Each ExitCode is produced by a real situation, through the one translation point (main)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from dsqlops.errors import ExitCode
from tests.control.conftest import Run, create, fake_statuses, invoke, manual_transitions, moto_session


@pytest.fixture()
def aws(monkeypatch, tmp_path):  # type: ignore[no-untyped-def]
    yield from moto_session(monkeypatch, tmp_path)


@pytest.fixture()
def run(aws):  # type: ignore[no-untyped-def]
    return invoke

NO_CREDS = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None,
            "AWS_SECURITY_TOKEN": None, "AWS_PROFILE": None, "AWS_DEFAULT_PROFILE": None,
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials", "AWS_CONFIG_FILE": "/nonexistent/config",
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": None,
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": None, "AWS_WEB_IDENTITY_TOKEN_FILE": None}


def test_ok_0(run):
    assert run(["cluster", "create"]).exit_code == ExitCode.OK == 0


def test_failed_1_cluster_failed(run, monkeypatch):
    c = create(run)
    fake_statuses(monkeypatch, ["FAILED"])
    r = run(["cluster", "wait", c["id"], "--interval", "0.01"])
    assert r.exit_code == ExitCode.FAILED == 1 and "\nerror: " in r.stderr


def test_timeout_4(run):
    manual_transitions(10_000)
    c = create(run)
    r = run(["cluster", "wait", c["id"], "--timeout", "0.2", "--interval", "0.01"])
    assert r.exit_code == ExitCode.TIMEOUT == 4


@pytest.mark.parametrize("args", [
    ["cluster", "list", "--bogus-flag"],
    ["cluster", "show", "NOT-A-CLUSTER"],
    ["cluster", "show", "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws.evil.com"],
    ["-o", "xml", "cluster", "list"],
    ["cluster", "wait", "abcdefghijklmnopqrstuvwxyz", "--for", "gone"],
    ["no-such-command"],
])
def test_usage_252(aws, args):
    r = invoke(args)
    assert r.exit_code == ExitCode.USAGE == 252, r.stderr
    assert r.stdout == ""


def test_usage_252_in_a_real_process():
    r = subprocess.run([sys.executable, "-m", "dsqlops", "cluster", "show", "Uppercase-Is-Not-An-Id"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 252 and "not a DSQL cluster id" in r.stderr and r.stdout == ""


def test_config_253_missing_credentials(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    # A closed loopback port as endpoint: nothing could leave the machine even if creds existed.
    r = invoke(["--region", "us-east-1", "--endpoint-url", "http://127.0.0.1:9", "cluster", "list"], env=NO_CREDS)
    assert r.exit_code == ExitCode.CONFIG == 253, r.stderr
    assert "credentials" in r.stderr


def test_config_253_unknown_aws_profile(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    r = invoke(["--profile", "no-such-profile", "--region", "us-east-1", "--endpoint-url", "http://127.0.0.1:9",
                "cluster", "list"], env=NO_CREDS)
    assert r.exit_code == ExitCode.CONFIG and "no-such-profile" in r.stderr


def test_config_253_bad_config(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("profiles: {default: {port: [}\n")
    p.chmod(0o600)
    r = invoke(["--config", str(p), "cluster", "list"])
    assert r.exit_code == ExitCode.CONFIG == 253 and "line 1" in r.stderr


def test_config_253_no_region(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    r = invoke(["cluster", "list"], env={"AWS_REGION": None, "AWS_DEFAULT_REGION": None, "DSQLOPS_REGION": None})
    assert r.exit_code == ExitCode.CONFIG and "region" in r.stderr


def test_service_254_not_found(run):
    r = run(["cluster", "show", "abcdefghijklmnopqrstuvwxyz"])
    assert r.exit_code == ExitCode.SERVICE == 254
    assert "ResourceNotFoundException" in r.stderr


def _raising(exc: BaseException) -> Callable[..., object]:
    def boom(*_a: object, **_k: object) -> object:
        raise exc
    return boom


def test_internal_255_on_an_unexpected_exception(run, monkeypatch):
    import dsqlops.control.clusters as cc

    monkeypatch.setattr(cc, "list_clusters", _raising(RuntimeError("surprise")))
    r = run(["cluster", "list"])
    assert r.exit_code == ExitCode.INTERNAL == 255
    assert "internal error: RuntimeError: surprise" in r.stderr


def test_interrupted_130(run, monkeypatch):
    import dsqlops.control.clusters as cc

    monkeypatch.setattr(cc, "list_clusters", _raising(KeyboardInterrupt()))
    r = run(["cluster", "list"])
    assert r.exit_code == ExitCode.INTERRUPTED == 130


def test_terminated_143(run, monkeypatch):
    """SIGTERM is raised as Terminated in the main thread (so cleanup runs); main() exits 143.
    The real signal, sent to real processes: tests/test_f18_sigterm.py."""
    import dsqlops.control.clusters as cc
    from dsqlops.errors import Terminated

    monkeypatch.setattr(cc, "list_clusters", _raising(Terminated()))
    r = run(["cluster", "list"])
    assert r.exit_code == ExitCode.TERMINATED == 143 and r.stderr.strip() == "terminated (SIGTERM)"


def test_locked_75(run, monkeypatch, tmp_path):
    """A second run that needs a lock another run holds exits 75 (EX_TEMPFAIL)."""
    import dsqlops.control.clusters as cc
    from dsqlops.fsutil import single_instance

    lock = tmp_path / "dsqlops.lock"
    real = cc.list_clusters

    def locked_list(*a, **k):  # type: ignore[no-untyped-def]
        with single_instance(lock):
            return real(*a, **k)

    monkeypatch.setattr(cc, "list_clusters", locked_list)
    with single_instance(lock):
        r = run(["cluster", "list"])
    assert r.exit_code == ExitCode.LOCKED == 75 and "lock" in r.stderr
    assert run(["cluster", "list"]).exit_code == 0  # released: the next run goes


def test_budget_exceeded_3_is_translated(run, monkeypatch):
    """`report`/`cost --budget` raise BudgetExceeded (cost area); main() must turn it into 3."""
    import dsqlops.control.clusters as cc
    from dsqlops.errors import BudgetExceeded

    monkeypatch.setattr(cc, "list_clusters", _raising(BudgetExceeded("forecast $12.00 > budget $10.00")))
    r = run(["cluster", "list"])
    assert r.exit_code == ExitCode.BUDGET_EXCEEDED == 3


def test_incomplete_5_when_a_region_has_no_price(run, tmp_path):
    """`cost --all` over a region the price table does not price: the rest is priced, the exit is 5."""
    import yaml

    from dsqlops.cost import pricing

    create(run, region="us-east-2")
    data = yaml.safe_load(pricing.shipped_path().read_text())
    data["regions"] = {"us-east-1": data["regions"]["us-east-1"]}
    prices = tmp_path / "only-us-east-1.yaml"
    prices.write_text(yaml.safe_dump(data))
    r = run(["-o", "json", "cost", "--all", "--region", "us-east-2", "--pricing-file", str(prices)])
    assert r.exit_code == ExitCode.INCOMPLETE == 5, r.stderr
    assert r.json()["unpriced_regions"] == ["us-east-2"] and "no price" in r.stderr


def test_every_exit_code_has_a_test():
    names = {n.removeprefix("test_") for n in globals() if n.startswith("test_")}
    covered = {"OK": "ok_0", "FAILED": "failed_1_cluster_failed", "BUDGET_EXCEEDED": "budget_exceeded_3_is_translated",
               "TIMEOUT": "timeout_4", "LOCKED": "locked_75", "INTERRUPTED": "interrupted_130",
               "TERMINATED": "terminated_143", "USAGE": "usage_252",
               "CONFIG": "config_253_missing_credentials", "SERVICE": "service_254_not_found",
               "INTERNAL": "internal_255_on_an_unexpected_exception",
               "INCOMPLETE": "incomplete_5_when_a_region_has_no_price"}
    assert set(covered) == {c.name for c in ExitCode}
    assert set(covered.values()) <= names


def test_errors_go_to_stderr_data_to_stdout(run):
    r: Run = run(["cluster", "show", "abcdefghijklmnopqrstuvwxyz"])
    assert r.stdout == "" and r.stderr.startswith("error: ")
