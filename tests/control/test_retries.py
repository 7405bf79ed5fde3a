"""Throttling answered at botocore's ``before-send`` (not Stubber, which bypasses the retry
handler: docs/dsql-facts.md §R0.2/§R5.1): the retry handler, parsing and idempotency token all run for real;
requests that get through are answered by moto."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from dsqlops.aws import AwsContext
from dsqlops.control.clusters import CreateRequest, client_token_for
from dsqlops.errors import ExitCode
from tests.control.conftest import create


class _Raw(io.BytesIO):
    def stream(self, **_kw: Any):  # type: ignore[no-untyped-def]
        data = self.read()
        while data:
            yield data
            data = self.read()


def _throttle(url: str) -> AWSResponse:
    body = json.dumps({"message": "Rate exceeded"}).encode()
    return AWSResponse(url, 429, {"x-amzn-ErrorType": "ThrottlingException", "Content-Type": "application/json"},
                       _Raw(body))


class Throttler:
    """Answer the first ``n`` matching requests with 429 ThrottlingException, let the rest through."""

    def __init__(self, method: str, path_part: str, n: int):
        self.method, self.path_part, self.n = method, path_part, n
        self.calls: list[dict[str, Any]] = []

    def __call__(self, request: Any, **_kw: Any) -> AWSResponse | None:
        if request.method != self.method or self.path_part not in request.url:
            return None
        body = request.body
        if isinstance(body, bytes | bytearray):
            body = body.decode()
        self.calls.append({"url": request.url, "body": json.loads(body) if body else None})
        if len(self.calls) <= self.n:
            return _throttle(request.url)
        return None  # moto answers


@pytest.fixture()
def no_sleep(monkeypatch):  # type: ignore[no-untyped-def]
    import time

    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", lambda s: slept.append(s))
    return slept


def _install(monkeypatch, throttler: Throttler) -> None:  # type: ignore[no-untyped-def]
    orig = AwsContext.dsql

    def dsql(self: AwsContext, region: str | None = None) -> Any:
        client = orig(self, region)
        # register_first: ahead of moto's own before-send handler.
        client.meta.events.register_first("before-send.dsql", throttler)
        return client

    monkeypatch.setattr(AwsContext, "dsql", dsql)


def test_create_survives_two_throttles_with_one_stable_client_token(run, dsql, monkeypatch, no_sleep):
    t = Throttler("POST", "/cluster", 2)
    _install(monkeypatch, t)
    r = run(["-o", "json", "cluster", "create", "--tag", "env=ci"])
    assert r.exit_code == 0, r.stderr
    assert len(t.calls) == 3  # 429, 429, then moto
    tokens = {c["body"]["clientToken"] for c in t.calls}
    expected = client_token_for(CreateRequest.build(region="us-east-1", tags={"env": "ci"}))
    assert tokens == {expected}
    assert len(no_sleep) >= 2  # botocore backed off between attempts
    assert len(dsql.list_clusters()["clusters"]) == 1
    assert r.json()["id"] == dsql.list_clusters()["clusters"][0]["identifier"]


def test_f1_get_cluster_throttled_twice_then_ok(run, monkeypatch, no_sleep):
    c = create(run)
    t = Throttler("GET", f"/cluster/{c['id']}", 2)
    _install(monkeypatch, t)
    r = run(["-o", "json", "cluster", "show", c["id"]])
    assert r.exit_code == 0, r.stderr
    assert len([x for x in t.calls if x["url"].endswith(f"/cluster/{c['id']}")]) == 3
    # botocore's own record of it: two retries inside one call.
    t2 = Throttler("GET", f"/cluster/{c['id']}", 2)
    client = AwsContext(region="us-east-1").dsql()
    client.meta.events.register_first("before-send.dsql", t2)
    assert client.get_cluster(identifier=c["id"])["ResponseMetadata"]["RetryAttempts"] == 2
    assert len(t2.calls) == 3


def test_list_makes_no_attempts_beyond_botocores(run, monkeypatch, no_sleep):
    """One retry policy: throttling past the configured attempts is reported, not retried again."""
    ids = {create(run, "--client-token", f"t{i}")["id"] for i in range(3)}
    t = Throttler("GET", "/cluster/", 10_000)
    _install(monkeypatch, t)
    r = run(["-o", "json", "cluster", "list", "--workers", "1"], env={"AWS_MAX_ATTEMPTS": "4"})
    assert r.exit_code == ExitCode.INCOMPLETE
    assert {x["id"] for x in r.json()} == ids and all(x["status"] == "UNKNOWN" for x in r.json())
    assert len(t.calls) == 3 * 4  # ListClusters passes; each GetCluster: exactly 4 HTTP attempts


def test_list_survives_throttling_within_the_attempts(run, monkeypatch, no_sleep):
    ids = {create(run, "--client-token", f"t{i}")["id"] for i in range(3)}
    t = Throttler("GET", "/cluster/", 4)  # the first describe uses 5 attempts: botocore's default here
    _install(monkeypatch, t)
    r = run(["-o", "json", "cluster", "list", "--workers", "1"])
    assert r.exit_code == 0, r.stderr
    assert {x["id"] for x in r.json()} == ids
    assert all(x["status"] == "ACTIVE" for x in r.json())


def test_list_reports_a_cluster_it_could_not_describe(run, monkeypatch, no_sleep):
    ok = create(run, "--client-token", "ok")
    bad = create(run, "--client-token", "bad")
    t = Throttler("GET", f"/cluster/{bad['id']}", 10_000)
    _install(monkeypatch, t)
    r = run(["-o", "json", "cluster", "list"])
    assert r.exit_code == ExitCode.INCOMPLETE  # a partial result is not success
    rows = {x["id"]: x for x in r.json()}  # ... but the data that was fetched is printed
    assert rows[ok["id"]]["status"] == "ACTIVE"
    assert rows[bad["id"]]["status"] == "UNKNOWN" and "ThrottlingException" in rows[bad["id"]]["error"]
    assert f"could not describe cluster {bad['id']}" in r.stderr


def test_f3_conflict_is_not_retried(run, monkeypatch, no_sleep):
    create(run, "--client-token", "same")
    t = Throttler("POST", "/cluster", 0)
    _install(monkeypatch, t)
    r = run(["cluster", "create", "--client-token", "same", "--tag", "different=1"])
    assert r.exit_code == ExitCode.SERVICE
    assert len(t.calls) == 1


class Answer:
    """Answer matching requests with a fixed error (status, code) every time."""

    def __init__(self, method: str, path_suffix: str, status: int, code: str, extra: dict[str, Any] | None = None):
        self.method, self.suffix, self.status, self.code = method, path_suffix, status, code
        self.extra = extra or {}
        self.calls = 0

    def __call__(self, request: Any, **_kw: Any) -> AWSResponse | None:
        if request.method != self.method or not request.url.split("?")[0].endswith(self.suffix):
            return None
        self.calls += 1
        body = json.dumps({"message": f"{self.code} from the test", **self.extra}).encode()
        return AWSResponse(request.url, self.status, {"x-amzn-ErrorType": self.code,
                                                      "Content-Type": "application/json"}, _Raw(body))


def test_f3_quota_exceeded_is_not_retried_and_says_what_to_do(run, monkeypatch, no_sleep):
    a = Answer("POST", "/cluster", 402, "ServiceQuotaExceededException",
               {"resourceId": "x", "resourceType": "cluster", "serviceCode": "dsql", "quotaCode": "q"})
    _install(monkeypatch, a)  # type: ignore[arg-type]
    r = run(["cluster", "create"])
    assert r.exit_code == ExitCode.SERVICE
    assert a.calls == 1
    assert "ServiceQuotaExceededException" in r.stderr and "quota" in r.stderr.split("hint:")[1]


def test_show_is_partial_when_policy_is_denied(run, monkeypatch, no_sleep):
    c = create(run)
    a = Answer("GET", f"/cluster/{c['id']}/policy", 403, "AccessDeniedException")
    _install(monkeypatch, a)  # type: ignore[arg-type]
    r = run(["-o", "json", "cluster", "show", c["id"]])
    assert r.exit_code == 0, r.stderr
    assert r.json()["unavailable"] == ["policy: access denied"] and r.json()["policy"] is None
    assert "partial view: policy: access denied" in r.stderr


def test_delete_race_with_protection_is_explained(run, monkeypatch):
    """GetCluster said unprotected, DeleteCluster still refuses (someone turned it on meanwhile)."""
    c = create(run)  # protected
    orig = AwsContext.dsql

    def dsql(self: AwsContext, region: str | None = None) -> Any:
        client = orig(self, region)
        real = client.get_cluster

        def stale(**kw: Any) -> Any:
            resp = real(**kw)
            resp["deletionProtectionEnabled"] = False
            return resp

        client.get_cluster = stale
        return client

    monkeypatch.setattr(AwsContext, "dsql", dsql)
    r = run(["cluster", "delete", c["id"], "--yes"])
    assert r.exit_code == ExitCode.USAGE
    assert "deletion protection enabled" in r.stderr and "--disable-deletion-protection" in r.stderr
