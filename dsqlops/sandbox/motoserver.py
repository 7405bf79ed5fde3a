"""The sandbox control plane: moto in server mode, in this process, plus what moto lacks.

* serves dsql, cloudwatch, iam and sts (moto serves every service on one port; we only
  document those four) on ``127.0.0.1:<api port>``;
* fixes moto's cluster endpoint to DSQL's ``{id}.dsql.{region}.on.aws`` and reports a cluster
  ``CREATING`` until its PostgreSQL is ready (so "ACTIVE" means "you can connect");
* issues the sandbox's IAM user and access key at first start and re-creates them (same key)
  on every later start;
* restores persisted clusters into moto's backend on start, keeping their ids and ARNs;
* resolves an access key to an IAM identity (user ARN, or the role ARN of an assumed-role
  session) for the front's token check.
"""

from __future__ import annotations

import datetime as dt
import inspect
import secrets
import string
import threading
from collections.abc import Callable, Iterator
from typing import Any

from dsqlops.sandbox.auth import Identity
from dsqlops.sandbox.state import ACCOUNT_ID, REGIONS, ClusterRecord, Credentials

SANDBOX_USER = "dsqlops-sandbox"

_patch_lock = threading.Lock()
_patched = False
#: Cluster ids whose database is ready (moto reports the others as CREATING).
_ready: set[str] = set()


def endpoint_for(identifier: str, region: str) -> str:
    return f"{identifier}.dsql.{region}.on.aws"


def mark_ready(identifier: str, ready: bool = True) -> None:
    if ready:
        _ready.add(identifier)
    else:
        _ready.discard(identifier)


def mark_failed(identifier: str) -> None:
    """The cluster's database could not be created: moto reports it FAILED, as DSQL would."""
    for _region, cluster in iter_clusters():
        if cluster.identifier == identifier:
            cluster.status = "FAILED"


def patch_moto() -> None:
    """Make moto's DSQL model look like DSQL (endpoint format; ACTIVE only once the database is up)."""
    global _patched
    with _patch_lock:
        if _patched:
            return
        from moto.dsql.models import Cluster

        orig_init = Cluster.__init__
        orig_status: Any = inspect.getattr_static(Cluster, "status")

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            orig_init(self, *args, **kwargs)
            self.endpoint = endpoint_for(self.identifier, self.region_name)

        def _get_status(self: Any) -> str | None:
            st = orig_status.fget(self)
            if st == "ACTIVE" and self.identifier not in _ready:
                return "CREATING"
            return st  # type: ignore[no-any-return,unused-ignore]

        Cluster.__init__ = __init__  # type: ignore[method-assign]
        Cluster.status = property(_get_status, orig_status.fset)  # type: ignore[assignment,method-assign,unused-ignore]
        _patched = True


def dsql_backend(region: str) -> Any:
    from moto.dsql.models import dsql_backends

    return dsql_backends[ACCOUNT_ID][region]


def iter_clusters() -> Iterator[tuple[str, Any]]:
    """(region, moto Cluster) for every cluster moto holds, in the sandbox's regions."""
    for region in REGIONS:
        backend = dsql_backend(region)
        for cluster in list(backend.clusters.values()):
            yield region, cluster


def record_of(region: str, cluster: Any) -> ClusterRecord:
    created = cluster.creation_time
    if isinstance(created, dt.datetime):
        created = (created if created.tzinfo else created.replace(tzinfo=dt.UTC)).isoformat()
    return ClusterRecord(identifier=cluster.identifier, arn=cluster.arn, region=region,
                         creation_time=str(created),
                         deletion_protection_enabled=bool(cluster.deletion_protection_enabled),
                         tags=dict(cluster.tags or {}), policy=cluster.policy,
                         kms_encryption_key=(cluster.encryption_details or {}).get("kmsArn")
                         or (cluster.encryption_details or {}).get("kmsKeyArn"))


def restore_cluster(rec: ClusterRecord) -> None:
    """Put a persisted cluster back into moto, with its id, ARN and creation time."""
    from moto.dsql.models import Cluster

    backend = dsql_backend(rec.region)
    if rec.identifier in backend.clusters:
        return
    c = Cluster(rec.region, ACCOUNT_ID, rec.deletion_protection_enabled, rec.tags or None, None,
                rec.kms_encryption_key, None, rec.policy)
    c.identifier = rec.identifier
    c.arn = rec.arn
    c.endpoint = endpoint_for(rec.identifier, rec.region)
    try:
        c.creation_time = dt.datetime.fromisoformat(rec.creation_time)
    except ValueError:
        pass
    c.status = "ACTIVE"
    backend.clusters[rec.identifier] = c


# -- IAM ---------------------------------------------------------------------------------------
def _iam() -> Any:
    from moto.iam.models import iam_backends

    return iam_backends[ACCOUNT_ID]["aws"]


def _sts() -> Any:
    from moto.sts.models import sts_backends

    return sts_backends[ACCOUNT_ID]["aws"]


def _random_key_id() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16))


def ensure_credentials(saved: Credentials | None) -> Credentials:
    """Create (or re-create, with the saved key) the sandbox IAM user and its access key in moto."""
    from moto.iam.models import AccessKey

    iam = _iam()
    user = iam.users.get(SANDBOX_USER) or iam.create_user("us-east-1", SANDBOX_USER)
    key_id = saved.access_key_id if saved else _random_key_id()
    secret = saved.secret_access_key if saved else "".join(
        secrets.choice(string.ascii_letters + string.digits + "/+") for _ in range(40))
    if not any(k.access_key_id == key_id for k in user.access_keys):
        key = AccessKey(SANDBOX_USER, prefix="AKIA", account_id=ACCOUNT_ID)  # type: ignore[abstract]
        key.access_key_id = key_id
        key.secret_access_key = secret
        user.access_keys.append(key)
    return Credentials(user_name=SANDBOX_USER, user_arn=user.arn, access_key_id=key_id, secret_access_key=secret)


def lookup_identity(access_key_id: str) -> Identity | None:
    """The IAM identity behind an access key, as the token check needs it.

    Runs on the front's thread while moto's request threads may change IAM/STS: a pass that
    races with a change is simply retried.
    """
    for _ in range(5):
        try:
            return _lookup_identity(access_key_id)
        except RuntimeError:  # "dictionary changed size during iteration"
            continue
    return _lookup_identity(access_key_id)


def _lookup_identity(access_key_id: str) -> Identity | None:
    iam = _iam()
    for user in list(iam.users.values()):
        for key in list(user.access_keys):
            if key.access_key_id == access_key_id:
                if getattr(key, "status", "Active") != "Active":
                    return None
                return Identity(access_key_id, key.secret_access_key, user.arn)
    role = _sts().get_assumed_role_from_access_key(access_key_id)
    if role is not None:
        exp = role.expiration
        if exp.tzinfo is None:
            exp = exp.replace(tzinfo=dt.UTC)
        if exp < dt.datetime.now(dt.UTC):
            return None
        return Identity(access_key_id, role.secret_access_key, role.role_arn, session_token=role.session_token)
    return None


class ControlPlane:
    """moto's server on the API port, in a thread of this process."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Bind in the calling thread (so a busy port is an error, not a hung thread), serve in another."""
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        patch_moto()
        app = DomainDispatcherApplication(create_backend_app)
        try:
            # werkzeug reports a port in use with a message and sys.exit(1)
            self._server = make_server(self.host, self.port, app, threaded=True, request_handler=MotoRequestHandler)
        except SystemExit:
            raise OSError(98, "address already in use") from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def watch(callback: Callable[[], None], stop: threading.Event, interval: float = 0.2) -> threading.Thread:
    """Call ``callback`` every ``interval`` seconds in a daemon thread until ``stop`` is set."""
    def loop() -> None:
        while not stop.wait(interval):
            try:
                callback()
            except Exception:
                import logging

                logging.getLogger("dsqlops.sandbox").exception("cluster watcher pass failed")

    t = threading.Thread(target=loop, name="sandbox-watcher", daemon=True)
    t.start()
    return t
