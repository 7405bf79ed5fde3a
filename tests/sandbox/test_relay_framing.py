"""The relay's framing, byte-exact, whatever way the bytes are chunked (hypothesis)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsqlops.sandbox import protocol as P
from dsqlops.sandbox.hooks import Fail, Forward, PassThrough, Session, SqlError
from dsqlops.sandbox.relay import Conn, Relay, Segment, Writes


class _Transport:
    """Collects what the relay writes (a stand-in for a socket transport, not for a database)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, b: bytes) -> None:
        self.data += b

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def _relay(dialect: Any = None) -> tuple[Relay, _Transport, _Transport, asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    conn = Conn(session=Session("c", "us-east-1", "postgres", "admin", None), backend_pid=1, backend_key=2, key=3)
    client, backend = _Transport(), _Transport()
    relay = Relay(dialect or PassThrough(), conn, client, backend, loop=loop)  # type: ignore[arg-type]
    return relay, client, backend, loop


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


def _msg(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


backend_msgs = st.lists(st.one_of(
    st.binary(max_size=3000).map(lambda b: _msg(b"D", b)),
    st.just(_msg(b"T", b"\x00\x01id\x00" + b"\x00" * 18)),
    st.sampled_from([b"SELECT 1", b"INSERT 0 1", b"UPDATE 3"]).map(lambda t: _msg(b"C", t + b"\0")),
    st.sampled_from([b"I", b"T"]).map(lambda s: _msg(b"Z", s)),
    st.just(_msg(b"N", b"SNOTICE\0Mhello\0\0")),
), min_size=1, max_size=30)

client_msgs = st.lists(st.one_of(
    st.text(max_size=200).filter(lambda s: "\0" not in s).map(lambda s: _msg(b"Q", s.encode() + b"\0")),
    st.just(_msg(b"P", b"s1\0SELECT $1\0\x00\x00")),
    st.just(_msg(b"B", b"\0s1\0\x00\x00\x00\x01\x00\x00\x00\x01x\x00\x00")),
    st.just(_msg(b"E", b"\0\0\0\0\0")),
    st.just(_msg(b"S", b"")),
    st.just(_msg(b"H", b"")),
    st.binary(max_size=5000).map(lambda b: _msg(b"d", b)),
), min_size=1, max_size=30)


@settings(max_examples=150, deadline=None)
@given(backend_msgs, st.lists(st.integers(min_value=0, max_value=10**6), max_size=12))
def test_backend_bytes_pass_unchanged(msgs: list[bytes], cuts: list[int]) -> None:
    relay, client, _backend, loop = _relay()
    try:
        data = b"".join(msgs)
        for chunk in _chunks(data, cuts):
            relay.from_backend(chunk)
        assert bytes(client.data) == data
    finally:
        loop.close()


@settings(max_examples=150, deadline=None)
@given(client_msgs, st.lists(st.integers(min_value=0, max_value=10**6), max_size=12))
def test_client_bytes_pass_unchanged(msgs: list[bytes], cuts: list[int]) -> None:
    relay, _client, backend, loop = _relay()
    try:
        data = b"".join(msgs)
        for chunk in _chunks(data, cuts):
            relay.from_client(chunk)
        assert bytes(backend.data) == data
        assert not relay.done.done()
    finally:
        loop.close()


@settings(max_examples=150, deadline=None)
@given(backend_msgs, backend_msgs, st.lists(st.integers(min_value=0, max_value=10**6), max_size=12))
def test_output_of_the_fronts_own_exchange_never_reaches_the_client(own: list[bytes], answer: list[bytes],
                                                                    cuts: list[int]) -> None:
    """Whatever the backend answers to the front's own exchange (rows too) is dropped, however
    the bytes are chunked, and the client's answer that follows arrives byte for byte."""
    relay, client, _backend, loop = _relay()
    try:
        own = [m for m in own if m[:1] != b"Z"] + [_msg(b"Z", b"T")]
        answer = [m for m in answer if m[:1] != b"Z"] + [_msg(b"Z", b"I")]
        ended: list[Segment] = []
        relay.c.segments.append(Segment(suppress=True, injected=ended.append))
        relay.c.segments.append(Segment())
        for chunk in _chunks(b"".join(own + answer), cuts):
            relay.from_backend(chunk)
        assert len(ended) == 1 and not relay.c.segments
        assert bytes(client.data) == b"".join(answer)
    finally:
        loop.close()


class _Rewrite(PassThrough):
    def statement(self, session: Session, sql: str, *, extended: bool) -> Any:
        if sql == "COMMIT":
            return Fail(SqlError("40001", "change conflicts with another transaction (OC000)"), backend_sql="ROLLBACK")
        return Forward(sql.replace("old", "new"))


def test_rewrite_and_injected_error_across_chunks() -> None:
    relay, client, backend, loop = _relay(_Rewrite())
    try:
        q = _msg(b"Q", b"SELECT old\0") + _msg(b"Q", b"COMMIT\0")
        for i in range(len(q)):  # one byte at a time
            relay.from_client(q[i:i + 1])
        assert bytes(backend.data) == _msg(b"Q", b"SELECT new\0") + _msg(b"Q", b"ROLLBACK\0")
        answer = (_msg(b"T", b"\x00\x00") + _msg(b"D", b"\x00\x00") + _msg(b"C", b"SELECT 1\0") + _msg(b"Z", b"T")
                  + _msg(b"C", b"ROLLBACK\0") + _msg(b"Z", b"I"))
        for i in range(len(answer)):
            relay.from_backend(answer[i:i + 1])
        out = bytes(client.data)
        first = _msg(b"T", b"\x00\x00") + _msg(b"D", b"\x00\x00") + _msg(b"C", b"SELECT 1\0") + _msg(b"Z", b"T")
        assert out.startswith(first)
        rest = out[len(first):]
        assert rest[:1] == b"E" and b"C40001\0" in rest and b"ROLLBACK" not in rest
        assert rest.endswith(_msg(b"Z", b"I"))
    finally:
        loop.close()


def test_oversized_length_ends_the_session_with_08P01() -> None:
    relay, _client, _backend, loop = _relay()
    try:
        relay.from_client(b"Q" + struct.pack("!i", P.MAX_MESSAGE + 10))
        assert relay.done.done() and relay.final is not None
        assert b"C08P01\0" in relay.final
        assert relay.terminate_backend
    finally:
        loop.close()


def test_large_bind_in_small_chunks_arrives_whole() -> None:
    relay, _client, backend, loop = _relay()
    try:
        big = _msg(b"B", b"\0s1\0\x00\x00\x00\x01" + struct.pack("!i", 3_000_000) + b"x" * 3_000_000 + b"\x00\x00")
        data = _msg(b"P", b"s1\0SELECT $1\0\x00\x00") + big + _msg(b"E", b"\0\0\0\0\0") + _msg(b"S", b"")
        for i in range(0, len(data), 4096):
            relay.from_client(data[i:i + 4096])
        assert bytes(backend.data) == data
    finally:
        loop.close()


@pytest.mark.parametrize("kind, body", [
    (b"P", b"stmt-without-terminator"),           # statement name never ends
    (b"P", b"s1\0SELECT 1"),                       # query text never ends
    (b"B", b"portal\0"),                           # no statement name
    (b"E", b"no-terminator"),                      # Execute's portal name never ends
])
def test_malformed_extended_message_is_08P01_with_one_log_line(kind: bytes, body: bytes,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    relay, _client, backend, loop = _relay()
    try:
        with caplog.at_level(logging.DEBUG, logger="dsqlops.sandbox"):
            relay.from_client(_msg(kind, body))
        assert relay.done.done()
        err = P.parse_error_response(bytes(relay.final or b"")[5:])
        assert (err.severity, err.sqlstate) == ("FATAL", "08P01") and "invalid message format" in err.message
        records = [r for r in caplog.records if r.name.startswith("dsqlops")]
        assert len(records) == 1 and records[0].exc_info is None and "\n" not in records[0].getMessage()
        assert bytes(backend.data) == b""  # nothing of it reached the backend
    finally:
        loop.close()


def test_function_call_goes_through_the_dialect() -> None:
    from dsqlops.sandbox.dialect import FUNCTION_CALL_REFUSED, DsqlDialect

    fcall = _msg(b"F", struct.pack("!iHHiHi", 764, 0, 1, 4, 0, 0))  # lo_open-like: oid, formats, one arg
    relay, client, backend, loop = _relay(DsqlDialect())
    try:
        relay.from_client(fcall)
        assert bytes(backend.data)[:1] == b"Q"  # a statement raising the refusal, not the call
        relay.from_backend(_msg(b"E", b"SERROR\0C0A000\0Mwhatever the backend said\0\0") + _msg(b"Z", b"I"))
        out = bytes(client.data)
        assert out[:1] == b"E" and out.endswith(_msg(b"Z", b"I"))
        err = P.parse_error_response(out[5:1 + struct.unpack("!i", out[1:5])[0]])
        assert (err.sqlstate, err.message) == ("0A000", FUNCTION_CALL_REFUSED)
    finally:
        loop.close()
    relay, client, backend, loop = _relay()  # a dialect that allows it: relayed as is
    try:
        relay.from_client(fcall)
        assert bytes(backend.data) == fcall
    finally:
        loop.close()


def test_age_reached_closes_an_idle_session_at_once() -> None:
    relay, _client, _backend, loop = _relay()
    try:
        relay.age_reached(grace=300)
        assert relay.done.done() and relay.terminate_backend and relay.final is None  # closed, no error
    finally:
        loop.close()


def test_age_reached_lets_the_open_transaction_end_first() -> None:
    relay, client, _backend, loop = _relay()
    try:
        relay.from_client(_msg(b"Q", b"BEGIN\0"))
        relay.from_backend(_msg(b"C", b"BEGIN\0") + _msg(b"Z", b"T"))
        relay.age_reached(grace=300)
        assert not relay.done.done()  # inside a transaction: not yet
        relay.from_client(_msg(b"Q", b"COMMIT\0"))
        relay.from_backend(_msg(b"C", b"COMMIT\0") + _msg(b"Z", b"I"))
        assert bytes(client.data).endswith(_msg(b"Z", b"I"))  # the client got the COMMIT's answer...
        assert relay.done.done() and relay.final is None  # ...then the session closed
    finally:
        loop.close()


def test_hide_machinery_keeps_the_clients_own_context() -> None:
    from dsqlops.sandbox.relay import hide_machinery

    plain = SqlError("23505", "duplicate key", fields={"W": 'SQL function "f" statement 1'})
    assert hide_machinery(plain) is plain
    mixed = SqlError("42703", 'column "nope" does not exist', fields={
        "W": 'SQL function "f" statement 1\nPL/pgSQL function inline_code_block line 1 at EXECUTE',
        "q": "ALTER TABLE t DROP COLUMN nope", "R": "exec_stmt_dynexecute", "F": "pl_exec.c", "L": "1"})
    out = hide_machinery(mixed)
    assert out.fields == {"W": 'SQL function "f" statement 1'} and out.message == mixed.message


@settings(max_examples=60, deadline=None)
@given(client_msgs, backend_msgs, st.lists(st.integers(min_value=0, max_value=10**6), max_size=12))
def test_batched_writes_leave_in_order_once_the_loop_has_read_its_input(
        to_backend: list[bytes], to_client: list[bytes], cuts: list[int]) -> None:
    """With the front's batched writes, nothing is written while the loop still handles input;
    then each transport gets its bytes whole and in order, for every session of the loop."""
    loop = asyncio.new_event_loop()
    try:
        writes = Writes(loop)
        pairs = []
        for _ in range(2):
            conn = Conn(session=Session("c", "us-east-1", "postgres", "admin", None), backend_pid=1,
                        backend_key=2, key=3)
            client, backend = _Transport(), _Transport()
            relay = Relay(PassThrough(), conn, client, backend, loop=loop, writes=writes)  # type: ignore[arg-type]
            pairs.append((relay, client, backend))
        up, down = b"".join(to_backend), b"".join(to_client)
        for relay, _c, _b in pairs:
            for chunk in _chunks(up, cuts):
                relay.from_client(chunk)
            for chunk in _chunks(down, cuts):
                relay.from_backend(chunk)
        assert all(not c.data and not b.data for _r, c, b in pairs)
        loop.run_until_complete(asyncio.sleep(0))
        for _relay, client, backend in pairs:
            assert bytes(backend.data) == up and bytes(client.data) == down
    finally:
        loop.close()


def test_batched_writes_still_pending_go_out_before_the_session_closes() -> None:
    loop = asyncio.new_event_loop()
    try:
        conn = Conn(session=Session("c", "us-east-1", "postgres", "admin", None), backend_pid=1, backend_key=2, key=3)
        client, backend = _Transport(), _Transport()
        relay = Relay(PassThrough(), conn, client, backend, loop=loop, writes=Writes(loop))  # type: ignore[arg-type]
        q = _msg(b"Q", b"SELECT 1\0")
        relay.from_client(q + _msg(b"X", b""))  # Terminate: the session ends with the Query still queued
        assert relay.done.done() and not backend.data
        closing = relay.flush_and_close()  # run at once, before the loop's own flush could
        with pytest.raises(StopIteration):
            closing.send(None)
        assert bytes(backend.data).startswith(q) and backend.closed and client.closed
    finally:
        loop.close()
