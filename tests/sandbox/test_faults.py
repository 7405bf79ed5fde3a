"""Bad bytes and dying peers: the front closes only that session, leaks nothing, serves the others."""

from __future__ import annotations

import socket
import struct
import time

import psycopg
import pytest

from tests.sandbox import rawpg


@pytest.fixture(scope="module")
def cluster(sandbox) -> str:  # type: ignore[no-untyped-def]
    return sandbox.create_cluster()


@pytest.fixture()
def bystander(sandbox, cluster):  # type: ignore[no-untyped-def]
    """A session that must keep working through every fault; and the session baseline around it."""
    with sandbox.connect(cluster, autocommit=True) as conn:
        conn.execute("SELECT 1")
        base = _sessions(sandbox, cluster)
        yield conn
        assert conn.execute("SELECT 42").fetchone() == (42,)
        _wait_back_to(sandbox, cluster, base)


def _front_connections(port: int) -> int:
    """ESTABLISHED TCP connections whose local port is the front's (client sessions at the front)."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if int(parts[1].rsplit(":", 1)[1], 16) == port and parts[3] == "01":
                n += 1
    return n


def _sessions(sandbox, cluster: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(front-side client connections, backend sessions of non-superusers on the cluster)."""
    with sandbox.superuser_connect(cluster, autocommit=True) as su:
        backends = su.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                              "AND usename <> 'postgres'").fetchone()[0]
    return _front_connections(sandbox.port), int(backends)


def _wait_back_to(sandbox, cluster: str, base: tuple[int, int], timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        now = _sessions(sandbox, cluster)
        if now[0] <= base[0] and now[1] <= base[1]:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"sessions (front, backend) {now}, {base} before the fault")
        time.sleep(0.2)


def _connect(sandbox) -> socket.socket:  # type: ignore[no-untyped-def]
    return socket.create_connection(("127.0.0.1", sandbox.port), timeout=30)


def _fatal(msgs: list[tuple[bytes, bytes]]) -> dict[str, str]:
    errs = [rawpg.error_fields(body) for kind, body in msgs if kind == b"E"]
    assert errs, f"expected an ErrorResponse, got {msgs!r}"
    return errs[-1]


def test_garbage_bytes(sandbox, bystander) -> None:  # type: ignore[no-untyped-def]
    with _connect(sandbox) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        err = _fatal(rawpg.read_until_closed(s))
    assert err["S"] == "FATAL" and err["C"] == "08P01"


def test_garbage_after_tls(sandbox, cluster, bystander) -> None:  # type: ignore[no-untyped-def]
    with rawpg.tls_socket(sandbox.port, sandbox.endpoint(cluster), sandbox.ca_file) as s:
        s.sendall(b"\xff" * 64)
        err = _fatal(rawpg.read_until_closed(s))
    assert err["C"] == "08P01"


def test_truncated_startup_packet(sandbox, bystander) -> None:  # type: ignore[no-untyped-def]
    with _connect(sandbox) as s:
        s.sendall(struct.pack("!i", 100) + struct.pack("!i", 196608) + b"user\0ad")
        s.shutdown(socket.SHUT_WR)
        assert rawpg.read_until_closed(s) == []  # closed, nothing half-done


def test_oversized_startup_packet(sandbox, bystander) -> None:  # type: ignore[no-untyped-def]
    with _connect(sandbox) as s:
        s.sendall(struct.pack("!ii", 1_000_000, 196608))
        err = _fatal(rawpg.read_until_closed(s))
    assert err["C"] == "08P01" and "length" in err["M"]


def test_oversized_message_after_login(sandbox, cluster, bystander) -> None:  # type: ignore[no-untyped-def]
    s, _pid = rawpg.login(sandbox.port, sandbox.endpoint(cluster), sandbox.ca_file, sandbox.token(cluster))
    with s:
        s.sendall(b"Q" + struct.pack("!i", 0x7FFFFFF0) + b"SELECT")
        err = _fatal(rawpg.read_until_closed(s))
    assert err["S"] == "FATAL" and err["C"] == "08P01" and "length" in err["M"]


def test_unknown_message_type_after_login(sandbox, cluster, bystander) -> None:  # type: ignore[no-untyped-def]
    s, _pid = rawpg.login(sandbox.port, sandbox.endpoint(cluster), sandbox.ca_file, sandbox.token(cluster))
    with s:
        s.sendall(rawpg.msg(b"!", b"xyz"))
        assert _fatal(rawpg.read_until_closed(s))["C"] == "08P01"


def test_client_vanishes_mid_query(sandbox, cluster, bystander) -> None:  # type: ignore[no-untyped-def]
    s, pid = rawpg.login(sandbox.port, sandbox.endpoint(cluster), sandbox.ca_file, sandbox.token(cluster))
    s.sendall(rawpg.msg(b"Q", b"SELECT pg_sleep(2)\0"))
    time.sleep(0.3)
    s.close()  # no Terminate: the client just vanishes
    with sandbox.superuser_connect(cluster, autocommit=True) as su:
        deadline = time.monotonic() + 60
        while su.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline, "the backend session outlived its client"
            time.sleep(0.2)


def test_backend_killed_under_a_session(sandbox, cluster, bystander) -> None:  # type: ignore[no-untyped-def]
    victim = sandbox.connect(cluster, autocommit=True)
    try:
        pid = victim.info.backend_pid
        # admin may signal non-superuser backends (pg_signal_backend), as on DSQL
        assert bystander.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        with pytest.raises(psycopg.OperationalError):
            for _ in range(50):
                victim.execute("SELECT 1")
                time.sleep(0.1)
        assert victim.closed or victim.broken
    finally:
        victim.close()


def test_backend_killed_raw_gets_a_fatal(sandbox, cluster, bystander) -> None:  # type: ignore[no-untyped-def]
    s, pid = rawpg.login(sandbox.port, sandbox.endpoint(cluster), sandbox.ca_file, sandbox.token(cluster))
    with s:
        with sandbox.superuser_connect(cluster, autocommit=True) as su:
            su.execute("SELECT pg_terminate_backend(%s)", (pid,))
        msgs = rawpg.read_until_closed(s)
    codes = [rawpg.error_fields(b)["C"] for k, b in msgs if k == b"E"]
    assert codes and codes[0] == "57P01"


def test_many_bad_clients_then_good_ones(sandbox, cluster, bystander) -> None:  # type: ignore[no-untyped-def]
    for i in range(20):
        with _connect(sandbox) as s:
            s.sendall(bytes([i]) * (i + 1))
            s.shutdown(socket.SHUT_WR)
            rawpg.read_until_closed(s)
    for _ in range(3):
        with sandbox.connect(cluster) as conn:
            assert conn.execute("SELECT 7").fetchone() == (7,)


def test_gssenc_request_is_declined_then_tls_works(sandbox, cluster, bystander) -> None:  # type: ignore[no-untyped-def]
    import ssl

    with _connect(sandbox) as raw:
        raw.sendall(struct.pack("!ii", 8, 80877104))  # GSSENCRequest
        assert raw.recv(1) == b"N"
        raw.sendall(struct.pack("!ii", 8, 80877103))  # then SSLRequest, as libpq does
        assert raw.recv(1) == b"S"
        ctx = ssl.create_default_context(cafile=sandbox.ca_file)
        with ctx.wrap_socket(raw, server_hostname=sandbox.endpoint(cluster)) as s:
            s.sendall(rawpg.startup())
            kind, _body = rawpg.read_msg(s)
            assert kind == b"R"  # asks for the token


def test_no_sni_is_refused(sandbox, bystander) -> None:  # type: ignore[no-untyped-def]
    import ssl

    with _connect(sandbox) as raw:
        raw.sendall(struct.pack("!ii", 8, 80877103))
        assert raw.recv(1) == b"S"
        ctx = ssl.create_default_context(cafile=sandbox.ca_file)
        ctx.check_hostname = False
        with ctx.wrap_socket(raw) as s:  # no server_hostname: no SNI
            s.sendall(rawpg.startup())
            err = _fatal(rawpg.read_until_closed(s))
    assert err["C"] == "08004" and "SNI" in err["M"]
