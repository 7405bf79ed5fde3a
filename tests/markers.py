"""Honest test selection: a test that needs a server carries the server's marker.

* A test that uses a fixture which starts a server (``pg``, ``dp_pg``, ``sandbox`` and what
  depends on them) gets its marker at collection, so ``-m "not postgres and not sandbox"``
  (``make test-fast``) never selects it. A sandbox runs a PostgreSQL, so ``sandbox`` implies
  ``postgres``.
* A test that starts a server some other way (``PostgresServer(...).start()``, ``dsqlops sandbox
  start``, ``SandboxHandle``) without the marker fails: every process a test starts goes through
  :class:`subprocess.Popen`, which is checked while a test runs.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

#: Fixtures that start a server, and the marker their users need.
SERVER_FIXTURES = {"pg": "postgres", "dp_pg": "postgres", "sandbox": "sandbox", "sandbox_python": "sandbox"}
#: Markers a marker implies (a sandbox cannot run without PostgreSQL).
IMPLIED = {"sandbox": ("postgres",)}
_PG_STARTERS = {"initdb", "postgres", "postmaster"}

_current: list[pytest.Item] = []


def server_started_by(argv: Sequence[str]) -> str | None:
    """The marker a process started with ``argv`` needs: ``postgres``, ``sandbox`` or None."""
    args = [str(a) for a in argv]
    if not args:
        return None
    # the programs run: the first word, what follows a "--" (runuser -u postgres -- …), and paths
    programs = {os.path.basename(a) for i, a in enumerate(args)
                if i == 0 or os.sep in a or (i > 0 and args[i - 1] == "--")}
    if programs & _PG_STARTERS or ("pg_ctl" in programs and ({"start", "restart"} & set(args))):
        return "postgres"
    words = [os.path.basename(a) for a in args]
    if any(w == "dsqlops" or w.startswith("dsqlops.") for w in words):
        rest = words[next(i for i, w in enumerate(words) if w == "dsqlops" or w.startswith("dsqlops.")):]
        if "demo" in rest or ("sandbox" in rest and "start" in rest[rest.index("sandbox"):]):
            return "sandbox"
    return None


def _argv(args: Any) -> list[str]:
    if isinstance(args, str | bytes | os.PathLike):
        return [os.fsdecode(args)] if not isinstance(args, str) or " " not in args else args.split()
    return [os.fsdecode(a) if isinstance(a, bytes | os.PathLike) else str(a) for a in args]


_original_init = subprocess.Popen.__init__


def _checked_init(self: subprocess.Popen[Any], args: Any, *rest: Any, **kw: Any) -> None:
    if _current:
        need = server_started_by(_argv(args))
        item = _current[-1]
        if need is not None and item.get_closest_marker(need) is None:
            pytest.fail(f"{item.nodeid} starts a {'PostgreSQL' if need == 'postgres' else 'sandbox'} "
                        f"({' '.join(_argv(args))[:120]}) but is not marked: add @pytest.mark.{need} "
                        "(or use the fixture that starts it)", pytrace=False)
    _original_init(self, args, *rest, **kw)


subprocess.Popen.__init__ = _checked_init  # type: ignore[method-assign]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        wanted = {SERVER_FIXTURES[f] for f in getattr(item, "fixturenames", ()) if f in SERVER_FIXTURES}
        wanted |= {m.name for m in item.iter_markers() if m.name in IMPLIED}
        wanted |= {implied for m in list(wanted) for implied in IMPLIED.get(m, ())}
        for name in sorted(wanted):
            if item.get_closest_marker(name) is None:
                item.add_marker(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    _current.append(item)
    try:
        return (yield)
    finally:
        _current.pop()
