"""A tiny raw PostgreSQL-protocol client for fault tests (bytes the front must survive)."""

from __future__ import annotations

import socket
import ssl
import struct


def tls_socket(port: int, host: str, ca_file: str, *, timeout: float = 30.0) -> ssl.SSLSocket:
    """TCP to 127.0.0.1:port, SSLRequest, TLS with SNI ``host`` verified against the sandbox CA."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    raw.sendall(struct.pack("!ii", 8, 80877103))
    if raw.recv(1) != b"S":
        raise AssertionError("front refused SSLRequest")
    ctx = ssl.create_default_context(cafile=ca_file)
    return ctx.wrap_socket(raw, server_hostname=host)


def startup(user: str = "admin", database: str = "postgres") -> bytes:
    body = struct.pack("!i", 196608) + b"".join(k.encode() + b"\0" + v.encode() + b"\0"
                                                for k, v in (("user", user), ("database", database))) + b"\0"
    return struct.pack("!i", len(body) + 4) + body


def msg(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def read_msg(sock: socket.socket) -> tuple[bytes, bytes]:
    head = _exact(sock, 5)
    n = struct.unpack("!i", head[1:])[0]
    return head[:1], _exact(sock, n - 4)


def _exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError(f"connection closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def login(port: int, host: str, ca_file: str, token: str, user: str = "admin") -> tuple[ssl.SSLSocket, int]:
    """A logged-in session; returns (socket, backend pid)."""
    s = tls_socket(port, host, ca_file)
    s.sendall(startup(user))
    kind, body = read_msg(s)
    assert kind == b"R" and body == struct.pack("!i", 3), (kind, body)
    s.sendall(msg(b"p", token.encode() + b"\0"))
    pid = 0
    while True:
        kind, body = read_msg(s)
        if kind == b"E":
            raise AssertionError(f"login failed: {body!r}")
        if kind == b"K":
            pid = struct.unpack("!i", body[:4])[0]
        if kind == b"Z":
            return s, pid


def error_fields(body: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in body.rstrip(b"\0").split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode()
    return out


def read_until_closed(sock: socket.socket) -> list[tuple[bytes, bytes]]:
    """Every message until the server closes the connection."""
    got: list[tuple[bytes, bytes]] = []
    while True:
        try:
            got.append(read_msg(sock))
        except (EOFError, ConnectionError, ssl.SSLError, OSError):
            return got
