"""Pool specs for DSQL (and the sandbox): picklable, so each bench process builds its own pool
and mints its own IAM tokens (``dsqlops.data.connection.create_pool``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DsqlPoolSpec:
    target: Any                                   # dsqlops.data.connection.ConnectionTarget
    config_path: str | None = None
    profile: str | None = None
    flags: tuple[tuple[str, Any], ...] = ()

    def _tokens(self) -> Any:
        from dsqlops.aws import AwsContext
        from dsqlops.config import resolve
        from dsqlops.data.tokens import TokenSource

        settings = resolve(config_path=self.config_path, profile=self.profile, flags=dict(self.flags))
        return TokenSource(AwsContext.from_settings(settings))

    def open(self, max_size: int) -> Any:
        from dsqlops.data.connection import create_pool

        return create_pool(self.target, self._tokens(), min_size=min(max_size, 4), max_size=max_size, timeout=60)

    def connect(self) -> Any:
        from dsqlops.data.connection import connect

        return connect(self.target, self._tokens())

    def describe(self) -> str:
        return str(self.target.describe())
