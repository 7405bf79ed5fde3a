"""docs/reliability.md's matrix: every row of the test matrix is there, and every test it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = ([f"F{i}" for i in range(1, 19)] + [f"L{i}" for i in range(1, 5)] + [f"B{i}" for i in range(1, 8)]
        + ["S1", "S2"])


def _matrix() -> dict[str, str]:
    text = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    rows = {}
    for line in text.split("## The matrix", 1)[1].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and re.fullmatch(r"[FLBS][0-9]+", cells[0]):
            rows[cells[0]] = cells[2]
    return rows


def test_every_row_is_in_the_matrix() -> None:
    assert sorted(_matrix()) == sorted(ROWS)


def test_every_test_the_matrix_names_exists() -> None:
    missing = []
    for row, cell in _matrix().items():
        assert "…" not in cell, f"{row} names a test by a pattern: {cell}"
        path: str | None = None
        for ref in re.findall(r"`([^`]+)`", cell):
            if "::" not in ref:
                continue
            file, name = ref.split("::", 1)
            path = file or path
            assert path, f"{row}: {ref} has no file"
            source = ROOT / path
            if not source.is_file() or not re.search(rf"^def {re.escape(name)}\(", source.read_text(encoding="utf-8"),
                                                      re.MULTILINE):
                missing.append(f"{row}: {path}::{name}")
        assert path, f"{row} names no test"
    assert missing == []
