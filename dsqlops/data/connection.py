"""psycopg connections and pools to a DSQL cluster: verify-full TLS, a fresh IAM token per
physical connection, the host/hostaddr split, and clear errors.

**host / hostaddr.** ``host`` is always the cluster endpoint: libpq uses it for SNI, for the
verify-full name check and we sign the token for it. ``hostaddr`` (+ ``port``) only says where the
TCP connection goes: the sandbox or a fault-injection proxy on 127.0.0.1 (settings ``hostaddr`` /
``port``, ``DSQLOPS_HOSTADDR`` / ``DSQLOPS_PORT``). verify-full still holds through the proxy.

**Pools.** :func:`create_pool` passes psycopg_pool a *callable* ``kwargs`` (psycopg_pool ≥ 3.3), so
every physical connection gets a freshly minted token; ``max_lifetime`` defaults to 3300 s because
DSQL closes connections after 60 minutes, and every checkout is checked
(``ConnectionPool.check_connection``) because the pool does not notice dead idle connections.

Errors are mapped to dsqlops errors with a hint; the token never appears in a message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from dsqlops.data.retry import RetryPolicy
from dsqlops.errors import ConfigError, DsqlopsError, ServiceError, UsageError

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

#: Anything that mints a token for a target: a :class:`~dsqlops.data.tokens.TokenSource`, or a
#: plain function in tests.
TokenProvider = Callable[["ConnectionTarget"], str]

DEFAULT_MAX_LIFETIME = 3300.0
#: The default ``statement_timeout``: DSQL's 300-second transaction cap plus a grace period for the
#: network (the answer deadline of :mod:`dsqlops.data.deadline`).
DEFAULT_ANSWER_TIMEOUT = 330
#: DSQL refuses more than 100 new connections per second per cluster (SQLSTATE 53400, burst
#: 1,000): a refused connect is tried 8 times in all, with full-jitter exponential backoff from
#: 0.1 s, each delay at most 5 s (~11 s in the worst case).
RATE_LIMIT = RetryPolicy(max_attempts=8, base_delay=0.1, max_delay=5.0)
#: DSQL closes every connection after 60 minutes.
DSQL_MAX_CONNECTION_SECONDS = 3600.0


@dataclass(frozen=True)
class ConnectionTarget:
    """Where and as whom to connect. Holds no secret (the token is minted at connect time)."""

    host: str
    region: str
    user: str = "admin"
    dbname: str = "postgres"
    port: int = 5432
    hostaddr: str | None = None
    sslmode: str = "verify-full"
    sslrootcert: str | None = None
    connect_timeout: int = 10
    application_name: str = "dsqlops"
    token_expires_in: int = 900
    #: ``auto`` | ``direct`` | ``postgres``; see :mod:`dsqlops.data.tls`.
    sslnegotiation: str = "auto"
    #: Seconds a round trip may go unanswered before the connection is given up
    #: (:mod:`dsqlops.data.deadline`); ``None`` waits forever.
    statement_timeout: int | None = DEFAULT_ANSWER_TIMEOUT

    @property
    def cluster_id(self) -> str:
        return self.host.split(".", 1)[0]

    def with_user(self, user: str) -> ConnectionTarget:
        return replace(self, user=user)

    def describe(self) -> str:
        via = f" via {self.hostaddr}:{self.port}" if self.hostaddr else (f":{self.port}" if self.port != 5432 else "")
        return f"{self.user}@{self.host}{via}"

    def conninfo(self) -> dict[str, Any]:
        """libpq keyword parameters, **without** the password."""
        from dsqlops.data.tls import resolve_sslnegotiation, root_cert

        params: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": self.dbname,
            "user": self.user,
            "sslmode": self.sslmode,
            "sslrootcert": root_cert(self.sslrootcert),
            "connect_timeout": self.connect_timeout,
            "application_name": self.application_name,
        }
        if self.hostaddr:
            params["hostaddr"] = self.hostaddr
        neg = resolve_sslnegotiation(self.sslnegotiation, hostaddr=self.hostaddr, host=self.host,
                                      port=self.port)
        if neg:
            params["sslnegotiation"] = neg
        else:
            from dsqlops.data.tls import DIRECT_MIN_LIBPQ, libpq_version

            if libpq_version() >= DIRECT_MIN_LIBPQ:
                # Explicit, so a PGSSLNEGOTIATION=direct in the environment cannot break a PG15 proxy.
                params["sslnegotiation"] = "postgres"
        return params


def target_for(settings: Any, cluster_ref: Any, *, user: str | None = None) -> ConnectionTarget:
    """A :class:`ConnectionTarget` for ``cluster_ref`` (a ClusterRef, or an id/host/ARN string).

    ``host`` comes from the reference (region from the host/ARN, else the settings' region);
    hostaddr, port, sslmode, sslrootcert, timeouts and application_name from the settings, so
    the sandbox works through ``DSQLOPS_HOSTADDR`` / ``DSQLOPS_PORT`` / ``DSQLOPS_SSLROOTCERT``.
    """
    from dsqlops.validate import ClusterRef, parse_cluster, validate_role_name

    ref = parse_cluster(cluster_ref) if isinstance(cluster_ref, str) else cluster_ref
    if not isinstance(ref, ClusterRef):
        raise UsageError(f"not a cluster reference: {cluster_ref!r}")
    get = settings.get if hasattr(settings, "get") else (lambda k, d=None: d)
    ref = ref.with_region(get("region"))
    host = ref.host()
    region = ref.region or ""
    role = user or get("user") or "admin"
    validate_role_name(role, allow_reserved=True)

    def _int(key: str, default: int) -> int:
        v = get(key)
        if v is None:
            return default
        try:
            return int(v)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a whole number: {v!r}") from None

    port = _int("port", 5432)
    if not 1 <= port <= 65535:
        raise ConfigError(f"port must be 1..65535: {port}")
    timeout = _int("connect_timeout", 10)
    if timeout < 1:
        raise ConfigError(f"connect_timeout must be at least 1 second: {timeout}")
    answer = _int("statement_timeout", DEFAULT_ANSWER_TIMEOUT)
    if answer < 1:
        raise ConfigError(f"statement_timeout must be at least 1 second: {answer}")
    from dsqlops.data.tokens import validate_expires_in

    try:
        expires = validate_expires_in(_int("token_expires_in", 900))
    except UsageError as e:
        raise ConfigError(f"token_expires_in: {e.message}") from None
    return ConnectionTarget(
        host=host, region=region, user=role, dbname="postgres", port=port,
        hostaddr=get("hostaddr") or None, sslmode=get("sslmode") or "verify-full",
        sslrootcert=get("sslrootcert") or None, connect_timeout=timeout,
        application_name=get("application_name") or "dsqlops", token_expires_in=expires,
        sslnegotiation=get("sslnegotiation") or "auto", statement_timeout=answer,
    )


# -- errors ------------------------------------------------------------------------------------

def _scrub(text: str, secret: str | None) -> str:
    from dsqlops.logs import redact

    if secret:
        text = text.replace(secret, "<token>")
    return redact(text)


def explain_connect_error(exc: BaseException, target: ConnectionTarget, *, token: str | None = None) -> DsqlopsError:
    """Map a failed connection attempt to a dsqlops error with a hint (never containing the token)."""
    raw = str(exc).strip() or type(exc).__name__
    text = _scrub(raw, token)
    low = text.lower()
    first = text.splitlines()[0]
    where = target.describe()
    code = getattr(exc, "sqlstate", None)
    try:
        direct = target.conninfo().get("sslnegotiation") == "direct"
    except DsqlopsError:
        direct = False
    if "signature expired" in low or ("access denied" in low and "expired" in low):
        return ServiceError(
            f"cannot connect to {where}: access denied, the token's signature has expired",
            code=code or "28000",
            hint="the token was too old when it reached the server, or this machine's clock is wrong "
            "(check time sync: DSQL sees every token as expired under clock skew); mint a fresh one",
        )
    if "access denied" in low or "password authentication failed" in low or "iam authentication" in low:
        action = "DbConnectAdmin" if target.user == "admin" else "DbConnect"
        hint = (f"check that your AWS identity may call dsql:{action} on this cluster and that the "
                f"credentials and region ({target.region}) are right")
        if target.user != "admin":
            hint += f", and that role {target.user!r} is mapped to your IAM identity (AWS IAM GRANT)"
        return ServiceError(f"cannot connect to {where}: authentication refused ({first})", code=code or "28000",
                            hint=hint)
    if ("certificate verify failed" in low or "does not match host name" in low or "root certificate" in low
            or ("ssl error" in low and "certificate" in low)):
        ca = target.sslrootcert or "the bundled Amazon Root CA 1"
        return ConfigError(
            f"cannot connect to {where}: TLS verification failed ({first})",
            hint=f"the server certificate must be issued for {target.host} by a CA in {ca}; for the sandbox "
            "or a proxy set DSQLOPS_SSLROOTCERT (eval \"$(dsqlops sandbox env)\"); never disable verification",
        )
    if ("could not translate host name" in low or "name or service not known" in low
            or "temporary failure in name resolution" in low):
        return ServiceError(f"cannot connect to {where}: the host name does not resolve ({first})",
                            code="ConnectionError",
                            hint="check the cluster id and region; a deleted cluster's endpoint stops resolving")
    # A startup refusal carries no SQLSTATE through libpq, only DSQL's text (CHAP_quotas:
    # "Unable to accept connection, too many open connections." / "…, rate exceeded.").
    if (code in ("53300", "53400") or "53300" in low or "53400" in low or "too many connections" in low
            or "too many open connections" in low or "too_many_connections" in low
            or "configured_limit_exceeded" in low or "rate exceeded" in low):
        rate = code == "53400" or "53400" in low or "configured_limit" in low or "rate exceeded" in low
        return ServiceError(f"cannot connect to {where}: {first}", code=code or ("53400" if rate else "53300"),
                            hint="the cluster's connection limit (10,000) or connection rate (100/s) is exceeded; "
                            "back off and retry, keep pools small")
    if "does not exist" in low and ("role" in low or "database" in low):
        return ServiceError(f"cannot connect to {where}: {first}", code=code or "28000",
                            hint="DSQL has one database, postgres; a custom role must be created "
                            "(dsqlops role create) and mapped to your IAM identity first")
    if ("connection refused" in low or "timeout expired" in low or "timed out" in low
            or "no route to host" in low or "network is unreachable" in low or "could not connect" in low
            or "server closed the connection unexpectedly" in low or "eof" in low):
        hint = "check that the cluster is ACTIVE, that port 5432 is reachable from here (firewall, VPC), "
        if target.hostaddr:
            hint = (f"is the sandbox or proxy listening on {target.hostaddr}:{target.port}? "
                    "(dsqlops sandbox status); ")
        hint += f"connect_timeout is {target.connect_timeout}s"
        if "eof" in low and direct:
            hint = ("the server closed the connection during direct TLS negotiation: servers older than "
                    "PostgreSQL 17 (a proxy, the sandbox) need sslnegotiation=postgres")
        return ServiceError(f"cannot connect to {where}: {first}", code=code or "ConnectionError", hint=hint)
    return ServiceError(f"cannot connect to {where}: {first}", code=code or "ConnectionError")


# -- connections and pools ------------------------------------------------------------------------

def _warn_env_hostaddr(target: ConnectionTarget) -> None:
    import os

    if not target.hostaddr and os.environ.get("PGHOSTADDR"):
        # libpq fills an unset hostaddr from PGHOSTADDR; an empty value cannot override it.
        log.warning("PGHOSTADDR=%s is set in the environment: libpq will dial it instead of resolving %s "
                    "(set DSQLOPS_HOSTADDR to the same value, or unset PGHOSTADDR)", os.environ["PGHOSTADDR"],
                    target.host)


def connect(target: ConnectionTarget, tokens: TokenProvider, *, autocommit: bool = False,
            **kw: Any) -> psycopg.Connection[Any]:
    """One psycopg connection with a freshly minted token. ``kw`` goes to ``psycopg.connect``
    (``row_factory``, ``prepare_threshold``, extra libpq keywords…)."""
    import psycopg

    params = target.conninfo()
    _warn_env_hostaddr(target)
    token = tokens(target)
    log.debug("connecting to %s (sslmode=%s, sslnegotiation=%s)", target.describe(), params["sslmode"],
              params.get("sslnegotiation", "postgres"))
    from dsqlops.data.deadline import DeadlineConnection

    for attempt in range(1, RATE_LIMIT.max_attempts + 1):
        try:
            conn = DeadlineConnection.connect(autocommit=autocommit, password=token, **{**params, **kw})
        except psycopg.OperationalError as e:
            err = explain_connect_error(e, target, token=token)
            if getattr(err, "code", None) != "53400" or attempt == RATE_LIMIT.max_attempts:
                raise err from None
            # Full jitter: a storm of clients refused together must not come back together.
            delay = RATE_LIMIT.delay(attempt)
            log.debug("connection rate exceeded (53400), attempt %d; retrying in %.2fs", attempt, delay)
            time.sleep(delay)
            token = tokens(target)
            continue
        conn.answer_timeout = target.statement_timeout
        return conn
    raise AssertionError("unreachable")


def create_pool(target: ConnectionTarget, tokens: TokenProvider, *, min_size: int = 1, max_size: int = 10,
                max_lifetime: float = DEFAULT_MAX_LIFETIME, **kw: Any) -> ConnectionPool:
    """An open psycopg_pool ``ConnectionPool`` whose ``kwargs`` is a callable: each physical
    connection gets a fresh token. Waits (up to ``connect_timeout`` + 5 s) for ``min_size``
    connections and, if they cannot be made, raises the mapped connection error.

    Extra ``kw`` go to ``ConnectionPool`` (``timeout``, ``max_idle``, ``num_workers``…);
    ``autocommit=`` and ``connect_kwargs=`` (dict) are passed to each connection.
    """
    from psycopg_pool import ConnectionPool, PoolTimeout

    if not 0 < max_lifetime < DSQL_MAX_CONNECTION_SECONDS:
        raise UsageError(f"max_lifetime must be below {DSQL_MAX_CONNECTION_SECONDS:.0f} s (DSQL closes "
                         f"connections after 60 minutes): {max_lifetime}")
    if min_size < 0 or max_size < max(1, min_size):
        raise UsageError(f"pool sizes must satisfy 0 <= min_size <= max_size, max_size >= 1: {min_size}, {max_size}")
    base = target.conninfo()
    _warn_env_hostaddr(target)
    autocommit = bool(kw.pop("autocommit", False))
    extra = dict(kw.pop("connect_kwargs", {}) or {})

    def kwargs() -> dict[str, Any]:
        return {**base, **extra, "autocommit": autocommit, "password": tokens(target)}

    kw.setdefault("check", ConnectionPool.check_connection)
    from dsqlops.data.deadline import DeadlineConnection

    kw.setdefault("connection_class", DeadlineConnection)
    user_configure = kw.pop("configure", None)

    def configure(conn: Any) -> None:
        conn.answer_timeout = target.statement_timeout  # a silent server must not hang a pool worker
        if user_configure is not None:
            user_configure(conn)

    kw["configure"] = configure
    kw.setdefault("name", f"dsqlops-{target.cluster_id}")
    kw.setdefault("reconnect_timeout", max(30.0, 3.0 * target.connect_timeout))
    pool: ConnectionPool = ConnectionPool(kwargs=kwargs, min_size=min_size, max_size=max_size,
                                          max_lifetime=max_lifetime, open=False, **kw)
    try:
        pool.open(wait=min_size > 0, timeout=float(target.connect_timeout) + 5.0)
    except PoolTimeout:
        pool.close(timeout=1.0)
        # Reproduce the failure on one direct connection to report the real cause.
        conn = connect(target, tokens)
        conn.close()
        raise ServiceError(f"cannot open a connection pool to {target.describe()}: timed out",
                           code="ConnectionError") from None
    return pool
