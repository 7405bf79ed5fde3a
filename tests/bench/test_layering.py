"""The bench package reaches the sandbox through dsqlops.sandbox.client only, and the bench CLI
only parses, calls and renders (no cost window, no live line of its own)."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import dsqlops

ROOT = Path(dsqlops.__file__).parent


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_bench_and_demo_use_only_the_sandbox_client() -> None:
    files = [*sorted((ROOT / "bench").glob("*.py")), ROOT / "cli" / "bench.py", ROOT / "cli" / "demo.py"]
    reaching = {f"{p.relative_to(ROOT)}: {name}" for p in files for name in _imports(p)
                if name.startswith("dsqlops.sandbox") and not name.startswith("dsqlops.sandbox.client")}
    assert not reaching, sorted(reaching)


def test_the_bench_cli_keeps_no_clock_and_writes_no_progress_itself() -> None:
    tree = ast.parse((ROOT / "cli" / "bench.py").read_text(encoding="utf-8"))
    names = _imports(ROOT / "cli" / "bench.py")
    assert not {"time", "datetime"} & {n.split(".")[0] for n in names}
    writes = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "write"
              and isinstance(n.value, ast.Attribute) and n.value.attr == "stderr"]
    assert not writes, f"cli/bench.py writes to stderr itself at lines {writes}"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_rewrites_in_place_on_a_terminal_and_appends_elsewhere() -> None:
    from dsqlops.bench.histogram import Snapshot
    from dsqlops.bench.results import Progress

    s = Snapshot()
    s.committed = 7
    tty = _Tty()
    p = Progress(tty, enabled=True)
    p.start()
    p.tick(s)
    p.tick(s)
    p.finish()
    text = tty.getvalue()
    assert text.count("\r\033[K") == 2 and "committed 7" in text and text.endswith("\n")
    pipe = io.StringIO()
    p = Progress(pipe, enabled=True, every=3600)
    p.tick(s)
    p.tick(s)            # within `every` seconds of the first: not written again
    p.finish()
    assert pipe.getvalue().count("\n") == 1 and "\r" not in pipe.getvalue()
    off = io.StringIO()
    Progress(off, enabled=False).tick(s)
    assert off.getvalue() == ""
