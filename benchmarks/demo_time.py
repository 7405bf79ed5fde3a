"""Wall time of `dsqlops demo` with its defaults on a fresh sandbox (target: under 3 minutes).

    .venv/bin/python benchmarks/demo_time.py [extra demo options…]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET = 180.0


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="dsqlops-demo-time-"))
    root.chmod(0o755)
    sdir = root / "sandbox"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSQLOPS_", "AWS_"))}
    env["XDG_CONFIG_HOME"] = str(root / "xdg")
    t0 = time.monotonic()
    try:
        p = subprocess.run([sys.executable, "-m", "dsqlops", "demo", "--dir", str(sdir), *sys.argv[1:]], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
        wall = time.monotonic() - t0
    finally:
        subprocess.run([sys.executable, "-m", "dsqlops", "sandbox", "stop", "--dir", str(sdir)], env=env,
                       capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)
    steps = p.stdout.count("\n── ")
    print(f"dsqlops demo (defaults, fresh sandbox): exit {p.returncode}, {steps} steps, {wall:.1f}s wall")
    print(f"ratio to the 3-minute budget: {wall / BUDGET:.2f}")
    if p.returncode != 0:
        print("demo failed; last output:\n" + p.stdout[-3000:])
    return p.returncode


if __name__ == "__main__":
    sys.exit(main())
