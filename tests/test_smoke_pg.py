import psycopg
import pytest


@pytest.mark.postgres
def test_pg_fixture_serves_tls_verify_full(pg, pg_tls):
    with psycopg.connect(host="localhost", hostaddr="127.0.0.1", port=pg.port, dbname="postgres",
                         user="postgres", sslmode="verify-full", sslrootcert=str(pg_tls.ca_cert)) as conn:
        assert conn.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()").fetchone() == (True,)


@pytest.mark.postgres
def test_pg_refuses_plaintext(pg):
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host="127.0.0.1", port=pg.port, dbname="postgres", user="postgres", sslmode="disable")
