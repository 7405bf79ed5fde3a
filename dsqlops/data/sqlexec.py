"""Run user SQL for ``dsqlops sql``: split a script into statements, run them in order, return rows.

DSQL refuses two DDL statements (or DDL mixed with DML) in one transaction, and a multi-statement
simple query is one implicit transaction (conformance ``multi_two_ddl`` → 0A000). So a script is
split by :mod:`dsqlops.sqllex` (quotes, ``E''`` strings, quoted identifiers, dollar quoting, ``--`` and
nested ``/* */`` comments are respected) and each statement is sent on its own in autocommit mode, like psql does.
Explicit ``BEGIN … COMMIT`` in the script still group statements.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dsqlops import sqllex
from dsqlops.errors import ServiceError, UsageError

if TYPE_CHECKING:
    import psycopg

@dataclass(frozen=True)
class Statement:
    text: str
    #: 1-based line of the statement's first character in the script.
    line: int


@dataclass
class StatementResult:
    statement: int
    line: int
    status: str | None
    rowcount: int
    columns: list[str] | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"statement": self.statement, "line": self.line, "status": self.status, "rowcount": self.rowcount,
                "columns": self.columns, "rows": self.rows}


def split_statements(script: str) -> list[Statement]:
    """Split on top-level semicolons (:func:`dsqlops.sqllex.split`); drop statements that are only
    white space and comments. A statement's text runs from its first token to its ``;``, so a
    trailing comment stays with it."""
    try:
        pieces = sqllex.split(script)
    except sqllex.SqlSyntaxError as e:
        raise UsageError(f"{e} starting on line {e.line_in(script)}") from None
    out: list[Statement] = []
    for piece in pieces:
        if piece.tokens:
            end = piece.semicolon if piece.semicolon is not None else piece.end
            out.append(Statement(script[piece.code_start:end].strip(), sqllex.line_of(script, piece.code_start)))
    return out


def _columns(names: list[str]) -> list[str]:
    """Column names as dict keys; duplicates (``SELECT 1, 1``) get ``_2``, ``_3``…"""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        if name in seen:
            seen[name] += 1
            k = seen[name]
            candidate = f"{name}_{k}"
            while candidate in seen:
                k += 1
                candidate = f"{name}_{k}"
            seen[candidate] = 1
            out.append(candidate)
        else:
            seen[name] = 1
            out.append(name)
    return out


class StatementFailed(ServiceError):
    """A statement of a ``sql`` run failed. ``sqlstate`` mirrors ``code`` so that the OCC retry
    helper classifies it like the psycopg error it came from."""

    def __init__(self, message: str, *, code: str | None, hint: str | None = None):
        super().__init__(message, code=code, hint=hint)
        self.sqlstate = code


#: psycopg's placeholder grammar (``%s``, ``%(name)s``, ``%%``; formats s/b/t), read as it reads it.
_PLACEHOLDER_RE = re.compile(r"%(?:\(([^)]*)\)(.)?|(.)?)", re.S)


def _check_utf8(value: Any, what: str) -> None:
    """Refuse text that cannot go on the wire as UTF-8 (lone surrogates: JSON ``"\\ud800"``, or
    undecodable argv bytes that Python keeps as surrogate escapes)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise UsageError(f"{what} is not valid UTF-8 (character {e.start + 1}: "
                             f"{value[e.start:e.end].encode('utf-8', 'backslashreplace').decode()})") from None
    elif isinstance(value, list):
        for v in value:
            _check_utf8(v, what)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_utf8(k, what)
            _check_utf8(v, what)


def check_bindable(statements: list[Statement], params: Any) -> None:
    """Refuse, before connecting, SQL and ``--params`` that the driver could not send:
    text that is not UTF-8, placeholders that do not match the parameters' shape or count."""
    for st in statements:
        _check_utf8(st.text, f"the statement at line {st.line}")
    if params is None:
        return
    _check_utf8(params, "--params")
    if len(statements) != 1:
        raise UsageError("--params needs exactly one statement")
    names: list[str] = []
    positional = 0
    for m in _PLACEHOLDER_RE.finditer(statements[0].text):
        fmt = m[2] if m[1] is not None else m[3]
        if m[1] is None and fmt == "%":
            continue
        if fmt not in ("s", "b", "t") or (m[1] is not None and not m[1]):
            raise UsageError(f"bad placeholder {m[0]!r} in the statement: use %s or %(name)s, and %% for a "
                             "literal %")
        if m[1] is not None:
            names.append(m[1])
        else:
            positional += 1
    if names and positional:
        raise UsageError("the statement mixes %s and %(name)s placeholders; use one style")
    if isinstance(params, dict):
        if positional:
            raise UsageError("--params is a JSON object but the statement uses %s placeholders",
                             hint="pass a JSON array, e.g. --params '[42]'")
        missing = sorted(set(names) - set(params))
        if missing:
            raise UsageError(f"--params has no value for %({missing[0]})s")
    else:
        if names:
            raise UsageError("--params is a JSON array but the statement uses %(name)s placeholders",
                             hint="pass a JSON object, e.g. --params '{\"id\": 42}'")
        if len(params) != positional:
            raise UsageError(f"the statement has {positional} %s placeholder(s) but --params has "
                             f"{len(params)} value(s)")


_TX_CONTROL_RE = re.compile(r"(?is)^\s*(begin|commit|rollback|end|abort|start\s+transaction|savepoint|release)\b")


def run_statements(conn: psycopg.Connection[Any], statements: list[Statement], *,
                   params: Any = None, single_transaction: bool = False) -> list[StatementResult]:
    """Run ``statements`` in order on ``conn``.

    By default ``conn`` is in autocommit mode and each statement is its own transaction (unless
    the script opens one). With ``single_transaction`` the caller runs this inside one transaction
    (``run_transaction``) and the script must not contain transaction control. The first failure
    stops the run with :class:`StatementFailed` carrying the SQLSTATE and saying which earlier
    statements already took effect."""
    import psycopg

    if params is not None and len(statements) != 1:
        raise UsageError("--params needs exactly one statement")
    if single_transaction:
        for st in statements:
            if _TX_CONTROL_RE.match(st.text):
                raise UsageError(f"line {st.line}: transaction control ({st.text.split()[0]}) is not allowed "
                                 "with --single-transaction")
    results: list[StatementResult] = []
    for idx, st in enumerate(statements, 1):
        try:
            with conn.cursor() as cur:
                cur.execute(st.text.encode("utf-8") if params is None else st.text, params)
                cols = _columns([d.name for d in cur.description]) if cur.description else None
                rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()] if cols is not None else []
                results.append(StatementResult(idx, st.line, cur.statusmessage, cur.rowcount, cols, rows))
        except psycopg.Error as e:
            code = getattr(e, "sqlstate", None)
            diag = getattr(e, "diag", None)
            text = str(e).strip()
            first = (text.splitlines() or [type(e).__name__])[0]
            where = f"statement {idx} (line {st.line})" if len(statements) > 1 else "statement"
            done = ""
            if single_transaction:
                done = "; the transaction was rolled back, nothing was committed" if len(statements) > 1 else ""
            elif idx > 1:
                done = (f"; statements 1-{idx - 1} already ran" if not conn.info.transaction_status
                        else f"; statements 1-{idx - 1} ran, the open transaction is rolled back")
            raise StatementFailed(f"{where} failed: {code or 'error'}: {first}{done}", code=code,
                                  hint=getattr(diag, "message_hint", None) if diag is not None else None) from e
    return results
