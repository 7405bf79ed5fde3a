"""The contract between the DSQL wire front (``front.py``) and the DSQL dialect (``dialect.py``).

The front relays PostgreSQL protocol bytes between a client and a real PostgreSQL backend and
parses only startup, auth, Query/Parse/Bind/Execute/Sync, CommandComplete, ReadyForQuery and
ErrorResponse. For every statement text the client sends (a simple ``Query`` or an extended
``Parse``), the front asks the dialect what to do with :meth:`Dialect.statement`:

* :class:`Forward` — send this text to the backend (the client's text, or a rewrite of it; a
  rewrite must take the same parameters ``$1…`` as the original).
* :class:`Fail` — the client must see ``error``. If ``backend_sql`` is None, the front forwards a
  statement that raises exactly this error inside the backend (a ``DO`` block with
  ``RAISE … USING ERRCODE``), so the backend's transaction state matches what the client sees
  (an error inside a transaction block aborts it, as in PostgreSQL and DSQL). If ``backend_sql`` is
  given (e.g. ``"ROLLBACK"`` for a COMMIT that must fail with 40001), the front sends that text
  instead and replaces its successful result with ``error``.

The front also reports what the backend answered: :meth:`Dialect.completed` (each CommandComplete
tag), :meth:`Dialect.backend_error` (each ErrorResponse, which the dialect may rewrite into DSQL's
SQLSTATE/wording, e.g. PostgreSQL's serialization failure into ``40001 … (OC000)``) and
:meth:`Dialect.ready` (each ReadyForQuery status: ``I`` idle, ``T`` in a transaction, ``E`` failed).

Additive extensions for the DSQL dialect (both default to "off", so a front that ignores
them still works, only less faithfully):

* ``Forward.tags`` — CommandComplete tag overrides. DSQL answers ``CREATE INDEX ASYNC`` with a
  ``job_id`` row *and* the tag ``CREATE INDEX``, and ``SHOW server_version`` with ``16.15`` and the
  tag ``SHOW``; the dialect rewrites those into a ``SELECT`` and asks the front to replace the
  ``SELECT n`` tag. Entry *i* applies to the *i*-th CommandComplete the backend sends for the
  statements of ``sql`` (a simple Query may hold several; an extended Parse holds one, and its
  single entry applies to every Execute of that prepared statement). ``None`` keeps the tag.
  Rows and RowDescription pass through untouched.
* ``SqlError.conceal_tag`` — set by :meth:`Dialect.backend_error` for a write that PostgreSQL
  refused because another open transaction holds the row (lock_timeout, 55P03) or changed it
  (40001). DSQL never blocks a writer: the statement succeeds and the transaction fails at
  COMMIT. When ``conceal_tag`` is set the front does NOT relay this ErrorResponse: it sends the
  client ``CommandComplete(conceal_tag)`` instead, and turns the ``E`` of the ReadyForQuery that
  ends this exchange into ``T`` (the dialect still gets ``ready(session, "E")``). The dialect has
  marked the transaction doomed and answers its COMMIT with ``Fail(40001…, backend_sql="ROLLBACK")``.
  A front that cannot conceal (e.g. the client pipelined more statements before its Sync) relays
  the error as given (already rewritten to 40001 OC000), which is the honest fallback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class SqlError:
    """An ErrorResponse. ``fields`` holds any other PostgreSQL error fields by their one-letter code."""

    sqlstate: str
    message: str
    severity: str = "ERROR"
    detail: str | None = None
    hint: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    #: See the module docstring: answer the client with this CommandComplete tag instead of the error.
    conceal_tag: str | None = None


@dataclass
class Session:
    """One client connection, as the front knows it after authentication."""

    cluster_id: str
    region: str
    database: str           # the backend database that holds this cluster's data
    user: str               # the PostgreSQL role the client logged in as ('admin' or a mapped role)
    iam_arn: str | None     # the caller's IAM identity (an assumed-role session counts as its role ARN)
    backend_pid: int | None = None
    txn_status: str = "I"   # from the last ReadyForQuery: I, T or E
    #: Scratch space owned by the dialect (transaction bookkeeping, OCC state…).
    state: dict[str, Any] = field(default_factory=dict)


@dataclass
class Forward:
    sql: str
    #: Optional CommandComplete tag overrides, one per statement of ``sql`` (see the module docstring).
    tags: list[str | None] | None = None


@dataclass
class Fail:
    error: SqlError
    backend_sql: str | None = None


Action = Forward | Fail


class Dialect(Protocol):
    def statement(self, session: Session, sql: str, *, extended: bool) -> Action: ...

    def completed(self, session: Session, tag: str) -> None: ...

    def backend_error(self, session: Session, error: SqlError) -> SqlError: ...

    def ready(self, session: Session, status: str) -> None: ...


class PassThrough:
    """A dialect that changes nothing (plain PostgreSQL behind TLS and IAM auth)."""

    def statement(self, session: Session, sql: str, *, extended: bool) -> Action:
        return Forward(sql)

    def completed(self, session: Session, tag: str) -> None:
        return None

    def backend_error(self, session: Session, error: SqlError) -> SqlError:
        return error

    def ready(self, session: Session, status: str) -> None:
        session.txn_status = status
