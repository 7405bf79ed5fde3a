"""Printed hints run as printed, from a shell whose default Region is another one: real `dsqlops`
processes against a moto server holding clusters in two Regions (us-east-1, the default, and
us-east-2). Also the matrix row F6: a timed-out `create --wait` re-run reuses its cluster."""

from __future__ import annotations

import json
import re
import shlex
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.clirun import run_dsqlops

DEFAULT, OTHER = "us-east-1", "us-east-2"

pytestmark = pytest.mark.slow  # about 25 real processes


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    from dsqlops.sandbox.postgres import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        yield url
    finally:
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"))
        server.stop()


@pytest.fixture()
def transitions() -> Iterator[Any]:
    from moto.moto_api import state_manager

    def manual(times: int) -> None:
        state_manager.set_transition("dsql::cluster", {"progression": "manual", "times": times})

    yield manual
    state_manager.unset_transition("dsql::cluster")


@pytest.fixture()
def env(moto_url: str, tmp_path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    import os

    e = {k: v for k, v in os.environ.items() if not k.startswith(("DSQLOPS_", "AWS_", "PG"))}
    e.update({"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_REGION": DEFAULT,
              "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
              "AWS_EC2_METADATA_DISABLED": "true", "DSQLOPS_ENDPOINT_URL": moto_url,
              "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "DSQLOPS_NO_PROGRESS": "1"})
    return e


def dsqlops(env: dict[str, str], *args: str) -> Any:
    return run_dsqlops(env, *args, timeout=120)


def printed(stderr: str, verb: str) -> list[str]:
    """The arguments of the first printed `dsqlops cluster VERB …` command."""
    m = re.search(rf"`dsqlops (cluster {verb} [^`]+)`", stderr)
    assert m, stderr
    return shlex.split(m.group(1))


def test_resume_hints_name_the_region_and_work_as_printed(env, transitions):
    transitions(10_000)
    p = dsqlops(env, "--region", OTHER, "-o", "json", "cluster", "create", "--no-deletion-protection",
                "--tag", "t=hints", "--wait", "--interval", "0.05", "--timeout", "0.2")
    assert p.returncode == 4, p.stderr  # timed out while CREATING: the resume hint is what is left
    cid = json.loads(dsqlops(env, "--region", OTHER, "-o", "json", "cluster", "list").stdout)[0]["id"]
    host = f"{cid}.dsql.{OTHER}.on.aws"
    hint = printed(p.stderr, "wait")
    assert host in hint
    transitions(1)

    # Run as printed, default Region us-east-1: it finds the cluster in us-east-2.
    p = dsqlops(env, "-o", "json", *hint, "--interval", "0.05", "--timeout", "60")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["status"] == "ACTIVE"

    # A live cluster is never "deleted": by host it times out still ACTIVE...
    p = dsqlops(env, "cluster", "wait", host, "--for", "deleted", "--interval", "0.05", "--timeout", "0.3")
    assert p.returncode == 4 and "still ACTIVE" in p.stderr, p.stderr
    assert host in " ".join(printed(p.stderr, "delete"))
    # ... and by bare id, looked up in the default Region, it is "not found in region us-east-1".
    p = dsqlops(env, "-o", "json", "cluster", "wait", cid, "--for", "deleted", "--interval", "0.05")
    assert p.returncode == 254, p.stderr
    assert f"not found in region {DEFAULT}" in p.stderr and "not reporting it as deleted" in p.stderr
    assert "DELETED" not in p.stdout

    # Delete from us-east-2; the resume hint it prints names the host too.
    transitions(2)
    p = dsqlops(env, "--region", OTHER, "-o", "json", "cluster", "delete", cid, "--yes", "--wait",
                "--interval", "0.05", "--timeout", "60")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["status"] == "DELETED"
    assert host in " ".join(printed(p.stderr, "wait"))
    # Now gone: waiting on it by host says where it was looked for, distinct from "DELETED".
    p = dsqlops(env, "-o", "json", "cluster", "wait", host, "--for", "deleted", "--interval", "0.05")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["status"] == "NOT_FOUND" and f"not found in region {OTHER}" in out["note"]


def test_remedy_hints_name_the_region(env, moto_url):
    p = dsqlops(env, "--region", OTHER, "-o", "json", "cluster", "create", "--tag", "t=protected")
    assert p.returncode == 0, p.stderr
    cid = json.loads(p.stdout)["id"]
    p = dsqlops(env, "--region", OTHER, "cluster", "delete", cid, "--yes")
    assert p.returncode == 252 and "deletion protection" in p.stderr
    remedy = printed(p.stderr, "update")
    assert f"{cid}.dsql.{OTHER}.on.aws" in remedy
    p = dsqlops(env, "-o", "json", *remedy)  # as printed, from the default Region
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["deletion_protection"] is False


def test_f6_create_wait_timeout_is_resumable_and_the_rerun_reuses_the_cluster(env, transitions):
    transitions(10_000)
    args = ("--region", OTHER, "-o", "json", "cluster", "create", "--no-deletion-protection", "--tag", "t=f6")
    p = dsqlops(env, *args, "--wait", "--timeout", "0.2", "--interval", "0.05")
    assert p.returncode == 4, p.stderr  # WaitTimeout: "still CREATING", not a failure
    assert "still CREATING" in p.stderr
    hint = printed(p.stderr, "wait")
    transitions(1)
    p2 = dsqlops(env, *args)  # the cron re-run: same request, same clientToken, same cluster
    assert p2.returncode == 0, p2.stderr
    cid = json.loads(p2.stdout)["id"]
    assert f"{cid}.dsql.{OTHER}.on.aws" in hint
    listed = json.loads(dsqlops(env, "--region", OTHER, "-o", "json", "cluster", "list").stdout)
    assert [c["id"] for c in listed if c["tags"].get("t") == "f6"] == [cid]
    p3 = dsqlops(env, "-o", "json", *hint, "--interval", "0.05", "--timeout", "60")
    assert p3.returncode == 0 and json.loads(p3.stdout)["status"] == "ACTIVE", p3.stderr


def test_multi_region_pair_in_one_plan_and_delete_with_peers(env):
    pair = ("cluster", "create", "--peer-region", OTHER, "--witness-region", "us-west-2", "--tag", "t=pair")
    p = dsqlops(env, "-o", "json", *pair, "--wait", "--interval", "0.05", "--timeout", "60")
    assert p.returncode == 0, p.stderr
    c1, c2 = json.loads(p.stdout)
    assert (c1["region"], c2["region"]) == (DEFAULT, OTHER)
    assert c1["peers"] == [c2["arn"]] and c2["peers"] == [c1["arn"]]
    p = dsqlops(env, "-o", "json", *pair)  # re-run: the same pair
    assert [c["id"] for c in json.loads(p.stdout)] == [c1["id"], c2["id"]], p.stderr
    p = dsqlops(env, "-o", "json", "cluster", "delete", c2["endpoint"], "--with-peers", "--yes",
                "--disable-deletion-protection", "--wait", "--interval", "0.05", "--timeout", "60")
    assert p.returncode == 0, p.stderr
    assert {(x["id"], x["status"]) for x in json.loads(p.stdout)} == {(c1["id"], "DELETED"), (c2["id"], "DELETED")}


def test_all_regions_lists_what_answers_and_names_the_regions_that_fail(env):
    """moto serves DSQL in us-east-1 and us-east-2 only; every other Region of the price table
    answers HTTP 500 with an HTML page, as an unreachable Region would fail."""
    p = dsqlops(env, "--region", OTHER, "-o", "json", "cluster", "create", "--tag", "t=fleet")
    cid = json.loads(p.stdout)["id"]
    p = dsqlops(dict(env, DSQLOPS_MAX_ATTEMPTS="1"), "-o", "json", "cluster", "list", "--all-regions")
    assert p.returncode == 5, p.stderr
    out = json.loads(p.stdout)
    assert {DEFAULT, OTHER} <= set(out["regions"]) and len(out["regions"]) > 2
    assert (OTHER, cid) in {(c["region"], c["id"]) for c in out["clusters"]}
    failed = {f["region"]: f["error"] for f in out["failed_regions"]}
    assert set(failed) == set(out["regions"]) - {DEFAULT, OTHER}
    assert all("HTML page (500 Internal Server Error)" in e for e in failed.values())
    assert f"{len(failed)} of {len(out['regions'])} regions could not be listed" in p.stderr
    assert all(line.startswith(("warning: ", "error: ", "hint: ")) for line in p.stderr.splitlines())
