"""The C data path (``_fastrelay.Pump``) frames and relays exactly as the pure-Python relay does.

The pump runs here on real socket pairs (plaintext on the client side: TLS is covered by every
sandbox test, which uses the native front when it is built) and is driven by calling its event
callbacks directly, chunk by chunk, so the chunking is the test's choice.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsqlops.sandbox import native
from dsqlops.sandbox import protocol as P
from dsqlops.sandbox.hooks import PassThrough, Session
from dsqlops.sandbox.relay import Conn
from tests.sandbox.test_relay_framing import (
    _chunks,
    _msg,
    _relay,
    _Rewrite,
    backend_msgs,
    client_msgs,
)

pytestmark = pytest.mark.skipif(native._fastrelay is None, reason="the C extension was not built")


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return a, b


class Harness:
    """A NativeSession between two socket pairs: ``client``/``backend`` are the far ends."""

    def __init__(self, dialect: Any = None) -> None:
        self.client, front_c = _pair()
        self.backend, front_b = _pair()
        self.cs, self.bs = native.SockStream(front_c), native.SockStream(front_b)
        conn = Conn(session=Session("c", "us-east-1", "postgres", "admin", None), backend_pid=1, backend_key=2, key=3)
        self.session = native.NativeSession(dialect or PassThrough(), conn, self.cs, self.bs)
        self.pump = self.session.pump
        self.client.setblocking(False)
        self.backend.setblocking(False)

    def from_client(self, data: bytes) -> None:
        self.client.sendall(data)
        self.pump.on_client_readable()

    def from_backend(self, data: bytes) -> None:
        self.backend.sendall(data)
        self.pump.on_backend_readable()

    @staticmethod
    def _drain(s: socket.socket) -> bytes:
        out = bytearray()
        while True:
            try:
                chunk = s.recv(1 << 20)
            except BlockingIOError:
                return bytes(out)
            if not chunk:
                return bytes(out)
            out += chunk

    def at_backend(self) -> bytes:
        return self._drain(self.backend)

    def at_client(self) -> bytes:
        return self._drain(self.client)

    def close(self) -> None:
        self.session.want(0, 0, 0, 0)
        for s in (self.client, self.backend, self.cs.sock, self.bs.sock):
            s.close()


def _run(fn: Any) -> Any:
    async def main() -> Any:
        h = Harness(getattr(fn, "dialect", None))
        try:
            return fn(h)
        finally:
            h.close()
    return asyncio.run(main())


@pytest.mark.parametrize("side", ["client", "backend"])
@settings(max_examples=100, deadline=None)
@given(data=st.data(), cuts=st.lists(st.integers(min_value=0, max_value=10**6), max_size=12))
def test_bytes_pass_unchanged(side: str, data: st.DataObject, cuts: list[int]) -> None:
    wire = b"".join(data.draw(client_msgs if side == "client" else backend_msgs))

    def go(h: Harness) -> None:
        send, receive = (h.from_client, h.at_backend) if side == "client" else (h.from_backend, h.at_client)
        got = bytearray()
        for chunk in _chunks(wire, cuts):
            send(chunk)
            got += receive()
        assert bytes(got) == wire
        assert not h.pump.done and not h.session.done.done()
    _run(go)


conversation = st.lists(st.one_of(
    st.sampled_from(["SELECT old", "COMMIT", "SELECT 1", "BEGIN"]).map(
        lambda s: ("c", _msg(b"Q", s.encode() + b"\0"))),
    st.sampled_from([_msg(b"C", b"SELECT 1\0"), _msg(b"Z", b"T"), _msg(b"Z", b"I"), _msg(b"D", b"\0\0"),
                     _msg(b"C", b"ROLLBACK\0"), _msg(b"T", b"\0\0"),
                     _msg(b"E", b"SERROR\0C40001\0Mconflict\0\0")]).map(lambda m: ("b", m)),
), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None)
@given(conversation, st.integers(min_value=1, max_value=7))
def test_same_output_as_the_python_relay(steps: list[tuple[str, bytes]], size: int) -> None:
    """Rewrites, injected errors (Fail + suppressed backend output) and concealment: the same bytes,
    whichever relay, fed in chunks of ``size`` bytes."""
    relay, pclient, pbackend, loop = _relay(_Rewrite())
    try:
        for side, m in steps:
            for i in range(0, len(m), size):
                (relay.from_client if side == "c" else relay.from_backend)(m[i:i + size])
        want_b, want_c = bytes(pbackend.data), bytes(pclient.data)
    finally:
        loop.close()
        asyncio.set_event_loop(None)

    def go(h: Harness) -> None:
        got_b, got_c = bytearray(), bytearray()
        for side, m in steps:
            for i in range(0, len(m), size):
                (h.from_client if side == "c" else h.from_backend)(m[i:i + size])
                got_b += h.at_backend()
                got_c += h.at_client()
        assert bytes(got_b) == want_b
        assert bytes(got_c) == want_c
    go.dialect = _Rewrite()  # type: ignore[attr-defined]
    _run(go)


def test_oversized_length_ends_the_session_with_08P01() -> None:
    def go(h: Harness) -> None:
        h.from_client(b"Q" + struct.pack("!i", P.MAX_MESSAGE + 10))
        assert h.pump.done and h.session.done.done()
        assert h.session.final is not None and b"C08P01\0" in h.session.final
        assert h.session.terminate_backend
        assert h.at_backend() == b""
    _run(go)


def test_unknown_message_type_is_a_protocol_violation() -> None:
    def go(h: Harness) -> None:
        ok = _msg(b"Q", b"SELECT 1\0")
        h.from_client(ok + b"\x01\x00\x00\x00\x04")
        assert h.session.final is not None and b"invalid frontend message type 1" in h.session.final
        assert h.at_backend() == b""  # nothing of a chunk that broke the protocol is relayed
    _run(go)


def test_terminate_is_relayed_and_ends_the_session() -> None:
    def go(h: Harness) -> None:
        h.from_client(_msg(b"Q", b"SELECT 1\0") + _msg(b"X", b""))
        assert h.at_backend() == _msg(b"Q", b"SELECT 1\0") + _msg(b"X", b"")
        assert h.session.done.done() and h.session.final is None and not h.session.terminate_backend
    _run(go)


def test_backend_eof_gives_the_client_57P01() -> None:
    def go(h: Harness) -> None:
        h.backend.shutdown(socket.SHUT_WR)
        h.pump.on_backend_readable()
        assert h.session.final is not None and b"C57P01\0" in h.session.final
    _run(go)


def test_client_eof_terminates_the_backend() -> None:
    def go(h: Harness) -> None:
        h.client.shutdown(socket.SHUT_WR)
        h.pump.on_client_readable()
        assert h.session.done.done() and h.session.terminate_backend and h.session.final is None
    _run(go)


def test_a_dialect_exception_is_an_internal_error_not_a_crash() -> None:
    class Broken(PassThrough):
        def statement(self, session: Session, sql: str, *, extended: bool) -> Any:
            raise RuntimeError("boom")

    def go(h: Harness) -> None:
        h.from_client(_msg(b"Q", b"SELECT 1\0"))
        assert h.session.final is not None and b"CXX000\0" in h.session.final
        assert h.at_backend() == b""
    go.dialect = Broken()  # type: ignore[attr-defined]
    _run(go)


def test_large_bind_in_small_chunks_arrives_whole() -> None:
    big = _msg(b"B", b"\0s1\0\x00\x00\x00\x01" + struct.pack("!i", 3_000_000) + b"x" * 3_000_000 + b"\x00\x00")
    data = _msg(b"P", b"s1\0SELECT $1\0\x00\x00") + big + _msg(b"E", b"\0\0\0\0\0") + _msg(b"S", b"")

    def go(h: Harness) -> None:
        got = bytearray()
        for i in range(0, len(data), 65536):
            h.from_client(data[i:i + 65536])
            got += h.at_backend()
        assert bytes(got) == data
    _run(go)


def _small_buffers() -> Iterator[tuple[socket.socket, socket.socket]]:
    while True:
        a, b = socket.socketpair()
        for s in (a, b):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        yield a, b


def test_backpressure_pauses_the_source_and_loses_nothing() -> None:
    """A backend that does not read: the pump stops reading the client (want: client_read off,
    backend_write on), keeps the rest queued, and delivers it all once the backend reads again."""
    data = b"".join(_msg(b"d", bytes([i % 251]) * 1000) for i in range(600))  # 600 kB of CopyData

    async def main() -> None:
        pairs = _small_buffers()
        client, front_c = next(pairs)
        backend, front_b = next(pairs)
        cs, bs = native.SockStream(front_c), native.SockStream(front_b)
        conn = Conn(session=Session("c", "us-east-1", "postgres", "admin", None), backend_pid=1, backend_key=2, key=3)
        s = native.NativeSession(PassThrough(), conn, cs, bs)
        wants: list[tuple[bool, ...]] = []
        real_want = s.want

        def spy(*a: int) -> None:
            wants.append(tuple(bool(x) for x in a))
            real_want(*a)
        s.want = spy  # type: ignore[method-assign]
        s.pump = type(s.pump)(None, cs.fd, bs.fd, s)  # re-bind the pump to the spying handler
        s.pump.start()
        got = bytearray()
        client.setblocking(True)
        backend.setblocking(False)

        async def writer() -> None:
            await asyncio.get_running_loop().sock_sendall(client, data)

        async def reader() -> None:
            await asyncio.sleep(0.3)  # let the pump's queue fill up first
            while len(got) < len(data):
                try:
                    chunk = backend.recv(65536)
                except BlockingIOError:
                    await asyncio.sleep(0.001)
                    continue
                got.extend(chunk)

        client.setblocking(False)
        await asyncio.wait_for(asyncio.gather(writer(), reader()), 30)
        assert bytes(got) == data
        assert (False, False, True, True) in wants, wants  # paused the client while the backend was full
        assert wants[-1] == (True, False, True, False)  # and resumed
        s.want(0, 0, 0, 0)
        for x in (client, backend, front_c, front_b):
            x.close()

    asyncio.run(main())
