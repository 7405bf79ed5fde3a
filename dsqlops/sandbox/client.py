"""The sandbox as other parts of dsqlops see it: find a running sandbox, ask it to publish its
metrics, read the environment that points tools at it.

Everything outside ``dsqlops.sandbox`` (bench, demo) goes through this module rather than the
sandbox folder's layout, which belongs to the sandbox.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Flush:
    """One publication of the sandbox's metering: when, and what each cluster was billed."""

    published_at: dt.datetime
    clusters: dict[str, dict[str, float]]


@dataclass(frozen=True)
class RunningSandbox:
    path: Path

    def flush_metrics(self, *, timeout: float = 30.0) -> Flush:
        """Ask the sandbox to publish now and wait for it (many callers may ask at once)."""
        from dsqlops.sandbox.metering import request_flush

        state = request_flush(self.path, timeout=timeout)
        when = dt.datetime.fromisoformat(str(state["last_flush"]).replace("Z", "+00:00"))
        return Flush(when, dict(state.get("last_published") or {}))

    def env(self) -> dict[str, str]:
        """What ``dsqlops sandbox env`` exports for this sandbox (plus its folder)."""
        from dsqlops.sandbox import lifecycle
        from dsqlops.sandbox.state import SandboxDir

        return {**lifecycle.env_vars(SandboxDir(self.path)), "DSQLOPS_SANDBOX_DIR": str(self.path)}


def folder(directory: str | None = None) -> Path:
    """The sandbox folder ``directory`` names (``DSQLOPS_SANDBOX_DIR`` or the default if None)."""
    from dsqlops.sandbox.state import SandboxDir

    return SandboxDir(directory).path


def running(directory: str | None = None) -> RunningSandbox | None:
    """The sandbox running in ``directory`` (or the default folder), if one is."""
    from dsqlops.sandbox.state import SandboxDir

    sdir = SandboxDir(directory)
    return RunningSandbox(sdir.path) if sdir.pid() is not None else None


def serving(endpoint_url: str | None, ca_file: str | None = None) -> RunningSandbox | None:
    """The running sandbox whose control plane is ``endpoint_url``, if any.

    Looks in the default folder (``DSQLOPS_SANDBOX_DIR``) and in the folder the sandbox CA
    (``ca_file`` = ``DIR/tls/ca.pem``, which ``sandbox env`` exports) belongs to.
    """
    if not endpoint_url:
        return None
    from dsqlops.sandbox.state import SandboxDir

    candidates = [SandboxDir(None)]
    if ca_file:
        candidates.append(SandboxDir(Path(ca_file).expanduser().resolve().parent.parent))
    for sdir in candidates:
        rt: dict[str, Any] = sdir.load_runtime() or {}
        if str(rt.get("api_endpoint", "")).rstrip("/") == endpoint_url.rstrip("/") and sdir.pid() is not None:
            return RunningSandbox(sdir.path)
    return None
