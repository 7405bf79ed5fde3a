"""``dsqlops demo``: the DSQL banking talk, replayed on the local sandbox with the real CLI.

Every step prints the command a user would type (``$ dsqlops …``) and then runs exactly that
command as a subprocess of this Python (``python -m dsqlops …``) against the sandbox, so what the
audience sees is what the CLI does. A step whose command fails (or does not exist yet) stops the
demo with its exit code: nothing is faked. The one thing dsqlops has no command for — creating
an IAM role — is shown as the equivalent ``aws iam`` command and done with boto3 on the sandbox.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from dsqlops.errors import OperationFailed

ACCOUNTS_DDL = "CREATE TABLE accounts (id bigint PRIMARY KEY, balance numeric(18,2) NOT NULL)"
TRANSACTIONS_DDL = ("CREATE TABLE transactions (id uuid PRIMARY KEY, from_id bigint NOT NULL, to_id bigint NOT NULL, "
                    "amount numeric(18,2) NOT NULL, created_at timestamptz NOT NULL)")
HOT_QUERY = "SELECT id, amount, created_at FROM transactions WHERE from_id = 42 ORDER BY created_at LIMIT 10"
TRUST_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"}]})


@dataclass(frozen=True)
class DemoOptions:
    accounts: int = 1000
    concurrency: int = 8
    duration: float = 15.0
    sandbox_dir: str | None = None
    role: str = "teller"
    timeout: float = 300.0


@dataclass
class StepResult:
    number: int
    title: str
    command: str
    seconds: float
    ok: bool


@dataclass
class DemoResult:
    cluster_id: str = ""
    steps: list[StepResult] = field(default_factory=list)
    bench: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


class Demo:
    def __init__(self, opts: DemoOptions, out: TextIO, *, color: bool = False) -> None:
        self.opts = opts
        self.out = out
        self.color = color
        self.result = DemoResult()
        self.env: dict[str, str] = {}
        self.workdir = Path(tempfile.mkdtemp(prefix="dsqlops-demo-"))
        self._n = 0

    # -- printing -------------------------------------------------------------------------------
    def _say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _title(self, title: str) -> None:
        self._n += 1
        bar = f"── {self._n}. {title} "
        self._say("")
        self._say(f"\033[1m{bar}\033[0m" if self.color else bar)

    def _prompt(self, shown: str) -> None:
        self._say(f"\033[36m$ {shown}\033[0m" if self.color else f"$ {shown}")

    # -- running ----------------------------------------------------------------------------------
    def dsqlops(self, title: str, args: Sequence[str], *, capture: bool = False, expect_fail: bool = False,
                extra_env: dict[str, str] | None = None, shown: str | None = None) -> str:
        """Show and run one dsqlops command. Returns its stdout when ``capture``."""
        self._title(title)
        cmd = "dsqlops " + " ".join(shlex.quote(a) for a in args)
        self._prompt(shown or cmd)
        t0 = time.monotonic()
        env = {**os.environ, **self.env, **(extra_env or {})}
        for k in ("AWS_PROFILE", "DSQLOPS_PROFILE"):  # the sandbox's keys, not a profile's
            env.pop(k, None)
        # stdout (the command's data) is echoed into the demo's output; stderr (live telemetry,
        # progress, the refusal's error message) goes straight to ours, as it would in a shell.
        sys.stderr.flush()
        p = subprocess.run([sys.executable, "-m", "dsqlops", *args], env=env, text=True, stdout=subprocess.PIPE,
                           stderr=None, timeout=self.opts.timeout, check=False)
        if p.stdout:
            self.out.write(p.stdout)
        self.out.flush()
        ok = (p.returncode != 0) if expect_fail else (p.returncode == 0)
        self.result.steps.append(StepResult(self._n, title, cmd, round(time.monotonic() - t0, 2), ok))
        if not ok:
            what = "succeeded but should have been refused" if expect_fail else f"failed (exit {p.returncode})"
            raise OperationFailed(f"demo step {self._n} ({title}) {what}: {cmd}",
                                  hint="the command's own error is printed above")
        if expect_fail:
            self._say("(refused, as expected)")
        return p.stdout or ""

    def python_step(self, title: str, shown: str) -> None:
        self._title(title)
        self._prompt(shown)

    # -- the talk -----------------------------------------------------------------------------------
    def run(self) -> DemoResult:
        t_start = time.monotonic()
        o = self.opts
        self._start_sandbox()
        out = self.dsqlops("Create a cluster and wait for it",
                           ["-o", "json", "cluster", "create", "--no-deletion-protection", "--wait"], capture=True)
        cid = _cluster_id(out)
        self.result.cluster_id = cid
        self.env["DSQLOPS_CLUSTER"] = cid
        self._say(f"cluster: {cid}")

        arn, creds = self._iam_role(o.role)
        self.dsqlops("Create a PostgreSQL role that can log in", ["role", "create", o.role, "--login"])
        self.dsqlops("Log in as it with the IAM role: refused, there is no mapping yet",
                     ["sql", "--role", o.role, "SELECT current_user"], expect_fail=True, extra_env=creds)
        self.dsqlops("Map the IAM role to it (AWS IAM GRANT)", ["role", "grant-iam", o.role, arn])
        self.dsqlops("Log in again as the IAM role", ["sql", "--role", o.role, "SELECT current_user, now()"],
                     extra_env=creds)

        self.dsqlops("Create the accounts table", ["sql", ACCOUNTS_DDL])
        common = ["--accounts", str(o.accounts), "--concurrency", str(o.concurrency), "--duration", str(o.duration)]
        self.dsqlops("Load accounts (batches ≤ 1,000 rows) and run concurrent transfers with OCC retries",
                     ["bench", "transfer", "--setup", "--no-log", *common])
        self.dsqlops("Add the transactions log", ["sql", TRANSACTIONS_DDL])
        results = self.workdir / "transfers.jsonl"
        self.dsqlops("Transfers again, each one logged", ["bench", "transfer", *common, "--results", str(results)])
        self.result.bench = _last_json_line(results)

        self.dsqlops("Statistics for the planner", ["stats", "analyze", "transactions"])
        self.dsqlops("EXPLAIN a customer's history: a full scan and a sort", ["explain", "--analyze", HOT_QUERY])
        self._build_index()
        self.dsqlops("Refresh the statistics", ["stats", "analyze", "transactions"])
        self.dsqlops("EXPLAIN again: the index, no sort", ["explain", "--analyze", HOT_QUERY])
        self.dsqlops("Dump the planner statistics", ["stats", "dump", "--table", "public.transactions"])
        self.dsqlops("Publish the sandbox's metering to CloudWatch now", ["sandbox", "flush-metrics"])
        # The demo's sandbox cluster stays out of the user's own cost history.
        self.dsqlops("What it cost (this month, from CloudWatch)",
                     ["cost", "--cluster-id", cid, "--history", str(self.workdir / "history.sqlite3")])
        self._cost_per_1000()
        self.result.seconds = round(time.monotonic() - t_start, 1)
        self._say("")
        self._say(f"demo finished in {self.result.seconds:.0f}s: {len(self.result.steps)} commands, cluster {cid}")
        self._say("the sandbox keeps running: explore with `eval \"$(dsqlops sandbox env)\"`, "
                  "stop it with `dsqlops sandbox stop`")
        return self.result

    # -- steps with logic -----------------------------------------------------------------------------
    def _start_sandbox(self) -> None:
        from dsqlops.sandbox import client

        sandbox = client.running(self.opts.sandbox_dir)
        if sandbox is None:
            args = ["sandbox", "start"] + (["--dir", str(client.folder(self.opts.sandbox_dir))]
                                           if self.opts.sandbox_dir else [])
            self.dsqlops("Start the local DSQL sandbox", args)
            sandbox = client.running(self.opts.sandbox_dir)
            if sandbox is None:
                raise OperationFailed("`dsqlops sandbox start` returned but no sandbox is running",
                                      hint="see its log: dsqlops sandbox status")
        else:
            self._title("Reuse the running sandbox")
            self._say(f"sandbox already running in {sandbox.path}")
        self.env = sandbox.env()
        self._prompt('eval "$(dsqlops sandbox env)"')

    def _iam_role(self, name: str) -> tuple[str, dict[str, str]]:
        """Create (or reuse) an IAM role in the sandbox and assume it; returns (arn, env creds)."""
        from dsqlops.aws import AwsContext

        self.python_step(f"Create an IAM role '{name}' (no dsqlops command for IAM: this is the AWS CLI "
                         "equivalent, run with boto3 on the sandbox)",
                         f"aws iam create-role --role-name {name} --assume-role-policy-document file://trust.json")
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            ctx = AwsContext(region=self.env.get("AWS_REGION") or "us-east-1",
                             endpoint_url=self.env.get("DSQLOPS_ENDPOINT_URL"))
            iam = ctx.iam()
            try:
                arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST_POLICY)["Role"]["Arn"]
            except iam.exceptions.EntityAlreadyExistsException:
                arn = iam.get_role(RoleName=name)["Role"]["Arn"]
            c = ctx.sts().assume_role(RoleArn=arn, RoleSessionName=f"{name}-demo")["Credentials"]
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self._say(f"role: {arn}")
        self._prompt(f"aws sts assume-role --role-arn {arn} --role-session-name {name}-demo   # then export its keys")
        return str(arn), {"AWS_ACCESS_KEY_ID": c["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": c["SecretAccessKey"],
                          "AWS_SESSION_TOKEN": c["SessionToken"]}

    def _build_index(self) -> None:
        out = self.dsqlops("CREATE INDEX ASYNC: the job id comes back at once",
                           ["-o", "json", "index", "build", "transactions", "from_id", "created_at",
                            "--name", "transactions_from_created"], capture=True)
        self.dsqlops("Wait for the index build job", ["job", "wait", _job_id(out)])

    def _cost_per_1000(self) -> None:
        b = self.result.bench
        self._title("The cost of 1,000 transfers")
        per = b.get("cost", {}) or {}
        if not per.get("usd_per_1000_transactions"):
            raise OperationFailed("the transfer run has no cost (the sandbox metering did not answer)")
        self._say(f"{b.get('committed', 0)} transfers committed, {b.get('retries', 0)} OCC retries, "
                  f"{per['total_dpu']} DPU ({per['dpu_per_transaction']} DPU per transfer)")
        self._say(f"≈ ${per['usd_per_1000_transactions']} per 1,000 transfers at ${per['usd_per_million_dpu']} "
                  "per million DPU (list price, before the free tier)")
        self.result.steps.append(StepResult(self._n, "The cost of 1,000 transfers", "", 0.0, True))


def _json_field(stdout: str, command: str, keys: tuple[str, ...], missing: str) -> str:
    """The first non-empty ``keys`` field of what ``dsqlops COMMAND -o json`` printed (an object, or
    the first row of a list)."""
    try:
        data = json.loads(stdout)
    except ValueError:
        raise OperationFailed(f"`{command} -o json` did not print JSON") from None
    if isinstance(data, list) and data:
        data = data[0]
    for key in keys:
        if isinstance(data, dict) and data.get(key):
            return str(data[key])
    raise OperationFailed(f"`{command}` {missing}")


def _cluster_id(stdout: str) -> str:
    return _json_field(stdout, "cluster create", ("identifier", "cluster_id", "id"),
                       "printed no cluster identifier")


def _job_id(stdout: str) -> str:
    return _json_field(stdout, "index build", ("job_id",), "returned no job_id")


def _last_json_line(path: Path) -> dict[str, Any]:
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        data = json.loads(lines[-1])
    except (OSError, ValueError, IndexError):
        raise OperationFailed(f"the transfer run wrote no result to {path}") from None
    return data if isinstance(data, dict) else {}


def run_demo(opts: DemoOptions, out: TextIO, *, color: bool = False) -> DemoResult:
    demo = Demo(opts, out, color=color)
    try:
        return demo.run()
    finally:
        shutil.rmtree(demo.workdir, ignore_errors=True)  # its one file is summed up in the result
