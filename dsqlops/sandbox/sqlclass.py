"""Statement classification for the DSQL dialect (no full parser), on the shared lexer.

Tokens, their offsets and the statement boundaries come from :mod:`dsqlops.sqllex` (quotes,
``E''`` strings, dollar quoting, nested comments). Every token keeps its offsets in the original
text, so rewrites slice the client's text instead of re-printing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dsqlops.sqllex import NUMBER, OP, PARAM, QIDENT, SEMI, STRING, WORD, SqlSyntaxError, Token, split, tokenize

__all__ = ["DDL", "DML", "NUMBER", "OP", "PARAM", "QIDENT", "READ", "SEMI", "STRING", "TXN", "UTILITY", "WORD",
           "SqlSyntaxError", "Statement", "Token", "classify", "dollar_quote", "quote_literal", "split_statements",
           "tokenize"]


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
    out: list[Statement] = []
    for piece in split(sql):
        if not piece.tokens:
            continue
        s = piece.code_start
        rel = list(piece.tokens) if s == 0 else [t.shifted(s) for t in piece.tokens]
        out.append(Statement(sql[s:piece.code_end], rel, s, [t.upper for t in rel if t.kind == WORD][:8]))
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
