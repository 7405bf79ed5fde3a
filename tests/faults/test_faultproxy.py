"""The fault proxy itself, against a plain TCP echo server: each fault does what it says."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.faultproxy import DOWN, UP, FaultProxy, silent_server


@pytest.fixture()
def echo() -> Iterator[int]:
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return

            def pump(c: socket.socket = c) -> None:
                with c, contextlib.suppress(OSError):  # the proxy's RSTs end it
                    while data := c.recv(65536):
                        c.sendall(data)

            threading.Thread(target=pump, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()


@pytest.fixture()
def proxy(echo) -> Iterator[FaultProxy]:  # type: ignore[no-untyped-def]
    with FaultProxy("127.0.0.1", echo) as p:
        yield p


def _client(proxy: FaultProxy) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    return s


def _recv_all(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def test_forwards_both_ways(proxy) -> None:  # type: ignore[no-untyped-def]
    with _client(proxy) as s:
        s.sendall(b"hello")
        assert _recv_all(s, 5) == b"hello"
    assert proxy.bytes[UP] >= 5 and proxy.bytes[DOWN] >= 5


def test_drop_after_n_bytes(proxy) -> None:  # type: ignore[no-untyped-def]
    proxy.drop_after(3)
    with _client(proxy) as s:
        s.sendall(b"abcdef")
        assert _recv_all(s, 6) in (b"", b"abc")  # at most the first 3 bytes, then EOF


def test_reset_sends_rst(proxy) -> None:  # type: ignore[no-untyped-def]
    with _client(proxy) as s:
        s.sendall(b"x")
        assert _recv_all(s, 1) == b"x"
        proxy.reset()
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            for _ in range(50):
                s.sendall(b"y")
                if not s.recv(1):
                    raise ConnectionResetError("EOF instead of RST")


def test_stall_holds_everything_until_unstall(proxy) -> None:  # type: ignore[no-untyped-def]
    with _client(proxy) as s:
        proxy.stall()
        s.sendall(b"held")
        s.settimeout(0.5)
        with pytest.raises(TimeoutError):
            s.recv(4)
        proxy.unstall()
        s.settimeout(10)
        assert _recv_all(s, 4) == b"held"


def test_cut_after_forwarding_the_next_chunk(proxy) -> None:  # type: ignore[no-untyped-def]
    with _client(proxy) as s:
        done = proxy.arm_cut(UP, forward=True)
        s.sendall(b"commit")
        assert done.wait(10)
        with pytest.raises((ConnectionResetError, BrokenPipeError, OSError)):
            for _ in range(50):
                if not s.recv(1):
                    raise ConnectionResetError("closed")


def test_silent_server_accepts_and_never_answers() -> None:
    with silent_server() as port, socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
        s.sendall(b"anyone?")
        with pytest.raises(TimeoutError):
            s.recv(1)
