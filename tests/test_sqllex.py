"""The shared SQL lexer: splitting a script gives pieces that join back to it, and statements built
from quotes, comments, dollar bodies and parentheses that hide ';' come back whole."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsqlops import sqllex
from dsqlops.data.sqlexec import split_statements as script_statements
from dsqlops.sandbox.sqlclass import split_statements as wire_statements

_ANY = st.text(alphabet="SELCTbegindcasORPLFUN ;'\"$-/*()\n\r.,=1xEe\\_&", max_size=80)


@settings(max_examples=500, deadline=None)
@given(_ANY)
def test_pieces_join_back_to_the_script(text: str) -> None:
    try:
        pieces = sqllex.split(text)
    except sqllex.SqlSyntaxError as e:
        assert 0 <= e.offset < len(text)
        return
    assert "".join(text[p.start:p.end] for p in pieces) == text
    assert pieces[0].start == 0 and pieces[-1].end == len(text)
    for a, b in itertools.pairwise(pieces):
        assert a.end == b.start
    for p in pieces:
        if p.semicolon is not None:
            assert text[p.semicolon] == ";" and p.end == p.semicolon + 1
        for t in p.tokens:
            assert p.start <= t.start < t.end <= p.end and text[t.start:t.end] == t.text


_WORDS = st.sampled_from(["select", "x", "from", "t", "a$b", "_e", "where", "1", "1.5e3", "$1", "::int", "+", "<>"])
_SAFE = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


def _estr(s: str) -> str:
    return "E'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _dollar(tag: str, body: str) -> str:
    quote = f"${tag}$"
    return quote + body.replace("$", "") + quote


def _block(body: str) -> str:
    body = body.replace("*/", "").replace("/*", "").replace("*", "").replace("/", "")
    return f"/* {body} /* nested ; */ {body} */"


_HIDING = st.one_of(
    _SAFE.map(lambda s: "'" + s.replace("'", "''") + "'"),                        # 'it''s; here'
    _SAFE.map(_estr),                                                             # E'\'; \\'
    _SAFE.map(lambda s: '"' + s.replace('"', '""') + '"'),                        # "a;""b"
    st.builds(_dollar, st.sampled_from(["", "f", "body_1"]), _SAFE),              # $f$ ; $f$
    _SAFE.map(lambda s: "--" + s.replace("\n", " ").replace("\r", " ") + "\n"),   # -- ;
    _SAFE.map(_block),                                                            # /* /* ; */ */
    st.lists(_WORDS, max_size=3).map(lambda ws: "(" + " ; ".join(ws) + ")"),     # (a; b)
)
_STATEMENT = st.builds(lambda first, rest: " ".join([first, *rest]), _WORDS,
                       st.lists(st.one_of(_WORDS, _HIDING), max_size=6))


@settings(max_examples=300, deadline=None)
@given(st.lists(_STATEMENT, min_size=1, max_size=5), st.sampled_from([";", " ;\n", ";\n\n"]))
def test_statements_hiding_semicolons_come_back_whole(statements: list[str], sep: str) -> None:
    script = sep.join(statements)
    pieces = sqllex.split(script)
    assert "".join(script[p.start:p.end] for p in pieces) == script
    assert [s.text for s in script_statements(script)] == [s.strip() for s in statements]
    # the sandbox's view: the same statements, each ending at its last token (trailing comments cut)
    wire = [s.text for s in wire_statements(script)]
    assert len(wire) == len(statements)
    assert all(s.strip().startswith(w) for s, w in zip(statements, wire, strict=True))


@pytest.mark.parametrize(("bad", "offset"), [
    ("select 'open", 7), ('select "open', 7), ("select $$ open", 7), ("select $f$ open $g$", 7),
    ("select 1 /* open /* nested */", 9), ("select E'\\'", 7), ("select e'it\\'s", 7), ("select U&'x", 9),
    ("select B'01", 8), ("select 1;\nselect 'x''", 17),
])
def test_unterminated_input_is_refused_where_it_starts(bad: str, offset: int) -> None:
    with pytest.raises(sqllex.SqlSyntaxError) as e:
        sqllex.split(bad)
    assert e.value.offset == offset


def test_postgres_whitespace_and_identifier_characters() -> None:
    # only PostgreSQL's six whitespace characters separate tokens; any other non-ASCII letter,
    # a no-break space included, is part of an identifier
    toks = sqllex.tokenize("select\u00a0x,\tcafé, 𝔘nicode")
    assert [t.text for t in toks] == ["select\u00a0x", ",", "café", ",", "𝔘nicode"]
    assert [t.kind for t in sqllex.tokenize("--c\rselect 1")] == [sqllex.WORD, sqllex.NUMBER]


def test_code_only_empties_literals_and_drops_comments() -> None:
    assert sqllex.code_only("select ';' , \"a;b\", $$;$$ -- ;\n/* ; */ from t") == "select '' , \"\" , '' from t"


def test_a_script_without_code_is_one_empty_piece() -> None:
    assert [(p.start, p.end, p.tokens) for p in sqllex.split("")] == [(0, 0, ())]
    assert [p.tokens for p in sqllex.split(" -- x\n")] == [()]


def test_the_sandbox_classifier_refuses_an_unterminated_e_string() -> None:
    # an E'' string whose closing quote is escaped is unterminated, not the word E and a string '\'
    from dsqlops.sandbox import sqlclass

    with pytest.raises(sqlclass.SqlSyntaxError):
        sqlclass.split_statements("SELECT E'\\'")
