"""Drive the sandbox process from the CLI: start (background or foreground), stop, status, env."""

from __future__ import annotations

import configparser
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsqlops.errors import ConflictError, NotFoundError, ServiceError, UsageError
from dsqlops.sandbox.state import DEFAULT_API_PORT, DEFAULT_PORT, DEFAULT_REGION, SandboxDir

AWS_PROFILE_NAME = "dsqlops-sandbox"


@dataclass
class StartResult:
    pid: int
    dir: str
    api_endpoint: str
    port: int
    ca_file: str
    region: str
    startup_seconds: float
    already_running: bool = False


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def result_from_runtime(rt: dict[str, Any], *, already: bool = False) -> StartResult:
    return StartResult(pid=int(rt["pid"]), dir=str(rt["dir"]), api_endpoint=str(rt["api_endpoint"]),
                       port=int(rt["port"]), ca_file=str(rt["ca_file"]), region=str(rt.get("region", DEFAULT_REGION)),
                       startup_seconds=float(rt.get("startup_seconds", 0.0)), already_running=already)


def start_background(sdir: SandboxDir, *, api_port: int | None = None, port: int | None = None,
                     timeout: float = 60.0, owner_pid: int | None = None) -> StartResult:
    """Spawn a detached ``sandbox start --foreground`` and return once it accepts connections.

    ``owner_pid``: the sandbox stops by itself when that process is gone (used by the tests).
    """
    from dsqlops.sandbox.limits import Limits

    Limits.from_env()  # a bad DSQLOPS_SANDBOX_LIMIT_* is a configuration error here, not a failed start
    sdir.ensure()
    pid = sdir.pid()
    rt = sdir.load_runtime()
    if pid is not None and rt and rt.get("pid") == pid and rt.get("ready"):
        return result_from_runtime(rt, already=True)
    if pid is not None:
        raise ConflictError(f"a sandbox process (pid {pid}) is already running in {sdir.path}",
                            hint="wait for it or run `dsqlops sandbox stop`")
    prev = rt or {}
    api_port = api_port if api_port is not None else int(prev.get("api_port") or DEFAULT_API_PORT)
    port = port if port is not None else int(prev.get("port") or DEFAULT_PORT)
    from dsqlops.sandbox.postgres import free_port

    api_port = api_port or free_port()
    port = port or free_port()
    for p, what in ((api_port, "--api-port"), (port, "--port")):
        if not _port_free(p):
            raise ConflictError(f"port {p} on 127.0.0.1 is in use", hint=f"choose another with {what}")
    t0 = time.monotonic()
    argv = [sys.executable, "-m", "dsqlops", "sandbox", "start", "--foreground", "--dir", str(sdir.path),
            "--api-port", str(api_port), "--port", str(port)]
    child_env = dict(os.environ)
    if owner_pid:
        child_env["DSQLOPS_SANDBOX_OWNER_PID"] = str(owner_pid)
    else:
        child_env.pop("DSQLOPS_SANDBOX_OWNER_PID", None)
    with open(sdir.log_file, "ab") as logf:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                start_new_session=True, close_fds=True, env=child_env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rc = proc.poll()
        if rc is not None:
            raise ServiceError(f"the sandbox exited during start (exit {rc})", hint=f"see {sdir.log_file}:\n"
                               + _tail(sdir.log_file))
        rt = sdir.load_runtime()
        if rt and rt.get("pid") == proc.pid and rt.get("ready"):
            res = result_from_runtime(rt)
            res.startup_seconds = round(time.monotonic() - t0, 3)
            return res
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    raise ServiceError(f"the sandbox did not become ready within {timeout:.0f}s", hint=f"see {sdir.log_file}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop(sdir: SandboxDir, *, timeout: float = 60.0) -> dict[str, Any]:
    """SIGTERM the sandbox process and wait; also stop any PostgreSQL a crashed sandbox left behind."""
    pid = sdir.pid()
    stopped_pid = None
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):
            raise ServiceError(f"the sandbox (pid {pid}) did not stop within {timeout:.0f}s")
        stopped_pid = pid
        with contextlib.suppress(FileNotFoundError):
            sdir.pid_file.unlink()
    leftovers = _stop_orphan_postgres(sdir)
    if stopped_pid is None and not leftovers:
        raise NotFoundError(f"no sandbox is running in {sdir.path}")
    return {"stopped": stopped_pid is not None, "pid": stopped_pid, "orphan_databases_stopped": leftovers,
            "dir": str(sdir.path)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    with contextlib.suppress(ChildProcessError):
        wpid, _ = os.waitpid(pid, os.WNOHANG)
        if wpid == pid:
            return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def _stop_orphan_postgres(sdir: SandboxDir) -> int:
    from dsqlops.sandbox.postgres import PostgresServer

    n = 0
    for datadir in [*(sdir.path / "clusters").glob("*/pgdata"), sdir.template_dir]:
        if (datadir / "postmaster.pid").exists():
            pg = PostgresServer(datadir, port=1)
            if pg.running():
                pg.stop(mode="immediate", timeout=30)
                n += 1
        if datadir.parent.parent.name == "clusters":
            shutil.rmtree(sdir.socket_dir(datadir.parent.name), ignore_errors=True)
    return n


def status(sdir: SandboxDir) -> dict[str, Any]:
    pid = sdir.pid()
    rt = sdir.load_runtime() or {}
    running = pid is not None and rt.get("pid") == pid
    out: dict[str, Any] = {
        "running": running and bool(rt.get("ready")),
        "pid": pid if running else None,
        "dir": str(sdir.path),
        "api_endpoint": rt.get("api_endpoint"),
        "port": rt.get("port"),
        "ca_file": rt.get("ca_file") or str(sdir.ca_file),
        "region": rt.get("region", DEFAULT_REGION),
        "started_at": rt.get("started_at") if running else None,
        "uptime_seconds": None,
        "dialect": rt.get("dialect"),
        "components": {},
        "clusters": [],
    }
    if running and rt.get("started_at"):
        import datetime as dt

        started = dt.datetime.strptime(rt["started_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
        out["uptime_seconds"] = int((dt.datetime.now(dt.UTC) - started).total_seconds())
    if running:
        out["components"] = {
            "control_plane": "running" if not _port_free(int(rt["api_port"])) else "down",
            "front": "running" if not _port_free(int(rt["port"])) else "down",
        }
    live = rt.get("clusters") or {}
    for rec in sdir.load_clusters():
        info = live.get(rec.identifier, {}) if running else {}
        out["clusters"].append({"identifier": rec.identifier, "region": rec.region,
                                "endpoint": f"{rec.identifier}.dsql.{rec.region}.on.aws",
                                "database": info.get("state", "stopped"), "arn": rec.arn})
    return out


def env_vars(sdir: SandboxDir) -> dict[str, str]:
    """What ``sandbox env`` exports: boto3/AWS CLI → control plane, libpq/dsqlops → the front."""
    rt = sdir.load_runtime()
    creds = sdir.load_credentials()
    if not rt or creds is None:
        raise NotFoundError(f"no sandbox has run in {sdir.path}", hint="run `dsqlops sandbox start` first")
    return {
        "AWS_ENDPOINT_URL": str(rt["api_endpoint"]),
        "DSQLOPS_ENDPOINT_URL": str(rt["api_endpoint"]),
        "AWS_ACCESS_KEY_ID": creds.access_key_id,
        "AWS_SECRET_ACCESS_KEY": creds.secret_access_key,
        "AWS_SESSION_TOKEN": "",
        "AWS_REGION": str(rt.get("region", DEFAULT_REGION)),
        "AWS_DEFAULT_REGION": str(rt.get("region", DEFAULT_REGION)),
        "DSQLOPS_HOSTADDR": "127.0.0.1",
        "DSQLOPS_PORT": str(rt["port"]),
        "DSQLOPS_SSLROOTCERT": str(rt["ca_file"]),
        "PGHOSTADDR": "127.0.0.1",
        "PGPORT": str(rt["port"]),
        "PGSSLROOTCERT": str(rt["ca_file"]),
        "PGSSLMODE": "verify-full",
        "PGDATABASE": "postgres",
        "PGUSER": "admin",
    }


def shell_exports(env: dict[str, str]) -> str:
    import shlex

    lines = []
    for k, v in env.items():
        if k == "AWS_SESSION_TOKEN" and not v:
            lines.append("unset AWS_SESSION_TOKEN AWS_PROFILE")
            continue
        lines.append(f"export {k}={shlex.quote(v)}")
    return "\n".join(lines) + "\n"


def write_profile(sdir: SandboxDir, config_path: Path, aws_credentials_path: Path | None = None) -> dict[str, str]:
    """Write a ``sandbox`` profile into the dsqlops config and the sandbox key into an AWS profile.

    The dsqlops config holds no secrets, so the access key goes to the AWS shared credentials
    file under ``[dsqlops-sandbox]`` (mode 0600), and the profile names it as ``aws_profile``.
    """
    import yaml

    from dsqlops.fsutil import atomic_write

    env = env_vars(sdir)
    creds_path = aws_credentials_path or Path(os.environ.get("AWS_SHARED_CREDENTIALS_FILE")
                                              or Path.home() / ".aws" / "credentials")
    cp = configparser.RawConfigParser()
    if creds_path.exists():
        cp.read(creds_path)
    if not cp.has_section(AWS_PROFILE_NAME):
        cp.add_section(AWS_PROFILE_NAME)
    cp.set(AWS_PROFILE_NAME, "aws_access_key_id", env["AWS_ACCESS_KEY_ID"])
    cp.set(AWS_PROFILE_NAME, "aws_secret_access_key", env["AWS_SECRET_ACCESS_KEY"])
    creds_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    import io

    buf = io.StringIO()
    cp.write(buf)
    atomic_write(creds_path, buf.getvalue().encode(), mode=0o600)

    data: dict[str, Any] = {}
    if config_path.exists():
        loaded = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        if loaded is not None and not isinstance(loaded, dict):
            raise UsageError(f"config file {config_path}: the top level must be a mapping")
        data = loaded or {}
    profiles = data.setdefault("profiles", {}) or {}
    data["profiles"] = profiles
    profiles["sandbox"] = {
        "region": env["AWS_REGION"], "endpoint_url": env["AWS_ENDPOINT_URL"], "aws_profile": AWS_PROFILE_NAME,
        "hostaddr": "127.0.0.1", "port": int(env["DSQLOPS_PORT"]), "sslrootcert": env["DSQLOPS_SSLROOTCERT"],
        "sslmode": "verify-full",
    }
    config_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(config_path, yaml.safe_dump(data, sort_keys=False).encode(), mode=0o600)
    return {"config_file": str(config_path), "profile": "sandbox", "aws_credentials_file": str(creds_path),
            "aws_profile": AWS_PROFILE_NAME}
