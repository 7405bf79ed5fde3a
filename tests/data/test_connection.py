"""The connection layer against a real TLS PostgreSQL: verify-full, the host/hostaddr split,
error mapping, and a fresh token per physical connection in a pool."""

from __future__ import annotations

import dataclasses
import time

import pytest

from dsqlops.config import Settings
from dsqlops.data.connection import ConnectionTarget, connect, create_pool, target_for
from dsqlops.errors import ConfigError, ServiceError, UsageError
from dsqlops.validate import parse_cluster

from .conftest import CLUSTER_HOST, CLUSTER_ID

pytestmark = pytest.mark.postgres


def _server_host_and_ssl(conn):
    return conn.execute("SELECT ssl, current_setting('application_name') FROM pg_stat_ssl "
                        "WHERE pid = pg_backend_pid()").fetchone()


def test_s2_verify_full_with_host_hostaddr_split(target, tokens):
    with connect(target, tokens) as conn:
        assert _server_host_and_ssl(conn) == (True, "dsqlops")
        # libpq kept the cluster endpoint as host (SNI, name check) and dialled hostaddr.
        assert conn.info.host == CLUSTER_HOST
        assert conn.info.hostaddr == "127.0.0.1"
        assert conn.info.get_parameters()["application_name"] == "dsqlops"
    assert tokens.calls == 1


def test_localhost_name_in_cert_also_verifies(target, tokens):
    t = dataclasses.replace(target, host="localhost", hostaddr=None)
    with connect(t, tokens) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_s2_untrusted_ca_is_refused(target, tokens, tmp_path):
    from dsqlops.sandbox.certs import ensure_certificates

    other = ensure_certificates(tmp_path / "other")
    with pytest.raises(ConfigError) as ei:
        connect(dataclasses.replace(target, sslrootcert=str(other.ca_cert)), tokens)
    assert "TLS verification failed" in ei.value.message
    assert "fake-token" not in ei.value.message + (ei.value.hint or "")


def test_s2_host_mismatch_is_refused(target, tokens):
    # The test certificate covers *.dsql.us-east-1/us-east-2.on.aws, not eu-west-1.
    wrong = dataclasses.replace(target, host=f"{CLUSTER_ID}.dsql.eu-west-1.on.aws", region="eu-west-1")
    with pytest.raises(ConfigError) as ei:
        connect(wrong, tokens)
    assert "TLS verification failed" in ei.value.message


def test_missing_ca_file_is_a_config_error(target, tokens, tmp_path):
    with pytest.raises(ConfigError):
        connect(dataclasses.replace(target, sslrootcert=str(tmp_path / "nope.pem")), tokens)


def test_unreachable_port_is_a_service_error_with_hint(target, tokens):
    from dsqlops.sandbox.postgres import free_port

    with pytest.raises(ServiceError) as ei:
        connect(dataclasses.replace(target, port=free_port(), connect_timeout=5), tokens)
    assert ei.value.exit_code == 254
    assert "127.0.0.1" in (ei.value.hint or "")


def test_default_ca_is_the_bundled_amazon_root(target):
    from dsqlops.data.tls import BUNDLED_CA

    info = dataclasses.replace(target, sslrootcert=None).conninfo()
    assert info["sslrootcert"] == str(BUNDLED_CA)
    assert "password" not in info
    assert info["sslmode"] == "verify-full"


def test_f13_pool_mints_a_token_per_physical_connection(target, tokens):
    pool = create_pool(target, tokens, min_size=1, max_size=1, max_lifetime=1.0)
    pids = set()
    try:
        deadline = time.monotonic() + 60
        while (len(pids) < 3) and time.monotonic() < deadline:
            with pool.connection() as conn:
                pids.add(conn.info.backend_pid)
            time.sleep(0.3)
    finally:
        pool.close()
    assert len(pids) >= 3, "connections were never recycled"
    # Every physical connection made by the pool asked for its own token.
    assert tokens.calls >= len(pids)


def test_pool_refuses_lifetime_at_or_over_an_hour(target, tokens):
    with pytest.raises(UsageError):
        create_pool(target, tokens, max_lifetime=3600)


def test_pool_open_failure_reports_the_real_cause(target, tokens, tmp_path):
    from dsqlops.sandbox.certs import ensure_certificates

    other = ensure_certificates(tmp_path / "other")
    with pytest.raises(ConfigError):
        create_pool(dataclasses.replace(target, sslrootcert=str(other.ca_cert), connect_timeout=2), tokens)


def test_target_for_uses_settings_overrides():
    s = Settings()
    s.values.update({"region": "us-east-2", "hostaddr": "127.0.0.1", "port": 15432, "sslrootcert": "/x/ca.pem",
                     "user": "reader"})
    t = target_for(s, CLUSTER_ID)
    assert t == ConnectionTarget(host=f"{CLUSTER_ID}.dsql.us-east-2.on.aws", region="us-east-2", user="reader",
                                 port=15432, hostaddr="127.0.0.1", sslrootcert="/x/ca.pem")
    # The host/ARN's region wins over the settings; --role overrides the profile's user.
    t2 = target_for(s, parse_cluster(CLUSTER_HOST), user="admin")
    assert (t2.host, t2.region, t2.user) == (CLUSTER_HOST, "us-east-1", "admin")


def test_target_for_needs_a_region():
    with pytest.raises(UsageError):
        target_for(Settings(), CLUSTER_ID)


def test_target_for_refuses_bad_role():
    s = Settings()
    s.values["region"] = "us-east-1"
    with pytest.raises(UsageError):
        target_for(s, CLUSTER_ID, user="bad\x00name")


def test_direct_tls_against_pg15_explains_itself(target, tokens):
    from dsqlops.data.tls import libpq_version

    if libpq_version() < 170000:
        pytest.skip("libpq < 17 has no direct TLS")
    with pytest.raises(ServiceError) as ei:
        connect(dataclasses.replace(target, sslnegotiation="direct"), tokens)
    assert "sslnegotiation=postgres" in (ei.value.hint or "")


def test_sslnegotiation_auto_rule():
    from dsqlops.data.tls import resolve_sslnegotiation as r

    assert r("auto", hostaddr=None, host=CLUSTER_HOST, libpq=180000) == "direct"
    assert r("auto", hostaddr="127.0.0.1", host=CLUSTER_HOST, libpq=180000) is None
    assert r("auto", hostaddr=None, host=CLUSTER_HOST, port=15432, libpq=180000) is None
    assert r("auto", hostaddr=None, host="localhost", libpq=180000) is None
    assert r("auto", hostaddr=None, host=CLUSTER_HOST, libpq=160000) is None
    assert r("postgres", hostaddr=None, host=CLUSTER_HOST, libpq=180000) is None
    assert r("direct", hostaddr="127.0.0.1", libpq=180000) == "direct"
    with pytest.raises(ConfigError):
        r("direct", hostaddr=None, libpq=160000)
    with pytest.raises(ConfigError):
        r("sometimes", hostaddr=None, libpq=180000)


def test_environment_cannot_force_direct_tls_on_a_proxy(target, tokens, monkeypatch):
    """libpq fills unset keywords from PG* variables; dsqlops passes sslnegotiation explicitly."""
    from dsqlops.data.tls import libpq_version

    if libpq_version() < 170000:
        pytest.skip("libpq < 17")
    monkeypatch.setenv("PGSSLNEGOTIATION", "direct")
    with connect(target, tokens) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_pghostaddr_in_the_environment_is_warned_about(target, tokens, monkeypatch, caplog):
    monkeypatch.setenv("PGHOSTADDR", "127.0.0.1")
    t = dataclasses.replace(target, host="localhost", hostaddr=None)
    with caplog.at_level("WARNING", logger="dsqlops.data.connection"), connect(t, tokens):
        pass
    assert "PGHOSTADDR" in caplog.text
