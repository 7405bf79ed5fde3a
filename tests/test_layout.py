"""The README's layout section names every package of dsqlops, and each test folder mirrors one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _layout() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split("## Layout", 1)[1].split("```", 2)[1]


def test_the_readme_layout_names_every_package_folder() -> None:
    named = set(re.findall(r"^(dsqlops/[\w/]*?)/? ", _layout(), re.MULTILINE))
    folders = {str(p.relative_to(ROOT)) for p in (ROOT / "dsqlops").rglob("*")
               if p.is_dir() and p.name != "__pycache__" and not p.name.endswith(".egg-info")
               and any(q.is_file() for q in p.iterdir())}
    assert folders - named == set(), "add these folders to the README's layout section"
    assert {n for n in named if n != "dsqlops/*.py"} - folders == set(), "the layout names folders that are gone"


def test_test_folders_mirror_the_packages() -> None:
    packages = {p.name for p in (ROOT / "dsqlops").iterdir() if (p / "__init__.py").is_file()}
    test_areas = {p.name for p in (ROOT / "tests").iterdir() if (p / "__init__.py").is_file()}
    # faults: injected-fault tests across packages; cli tests live with the area they drive
    assert test_areas - packages <= {"faults"}
