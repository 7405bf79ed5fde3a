"""The bench workloads: the talk's banking transfer, a hot counter, point reads.

Each workload has a ``setup`` (DSQL rules: one DDL per transaction, no DDL+DML mix, ≤3,000 rows
per transaction, so accounts load in batches), a ``transaction(conn, rng)`` run once per attempt
inside a transaction that the runner commits (and re-runs whole on 40001), a ``baseline`` read
before the run and a ``check`` of the invariants after it.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from dsqlops.errors import UsageError

#: Rows per setup transaction (DSQL refuses > 3,000 modified rows in one transaction).
LOAD_BATCH = 1000
INITIAL_BALANCE = Decimal("1000.00")
MAX_TRANSFER = 100  # whole currency units; amounts are 1.00 … 100.00

ACCOUNTS_DDL = ("CREATE TABLE IF NOT EXISTS accounts (id bigint PRIMARY KEY, "
                "balance numeric(18,2) NOT NULL)")
TRANSACTIONS_DDL = ("CREATE TABLE IF NOT EXISTS transactions (id uuid PRIMARY KEY, from_id bigint NOT NULL, "
                    "to_id bigint NOT NULL, amount numeric(18,2) NOT NULL, "
                    "created_at timestamptz NOT NULL)")
COUNTER_DDL = "CREATE TABLE IF NOT EXISTS bench_counter (id int PRIMARY KEY, value bigint NOT NULL)"

ABORTED = "aborted"
COMMITTED = "committed"


@dataclass
class Check:
    name: str
    #: None: the check could not run (the cluster did not answer after a run cut short).
    ok: bool | None
    detail: str


def _ddl(conn: Any, statement: str) -> None:
    """One DDL statement in its own transaction (DSQL: no DDL+DML mix, one DDL per txn)."""
    with conn.transaction():
        conn.execute(statement)


def table_exists(conn: Any, name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    if not conn.autocommit:
        conn.rollback()
    return bool(row and row[0])


def load_accounts(conn: Any, accounts: int, *, progress: Callable[[int], None] | None = None) -> int:
    """Insert accounts 1..N that are missing, ``LOAD_BATCH`` rows per transaction. Returns rows added."""
    added = 0
    for lo in range(1, accounts + 1, LOAD_BATCH):
        hi = min(lo + LOAD_BATCH - 1, accounts)
        with conn.transaction():
            cur = conn.execute(
                "INSERT INTO accounts (id, balance) SELECT g, %s FROM generate_series(%s::bigint, %s::bigint) g "
                "ON CONFLICT (id) DO NOTHING", (INITIAL_BALANCE, lo, hi))
            added += max(cur.rowcount, 0)
        if progress:
            progress(hi)
    return added


class Workload:
    name = ""
    read_only = False
    #: The names of the invariants ``check`` reports.
    check_names: tuple[str, ...] = ()

    def __init__(self, accounts: int, *, log: bool | None = None) -> None:
        if accounts < 2:
            raise UsageError("--accounts must be at least 2")
        self.accounts = accounts
        self.log = log

    def setup(self, conn: Any, *, progress: Callable[[int], None] | None = None) -> None:
        raise NotImplementedError

    def prepare(self, conn: Any) -> None:
        """Check the tables are there (after an optional setup) and fix options that depend on them."""

    def baseline(self, conn: Any) -> dict[str, Any]:
        return {}

    def transaction(self, conn: Any, rng: random.Random) -> str:
        raise NotImplementedError

    def check(self, conn: Any, baseline: dict[str, Any], committed: int) -> list[Check]:
        return []


def _require(conn: Any, table: str, hint: str) -> None:
    if not table_exists(conn, table):
        raise UsageError(f"table {table!r} does not exist on this cluster", hint=hint)


class Transfer(Workload):
    """The banking transfer of the talk: read both balances, check funds, move money, log it."""

    name = "transfer"
    check_names = ("total_money_unchanged", "no_negative_balance")

    def setup(self, conn: Any, *, progress: Callable[[int], None] | None = None) -> None:
        _ddl(conn, ACCOUNTS_DDL)
        if self.log is not False:
            _ddl(conn, TRANSACTIONS_DDL)
        load_accounts(conn, self.accounts, progress=progress)

    def prepare(self, conn: Any) -> None:
        _require(conn, "accounts", "run with --setup to create and load it")
        has_log = table_exists(conn, "transactions")
        if self.log and not has_log:
            raise UsageError("table 'transactions' does not exist", hint="run with --setup, or pass --no-log")
        if self.log is None:
            self.log = has_log
        row = conn.execute("SELECT count(*) FROM accounts WHERE id BETWEEN 1 AND %s", (self.accounts,)).fetchone()
        conn.rollback()
        if not row or row[0] < self.accounts:
            raise UsageError(f"accounts 1..{self.accounts} are not all loaded ({row[0] if row else 0} found)",
                             hint="run with --setup, or lower --accounts")

    def baseline(self, conn: Any) -> dict[str, Any]:
        row = conn.execute("SELECT count(*), coalesce(sum(balance), 0) FROM accounts").fetchone()
        conn.rollback()
        return {"accounts": int(row[0]), "total_balance": Decimal(row[1])}

    def transaction(self, conn: Any, rng: random.Random) -> str:
        src = rng.randint(1, self.accounts)
        dst = rng.randint(1, self.accounts - 1)
        if dst >= src:
            dst += 1
        amount = Decimal(rng.randint(1, MAX_TRANSFER)).quantize(Decimal("0.01"))
        cur = conn.execute("SELECT id, balance FROM accounts WHERE id IN (%s, %s)", (src, dst))
        balances = {int(r[0]): Decimal(r[1]) for r in cur.fetchall()}
        if src not in balances or dst not in balances:
            raise UsageError(f"account {src if src not in balances else dst} is missing")
        if balances[src] < amount:
            conn.rollback()
            return ABORTED
        new = {src: balances[src] - amount, dst: balances[dst] + amount}
        # Lower id first: DSQL has no row locks, but a lock-based PostgreSQL would deadlock otherwise.
        for acct in sorted(new):
            conn.execute("UPDATE accounts SET balance = %s WHERE id = %s", (new[acct], acct))
        if self.log:
            conn.execute("INSERT INTO transactions (id, from_id, to_id, amount, created_at) "
                         "VALUES (%s, %s, %s, %s, now())", (uuid.UUID(int=rng.getrandbits(128), version=4),
                                                             src, dst, amount))
        return COMMITTED

    def check(self, conn: Any, baseline: dict[str, Any], committed: int) -> list[Check]:
        after = self.baseline(conn)
        row = conn.execute("SELECT count(*) FROM accounts WHERE balance < 0").fetchone()
        conn.rollback()
        negative = int(row[0]) if row else 0
        before_total: Decimal = baseline["total_balance"]
        after_total: Decimal = after["total_balance"]
        return [
            Check("total_money_unchanged", after_total == before_total,
                  f"before {before_total}, after {after_total}"),
            Check("no_negative_balance", negative == 0, f"{negative} account(s) below zero"),
        ]


class Counter(Workload):
    """One hot key incremented by every transaction: shows OCC conflicts and retries."""

    name = "counter"
    check_names = ("no_lost_updates",)

    def setup(self, conn: Any, *, progress: Callable[[int], None] | None = None) -> None:
        _ddl(conn, COUNTER_DDL)
        with conn.transaction():
            conn.execute("INSERT INTO bench_counter (id, value) VALUES (1, 0) ON CONFLICT (id) DO NOTHING")

    def prepare(self, conn: Any) -> None:
        _require(conn, "bench_counter", "run with --setup to create it")

    def baseline(self, conn: Any) -> dict[str, Any]:
        row = conn.execute("SELECT value FROM bench_counter WHERE id = 1").fetchone()
        conn.rollback()
        if row is None:
            raise UsageError("bench_counter has no row 1", hint="run with --setup")
        return {"value": int(row[0])}

    def transaction(self, conn: Any, rng: random.Random) -> str:
        row = conn.execute("SELECT value FROM bench_counter WHERE id = 1").fetchone()
        conn.execute("UPDATE bench_counter SET value = %s WHERE id = 1", (int(row[0]) + 1,))
        return COMMITTED

    def check(self, conn: Any, baseline: dict[str, Any], committed: int) -> list[Check]:
        delta = self.baseline(conn)["value"] - baseline["value"]
        # With other hosts incrementing at the same time the delta may exceed our count; it may never
        # fall short of it (that would be a lost update).
        return [Check("no_lost_updates", delta >= committed,
                      f"counter advanced by {delta}, {committed} increment(s) committed here")]


class PointRead(Workload):
    """Primary-key point reads of random accounts (read-only transactions)."""

    name = "read"
    read_only = True

    def setup(self, conn: Any, *, progress: Callable[[int], None] | None = None) -> None:
        _ddl(conn, ACCOUNTS_DDL)
        load_accounts(conn, self.accounts, progress=progress)

    def prepare(self, conn: Any) -> None:
        _require(conn, "accounts", "run with --setup to create and load it")

    def transaction(self, conn: Any, rng: random.Random) -> str:
        conn.execute("SELECT balance FROM accounts WHERE id = %s", (rng.randint(1, self.accounts),)).fetchone()
        return COMMITTED


WORKLOADS: dict[str, type[Workload]] = {"transfer": Transfer, "counter": Counter, "read": PointRead}


def make_workload(name: str, accounts: int, *, log: bool | None = None) -> Workload:
    try:
        cls = WORKLOADS[name]
    except KeyError:
        raise UsageError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}") from None
    return cls(accounts, log=log)
