"""Startup cost of the CLI: `dsqlops --help` wall time as a ratio of `python -c pass` and of
`python -c "import boto3"`, median of N runs each, interleaved, same interpreter.

    .venv/bin/python benchmarks/startup.py [--runs 9]

`dsqlops --help` must not import boto3 or psycopg (tests/test_cli_help.py checks it); the second
ratio shows what that laziness buys: it should stay well below 1.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import boto3'": [sys.executable, "-c", "import boto3"],
    "dsqlops --help": [sys.executable, "-m", "dsqlops", "--help"],
}


def once(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9, help="runs per case (at least 7)")
    args = ap.parse_args()
    runs = max(7, args.runs)
    for cmd in CASES.values():  # warm the OS caches once
        once(cmd)
    samples: dict[str, list[float]] = {k: [] for k in CASES}
    for _ in range(runs):  # interleave so load spikes hit every case alike
        for name, cmd in CASES.items():
            samples[name].append(once(cmd))
    med = {k: statistics.median(v) for k, v in samples.items()}
    for k, v in med.items():
        print(f"{k:28s} median {v * 1000:8.1f} ms over {runs} runs")
    base, boto, cli = med["python -c pass"], med["python -c 'import boto3'"], med["dsqlops --help"]
    print(f"ratio dsqlops --help / python -c pass        = {cli / base:.2f}")
    print(f"ratio dsqlops --help / python -c import boto3 = {cli / boto:.2f}")


if __name__ == "__main__":
    main()
