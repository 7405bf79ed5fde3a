"""TLS choices for DSQL connections: which CA verifies the server, and whether to use direct TLS.

**CA.** DSQL's endpoints chain to *Amazon Root CA 1* (AWS docs, "Configuring SSL/TLS certificates
for Aurora DSQL connections"). psycopg-binary's bundled OpenSSL trusts nothing by default (its
default CA file does not exist, docs/dsql-facts.md §R4.2), so ``sslrootcert=system`` fails unless
``SSL_CERT_FILE`` is set. dsqlops therefore ships the one certificate
(``dsqlops/data/certs/AmazonRootCA1.pem``, extracted from certifi; its SHA-256 fingerprint is
pinned in the tests) and passes it as ``sslrootcert``. A ``sslrootcert`` setting (profile key,
``DSQLOPS_SSLROOTCERT``) overrides it: the sandbox and TLS-terminating proxies use their own CA.

**Direct TLS.** ``sslnegotiation=direct`` saves a round trip, but only libpq ≥ 17 knows it and only
servers that speak it accept it (DSQL and PostgreSQL ≥ 17; a PostgreSQL 15-based proxy or sandbox
closes the connection: EOF). The rule (:func:`resolve_sslnegotiation`):

* ``direct``   — always (a clear ConfigError when the local libpq is older than 17);
* ``postgres`` — never (classic SSLRequest negotiation, works everywhere);
* ``auto`` (default) — direct only when libpq ≥ 17 **and** we dial the real DSQL endpoint: the host
  is a DSQL cluster endpoint, no ``hostaddr`` override is set and the port is 5432. A sandbox or
  proxy (``hostaddr``/port overrides, ``localhost``) gets the classic negotiation.
"""

from __future__ import annotations

import os
from pathlib import Path

from dsqlops.errors import ConfigError

BUNDLED_CA = Path(__file__).resolve().parent / "certs" / "AmazonRootCA1.pem"
#: SHA-256 of the DER form of Amazon Root CA 1 (as published by Amazon Trust Services).
AMAZON_ROOT_CA1_SHA256 = "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e"
SSLNEGOTIATION_CHOICES = ("auto", "direct", "postgres")
DIRECT_MIN_LIBPQ = 170000


def default_root_cert() -> str:
    """The CA file that verifies real DSQL endpoints: the bundled Amazon Root CA 1, or certifi's
    bundle (which contains it) when the package data is missing."""
    if BUNDLED_CA.is_file():
        return str(BUNDLED_CA)
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi is a dependency
        raise ConfigError("no CA certificate to verify DSQL with (bundled AmazonRootCA1.pem and certifi missing)",
                          hint="set sslrootcert in your profile or DSQLOPS_SSLROOTCERT to a PEM file") from None
    return str(certifi.where())


def root_cert(configured: str | None) -> str:
    """``sslrootcert`` to pass to libpq: the configured file (checked to exist) or the default."""
    if not configured:
        return default_root_cert()
    if configured == "system":
        # libpq's keyword: the OS store. With psycopg-binary it works only when SSL_CERT_FILE is set.
        if not os.environ.get("SSL_CERT_FILE"):
            raise ConfigError("sslrootcert=system does not work with psycopg-binary's OpenSSL unless "
                              "SSL_CERT_FILE is set",
                              hint="set SSL_CERT_FILE, or leave sslrootcert unset to use the bundled "
                              "Amazon Root CA 1")
        return configured
    path = Path(configured).expanduser()
    if not os.path.isfile(path):  # os.path: False, not OSError, for a name too long to stat
        raise ConfigError(f"sslrootcert {configured!r} is not a readable file",
                          hint="point sslrootcert / DSQLOPS_SSLROOTCERT at a PEM CA file "
                          "(for the sandbox: eval \"$(dsqlops sandbox env)\")")
    return str(path)


def libpq_version() -> int:
    import psycopg

    return int(psycopg.pq.version())


def resolve_sslnegotiation(choice: str | None, *, hostaddr: str | None, host: str | None = None,
                           port: int = 5432, libpq: int | None = None) -> str | None:
    """The ``sslnegotiation`` libpq parameter to pass, or None to leave libpq's default (postgres).

    See the module docstring for the rule."""
    choice = (choice or "auto").lower()
    if choice not in SSLNEGOTIATION_CHOICES:
        raise ConfigError(f"sslnegotiation must be one of {', '.join(SSLNEGOTIATION_CHOICES)}: {choice!r}")
    version = libpq_version() if libpq is None else libpq
    if choice == "postgres":
        return None
    if choice == "direct":
        if version < DIRECT_MIN_LIBPQ:
            raise ConfigError(f"sslnegotiation=direct needs libpq 17 or newer (this libpq is {version})")
        return "direct"
    from dsqlops.validate import CLUSTER_HOST_RE

    real_endpoint = not hostaddr and port == 5432 and bool(host and CLUSTER_HOST_RE.fullmatch(host))
    if version >= DIRECT_MIN_LIBPQ and real_endpoint:
        return "direct"
    return None
