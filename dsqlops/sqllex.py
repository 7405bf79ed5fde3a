"""The one SQL lexer of dsqlops: PostgreSQL/DSQL tokens with their offsets, and statement splitting.

Every part of dsqlops that must know where a statement ends or whether a word is a keyword or
sits inside a literal uses this module: ``dsqlops sql`` splits scripts with it
(:mod:`dsqlops.data.sqlexec`), ``dsqlops explain`` checks for a single statement and for writes
(:mod:`dsqlops.data.explain`), and the sandbox classifies and rewrites statements with it
(:mod:`dsqlops.sandbox.sqlclass`).

It follows PostgreSQL's scanner (``src/backend/parser/scan.l``) where statement boundaries are
concerned: single-quoted strings with ``''`` (backslash is an ordinary character, as under
``standard_conforming_strings = on``, DSQL's only setting), ``E''`` strings with backslash escapes,
``B''``/``X''``/``N''``/``U&''`` strings, double-quoted identifiers (``U&""`` too), dollar quoting
(``$$…$$``, ``$tag$…$tag$``; ``a$b$`` is an identifier, ``$1`` a parameter), ``--`` comments to
the end of the line and *nested* ``/* */`` comments. As in psql, a ``;`` inside parentheses
(``CREATE RULE … DO (…; …)``) or inside a ``BEGIN ATOMIC … END`` routine body does not end a
statement. Whitespace is PostgreSQL's six ASCII characters; every non-ASCII character (a no-break
space included) is an identifier character, as in PostgreSQL.

Why not a library (sqlparse 0.6.1 and pglast 8.8 tried on these cases):

* ``sqlparse`` splits inside nested comments (``/* a /* b */ ; */`` becomes two statements) and
  splits ``select 'open; select 2`` in two instead of reporting the unterminated string.
* ``pglast`` wraps PostgreSQL's own scanner and parser (libpg_query). Its parser refuses DSQL's own
  statements (``CREATE INDEX ASYNC`` is a syntax error to it), and its scanner-only split cuts a
  ``BEGIN ATOMIC … END`` function body at every ``;``. It is also a ~33 MB compiled extension
  tied to one PostgreSQL major version, where dsqlops needs only the boundary rules, token offsets
  for the sandbox's rewrites, and an install without a compiler on every platform the CLI runs on.

No dependencies: this module imports only the standard library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

WORD, QIDENT, STRING, NUMBER, PARAM, OP, SEMI = "word", "qident", "string", "number", "param", "op", ";"

# PostgreSQL: ident_start [A-Za-z\200-\377_]; every byte of a multi-byte character is \200-\377.
_IDENT_START = r"A-Za-z_\u0080-\U0010ffff"
_DOLLAR_TAG = re.compile(rf"\$([{_IDENT_START}][{_IDENT_START}0-9]*)?\$")
_WS = " \t\n\r\f\v"
#: One token per match, tried in order (the text is scanned once, token by token). Quoted tokens use
#: possessive repetition: ``'x''`` is one unterminated string, as for PostgreSQL, not ``'x'`` + ``'``.
_TOKEN = re.compile(rf"""
  (?P<ws>[{_WS}]+)
| (?P<lc>--[^\n\r]*)
| (?P<bc>/\*)
| (?P<estr>[eE]'(?:[^'\\]|\\.|'')*+')
| (?P<badestr>[eE]')
| (?P<str>(?:[bBxXnN]|[uU]&)?'(?:[^']|'')*+')
| (?P<qid>(?:[uU]&)?"(?:[^"]|"")*+")
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

    def shifted(self, offset: int) -> Token:
        """The same token with its offsets moved by ``-offset`` (relative to a slice of the text)."""
        return Token(self.kind, self.text, self.start - offset, self.end - offset)

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
    """An unterminated quote or comment. ``offset`` is where it starts in the text."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset

    def line_in(self, text: str) -> int:
        """The 1-based line of ``text`` on which the unterminated construct starts."""
        return line_of(text, self.offset)


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def tokenize(sql: str) -> list[Token]:
    """The tokens of ``sql`` (whitespace and comments dropped), each with its offsets in ``sql``.
    Raises :class:`SqlSyntaxError` on an unterminated string, identifier, dollar quote or comment."""
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
                    raise SqlSyntaxError("unterminated /* comment", pos)
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
                raise SqlSyntaxError(f"unterminated dollar-quoted string {tag}", pos)
            end = close + len(tag)
            out.append(Token(STRING, sql[pos:end], pos, end))
            pos = end
            continue
        if kind == "badestr" or (kind == "other" and sql[pos] == "'"):
            raise SqlSyntaxError("unterminated quoted string", pos)
        if kind == "other" and sql[pos] == '"':
            raise SqlSyntaxError("unterminated quoted identifier", pos)
        out.append(Token(_KIND[kind or "other"], m.group(0), pos, end))
        pos = end
    return out


@dataclass(frozen=True)
class Piece:
    """One piece of a script: ``text[start:end]``, the pieces of a script laid end to end give the
    script back. A piece ends just after its terminating ``;`` (the last one at the end of the text).
    ``tokens`` are its code tokens (absolute offsets, the ``;`` not included): none for a piece that
    is only whitespace and comments."""

    start: int
    end: int
    tokens: tuple[Token, ...]
    #: Offset of the terminating ``;``, or None for the last piece of a text without one.
    semicolon: int | None

    @property
    def code_start(self) -> int:
        """Where the statement's first token starts (``end`` for a piece without code)."""
        return self.tokens[0].start if self.tokens else self.end

    @property
    def code_end(self) -> int:
        """Where the statement's last token ends."""
        return self.tokens[-1].end if self.tokens else self.end


def split(sql: str) -> list[Piece]:
    """Split ``sql`` on its top-level semicolons into pieces that cover all of it.

    Like psql (``psqlscan.l``), a ``;`` does not end a statement inside parentheses
    (``CREATE RULE … DO (…; …)``) or inside the ``BEGIN ATOMIC … END`` body of a ``CREATE [OR
    REPLACE] FUNCTION|PROCEDURE`` (a ``CASE … END`` in that body nests). Raises
    :class:`SqlSyntaxError` on an unterminated string, identifier, dollar quote or comment.
    """
    pieces: list[Piece] = []
    cur: list[Token] = []
    start = 0
    depth = 0
    begin_depth = 0
    routine = False  # the statement so far is CREATE [OR REPLACE] FUNCTION|PROCEDURE
    for t in tokenize(sql):
        if t.text == "(":
            depth += 1
        elif t.text == ")":
            depth = max(0, depth - 1)
        elif t.kind == WORD:
            word = t.text.upper()
            if len(cur) < 4:
                lead = [x.text.upper() for x in cur if x.kind == WORD] + [word]
                routine = lead[:2] in (["CREATE", "FUNCTION"], ["CREATE", "PROCEDURE"]) or lead[:4] in (
                    ["CREATE", "OR", "REPLACE", "FUNCTION"], ["CREATE", "OR", "REPLACE", "PROCEDURE"])
            if routine and depth == 0:
                if word == "BEGIN" or (word == "CASE" and begin_depth):
                    begin_depth += 1
                elif word == "END" and begin_depth:
                    begin_depth -= 1
        if t.kind == SEMI and depth == 0 and begin_depth == 0:
            pieces.append(Piece(start, t.end, tuple(cur), t.start))
            cur, start, routine = [], t.end, False
            continue
        cur.append(t)
    if start < len(sql) or not pieces:
        pieces.append(Piece(start, len(sql), tuple(cur), None))
    return pieces


def code_only(sql: str) -> str:
    """``sql`` with comments removed and every literal and quoted identifier emptied (``''``,
    ``""``), tokens separated by one space: what keyword or ``;`` searches may look at.
    Raises :class:`SqlSyntaxError` like :func:`tokenize`."""
    parts = []
    for t in tokenize(sql):
        if t.kind == STRING:
            parts.append("''")
        elif t.kind == QIDENT:
            parts.append('""')
        else:
            parts.append(t.text)
    return " ".join(parts)
