"""Code and docs speak of the project only, and every fact reference can be followed from a clone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FACTS = ROOT / "docs" / "dsql-facts.md"
_SOURCES = [p for d in ("dsqlops", "tests", "benchmarks", "docs") for p in sorted((ROOT / d).rglob("*"))
            if p.suffix in (".py", ".md", ".sql", ".c", ".yaml", ".toml") and "fixtures" not in p.parts]
_SOURCES += [ROOT / "README.md", ROOT / "pyproject.toml", ROOT / "Makefile"]

#: Who built what, and notes outside the repository: words that mean nothing to a reader of a clone.
_BUILDING_WORDS = re.compile(
    r"\bengineers?\b|\badded by\b|(?-i:\bowned by [A-Z]\b)|(?-i:\b[A-H]'s) (?:module|table|loader|fetch|parser|code|"
    r"explain|batched|wire|metering|job|pricing|run_transaction|create_pool|OccRetries)|"
    r"(?-i:\bS[0-9]'s\b|\(S[0-9][,)])|\bthe issue\b|\bissue(?:'s)? (?:asks|target)|"
    r"\.\./shared/|shared/dsql|(?-i:\b(?:FACTS|RELIABILITY)(?:\.md)? §|\b(?:FACTS|RELIABILITY)\.md)",
    re.IGNORECASE)
_FACT_REF = re.compile(r"dsql-facts\.md §(R?[0-9]+(?:\.[0-9]+)?)")


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


@pytest.mark.parametrize("path", _SOURCES, ids=_rel)
def test_no_words_from_the_building_process(path: Path) -> None:
    if path == Path(__file__).resolve():
        return
    hits = [f"{n}: {line.strip()}" for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if _BUILDING_WORDS.search(line)]
    assert hits == []


def test_every_fact_reference_names_a_section_of_docs_dsql_facts() -> None:
    headings = set(re.findall(r"^#{2,3} (R?[0-9]+(?:\.[0-9]+)*)\.? ", FACTS.read_text(encoding="utf-8"), re.MULTILINE))
    missing = sorted({f"{_rel(p)}: §{ref}" for p in _SOURCES for ref in _FACT_REF.findall(p.read_text("utf-8"))
                      if ref not in headings})
    assert missing == []
