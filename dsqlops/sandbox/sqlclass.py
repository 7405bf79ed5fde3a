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

_IDENT_START = r"A-Za-z_\u0080-\uffff"
_DOLLAR_TAG = re.compile(rf"\$([{_IDENT_START}][{_IDENT_START}0-9]*)?\$")
#: One token per match, tried in order (the statement text is scanned once, token by token).
_TOKEN = re.compile(rf"""
  (?P<ws>\s+)
| (?P<lc>--[^\n]*)
| (?P<bc>/\*)
| (?P<estr>[eE]'(?:[^'\\]|\\.|'')*')
| (?P<str>(?:[bBxXnN]|[uU]&)?'(?:[^']|'')*')
| (?P<qid>(?:[uU]&)?"(?:[^"]|"")*")
| (?P<param>\$\d+)
| (?P<dollar>\$(?:[{_IDENT_START}][{_IDENT_START}0-9]*)?\$)
| (?P<word>[{_IDENT_START}][{_IDENT_START}0-9$]*)
| (?P<num>\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)
| (?P<semi>;)
| (?P<cast>::)
| (?P<op>(?:[+*<>=~!@\#%^&|`?]|-(?!-)|/(?!\*))+)
| (?P<other>.)
""", re.X | re.S)
_KIND = {"estr": STRING, "str": STRING, "qid": QIDENT, "param": PARAM, "word": WORD, "num": NUMBER, "semi": SEMI,
         "cast": OP, "op": OP, "other": OP}


class Token:
    __slots__ = ("end", "kind", "start", "text")

    def __init__(self, kind: str, text: str, start: int, end: int) -> None:
        self.kind = kind
        self.text = text      # the original text of the token
        self.start = start
        self.end = end

    def __repr__(self) -> str:
        return f"Token({self.kind!r}, {self.text!r}, {self.start}, {self.end})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Token) and (self.kind, self.text, self.start, self.end) == (
            other.kind, other.text, other.start, other.end)

    def __hash__(self) -> int:
        return hash((self.kind, self.text, self.start, self.end))

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
    pos, n = 0, len(sql)
    match = _TOKEN.match
    while pos < n:
        m = match(sql, pos)
        assert m is not None  # 'other' matches any character
        kind = m.lastgroup
        end = m.end()
        if kind == "ws" or kind == "lc":
            pos = end
            continue
        if kind == "bc":
            depth, j = 1, end
            while depth:
                o, c = sql.find("/*", j), sql.find("*/", j)
                if c < 0:
                    raise SqlSyntaxError("unterminated /* comment")
                if 0 <= o < c:
                    depth, j = depth + 1, o + 2
                else:
                    depth, j = depth - 1, c + 2
            pos = j
            continue
        if kind == "dollar":
            tag = m.group(0)
            close = sql.find(tag, end)
            if close < 0:
                raise SqlSyntaxError("unterminated dollar-quoted string")
            end = close + len(tag)
            out.append(Token(STRING, sql[pos:end], pos, end))
            pos = end
            continue
        if kind == "other" and sql[pos] in "'\"":
            raise SqlSyntaxError("unterminated quoted string or identifier")
        out.append(Token(_KIND[kind or "other"], m.group(0), pos, end))
        pos = end
    return out


@dataclass
class Statement:
    """One statement of a (possibly multi-statement) query string."""

    text: str                    # the statement's text, without the terminating ';'
    tokens: list[Token]          # offsets relative to ``text``
    start: int = 0               # offset of ``text`` in the whole query string
    words: list[str] = field(default_factory=list)   # upper-cased leading keywords (WORD tokens only)
    _upper: list[str] | None = field(default=None, repr=False, compare=False)
    _depth: list[int] | None = field(default=None, repr=False, compare=False)
    kind: str | None = field(default=None, repr=False, compare=False)   # classify()'s answer, cached

    def kw(self, i: int) -> str:
        """The i-th token upper-cased ('' past the end)."""
        return self.tokens[i].upper if i < len(self.tokens) else ""

    def starts(self, *words: str) -> bool:
        return len(self.tokens) >= len(words) and all(
            self.tokens[i].kind == WORD and self.tokens[i].upper == w for i, w in enumerate(words))

    def _index(self) -> tuple[list[str], list[int]]:
        """Upper-cased words ('\0' for other tokens) and each token's parenthesis depth (cached)."""
        if self._upper is None:
            self._upper = [t.text.upper() if t.kind == WORD else "\0" for t in self.tokens]
            depths = []
            depth = 0
            for t in self.tokens:
                if t.text == "(":
                    depth += 1
                depths.append(depth)
                if t.text == ")":
                    depth -= 1
            self._depth = depths
        assert self._depth is not None
        return self._upper, self._depth

    def find_seq(self, *words: str, start: int = 0, depth0: bool = False) -> int:
        """Index of the first occurrence of the keyword sequence ``words``, or -1."""
        upper, depths = self._index()
        first, n, want = words[0], len(words), list(words)
        i = start
        while True:
            try:
                i = upper.index(first, i)
            except ValueError:
                return -1
            if (n == 1 or upper[i:i + n] == want) and (not depth0 or depths[i] == 0):
                return i
            i += 1

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
        rel = list(cur) if s == 0 else [Token(t.kind, t.text, t.start - s, t.end - s) for t in cur]
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
    if stmt.kind is None:
        stmt.kind = _classify(stmt)
    return stmt.kind


def _classify(stmt: Statement) -> str:
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
