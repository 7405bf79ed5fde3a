"""The sandbox's folder: where each file lives and how the persisted state is read and written.

Layout of DIR (default ``$XDG_DATA_HOME/dsqlops/sandbox``, i.e. ``~/.local/share/dsqlops/sandbox``;
``/var/lib/dsqlops/sandbox`` for root; ``--dir`` or ``DSQLOPS_SANDBOX_DIR`` override it)::

    sandbox.pid        pid of the running sandbox process (absent when stopped)
    runtime.json       ports, endpoints, start time, component status of the running process
    sandbox.log        the process log (background mode)
    credentials.json   the sandbox-issued IAM access key (mode 0600), reused on every start
    clusters.json      the clusters (ids, ARNs, tags, settings), restored into moto on start
    tls/               CA + server certificate (ca.pem is what clients trust)
    template/          an initdb'ed PostgreSQL data folder copied for every new cluster
    clusters/<id>/     one PostgreSQL data folder (pgdata/) per cluster

Every file is written atomically (temp file + rename).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dsqlops.fsutil import atomic_write

DEFAULT_API_PORT = 4577
DEFAULT_PORT = 5433
DEFAULT_REGION = "us-east-1"
REGIONS = ("us-east-1", "us-east-2")
ACCOUNT_ID = "123456789012"


def default_dir() -> Path:
    """``$DSQLOPS_SANDBOX_DIR``, else ``$XDG_DATA_HOME/dsqlops/sandbox`` (``~/.local/share/…``).

    As root without either variable: ``/var/lib/dsqlops/sandbox``, because PostgreSQL runs as the
    ``postgres`` user, which must traverse every parent folder (and ``/root`` is private).
    """
    env = os.environ.get("DSQLOPS_SANDBOX_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    if not xdg and os.geteuid() == 0:
        return Path("/var/lib/dsqlops/sandbox")
    base = xdg or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "dsqlops" / "sandbox"


@dataclass
class ClusterRecord:
    identifier: str
    arn: str
    region: str
    creation_time: str
    deletion_protection_enabled: bool = True
    tags: dict[str, str] = field(default_factory=dict)
    policy: str | None = None
    kms_encryption_key: str | None = None
    pg_port: int = 0


@dataclass
class Credentials:
    user_name: str
    user_arn: str
    access_key_id: str
    secret_access_key: str


class SandboxDir:
    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser().resolve() if path else default_dir().resolve()

    # paths --------------------------------------------------------------------------------
    @property
    def pid_file(self) -> Path:
        return self.path / "sandbox.pid"

    @property
    def runtime_file(self) -> Path:
        return self.path / "runtime.json"

    @property
    def log_file(self) -> Path:
        return self.path / "sandbox.log"

    @property
    def credentials_file(self) -> Path:
        return self.path / "credentials.json"

    @property
    def clusters_file(self) -> Path:
        return self.path / "clusters.json"

    @property
    def tls_dir(self) -> Path:
        return self.path / "tls"

    @property
    def ca_file(self) -> Path:
        return self.tls_dir / "ca.pem"

    @property
    def template_dir(self) -> Path:
        return self.path / "template" / "pgdata"

    def cluster_dir(self, identifier: str) -> Path:
        return self.path / "clusters" / identifier

    def socket_dir(self, identifier: str) -> Path:
        """Where a cluster's PostgreSQL puts its Unix socket: short, outside DIR (a socket path under
        a deep DIR would pass the 107-byte limit)."""
        import hashlib
        import tempfile

        digest = hashlib.sha1(str(self.cluster_dir(identifier)).encode()).hexdigest()[:12]  # noqa: S324 - a name
        return Path(tempfile.gettempdir()) / f"dsqlops-{digest}"

    def ensure(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path, 0o755)  # noqa: S103 - the postgres user must traverse it

    def ensure_traversable(self) -> None:
        """When root, let the ``postgres`` user traverse DIR and its parents (execute bit only).

        Called before every PostgreSQL start: something else may have tightened a parent since
        (pytest, for one, resets /tmp/pytest-of-<user> to 0700 whenever a session starts).
        """
        if os.geteuid() != 0:
            return
        for p in [self.path, *self.path.parents]:
            if str(p) in ("/", "/tmp"):  # noqa: S108 - not creating anything here
                break
            with contextlib.suppress(OSError):
                mode = p.stat().st_mode
                if mode & 0o001 == 0:
                    os.chmod(p, mode | 0o011)  # noqa: S103 - traverse only, no read

    # json -----------------------------------------------------------------------------------
    def _read(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None

    def _write(self, path: Path, data: Any, mode: int = 0o644) -> None:
        atomic_write(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), mode=mode)

    def load_credentials(self) -> Credentials | None:
        raw = self._read(self.credentials_file)
        if not isinstance(raw, dict):
            return None
        try:
            return Credentials(**raw)
        except TypeError:
            return None

    def save_credentials(self, creds: Credentials) -> None:
        self._write(self.credentials_file, asdict(creds), mode=0o600)

    def load_clusters(self) -> list[ClusterRecord]:
        raw = self._read(self.clusters_file)
        out: list[ClusterRecord] = []
        for item in raw or []:
            with contextlib.suppress(TypeError):
                out.append(ClusterRecord(**item))
        return out

    def save_clusters(self, records: list[ClusterRecord]) -> None:
        self._write(self.clusters_file, [asdict(r) for r in records])

    def load_runtime(self) -> dict[str, Any] | None:
        raw = self._read(self.runtime_file)
        return raw if isinstance(raw, dict) else None

    def save_runtime(self, data: dict[str, Any]) -> None:
        self._write(self.runtime_file, data)

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid
