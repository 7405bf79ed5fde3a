"""Replay the recorded real-DSQL conformance suite against the sandbox and assert its targets:
≥95% of all cases, ≥90% of every file, 100% of index, transaction and occ_conflict, on each of the
three client paths (simple query, unnamed extended, named prepared statements).

The record (MIT, see its LICENSE and SOURCE.txt) lives in ``tests/fixtures/conformance``. The replay
goes through the real wire front (TLS, IAM token, the DSQL dialect) on a fresh sandbox cluster,
with the sandbox's job runner building the ASYNC indexes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SUITE_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "conformance"

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


def _suite_dir() -> Path:
    assert (SUITE_DIR / "README.md").is_file(), f"the conformance record is missing from {SUITE_DIR}"
    return SUITE_DIR


@pytest.fixture(scope="module", params=["simple", "unnamed", "named"], ids=lambda p: f"path={p}")
def replay(sandbox, request):
    from dsqlops.sandbox import conformance as conf

    suite = conf.load_suite(_suite_dir())
    cid = sandbox.create_cluster()

    def connect() -> conf.PgConn:
        return conf.PgConn(sandbox.connect(cid, autocommit=True))

    return conf.run_suite(suite, connect, path=request.param)


def test_conformance_meets_targets(replay) -> None:
    from dsqlops.sandbox import conformance as conf

    data = conf.report_json(replay)
    detail = json.dumps({"files": data["files"], "mismatches": [(m["file"], m["name"], m["differences"])
                                                               for m in data["mismatches"]]}, indent=1)
    assert not data["setup_errors"], data["setup_errors"]
    assert data["total"] >= 100, detail
    assert replay.ratio >= conf.TARGET_OVERALL, detail
    for f in replay.files:
        assert f.ratio >= conf.TARGET_PER_FILE, (f.file, detail)
        if f.file in conf.TARGET_EXACT:
            assert f.matched == f.total, (f.file, detail)
    assert replay.meets_target


def test_conformance_report_lists_every_file(replay) -> None:
    from dsqlops.sandbox import conformance as conf

    recorded = {p.stem for p in _suite_dir().glob("*.json") if p.name != "sessions.json"}
    assert {f.file for f in replay.files} == recorded
    assert sum(f.total for f in replay.files) == replay.total == conf.report_json(replay)["total"]
