"""Statement splitting for ``dsqlops sql -f`` (pure), and the connection-error explanations."""

from __future__ import annotations

import hashlib

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsqlops.data.connection import ConnectionTarget, explain_connect_error
from dsqlops.data.sqlexec import split_statements
from dsqlops.errors import ConfigError, ServiceError, UsageError

HOST = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws"


@pytest.mark.parametrize(("script", "expected"), [
    ("select 1", ["select 1"]),
    ("select 1; select 2;", ["select 1", "select 2"]),
    ("select ';'; select 'it''s;'", ["select ';'", "select 'it''s;'"]),
    ("select E'\\';' ; select 2", ["select E'\\';'", "select 2"]),
    ('select "a;b" from "x"";y"', ['select "a;b" from "x"";y"']),
    ("select $$a;b$$; select $f$ $$ ; $f$", ["select $$a;b$$", "select $f$ $$ ; $f$"]),
    ("create function f() returns int language sql as $body$ select 1; $body$; select 2",
     ["create function f() returns int language sql as $body$ select 1; $body$", "select 2"]),
    ("-- a; comment\nselect 1 -- trailing;\n; /* x; /* nested; */ ; */ select 2",
     ["select 1 -- trailing;", "select 2"]),
    (" ; ;\n -- nothing\n", []),
    ("select $1::int; select a$b$c from t", ["select $1::int", "select a$b$c from t"]),
    # psql's rules: no split inside parentheses or a BEGIN ATOMIC routine body
    ("create rule r as on insert to t do (insert into a values (1); insert into b values (2)); select 2",
     ["create rule r as on insert to t do (insert into a values (1); insert into b values (2))", "select 2"]),
    ("CREATE OR REPLACE FUNCTION f(x int) RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN x > 0 THEN 1 "
     "END; SELECT 2; END; begin; select 3; end",
     ["CREATE OR REPLACE FUNCTION f(x int) RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN x > 0 THEN 1 "
      "END; SELECT 2; END", "begin", "select 3", "end"]),
    ("select E'a\\\\'; select _e'b\\'; select 2", ["select E'a\\\\'", "select _e'b\\'", "select 2"]),
])
def test_split(script, expected):
    assert [s.text for s in split_statements(script)] == expected


def test_split_line_numbers():
    sts = split_statements("select 1;\n\n-- c\nselect\n 2;\nselect 3")
    assert [s.line for s in sts] == [1, 4, 6]


@pytest.mark.parametrize("bad", ["select 'open", 'select "open', "select $$ open", "/* open", "select E'\\'"])
def test_unterminated_is_a_usage_error(bad):
    with pytest.raises(UsageError):
        split_statements(bad)


_plain = st.text(alphabet=st.characters(blacklist_characters="';\"$-/\\E e()", blacklist_categories=("Cs",)),
                 min_size=1, max_size=20).filter(lambda s: s.strip())


@given(st.lists(st.one_of(_plain, _plain.map(lambda s: "'" + s.replace("'", "''") + "'")), min_size=1, max_size=6))
def test_split_roundtrip(parts):
    """Joining statements with ';' and splitting gives them back."""
    sts = [p.strip() for p in parts]
    assert [s.text for s in split_statements(" ;\n".join(sts))] == sts


def _op_error(text: str) -> psycopg.OperationalError:
    return psycopg.OperationalError(text)


def _target(**kw):
    return ConnectionTarget(host=HOST, region="us-east-1", **kw)


def test_signature_expired_is_explained_and_the_token_scrubbed():
    token = f"{HOST}/?Action=DbConnectAdmin&X-Amz-Signature=abc123"
    e = explain_connect_error(_op_error(
        f'connection failed: connection to server at "1.2.3.4", port 5432 failed: FATAL:  unable to accept '
        f"connection, access denied\nHINT:  Signature expired: {token}"), _target(), token=token)
    assert isinstance(e, ServiceError) and "expired" in e.message
    assert "clock" in (e.hint or "")
    assert "abc123" not in e.message + (e.hint or "")


def test_access_denied_without_expiry_points_at_iam():
    e = explain_connect_error(_op_error("connection failed: FATAL:  unable to accept connection, access denied"),
                              _target(user="reader"))
    assert "dsql:DbConnect " in (e.hint or "") + " " and "AWS IAM GRANT" in (e.hint or "")


def test_tls_failures_are_config_errors():
    for text in ("connection failed: SSL error: certificate verify failed",
                 'connection failed: server certificate for "x" does not match host name "y"'):
        assert isinstance(explain_connect_error(_op_error(text), _target()), ConfigError)


def test_unresolvable_and_unreachable():
    e = explain_connect_error(_op_error('could not translate host name "x" to address: Name or service not known'),
                              _target())
    assert "does not resolve" in e.message and e.exit_code == 254
    e = explain_connect_error(_op_error("connection failed: Connection refused"), _target(hostaddr="127.0.0.1"))
    assert "sandbox" in (e.hint or "")


def test_bundled_ca_is_amazon_root_ca_1():
    from cryptography import x509

    from dsqlops.data.tls import AMAZON_ROOT_CA1_SHA256, BUNDLED_CA

    cert = x509.load_pem_x509_certificate(BUNDLED_CA.read_bytes())
    from cryptography.hazmat.primitives.serialization import Encoding

    assert hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest() == AMAZON_ROOT_CA1_SHA256
    assert cert.subject.rfc4514_string() == "CN=Amazon Root CA 1,O=Amazon,C=US"


def test_limits_and_missing_roles_are_not_called_unreachable():
    e = explain_connect_error(_op_error("connection failed: FATAL:  too many connections (53300)"), _target())
    assert e.code == "53300" and "limit" in (e.hint or "")
    e = explain_connect_error(_op_error('connection failed: FATAL:  role "nobody" does not exist'),
                              _target(user="nobody"))
    assert "role create" in (e.hint or "")
