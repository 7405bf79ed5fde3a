"""Replay a recorded DSQL conformance suite (the format of ``tests/fixtures/conformance``) and compare.

A folder holds ``*.json`` case files (one group each), optionally ``setup.sql``/``teardown.sql``
(one statement per line), ``sessions.json`` (the SQL of two-session cases) and ``ORDER.md`` (the
global case order, a markdown table). :func:`run_suite` runs setup, every case in order (extended
protocol for ordinary steps, one simple Query for ``simple_protocol`` steps, ``ROLLBACK`` after
each single-connection case, two-session cases started together with 150 ms between steps), then
teardown, and compares each observation with the record using the record's rules: step count,
outcome, SQLSTATE, command tag, columns and rows (a message difference is advisory;
``ignore_rows`` waives rows and a ``SELECT n`` count; ``known_gap`` never fails; for
``conflict_race`` only the number of failed last steps and their SQLSTATEs count).

Each case can be replayed over three client paths (``PATHS``): ``unnamed`` (the extended protocol
with the unnamed statement, as the record was made), ``simple`` (each step as a simple Query, as
psycopg's ClientCursor sends it) and ``named`` (a named prepared statement per step, Parse then
Bind/Execute, as pgx, JDBC and asyncpg do). DSQL answers the same on every path.

Targets are connection factories (``Callable[[], psycopg.Connection]``): a cluster through the
wire front (``dsqlops.data.connection``), or, for tests of the dialect alone, a plain
PostgreSQL wrapped in :class:`ShimConn` which plays the front's part in-process.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import select
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsqlops.errors import UsageError

STEP_TIMEOUT_S = 15.0
STEP_GAP_S = 0.150
_DEFAULT_GAP_MS = 150


# -- the record ----------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    group: str
    raw: dict[str, Any]                     # the case as recorded
    steps: list[str] | None = None
    sessions_sql: list[list[str]] | None = None
    gap_ms: int = _DEFAULT_GAP_MS

    @property
    def simple(self) -> bool:
        return bool(self.raw.get("simple_protocol"))

    @property
    def ignore_rows(self) -> bool:
        return bool(self.raw.get("ignore_rows"))

    @property
    def known_gap(self) -> str | None:
        gap = self.raw.get("known_gap")
        return str(gap) if gap else None

    @property
    def conflict_race(self) -> bool:
        return bool(self.raw.get("conflict_race"))


@dataclass
class Suite:
    folder: Path
    cases: list[Case]                       # in replay order
    files: dict[str, dict[str, Any]]        # group -> the file's top level
    setup: list[str] = field(default_factory=list)
    teardown: list[str] = field(default_factory=list)


def _sql_lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        s = line.strip()
        if not s or s.startswith("--"):
            continue
        out.append(s[:-1].rstrip() if s.endswith(";") else s)
    return out


def _order(folder: Path) -> list[str]:
    path = folder / "ORDER.md"
    if not path.is_file():
        return []
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\|\s*(\d+)\s*\|\s*`([^`]+)`\s*\|", line)
        if m:
            names.append(m.group(2))
    return names


def load_suite(folder: Path | str) -> Suite:
    """Read a conformance folder. Raises UsageError when it holds no case file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"conformance folder {folder} does not exist")
    sessions: dict[str, Any] = {}
    if (folder / "sessions.json").is_file():
        sessions = json.loads((folder / "sessions.json").read_text(encoding="utf-8"))
    files: dict[str, dict[str, Any]] = {}
    by_name: dict[str, Case] = {}
    for path in sorted(folder.glob("*.json")):
        if path.name == "sessions.json":
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise UsageError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
            continue
        group = path.stem
        files[group] = data
        for raw in data["cases"]:
            name = raw["name"]
            if name in by_name:
                raise UsageError(f"{path}: case {name!r} is also in {by_name[name].group}.json")
            case = Case(name=name, group=group, raw=raw, steps=raw.get("steps"))
            if raw.get("sessions") is not None:
                spec = sessions.get(name)
                if spec is not None:
                    case.sessions_sql = spec["sessions"]
                    case.gap_ms = int(spec.get("step_gap_ms", _DEFAULT_GAP_MS))
            by_name[name] = case
    if not by_name:
        raise UsageError(f"no conformance case files (*.json) in {folder}")
    ordered: list[Case] = []
    for name in _order(folder):
        if name in by_name:
            ordered.append(by_name.pop(name))
    for case in by_name.values():  # cases ORDER.md does not list: after the others, in file order
        ordered.append(case)
    return Suite(folder, ordered, files, _sql_lines(folder / "setup.sql"), _sql_lines(folder / "teardown.sql"))


# -- observing -----------------------------------------------------------------------------------
_BOOL, _UUID, _TIMESTAMP, _TIMESTAMPTZ = 16, 2950, 1114, 1184
_BYTEA, _DATE, _INET, _RECORD, _JSON, _JSONB = 17, 1082, 869, 2249, 114, 3802


def _go_fmt(value: Any) -> str:
    """Go's %v of a decoded JSON value (pgx decodes json/jsonb into Go values)."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        f = float(value)
        return str(int(f)) if f.is_integer() and abs(f) < 1e21 else repr(f)
    if isinstance(value, list):
        return "[" + " ".join(_go_fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_fmt(value[k])}" for k in sorted(value)) + "]"
    return str(value)


def _split_composite(inner: str) -> list[str]:
    out, cur, quoted, i = [], "", False, 0
    while i < len(inner):
        ch = inner[i]
        if ch == '"':
            if quoted and inner[i + 1:i + 2] == '"':
                cur += '"'
                i += 2
                continue
            quoted = not quoted
        elif ch == "," and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    out.append(cur)
    return out


def _go_value(raw: bytes | None, oid: int) -> str:
    """A text-format value printed the way the recorder (pgx + Go %v) printed it."""
    if raw is None:
        return "NULL"
    text = raw.decode("utf-8", "replace")
    if oid == _BOOL:
        return "true" if text == "t" else "false"
    if oid == _UUID:
        try:
            return "[" + " ".join(str(b) for b in uuid.UUID(text).bytes) + "]"
        except ValueError:
            return text
    if oid == _DATE:
        return text + "T00:00:00Z" if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) else text
    if oid == _INET and "/" not in text:
        return text + ("/128" if ":" in text else "/32")
    if oid == _BYTEA and text.startswith("\\x"):
        return "[" + " ".join(str(b) for b in bytes.fromhex(text[2:])) + "]"
    if oid in (_JSON, _JSONB):
        try:
            return _go_fmt(json.loads(text))
        except ValueError:
            return text
    if oid == _RECORD and text.startswith("(") and text.endswith(")"):
        return "[" + " ".join(_split_composite(text[1:-1])) + "]"
    if oid in (_TIMESTAMP, _TIMESTAMPTZ):
        try:
            t = dt.datetime.fromisoformat(text)
            if t.tzinfo is not None:
                t = t.astimezone(dt.UTC)
            return t.replace(microsecond=0, tzinfo=None).isoformat() + "Z"
        except ValueError:
            return text
    if text.startswith("{") and text.endswith("}") and oid not in (114, 3802):  # a 1-D array
        inner = text[1:-1]
        return "[" + " ".join(x.strip('"') for x in inner.split(",")) + "]" if inner else "[]"
    return text


def _result_obs(res: Any, *, go: bool) -> dict[str, Any]:
    obs: dict[str, Any] = {"command_tag": res.command_status.decode() if res.command_status else ""}
    if res.nfields:
        obs["columns"] = [res.fname(i).decode() for i in range(res.nfields)]
        rows = []
        for r in range(res.ntuples):
            row = []
            for c in range(res.nfields):
                v = res.get_value(r, c)
                row.append(_go_value(v, res.ftype(c)) if go else ("NULL" if v is None else v.decode()))
            rows.append(row)
        if rows:
            obs["rows"] = rows
    return obs


def _error_obs(sqlstate: str, message: str) -> dict[str, Any]:
    return {"outcome": "error", "sqlstate": sqlstate, "message": message}


def _res_error(res: Any) -> tuple[str, str]:
    from psycopg.pq import DiagnosticField

    code = res.error_field(DiagnosticField.SQLSTATE) or b"XX000"
    msg = res.error_field(DiagnosticField.MESSAGE_PRIMARY) or res.error_message or b""
    return code.decode(), msg.decode("utf-8", "replace").strip()


def _collect(pgconn: Any, timeout: float) -> list[Any]:
    """Wait (bounded) for the results of what was sent; cancel and raise TimeoutError past ``timeout``."""
    deadline = time.monotonic() + timeout
    pgconn.flush()
    while pgconn.is_busy():
        left = deadline - time.monotonic()
        if left <= 0:
            pgconn.get_cancel().cancel()
            while pgconn.get_result() is not None:
                pass
            raise TimeoutError("step timed out")
        select.select([pgconn.socket], [], [], min(left, 0.5))
        pgconn.consume_input()
    out: list[Any] = []
    while True:
        res = pgconn.get_result()
        if res is None:
            return out
        out.append(res)


_OK = (1, 2)  # COMMAND_OK, TUPLES_OK


#: The client paths a case is replayed over (see the module docstring).
PATHS = ("unnamed", "simple", "named")


class PgConn:
    """A target connection (e.g. through the sandbox's wire front): psycopg's libpq layer, so each
    step is exactly one protocol exchange (extended: Parse/Bind/Describe/Execute/Sync). ``path``
    chooses how an ordinary step is sent (``PATHS``)."""

    def __init__(self, conn: Any, path: str = "unnamed") -> None:
        if path not in PATHS:
            raise ValueError(f"unknown client path {path!r} (expected one of {', '.join(PATHS)})")
        conn.autocommit = True
        self.conn = conn
        self.pgconn = conn.pgconn
        self.path = path
        self._prepared = 0

    def extended(self, sql: str, timeout: float = STEP_TIMEOUT_S) -> dict[str, Any]:
        """One ordinary step over this connection's client path."""
        pg = self.pgconn
        try:
            if self.path == "simple":
                pg.send_query(sql.encode())
                results = [r for r in _collect(pg, timeout) if r.status != 0]  # not EMPTY_QUERY
            elif self.path == "named":
                self._prepared += 1
                name = f"dsqlops_conf_{self._prepared}".encode()
                pg.send_prepare(name, sql.encode())
                results = _collect(pg, timeout)
                if all(r.status in _OK for r in results):
                    pg.send_query_prepared(name, None)
                    results = _collect(pg, timeout)
            else:
                pg.send_query_params(sql.encode(), None)
                results = _collect(pg, timeout)
        except TimeoutError:
            return _error_obs("57014", "step timed out")
        for res in results:
            if res.status not in _OK:
                return _error_obs(*_res_error(res))
        if not results:
            return _error_obs("XX000", "no result")
        return {"outcome": "ok", **_result_obs(results[-1], go=True)}

    def simple(self, sql: str, timeout: float = STEP_TIMEOUT_S) -> dict[str, Any]:
        self.pgconn.send_query(sql.encode())
        try:
            results = _collect(self.pgconn, timeout)
        except TimeoutError:
            return _error_obs("57014", "step timed out")
        out: list[dict[str, Any]] = []
        for res in results:
            if res.status not in _OK:
                if res.status == 0:  # EMPTY_QUERY
                    continue
                return _error_obs(*_res_error(res))
            out.append(_result_obs(res, go=False))
        return {"outcome": "ok", "results": out}

    def close(self) -> None:
        self.conn.close()


class ShimConn(PgConn):
    """A plain PostgreSQL connection with the DSQL dialect applied in-process, the way the wire front
    applies it (tag overrides, concealed conflicts, Fail via a raising statement). For testing the
    dialect without the front; the backend must have the ``sys`` schema installed."""

    def __init__(self, conn: Any, dialect: Any, *, cluster_id: str = "shim", user: str = "admin") -> None:
        super().__init__(conn)
        from dsqlops.sandbox.hooks import Session

        self.dialect = dialect
        self.session = Session(cluster_id=cluster_id, region="us-east-1", database=conn.info.dbname, user=user,
                               iam_arn=None, backend_pid=conn.info.backend_pid)

    def _status(self) -> str:
        return {0: "I", 1: "T", 2: "T", 3: "E"}.get(int(self.pgconn.transaction_status), "I")

    def _fail(self, action: Any, timeout: float) -> dict[str, Any]:
        from dsqlops.sandbox.dialect import raise_sql

        backend = action.backend_sql or raise_sql(action.error)
        self.pgconn.send_query(backend.encode())
        try:
            _collect(self.pgconn, timeout)
        except TimeoutError:
            pass
        self.dialect.ready(self.session, self._status())
        return _error_obs(action.error.sqlstate, action.error.message)

    def _backend_error(self, res: Any) -> Any:
        from dsqlops.sandbox.hooks import SqlError

        code, msg = _res_error(res)
        return self.dialect.backend_error(self.session, SqlError(sqlstate=code, message=msg))

    def extended(self, sql: str, timeout: float = STEP_TIMEOUT_S) -> dict[str, Any]:
        from dsqlops.sandbox.hooks import Fail

        action = self.dialect.statement(self.session, sql, extended=True)
        if isinstance(action, Fail):
            return self._fail(action, timeout)
        pg = self.pgconn
        columns: list[str] = []
        try:
            pg.send_prepare(b"", action.sql.encode())
            prep = _collect(pg, timeout)
            if prep and prep[0].status in _OK:
                pg.send_describe_prepared(b"")
                desc = _collect(pg, timeout)
                if desc and desc[0].nfields:
                    columns = [desc[0].fname(i).decode() for i in range(desc[0].nfields)]
                pg.send_query_prepared(b"", None)
                results = _collect(pg, timeout)
            else:
                results = prep
        except TimeoutError:
            return _error_obs("57014", "step timed out")
        res = results[-1] if results else None
        if res is None:
            return _error_obs("XX000", "no result")
        if res.status not in _OK:
            err = self._backend_error(res)
            status = self._status()
            self.dialect.ready(self.session, status)
            if err.conceal_tag:
                obs: dict[str, Any] = {"outcome": "ok", "command_tag": err.conceal_tag}
                if columns:
                    obs["columns"] = columns
                return obs
            return _error_obs(err.sqlstate, err.message)
        obs = {"outcome": "ok", **_result_obs(res, go=True)}
        self.dialect.completed(self.session, obs["command_tag"])
        if action.tags and action.tags[0]:
            obs["command_tag"] = action.tags[0]
        self.dialect.ready(self.session, self._status())
        return obs

    def simple(self, sql: str, timeout: float = STEP_TIMEOUT_S) -> dict[str, Any]:
        from dsqlops.sandbox.hooks import Fail

        action = self.dialect.statement(self.session, sql, extended=False)
        if isinstance(action, Fail):
            return self._fail(action, timeout)
        self.pgconn.send_query(action.sql.encode())
        try:
            results = _collect(self.pgconn, timeout)
        except TimeoutError:
            return _error_obs("57014", "step timed out")
        out: list[dict[str, Any]] = []
        error = None
        for res in results:
            if res.status == 0:
                continue
            if res.status not in _OK:
                error = self._backend_error(res)
                break
            obs = _result_obs(res, go=False)
            self.dialect.completed(self.session, obs["command_tag"])
            i = len(out)
            if action.tags and i < len(action.tags) and action.tags[i]:
                obs["command_tag"] = action.tags[i]
            out.append(obs)
        self.dialect.ready(self.session, self._status())
        if error is not None:
            return _error_obs(error.sqlstate, error.message)
        return {"outcome": "ok", "results": out}


# -- comparing -----------------------------------------------------------------------------------
def _select_count_tag(tag: str | None) -> bool:
    return bool(tag) and re.fullmatch(r"SELECT \d+", tag or "") is not None


def compare_obs(exp: dict[str, Any], got: dict[str, Any], *, ignore_rows: bool, where: str) -> tuple[
        list[str], list[str]]:
    """(failures, advisories) for one observation."""
    fails: list[str] = []
    adv: list[str] = []
    if exp.get("outcome") != got.get("outcome"):
        fails.append(f"{where}: outcome expected {_brief(exp)} got {_brief(got)}")
        return fails, adv
    if exp.get("outcome") == "error":
        if exp.get("sqlstate") and exp.get("sqlstate") != got.get("sqlstate"):
            fails.append(f"{where}: sqlstate expected {exp.get('sqlstate')} got {got.get('sqlstate')} "
                         f"({got.get('message')})")
        elif exp.get("message") != got.get("message"):
            adv.append(f"{where}: message expected {exp.get('message')!r} got {got.get('message')!r}")
        return fails, adv
    if "results" in exp or "results" in got:
        er, gr = exp.get("results") or [], got.get("results") or []
        if len(er) != len(gr):
            fails.append(f"{where}: {len(er)} results expected, got {len(gr)}")
            return fails, adv
        for k, (e, g) in enumerate(zip(er, gr, strict=True)):
            f2, a2 = compare_obs({"outcome": "ok", **e}, {"outcome": "ok", **g}, ignore_rows=ignore_rows,
                                 where=f"{where} result {k + 1}")
            fails += f2
            adv += a2
        return fails, adv
    et, gt = exp.get("command_tag"), got.get("command_tag")
    if et != gt and not (ignore_rows and _select_count_tag(et) and _select_count_tag(gt)):
        fails.append(f"{where}: command_tag expected {et!r} got {gt!r}")
    if (exp.get("columns") or []) != (got.get("columns") or []):
        fails.append(f"{where}: columns expected {exp.get('columns')} got {got.get('columns')}")
    if not ignore_rows and (exp.get("rows") or []) != (got.get("rows") or []):
        fails.append(f"{where}: rows expected {exp.get('rows')} got {got.get('rows')}")
    return fails, adv


def _brief(obs: dict[str, Any]) -> str:
    if obs.get("outcome") == "error":
        return f"error {obs.get('sqlstate')} {obs.get('message')!r}"
    return f"ok {obs.get('command_tag') or ''}".strip()


def compare_case(case: Case, got: Any) -> tuple[list[str], list[str]]:
    raw = case.raw
    if raw.get("sessions") is not None:
        exp_sessions: list[list[dict[str, Any]]] = raw["sessions"]
        if not isinstance(got, list) or len(got) != len(exp_sessions):
            return [f"session count expected {len(exp_sessions)}"], []
        fails: list[str] = []
        adv: list[str] = []
        for s, (es, gs) in enumerate(zip(exp_sessions, got, strict=True)):
            if len(es) != len(gs):
                fails.append(f"session {s}: step_count expected {len(es)} got {len(gs)}")
                continue
            last = len(es) - 1 if case.conflict_race else len(es)
            for j in range(last):
                f2, a2 = compare_obs(es[j], gs[j], ignore_rows=case.ignore_rows, where=f"session {s} step {j + 1}")
                fails += f2
                adv += a2
        if case.conflict_race and not fails:
            def lost(sessions: list[list[dict[str, Any]]]) -> list[str]:
                return sorted(str(s[-1].get("sqlstate")) for s in sessions if s and s[-1].get("outcome") == "error")
            if lost(exp_sessions) != lost(got):
                fails.append(f"conflict_race: failed last steps expected {lost(exp_sessions)} got {lost(got)} "
                             f"({[_brief(s[-1]) for s in got]})")
        return fails, adv
    exp_obs: list[dict[str, Any]] = raw.get("observations") or []
    if not isinstance(got, list) or len(exp_obs) != len(got):
        return [f"step_count expected {len(exp_obs)} got {len(got) if isinstance(got, list) else 0}"], []
    fails, adv = [], []
    for j, (e, g) in enumerate(zip(exp_obs, got, strict=True)):
        f2, a2 = compare_obs(e, g, ignore_rows=case.ignore_rows, where=f"step {j + 1}")
        fails += f2
        adv += a2
    return fails, adv


# -- running -------------------------------------------------------------------------------------
@dataclass
class CaseResult:
    name: str
    group: str
    matched: bool
    known_gap: str | None = None
    differences: list[str] = field(default_factory=list)
    advisories: list[str] = field(default_factory=list)
    expected: Any = None
    got: Any = None


@dataclass
class FileScore:
    file: str
    matched: int
    total: int

    @property
    def ratio(self) -> float:
        return self.matched / self.total if self.total else 1.0


@dataclass
class Report:
    folder: str
    total: int
    matched: int
    files: list[FileScore]
    mismatches: list[CaseResult]
    known_gaps: list[CaseResult]
    setup_errors: list[str]
    meets_target: bool
    target: dict[str, Any]

    @property
    def ratio(self) -> float:
        return self.matched / self.total if self.total else 1.0


#: What the sandbox must reach: ≥95% overall, ≥90% per file, 100% of these files.
TARGET_OVERALL = 0.95
TARGET_PER_FILE = 0.90
TARGET_EXACT = ("index", "transaction", "occ_conflict")

Connector = Callable[[], PgConn]


def _retry_40001(conn: PgConn, sql: str) -> dict[str, Any]:
    obs: dict[str, Any] = {}
    for attempt in range(1, 6):
        obs = conn.simple(sql)
        if obs.get("outcome") != "error" or obs.get("sqlstate") != "40001":
            return obs
        time.sleep(0.2 * attempt)
    return obs


def _run_sessions(connect: Connector, case: Case) -> list[list[dict[str, Any]]]:
    assert case.sessions_sql is not None
    conns = [connect() for _ in case.sessions_sql]
    out: list[list[dict[str, Any]]] = [[] for _ in case.sessions_sql]
    start = threading.Barrier(len(conns))

    def run(k: int) -> None:
        start.wait()
        for j, sql in enumerate(case.sessions_sql[k]):  # type: ignore[index]
            if j:
                time.sleep(case.gap_ms / 1000.0)
            try:
                out[k].append(conns[k].extended(sql))
            except Exception as exc:  # noqa: BLE001 - a broken session is an observation, not a crash
                out[k].append(_error_obs("08006", f"{type(exc).__name__}: {exc}"))

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(len(conns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(STEP_TIMEOUT_S * 4 + 10)
    for c in conns:
        try:
            c.close()
        except Exception:  # noqa: BLE001, S110 - closing a session that already broke
            pass
    return out


def run_case(conn: PgConn, connect: Connector, case: Case) -> Any:
    if case.raw.get("sessions") is not None:
        if case.sessions_sql is None:
            return None
        return _run_sessions(connect, case)
    got = []
    for step in case.steps or []:
        got.append(conn.simple(step) if case.simple else conn.extended(step))
    conn.simple("ROLLBACK")
    return got


def run_suite(suite: Suite, connect: Connector, *, on_case: Callable[[CaseResult], None] | None = None,
              record: dict[str, Any] | None = None, path: str | None = None) -> Report:
    """Replay ``suite`` on connections from ``connect``. With ``record`` (a dict), the observations
    are stored there by case name (for :func:`write_record`). ``path`` sends every ordinary step
    over that client path (``PATHS``) instead of the connections' own."""
    if path is not None:
        if path not in PATHS:
            raise ValueError(f"unknown client path {path!r} (expected one of {', '.join(PATHS)})")
        own = connect

        def connect() -> PgConn:
            c = own()
            c.path = path
            return c

    conn = connect()
    setup_errors: list[str] = []
    results: list[CaseResult] = []
    try:
        for sql in suite.setup:
            obs = _retry_40001(conn, sql)
            if obs.get("outcome") == "error":
                setup_errors.append(f"{sql}: {obs.get('sqlstate')} {obs.get('message')}")
        for case in suite.cases:
            got = run_case(conn, connect, case)
            if record is not None:
                record[case.name] = got
            if got is None:
                res = CaseResult(case.name, case.group, False, case.known_gap,
                                 ["no session SQL for this case (sessions.json)"])
            else:
                fails, adv = compare_case(case, got)
                res = CaseResult(case.name, case.group, not fails or bool(case.known_gap), case.known_gap,
                                 fails, adv, case.raw.get("observations", case.raw.get("sessions")), got)
            results.append(res)
            if on_case is not None:
                on_case(res)
    finally:
        try:
            for sql in suite.teardown:
                _retry_40001(conn, sql)
        finally:
            conn.close()
    return _report(suite, results, setup_errors)


def _report(suite: Suite, results: list[CaseResult], setup_errors: list[str]) -> Report:
    files: dict[str, FileScore] = {}
    for r in results:
        fs = files.setdefault(r.group, FileScore(r.group, 0, 0))
        fs.total += 1
        fs.matched += int(r.matched)
    total = len(results)
    matched = sum(int(r.matched) for r in results)
    scores = sorted(files.values(), key=lambda f: f.file)
    exact = set(TARGET_EXACT)
    meets = (total > 0 and matched / total >= TARGET_OVERALL
             and all(f.ratio >= TARGET_PER_FILE for f in scores)
             and all(f.matched == f.total for f in scores if f.file in exact))
    return Report(str(suite.folder), total, matched, scores,
                  [r for r in results if not r.matched],
                  [r for r in results if r.known_gap and r.differences], setup_errors, meets,
                  {"overall": TARGET_OVERALL, "per_file": TARGET_PER_FILE, "exact": list(TARGET_EXACT)})


def report_json(report: Report) -> dict[str, Any]:
    def case(r: CaseResult) -> dict[str, Any]:
        d: dict[str, Any] = {"name": r.name, "file": r.group, "differences": r.differences}
        if r.known_gap:
            d["known_gap"] = r.known_gap
        d["expected"] = r.expected
        d["got"] = r.got
        return d

    return {
        "folder": report.folder,
        "matched": report.matched,
        "total": report.total,
        "ratio": round(report.ratio, 4),
        "meets_target": report.meets_target,
        "target": report.target,
        "files": [{"file": f.file, "matched": f.matched, "total": f.total, "ratio": round(f.ratio, 4)}
                  for f in report.files],
        "mismatches": [case(r) for r in report.mismatches],
        "known_gaps": [case(r) for r in report.known_gaps],
        "setup_errors": report.setup_errors,
    }


def _go_json(data: Any) -> str:
    """json like Go's MarshalIndent (2 spaces, <>& escaped), with a trailing newline."""
    text = json.dumps(data, indent=2, ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") + "\n"


def write_record(suite: Suite, observed: dict[str, Any], out_dir: Path, *, server_version: str) -> list[Path]:
    """Write one file per group in the record's format with the observations of this run.
    A file is rewritten only when its cases changed (ignoring recorded_at), like the recorder."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for group, top in suite.files.items():
        cases = []
        for raw in top["cases"]:
            new = dict(raw)
            got = observed.get(raw["name"])
            if got is None:
                continue
            if raw.get("sessions") is not None:
                new["sessions"] = got
            else:
                new["observations"] = got
            cases.append(new)
        data = {"recorded_at": now, "target": top.get("target", "aurora-dsql"), "suite": top.get("suite",
                "dsql-baseline"), "server_version": server_version, "cases": cases}
        path = out_dir / f"{group}.json"
        if path.is_file():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
                if old.get("cases") == cases:
                    continue
            except ValueError:
                pass
        from dsqlops.fsutil import atomic_write

        atomic_write(path, _go_json(data).encode())
        written.append(path)
    return written
