"""The few PostgreSQL v3 protocol messages the sandbox front must understand.

The front relays everything else byte for byte; this module only frames messages (so the front
knows where one ends) and decodes/encodes the handful it acts on: the startup packet, SSLRequest,
GSSENCRequest, CancelRequest, PasswordMessage, Query, Parse, Bind, Execute, CommandComplete,
ReadyForQuery, ErrorResponse and BackendKeyData. Reference: PostgreSQL docs, "Message Formats".
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from dsqlops.sandbox.hooks import SqlError

PROTOCOL_3 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102

#: Largest startup packet we accept (PostgreSQL uses 10,000 bytes).
MAX_STARTUP = 10_000
#: Largest ordinary message we accept from a client (PostgreSQL: 1 GiB for data; we cap lower).
MAX_MESSAGE = 256 * 1024 * 1024

_I32 = struct.Struct("!i")
_HDR = struct.Struct("!ci")


class ProtocolViolation(Exception):
    """The peer sent something that is not PostgreSQL protocol v3."""


def header(buf: bytes | bytearray | memoryview, pos: int) -> tuple[bytes, int]:
    """(type byte, length including the 4 length bytes) of the message starting at ``pos``."""
    t, n = _HDR.unpack_from(buf, pos)
    return t, n


def message(kind: bytes, body: bytes) -> bytes:
    return kind + _I32.pack(len(body) + 4) + body


def cstr(value: str) -> bytes:
    return value.encode("utf-8") + b"\0"


def read_cstr(body: bytes, pos: int) -> tuple[str, int]:
    end = body.index(b"\0", pos)
    return body[pos:end].decode("utf-8", "surrogateescape"), end + 1


# -- startup -----------------------------------------------------------------------------------
@dataclass
class Startup:
    code: int
    params: dict[str, str]
    cancel_pid: int = 0
    cancel_key: int = 0


def parse_startup(packet: bytes) -> Startup:
    """``packet`` is the whole startup packet including its 4-byte length."""
    if len(packet) < 8:
        raise ProtocolViolation("invalid length of startup packet")
    code = _I32.unpack_from(packet, 4)[0]
    if code in (SSL_REQUEST, GSSENC_REQUEST):
        return Startup(code, {})
    if code == CANCEL_REQUEST:
        if len(packet) != 16:
            raise ProtocolViolation("invalid length of cancel request")
        pid, key = struct.unpack_from("!ii", packet, 8)
        return Startup(code, {}, pid, key)
    if code >> 16 != 3:
        raise ProtocolViolation(f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}")
    params: dict[str, str] = {}
    body = packet[8:]
    pos = 0
    try:
        while pos < len(body) and body[pos] != 0:
            k, pos = read_cstr(body, pos)
            v, pos = read_cstr(body, pos)
            params[k] = v
    except ValueError:
        raise ProtocolViolation("invalid startup packet layout: expected terminator as last byte") from None
    return Startup(code, params)


def startup_packet(params: dict[str, str]) -> bytes:
    body = _I32.pack(PROTOCOL_3) + b"".join(cstr(k) + cstr(v) for k, v in params.items()) + b"\0"
    return _I32.pack(len(body) + 4) + body


# -- backend messages we emit ---------------------------------------------------------------------
def auth_cleartext() -> bytes:
    return message(b"R", _I32.pack(3))


def backend_key_data(pid: int, key: int) -> bytes:
    return message(b"K", struct.pack("!ii", pid, key))


def parse_backend_key_data(body: bytes) -> tuple[int, int]:
    pid, key = struct.unpack_from("!ii", body, 0)
    return pid, key


def ready_for_query(status: str) -> bytes:
    return message(b"Z", status.encode())


def error_response(err: SqlError) -> bytes:
    fields: list[tuple[str, str]] = [("S", err.severity), ("V", err.severity), ("C", err.sqlstate),
                                     ("M", err.message)]
    if err.detail:
        fields.append(("D", err.detail))
    if err.hint:
        fields.append(("H", err.hint))
    for k, v in err.fields.items():
        if k not in "SVCMDH":
            fields.append((k, v))
    return message(b"E", b"".join(k.encode() + cstr(v) for k, v in fields) + b"\0")


def parse_error_response(body: bytes) -> SqlError:
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(body) and body[pos] != 0:
        code = chr(body[pos])
        value, pos = read_cstr(body, pos + 1)
        fields[code] = value
    err = SqlError(sqlstate=fields.pop("C", "XX000"), message=fields.pop("M", ""),
                   severity=fields.pop("S", "ERROR"), detail=fields.pop("D", None), hint=fields.pop("H", None))
    fields.pop("V", None)
    err.fields = fields
    return err


def fatal(sqlstate: str, msg: str, hint: str | None = None) -> bytes:
    return error_response(SqlError(sqlstate=sqlstate, message=msg, severity="FATAL", hint=hint))


# -- frontend messages we inspect ----------------------------------------------------------------
def parse_password(body: bytes) -> str:
    return body.rstrip(b"\0").decode("utf-8", "replace")


def parse_query(body: bytes) -> str:
    return body[:-1].decode("utf-8", "surrogateescape") if body.endswith(b"\0") else \
        body.decode("utf-8", "surrogateescape")


def encode_query(sql: str) -> bytes:
    return message(b"Q", cstr_se(sql))


def cstr_se(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape") + b"\0"


@dataclass
class ParseMsg:
    name: str
    sql: str
    rest: bytes  # parameter type count + OIDs, kept verbatim


def parse_parse(body: bytes) -> ParseMsg:
    name, pos = read_cstr(body, 0)
    end = body.index(b"\0", pos)
    sql = body[pos:end].decode("utf-8", "surrogateescape")
    return ParseMsg(name, sql, bytes(body[end + 1:]))


def encode_parse(p: ParseMsg) -> bytes:
    return message(b"P", cstr_se(p.name) + cstr_se(p.sql) + p.rest)


def parse_bind_names(body: bytes) -> tuple[str, str]:
    """(portal, statement) of a Bind message."""
    portal, pos = read_cstr(body, 0)
    stmt, _ = read_cstr(body, pos)
    return portal, stmt


def parse_name(body: bytes) -> str:
    """The first C string of Execute (portal), or the name after the kind byte of Close/Describe."""
    return read_cstr(body, 0)[0]


def parse_command_tag(body: bytes) -> str:
    return body.rstrip(b"\0").decode("utf-8", "replace")
