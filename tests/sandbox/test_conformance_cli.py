"""`dsqlops sandbox conformance` end to end: the CLI against the sandbox (TLS, IAM token, dialect),
its JSON report, --record, and its exit codes."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

from tests.clirun import run_dsqlops, sandbox_cli_env

pytestmark = pytest.mark.sandbox

CASES = {
    "recorded_at": "2026-09-18T09:04:23.176282Z", "target": "aurora-dsql", "suite": "dsql-baseline",
    "server_version": "PostgreSQL 16",
    "cases": [
        {"name": "cli_index_sync", "group": "mini", "steps": ["CREATE INDEX i ON cli_t (v)"],
         "observations": [{"outcome": "error", "sqlstate": "0A000",
                           "message": "unsupported mode. please use CREATE INDEX ASYNC."}]},
        {"name": "cli_async", "group": "mini", "ignore_rows": True,
         "steps": ["CREATE INDEX ASYNC cli_i ON cli_t (v)"],
         "observations": [{"outcome": "ok", "command_tag": "CREATE INDEX", "columns": ["job_id"],
                           "rows": [["aaaaaaaaaaaaaaaaaaaaaaaaaa"]]}]},
        {"name": "cli_rows", "group": "mini", "steps": ["SELECT v, id FROM cli_t ORDER BY id"],
         "observations": [{"outcome": "ok", "command_tag": "SELECT 2", "columns": ["v", "id"],
                           "rows": [["a", "[0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1]"],
                                    ["NULL", "[0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 2]"]]}]},
    ],
}
SETUP = ("DROP TABLE IF EXISTS cli_t;\nCREATE TABLE cli_t (id uuid PRIMARY KEY, v text);\n"
         "INSERT INTO cli_t VALUES ('00000000-0000-0000-0000-000000000001', 'a'), "
         "('00000000-0000-0000-0000-000000000002', NULL);\n")


_env = sandbox_cli_env
_run = functools.partial(run_dsqlops, timeout=300)


def _folder(tmp_path: Path, cases: dict[str, Any]) -> Path:
    d = tmp_path / "suite"
    d.mkdir()
    (d / "mini.json").write_text(json.dumps(cases, indent=2))
    (d / "setup.sql").write_text(SETUP)
    (d / "teardown.sql").write_text("DROP TABLE IF EXISTS cli_t;\n")
    return d


def test_cli_replay_matches_and_records(sandbox: Any, tmp_path: Path) -> None:
    env = _env(sandbox, tmp_path)
    cid = sandbox.create_cluster()
    folder = _folder(tmp_path, CASES)
    out = tmp_path / "recorded"
    p = _run(env, "-o", "json", "sandbox", "conformance", str(folder), "--endpoint", cid, "--record",
             "--out", str(out))
    assert p.returncode == 0, p.stderr + p.stdout
    report = json.loads(p.stdout)
    assert (report["matched"], report["total"], report["meets_target"]) == (3, 3, True)
    assert report["files"] == [{"file": "mini", "matched": 3, "total": 3, "ratio": 1.0}]
    recorded = json.loads((out / "mini.json").read_text())
    job = recorded["cases"][1]["observations"][0]["rows"][0][0]
    assert len(job) == 26 and job != "aaaaaaaaaaaaaaaaaaaaaaaaaa"
    assert recorded["cases"][2]["observations"] == CASES["cases"][2]["observations"]  # type: ignore[index]


def test_cli_below_target_exits_1_with_the_mismatch(sandbox: Any, tmp_path: Path) -> None:
    env = _env(sandbox, tmp_path)
    cid = sandbox.create_cluster()
    wrong = json.loads(json.dumps(CASES))
    wrong["cases"][2]["observations"][0]["rows"][0][0] = "b"
    p = _run(env, "-o", "json", "sandbox", "conformance", str(_folder(tmp_path, wrong)), "-c", cid)
    assert p.returncode == 1, p.stderr
    report = json.loads(p.stdout)
    assert report["meets_target"] is False and [m["name"] for m in report["mismatches"]] == ["cli_rows"]
    assert "rows expected" in report["mismatches"][0]["differences"][0]
    assert "below target" in p.stderr


def test_cli_folder_without_cases_is_a_usage_error(sandbox: Any, tmp_path: Path) -> None:
    env = _env(sandbox, tmp_path)
    p = _run(env, "sandbox", "conformance", str(tmp_path), "-c", "abcdefghijklmnopqrstuvwxyz")
    assert p.returncode == 252 and "no conformance case files" in p.stderr
