"""A light SQL tokenizer and statement classifier for the DSQL dialect (no full parser).

The tokenizer understands exactly what is needed to find statement boundaries and keywords
safely: single-quoted strings (with ``''`` and ``E''`` escapes), double-quoted identifiers,
dollar-quoted bodies (``$$…$$``, ``$tag$…$tag$``), ``--`` and nested ``/* */`` comments,
positional parameters (``$1``), numbers, words and operators. Every token keeps its offsets in
the original text, so rewrites slice the client's text instead of re-printing it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

WORD, QIDENT, STRING, NUMBER, PARAM, OP, SEMI = "word", "qident", "string", "number", "param", "op", ";"

_WORD_START = re.compile(r"[A-Za-z_\u0080-\uffff]")
_WORD_CHAR = re.compile(r"[A-Za-z0-9_$\u0080-\uffff]*")
_NUMBER = re.compile(r"(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$")
_OP_CHARS = set("+-*/<>=~!@#%^&|`?")


@dataclass(frozen=True)
class Token:
    kind: str
    text: str     # the original text of the token
    start: int
    end: int

    @property
    def upper(self) -> str:
        """Keywords compare case-insensitively; other tokens compare by their text."""
        return self.text.upper() if self.kind == WORD else self.text

    @property
    def ident(self) -> str:
        """The identifier this token names (unquoted words fold to lower case)."""
        if self.kind == QIDENT:
            return self.text[1:-1].replace('""', '"')
        return self.text.lower()

    @property
    def string_value(self) -> str:
        """The value of a plain or E'' string literal (escapes of E'' strings are not decoded)."""
        t = self.text
        if t[:1] in "eEnN" and t[1:2] == "'":
            t = t[1:]
        if t.startswith("'"):
            return t[1:-1].replace("''", "'")
        m = _DOLLAR_TAG.match(t)
        if m:
            return t[m.end(): len(t) - len(m.group(0))]
        return t


class SqlSyntaxError(ValueError):
    """Unterminated quote or comment: the backend will report it; the dialect passes it through."""


def tokenize(sql: str) -> list[Token]:
    out: list[Token] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c.isspace():
            i += 1
            continue
        if sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if sql.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            if depth:
                raise SqlSyntaxError("unterminated /* comment")
            i = j
            continue
        if c == "'" or (c in "eEnNbBxXuU" and sql.startswith("'", i + 1)):
            j = i + 1 if c == "'" else i + 2
            escapes = c in "eE"
            while True:
                if j >= n:
                    raise SqlSyntaxError("unterminated quoted string")
                if escapes and sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == "'":
                    if sql.startswith("''", j):
                        j += 2
                        continue
                    break
                j += 1
            out.append(Token(STRING, sql[i:j + 1], i, j + 1))
            i = j + 1
            continue
        if c == '"' or (c in "uU" and sql.startswith('&"', i + 1)):
            j = i + 1 if c == '"' else i + 3
            while True:
                j = sql.find('"', j)
                if j < 0:
                    raise SqlSyntaxError("unterminated quoted identifier")
                if sql.startswith('""', j):
                    j += 2
                    continue
                break
            out.append(Token(QIDENT, sql[i:j + 1], i, j + 1))
            i = j + 1
            continue
        if c == "$":
            m = re.compile(r"\$\d+").match(sql, i)
            if m:
                out.append(Token(PARAM, m.group(0), i, m.end()))
                i = m.end()
                continue
            m = _DOLLAR_TAG.match(sql, i)
            if m:
                close = sql.find(m.group(0), m.end())
                if close < 0:
                    raise SqlSyntaxError("unterminated dollar-quoted string")
                end = close + len(m.group(0))
                out.append(Token(STRING, sql[i:end], i, end))
                i = end
                continue
        if _WORD_START.match(c):
            m = _WORD_CHAR.match(sql, i + 1)
            end = m.end() if m else i + 1
            out.append(Token(WORD, sql[i:end], i, end))
            i = end
            continue
        if c.isdigit() or (c == "." and i + 1 < n and sql[i + 1].isdigit()):
            m = _NUMBER.match(sql, i)
            assert m is not None
            out.append(Token(NUMBER, m.group(0), i, m.end()))
            i = m.end()
            continue
        if c == ";":
            out.append(Token(SEMI, c, i, i + 1))
            i += 1
            continue
        if c in _OP_CHARS:
            j = i
            while j < n and sql[j] in _OP_CHARS and not sql.startswith("--", j) and not sql.startswith("/*", j):
                j += 1
            out.append(Token(OP, sql[i:j], i, j))
            i = j
            continue
        if c == ":" and sql.startswith("::", i):
            out.append(Token(OP, "::", i, i + 2))
            i += 2
            continue
        out.append(Token(OP, c, i, i + 1))  # ( ) , . [ ] :
        i += 1
    return out


@dataclass
class Statement:
    """One statement of a (possibly multi-statement) query string."""

    text: str                    # the statement's text, without the terminating ';'
    tokens: list[Token]          # offsets relative to ``text``
    start: int = 0               # offset of ``text`` in the whole query string
    words: list[str] = field(default_factory=list)   # upper-cased leading keywords (WORD tokens only)

    def kw(self, i: int) -> str:
        """The i-th token upper-cased ('' past the end)."""
        return self.tokens[i].upper if i < len(self.tokens) else ""

    def starts(self, *words: str) -> bool:
        return len(self.tokens) >= len(words) and all(
            self.tokens[i].kind == WORD and self.tokens[i].upper == w for i, w in enumerate(words))

    def find_seq(self, *words: str, start: int = 0, depth0: bool = False) -> int:
        """Index of the first occurrence of the keyword sequence ``words``, or -1."""
        depth = 0
        toks = self.tokens
        for i in range(len(toks)):
            t = toks[i]
            if t.text == "(":
                depth += 1
            elif t.text == ")":
                depth -= 1
            if i < start or (depth0 and depth != 0):
                continue
            if all(i + k < len(toks) and toks[i + k].kind == WORD and toks[i + k].upper == w
                   for k, w in enumerate(words)):
                return i
        return -1

    def has_param(self) -> bool:
        return any(t.kind == PARAM for t in self.tokens)


def split_statements(sql: str) -> list[Statement]:
    """Split on top-level ';' (empty statements are dropped). Raises SqlSyntaxError."""
    toks = tokenize(sql)
    out: list[Statement] = []
    cur: list[Token] = []

    def flush() -> None:
        if not cur:
            return
        s, e = cur[0].start, cur[-1].end
        text = sql[s:e]
        rel = [Token(t.kind, t.text, t.start - s, t.end - s) for t in cur]
        out.append(Statement(text, rel, s, [t.upper for t in rel if t.kind == WORD][:8]))
        cur.clear()

    # A ';' inside parentheses cannot end a statement (e.g. inside CREATE RULE … DO (…;…)).
    depth = 0
    for t in toks:
        if t.text == "(":
            depth += 1
        elif t.text == ")":
            depth = max(0, depth - 1)
        if t.kind == SEMI and depth == 0:
            flush()
            continue
        cur.append(t)
    flush()
    return out


# -- classification ------------------------------------------------------------------------------
TXN, DDL, DML, READ, UTILITY = "txn", "ddl", "dml", "read", "utility"

_DDL_VERBS = {"CREATE", "ALTER", "DROP", "GRANT", "REVOKE", "COMMENT", "SECURITY", "REINDEX", "CLUSTER",
              "REFRESH", "IMPORT", "AWS"}
_DML_VERBS = {"INSERT", "UPDATE", "DELETE", "MERGE", "COPY"}
_TXN_VERBS = {"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE", "PREPARE"}
_READ_VERBS = {"SELECT", "VALUES", "TABLE", "SHOW", "EXPLAIN", "FETCH", "DECLARE", "MOVE", "CLOSE"}


def classify(stmt: Statement) -> str:
    """One of TXN, DDL, DML, READ, UTILITY (SET, CALL, ANALYZE, DO, LISTEN…)."""
    v = stmt.kw(0)
    if v in _TXN_VERBS:
        if v == "PREPARE" and stmt.kw(1) != "TRANSACTION":
            return UTILITY
        return TXN
    if v in _DDL_VERBS:
        return DDL
    if v in _DML_VERBS:
        if v == "COPY" and stmt.find_seq("TO") >= 0 and stmt.find_seq("FROM") < 0:
            return READ
        return DML
    if v == "WITH":
        # A data-modifying CTE or a DML main statement makes it DML.
        toks = stmt.tokens
        for k, t in enumerate(toks):
            if t.kind == WORD and t.upper in ("INSERT", "UPDATE", "DELETE", "MERGE"):
                prev = toks[k - 1].upper if k else ""
                if t.upper == "UPDATE" and prev in ("FOR", "KEY", "DO"):
                    continue  # FOR [NO KEY] UPDATE, ON CONFLICT DO UPDATE
                return DML
        return READ
    if v in _READ_VERBS or v == "(":
        if v == "SELECT" and stmt.find_seq("INTO", depth0=True) >= 0 and stmt.find_seq("FROM", depth0=True) > 0:
            # SELECT … INTO new_table is a CREATE TABLE AS.
            into = stmt.find_seq("INTO", depth0=True)
            if into < stmt.find_seq("FROM", depth0=True):
                return DDL
        return READ
    return UTILITY


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def dollar_quote(body: str) -> str:
    """``body`` as a dollar-quoted literal with a tag that does not occur in it."""
    n = 0
    while True:
        tag = f"$q{n}$" if n else "$q$"
        if tag not in body:
            return f"{tag}{body}{tag}"
        n += 1
