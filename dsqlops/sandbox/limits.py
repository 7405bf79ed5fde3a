"""DSQL's quotas as the sandbox enforces them, each lowerable by an environment variable.

The defaults are DSQL's (docs/sandbox.md, "Limits"). A test, or a developer who wants to see an
application meet a limit in seconds rather than an hour, lowers one with
``DSQLOPS_SANDBOX_LIMIT_<NAME>`` (``NAME`` = the field name in capitals) in the environment of
``dsqlops sandbox start``; the sandbox process reads them once at start.

Where each is enforced:

* the front (``front.py``/``relay.py``): new connections per second and burst (53400),
  connections per cluster (53300), connection age (the session is closed);
* the dialect (``dialect.py``): transaction age (54000 at COMMIT);
* each cluster's PostgreSQL (``sql/sys.sql``, values set per database as ``dsql.*`` settings):
  rows and bytes written per transaction (54000), indexes per table (54000).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass

from dsqlops.errors import ConfigError

ENV_PREFIX = "DSQLOPS_SANDBOX_LIMIT_"


@dataclass(frozen=True)
class Limits:
    indexes_per_table: int = 24
    txn_rows: int = 3000
    txn_bytes: int = 10 * 1024 * 1024
    txn_age_seconds: float = 300.0
    connection_age_seconds: float = 3600.0
    new_connections_per_second: float = 100.0
    connection_burst: int = 1000
    connections: int = 10_000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Limits:
        env = os.environ if env is None else env
        values: dict[str, int | float] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw.strip() == "":
                continue
            kind = int if f.type in ("int", int) else float
            try:
                value = kind(raw)
            except ValueError:
                raise ConfigError(f"{ENV_PREFIX}{f.name.upper()}={raw!r} is not a number") from None
            if value <= 0:
                raise ConfigError(f"{ENV_PREFIX}{f.name.upper()} must be greater than 0 (got {raw})")
            values[f.name] = value
        return cls(**values)  # type: ignore[arg-type]

    def database_settings(self) -> dict[str, str]:
        """The ``dsql.*`` settings the backend's checks read (``sql/sys.sql``)."""
        return {"dsql.txn_row_limit": str(self.txn_rows), "dsql.txn_byte_limit": str(self.txn_bytes),
                "dsql.index_limit": str(self.indexes_per_table)}
