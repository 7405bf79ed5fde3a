"""L2: ten overlapping cron ``dsqlops report`` runs. Exactly one takes the lock and writes; the
other nine exit 75 at once; a reader looping on the output file only ever sees a complete file.

In the test matrix (dsql-facts.md §R5.2), L2 is a D-layer row; here the ten runs are real processes against the
sandbox's control plane. The lock holder's AWS calls go through :mod:`tests.faultproxy`, held at
its gate until the nine others have exited, so the overlap is certain rather than a race.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import yaml

from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.sandbox

RUNS = 10


def test_l2_ten_overlapping_reports_one_writes_nine_exit_75_file_always_complete(sandbox, tmp_path) -> None:  # type: ignore[no-untyped-def]
    api_port = int(sandbox.api_endpoint.rsplit(":", 1)[1].split("/")[0])
    out_dir = tmp_path / "www"
    out_dir.mkdir()
    out = out_dir / "cost.json"
    out.write_text(json.dumps({"previous": True}))  # the last run's complete report
    lock = tmp_path / "report.lock"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"profiles": {"default": {"region": sandbox.region}},
                                   "reports": {"regions": [sandbox.region], "format": "json"}}))
    cfg.chmod(0o600)

    with FaultProxy("127.0.0.1", api_port) as proxy:
        endpoint = f"http://127.0.0.1:{proxy.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DSQLOPS_", "AWS_"))}
        env.update(sandbox.env())
        env.update({"AWS_ENDPOINT_URL": endpoint, "DSQLOPS_ENDPOINT_URL": endpoint,
                    "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "DSQLOPS_NO_PROGRESS": "1"})

        reads = [0]
        torn: list[str] = []
        stop = threading.Event()

        def reader() -> None:
            while not stop.is_set():
                try:
                    text = out.read_text()
                    json.loads(text)
                except (FileNotFoundError, ValueError) as e:
                    torn.append(repr(e))
                reads[0] += 1

        proxy.hold()  # whoever gets the lock waits at its first AWS call
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        procs = [subprocess.Popen([sys.executable, "-m", "dsqlops", "--config", str(cfg), "report",
                                   "--out", str(out), "--lock-file", str(lock)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(RUNS)]
        try:
            deadline = time.monotonic() + 240
            while sum(p.poll() is not None for p in procs) < RUNS - 1:
                assert time.monotonic() < deadline, "the runs that lost the lock did not exit"
                time.sleep(0.1)
            held = [p for p in procs if p.poll() is None]
            assert len(held) == 1  # one run holds the lock (parked at the gate), nine are gone
            assert out.read_text() == json.dumps({"previous": True})
            proxy.release()
            results = [(p.wait(timeout=240), *p.communicate()) for p in procs]
        finally:
            proxy.release()
            for p in procs:
                if p.poll() is None:
                    p.kill()
            stop.set()
            t.join(10)

    codes = sorted(code for code, _out, _err in results)
    assert codes.count(75) == RUNS - 1 and codes[0] in (0, 3), results  # 3: a budget alarm, written first
    for code, _o, err in results:
        if code == 75:
            assert err.strip().startswith("error: another dsqlops run holds the lock"), err
    # Every read saw a whole file: the previous report or the new one, never a prefix.
    assert reads[0] > 0 and torn == []
    final = json.loads(out.read_text())
    assert "totals" in final
    assert out.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in out_dir.iterdir()) == ["cost.json"]  # no temp file left behind
    with open(lock, "rb+") as fh:  # and the lock was released
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
