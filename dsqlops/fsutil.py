"""Cron-safe file handling: output files checked before the work, atomic writes and a non-blocking
single-instance lock."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from dsqlops.errors import Locked, UsageError


def check_output_file(path: str | os.PathLike[str], option: str) -> Path:
    """Refuse, before any work, an output file that cannot be created where it is named: a folder,
    or a file in a folder that does not exist (a typo in a crontab must not create folder trees)."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{option} {p} is a folder; give a file name")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"{option} {p}: the folder {folder} does not exist (dsqlops does not create folders)")
    return p


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> None:
    """temp file in the same folder → write → fsync → rename → fsync(dir).

    A reader sees the old file or the new one, never a truncated one; on error the old file is
    left untouched and the temp file removed.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def default_lock_path(name: str = "dsqlops") -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"{name}.lock"


@contextlib.contextmanager
def single_instance(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``; raise :class:`Locked` if another run holds it."""
    import fcntl

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Locked(f"another dsqlops run holds the lock {p}; not starting a second one") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)
