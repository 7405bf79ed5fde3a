"""Our own cluster poller (botocore's ``cluster_active`` waiter times out on FAILED and never
succeeds on IDLE/INACTIVE; docs/dsql-facts.md §1.4).

What each status means to ``wait_for`` (``target="active"``):

=============== ===========================================================================
ACTIVE          done.
CREATING,       keep polling.
UPDATING
IDLE, INACTIVE  the cluster exists and has scaled down (to zero for INACTIVE); it returns to
                ACTIVE only when something connects. With ``accept_idle=True`` this counts as
                available (done, with a note); otherwise keep polling until the timeout, whose
                message says that connecting wakes it.
PENDING_SETUP   multi-Region: waits for its peer to be created and peered; never becomes ACTIVE
                on its own. Keep polling (a peer may be on its way); the timeout says so.
FAILED          :class:`OperationFailed` at once (exit 1).
DELETING,       :class:`OperationFailed` at once: it will never become ACTIVE.
PENDING_DELETE,
DELETED
not found       :class:`NotFoundError` (exit 254).
=============== ===========================================================================

``target="deleted"``: DELETED, or not found after the cluster was seen (in this wait, or by the
caller: ``existed=True``) → done, status ``DELETED``; FAILED → OperationFailed; anything else
(DELETING, PENDING_DELETE, …) keep polling. A cluster *never* seen is not reported as deleted: a
bare id looked up in a default Region may well be alive in another one. With ``region_named`` (the
caller named the Region, by endpoint host or ARN) it is done with status ``NOT_FOUND`` and a note
saying where it was looked for; without, :class:`NotFoundError` (exit 254) says the same.

Transient errors (throttling past botocore's retries, 5xx, connection errors) are tolerated while
time remains. The timeout raises :class:`WaitTimeout`
(exit 4) naming the last status and how to resume. The timeout also bounds each GetCluster call: an
endpoint that accepts the request and never answers would otherwise hold one poll for botocore's
read timeout times its attempts (minutes), whatever ``timeout`` says.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dsqlops.aws import THROTTLING_CODES
from dsqlops.control.clusters import Cluster, get_cluster, hint_name
from dsqlops.errors import NotFoundError, OperationFailed, ServiceError, UsageError, WaitTimeout

if TYPE_CHECKING:
    from mypy_boto3_dsql import AuroraDSQLClient

log = logging.getLogger(__name__)

TARGETS = ("active", "deleted")
SCALED_DOWN = frozenset({"IDLE", "INACTIVE"})
GONE = frozenset({"DELETING", "PENDING_DELETE", "DELETED"})

EXPLAIN: dict[str, str] = {
    "IDLE": "the cluster exists but scaled down after a period without connections; connecting wakes it",
    "INACTIVE": "the cluster exists but scaled to zero after a long period without connections (data kept); "
                "connecting wakes it (the first connection is slower)",
    "PENDING_SETUP": "a multi-Region cluster stays PENDING_SETUP until its peer cluster is created and peered; "
                     "it does not become ACTIVE on its own",
    "PENDING_DELETE": "a multi-Region peer is being deleted; the last peer's deletion moves it to DELETING",
    "FAILED": "the cluster failed; it will not recover by waiting (delete and re-create it, "
              "or ask AWS Support)",
}


@dataclass
class WaitResult:
    id: str
    target: str
    status: str
    elapsed_seconds: float
    polls: int
    note: str | None = None
    cluster: Cluster | None = None


_TRANSIENT_CODES = THROTTLING_CODES | {"InternalServerException", "ServiceUnavailable", "ConnectionError"}


_OTHER_REGION_HINT = ("if it lives in another region, name it by endpoint host (ID.dsql.REGION.on.aws) or ARN, "
                      "or pass --region")


def _transient(e: ServiceError) -> bool:
    return (e.code or "") in _TRANSIENT_CODES


class _NoAnswer(Exception):
    """GetCluster did not return before the wait's deadline."""


def _within(call: Callable[[], Cluster], seconds: float) -> Cluster:
    """``call()``, or :class:`_NoAnswer` when it has not returned after ``seconds``. The call goes on
    in a daemon thread (botocore cannot be interrupted); its result is dropped."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except Exception as e:  # noqa: BLE001 - re-raised in the waiting thread
            box["error"] = e

    t = threading.Thread(target=run, name="get-cluster", daemon=True)
    t.start()
    t.join(max(seconds, 0.0))
    if t.is_alive():
        raise _NoAnswer
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def wait_for(client: AuroraDSQLClient, cluster_id: str, *, region: str, target: str = "active", timeout: float = 600.0,
             interval: float = 5.0, accept_idle: bool = False,
             on_status: Callable[[str, float], None] | None = None,
             existed: bool = False, region_named: bool = True,
             sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic) -> WaitResult:
    """Poll GetCluster until ``target`` is reached, a terminal status is seen, or ``timeout``.

    ``existed``: the caller knows the cluster existed in ``region`` (it just deleted it).
    ``region_named``: the user named the Region with the cluster (host or ARN), so "not found
    there" is an answer rather than a possible mix-up of Regions (see the module doc)."""
    if target not in TARGETS:
        raise UsageError(f"--for must be one of {', '.join(TARGETS)}: {target!r}")
    if timeout <= 0 or interval <= 0:
        raise UsageError("timeout and interval must be positive")
    start = clock()
    polls = 0
    last = "UNKNOWN"
    last_error: str | None = None
    err_code: str | None = None
    name = hint_name(cluster_id, region)
    resume = f"re-run `dsqlops cluster wait {name} --for {target}` to resume"
    seen = existed

    while True:
        polls += 1
        cluster: Cluster | None = None
        try:
            left = timeout - (clock() - start)
            cluster = _within(lambda: get_cluster(client, cluster_id, region), max(left, 1.0))
            status = cluster.status
            last_error = None
            seen = True
        except NotFoundError:
            status = "NOT_FOUND"  # reported as such; for --for deleted it means done
        except _NoAnswer:
            raise WaitTimeout(f"cluster {cluster_id}: GetCluster in {region} did not answer within the "
                              f"{timeout:g}s timeout (last status {last})",
                              hint=f"the endpoint accepts requests but does not answer; check --endpoint-url, "
                              f"the network and the AWS Health Dashboard; {resume}") from None
        except ServiceError as e:
            if not _transient(e):
                raise
            status, last_error, err_code = last, e.message, e.code
        elapsed = clock() - start
        log.debug("poll %d of %s: %s after %.1fs", polls, cluster_id, status, elapsed)
        if on_status is not None:
            on_status(status if last_error is None else f"{status} (retrying after {err_code})", elapsed)
        if last_error is None:
            last = status

        if target == "active":
            if status == "ACTIVE":
                return WaitResult(cluster_id, target, status, elapsed, polls, cluster=cluster)
            if status == "NOT_FOUND":
                raise NotFoundError(f"cluster {cluster_id} does not exist in region {region}",
                                    code="ResourceNotFoundException",
                                    hint=None if region_named else _OTHER_REGION_HINT)
            if status == "FAILED":
                raise OperationFailed(f"cluster {cluster_id} is FAILED", hint=EXPLAIN["FAILED"])
            if status in GONE:
                raise OperationFailed(f"cluster {cluster_id} is {status}; it will never become ACTIVE")
            if status in SCALED_DOWN and accept_idle:
                return WaitResult(cluster_id, target, status, elapsed, polls,
                                  note=f"available, scaled down: {EXPLAIN[status]}", cluster=cluster)
        else:
            if status == "DELETED" or (status == "NOT_FOUND" and seen):
                return WaitResult(cluster_id, target, "DELETED", elapsed, polls)
            if status == "NOT_FOUND":
                where = f"not found in region {region}"
                if not region_named:
                    raise NotFoundError(
                        f"cluster {cluster_id} {where}: it may have been deleted, or it lives in another "
                        "region; not reporting it as deleted", code="ResourceNotFoundException",
                        hint=_OTHER_REGION_HINT)
                return WaitResult(cluster_id, target, "NOT_FOUND", elapsed, polls,
                                  note=f"{where} (already deleted, or never created there)")
            if status == "FAILED":
                raise OperationFailed(f"cluster {cluster_id} is FAILED while waiting for its deletion",
                                      hint=EXPLAIN["FAILED"])

        remaining = timeout - (clock() - start)
        if remaining <= 0:
            why = EXPLAIN.get(last)
            hint = resume
            if target == "active" and last in SCALED_DOWN:
                hint = (f"{why}; pass --accept-idle to count it as available, or connect "
                        f"(`dsqlops sql -c {name} 'select 1'`) to wake it; {resume}")
            elif target == "deleted" and last not in GONE and last != "UNKNOWN":
                hint = (f"a {last} cluster is not being deleted: run `dsqlops cluster delete {name}` "
                        f"first; {resume}")
            elif why:
                hint = f"{why}; {resume}"
            extra = f" (last error: {last_error})" if last_error else ""
            raise WaitTimeout(f"cluster {cluster_id} is still {last} after {timeout:g}s{extra}", hint=hint)
        sleep(min(interval, remaining))
