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

``target="deleted"``: not found or DELETED → done; FAILED → OperationFailed; anything else
(DELETING, PENDING_DELETE, …) keep polling. Transient errors (throttling past botocore's retries,
5xx, connection errors) are tolerated while time remains. The timeout raises :class:`WaitTimeout`
(exit 4) naming the last status and how to resume.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dsqlops.aws import THROTTLING_CODES
from dsqlops.control.clusters import Cluster, get_cluster
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


def _transient(e: ServiceError) -> bool:
    return (e.code or "") in _TRANSIENT_CODES


def wait_for(client: AuroraDSQLClient, cluster_id: str, *, region: str, target: str = "active", timeout: float = 600.0,
             interval: float = 5.0, accept_idle: bool = False,
             on_status: Callable[[str, float], None] | None = None,
             sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic) -> WaitResult:
    """Poll GetCluster until ``target`` is reached, a terminal status is seen, or ``timeout``."""
    if target not in TARGETS:
        raise UsageError(f"--for must be one of {', '.join(TARGETS)}: {target!r}")
    if timeout <= 0 or interval <= 0:
        raise UsageError("timeout and interval must be positive")
    start = clock()
    polls = 0
    last = "UNKNOWN"
    last_error: str | None = None
    err_code: str | None = None
    resume = f"re-run `dsqlops cluster wait {cluster_id} --for {target}` to resume"

    while True:
        polls += 1
        cluster: Cluster | None = None
        try:
            cluster = get_cluster(client, cluster_id, region)
            status = cluster.status
            last_error = None
        except NotFoundError:
            status = "NOT_FOUND"  # reported as such; for --for deleted it means done
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
                raise NotFoundError(f"cluster {cluster_id} does not exist (in {region})",
                                    code="ResourceNotFoundException")
            if status == "FAILED":
                raise OperationFailed(f"cluster {cluster_id} is FAILED", hint=EXPLAIN["FAILED"])
            if status in GONE:
                raise OperationFailed(f"cluster {cluster_id} is {status}; it will never become ACTIVE")
            if status in SCALED_DOWN and accept_idle:
                return WaitResult(cluster_id, target, status, elapsed, polls,
                                  note=f"available, scaled down: {EXPLAIN[status]}", cluster=cluster)
        else:
            if status in ("NOT_FOUND", "DELETED"):
                return WaitResult(cluster_id, target, "DELETED", elapsed, polls)
            if status == "FAILED":
                raise OperationFailed(f"cluster {cluster_id} is FAILED while waiting for its deletion",
                                      hint=EXPLAIN["FAILED"])

        remaining = timeout - (clock() - start)
        if remaining <= 0:
            why = EXPLAIN.get(last)
            hint = resume
            if target == "active" and last in SCALED_DOWN:
                hint = (f"{why}; pass --accept-idle to count it as available, or connect "
                        f"(`dsqlops sql -c {cluster_id} 'select 1'`) to wake it; {resume}")
            elif target == "deleted" and last not in GONE and last != "UNKNOWN":
                hint = (f"a {last} cluster is not being deleted: run `dsqlops cluster delete {cluster_id}` "
                        f"first; {resume}")
            elif why:
                hint = f"{why}; {resume}"
            extra = f" (last error: {last_error})" if last_error else ""
            raise WaitTimeout(f"cluster {cluster_id} is still {last} after {timeout:g}s{extra}", hint=hint)
        sleep(min(interval, remaining))
