"""Read a DSQL plan: the ``Statement DPU Estimate`` block, priced, and the plan's expensive shapes.

DSQL appends a statement-level DPU estimate to ``EXPLAIN ANALYZE VERBOSE`` (and only then; plain
``EXPLAIN ANALYZE`` and ``EXPLAIN VERBOSE`` print none) [AWS "Understanding DPUs in EXPLAIN
ANALYZE"]::

    Statement DPU Estimate:
      Compute: 0.01550 DPU
      Read: 0.00307 DPU (Transaction minimum: 0.00375)
      Write: 0.01875 DPU (Transaction minimum: 0.05000)
      Total: 0.03732 DPU

The transaction minimums are applied per transaction, only when it reads (or writes) at all, so a
statement run as its own transaction is billed at least ``compute + max(read, read_min) +
max(write, write_min)``; :meth:`DpuEstimate.billed_alone` computes that. A multi-Region cluster adds
a ``MultiRegionWrite`` line (any ``Name: N DPU`` line is kept).

DSQL plan shapes [AWS "Reading Aurora DSQL EXPLAIN plans", AWS Database Blog "Improve query
performance with EXPLAIN plans in Amazon Aurora DSQL"]: tables are B-trees on the primary key, so a
table read without a usable index is ``Full Scan (btree-table) on t`` (or PostgreSQL's ``Seq Scan``)
over a ``Storage Scan`` and a ``B-Tree Scan``. Predicates run at one of three layers: ``Index Cond``
(best), a storage filter (``Filters:`` under ``Storage Scan``, data filtered before it crosses the
network) or a query-processor ``Filter:`` on the scan node (every row was shipped first: worst).
An ``Index Scan`` with a ``Storage Lookup`` child fetches the rest of each row from the table: the
index lacks INCLUDE columns for an ``Index Only Scan``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from dsqlops.errors import UsageError

MILLION = Decimal(1_000_000)
#: A full scan that reads at least this many rows is a warning rather than a note.
DEFAULT_LARGE_ROWS = 1000

_NODE_RE = re.compile(
    r"^(?P<indent>\s*)(?P<arrow>->\s+)?(?P<label>\S.*?)\s*"
    r"\(cost=(?P<c1>[\d.]+)\.\.(?P<c2>[\d.]+)\s+rows=(?P<rows>\d+)\s+width=\d+\)"
    r"(?:\s*\((?:actual(?:\s+time=[\d.]+\.\.[\d.]+)?\s+rows=(?P<arows>[\d.]+)\s+loops=(?P<loops>\d+)"
    r"|(?P<never>never executed))\))?\s*$"
)
_ARROW_NODE_RE = re.compile(r"^(?P<indent>\s*)->\s+(?P<label>\S.*?)\s*$")
_LABEL_RE = re.compile(r"^(?P<name>.+?)(?:\s+using\s+(?P<index>\S+))?(?:\s+on\s+(?P<rel>\S+)(?:\s+(?P<alias>\S+))?)?$")
_ATTR_RE = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z][A-Za-z0-9 ()/_-]*?):\s*(?P<value>.*?)\s*$")
_DPU_LINE_RE = re.compile(
    r"^\s+(?P<name>[A-Za-z][A-Za-z -]*?):\s*(?P<value>[0-9]+(?:\.[0-9]+)?)\s*DPU"
    r"(?:\s*\(\s*Transaction minimum:\s*(?P<min>[0-9]+(?:\.[0-9]+)?)\s*(?:DPU\s*)?\))?\s*$",
    re.IGNORECASE,
)
_MS_RE = re.compile(r"([\d.]+)\s*ms")

FULL_SCAN_NAMES = ("Seq Scan", "Full Scan", "Parallel Seq Scan")
STORAGE_FILTER_KEYS = ("Filters", "Storage Filter", "Storage Filters")
QP_FILTER_KEYS = ("Filter",)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------

@dataclass
class PlanNode:
    name: str
    relation: str | None = None
    index: str | None = None
    alias: str | None = None
    est_rows: int | None = None
    actual_rows: float | None = None
    loops: int | None = None
    depth: int = 0
    line: int = 0
    attrs: list[tuple[str, str]] = field(default_factory=list)
    parent: int | None = None  # index into the flat node list

    def attr(self, key: str) -> str | None:
        return next((v for k, v in self.attrs if k == key), None)

    @property
    def rows(self) -> float | None:
        """Rows produced: actual (× loops) when analysed, else the planner's estimate."""
        if self.actual_rows is not None:
            return self.actual_rows * (self.loops or 1)
        return float(self.est_rows) if self.est_rows is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "relation": self.relation, "index": self.index, "est_rows": self.est_rows,
                "actual_rows": self.actual_rows, "loops": self.loops, "depth": self.depth, "line": self.line,
                "attrs": {k: v for k, v in self.attrs}}


@dataclass
class DpuEstimate:
    compute: Decimal = Decimal(0)
    read: Decimal = Decimal(0)
    write: Decimal = Decimal(0)
    total: Decimal = Decimal(0)
    read_txn_min: Decimal | None = None
    write_txn_min: Decimal | None = None
    #: Any other component line (``MultiRegionWrite`` on multi-Region clusters), by its label.
    other: dict[str, Decimal] = field(default_factory=dict)

    def billed_alone(self) -> Decimal:
        """What the statement costs as its own transaction: the minimums apply when it reads/writes."""
        read = self.read
        if self.read > 0 and self.read_txn_min is not None:
            read = max(read, self.read_txn_min)
        write = self.write
        if self.write > 0 and self.write_txn_min is not None:
            write = max(write, self.write_txn_min)
        return self.compute + read + write + sum(self.other.values(), Decimal(0))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"compute": self.compute, "read": self.read, "write": self.write, "total": self.total,
                             "read_transaction_minimum": self.read_txn_min,
                             "write_transaction_minimum": self.write_txn_min,
                             "billed_as_own_transaction": self.billed_alone()}
        for k, v in sorted(self.other.items()):
            d[_snake(k)] = v
        return d


@dataclass
class Finding:
    kind: str          # full_scan | qp_filter | sort | sort_spill | storage_lookup | join_filter
    severity: str      # warning | info
    node: str
    relation: str | None
    message: str
    line: int

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "severity": self.severity, "node": self.node, "relation": self.relation,
                "message": self.message, "line": self.line}


@dataclass
class Price:
    per_million_dpu: Decimal
    region: str
    source: str
    currency: str = "USD"


@dataclass
class ExplainReport:
    plan_text: str
    nodes: list[PlanNode]
    dpu: DpuEstimate | None
    findings: list[Finding]
    planning_ms: float | None = None
    execution_ms: float | None = None
    query_identifier: str | None = None
    analyzed: bool = False
    rolled_back: bool = False
    price: Price | None = None

    @property
    def cost_per_execution(self) -> Decimal | None:
        if self.dpu is None or self.price is None:
            return None
        return self.dpu.total * self.price.per_million_dpu / MILLION

    @property
    def cost_per_million_executions(self) -> Decimal | None:
        if self.dpu is None or self.price is None:
            return None
        return self.dpu.total * self.price.per_million_dpu

    @property
    def cost_as_own_transaction(self) -> Decimal | None:
        if self.dpu is None or self.price is None:
            return None
        return self.dpu.billed_alone() * self.price.per_million_dpu / MILLION

    def to_dict(self) -> dict[str, Any]:
        return {
            "analyzed": self.analyzed,
            "rolled_back": self.rolled_back,
            "query_identifier": self.query_identifier,
            "planning_ms": self.planning_ms,
            "execution_ms": self.execution_ms,
            "dpu": self.dpu.to_dict() if self.dpu else None,
            "price": None if self.price is None else {
                "per_million_dpu": self.price.per_million_dpu, "region": self.price.region,
                "source": self.price.source, "currency": self.price.currency},
            "cost_per_execution": _money(self.cost_per_execution),
            "cost_per_million_executions": _money(self.cost_per_million_executions),
            "cost_as_own_transaction": _money(self.cost_as_own_transaction),
            "findings": [f.to_dict() for f in self.findings],
            "nodes": [n.to_dict() for n in self.nodes],
            "plan": self.plan_text.splitlines(),
        }


def _money(v: Decimal | None) -> str | None:
    """Exact money as a plain decimal string (never ``1.2E-8``, which ``str(Decimal)`` would give)."""
    if v is None:
        return None
    text = format(v, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _snake(label: str) -> str:
    s = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", label.strip())
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")


def _dec(text: str, what: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise UsageError(f"cannot read {what} {text!r} in the DPU estimate") from None


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------

def parse_dpu(text: str) -> DpuEstimate | None:
    """The ``Statement DPU Estimate`` block of a plan, or None when there is none."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().rstrip(":").lower() == "statement dpu estimate":
            est = DpuEstimate()
            seen = False
            for follow in lines[i + 1:]:
                m = _DPU_LINE_RE.match(follow)
                if not m:
                    if follow.strip() == "":
                        continue
                    break
                seen = True
                name = m["name"].strip().lower().replace(" ", "")
                value = _dec(m["value"], m["name"])
                minimum = _dec(m["min"], "transaction minimum") if m["min"] else None
                if name == "compute":
                    est.compute = value
                elif name == "read":
                    est.read, est.read_txn_min = value, minimum
                elif name == "write":
                    est.write, est.write_txn_min = value, minimum
                elif name == "total":
                    est.total = value
                else:
                    est.other[m["name"].strip()] = value
            if not seen:
                raise UsageError("the plan has a 'Statement DPU Estimate:' header but no component lines")
            if est.total == 0 and (est.compute or est.read or est.write):
                est.total = est.compute + est.read + est.write + sum(est.other.values(), Decimal(0))
            return est
    return None


def _split_label(label: str) -> tuple[str, str | None, str | None, str | None]:
    m = _LABEL_RE.match(label.strip())
    if not m:  # pragma: no cover - the pattern matches any non-empty text
        return label.strip(), None, None, None
    name = m["name"].strip()
    return name, m["index"], m["rel"], m["alias"]


def parse_plan(text: str) -> tuple[list[PlanNode], dict[str, str]]:
    """Plan nodes (flat, each with its parent) and the footer lines (``Planning Time`` …)."""
    nodes: list[PlanNode] = []
    footer: dict[str, str] = {}
    stack: list[tuple[int, int]] = []  # (indent, node index)
    in_footer = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        stripped = line.strip()
        if not stripped or stripped == "QUERY PLAN" or set(stripped) <= {"-", "+"} or re.fullmatch(r"\(\d+ rows?\)",
                                                                                                    stripped):
            continue
        m = _NODE_RE.match(line)
        am = None if m else _ARROW_NODE_RE.match(line)
        if (m or am) and not in_footer:
            mm = m or am
            assert mm is not None
            indent = len(mm["indent"]) + (2 if (m and m["arrow"]) or am else 0)
            name, index, rel, alias = _split_label(mm["label"])
            node = PlanNode(name=name, index=index, relation=rel, alias=alias, line=lineno)
            if m:
                node.est_rows = int(m["rows"])
                if m["arows"] is not None:
                    node.actual_rows = float(m["arows"])
                    node.loops = int(m["loops"])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            node.parent = stack[-1][1] if stack else None
            node.depth = len(stack)
            nodes.append(node)
            stack.append((indent, len(nodes) - 1))
            continue
        a = _ATTR_RE.match(line)
        if a and (len(a["indent"]) == 0 and nodes):
            in_footer = True
            footer[a["key"].strip()] = a["value"]
            continue
        if in_footer:
            continue
        if a and nodes:
            # an attribute belongs to the innermost node whose indentation is smaller
            indent = len(a["indent"])
            owner = None
            for ind, idx in reversed(stack):
                if ind < indent:
                    owner = idx
                    break
            target = nodes[owner if owner is not None else stack[-1][1] if stack else -1]
            target.attrs.append((a["key"].strip(), a["value"]))
        elif not nodes and stripped:
            # a plan without costs (COSTS OFF): the first line is the root node
            name, index, rel, alias = _split_label(stripped)
            nodes.append(PlanNode(name=name, index=index, relation=rel, alias=alias, line=lineno))
            stack.append((len(line) - len(line.lstrip()), 0))
    return nodes, footer


def find_issues(nodes: list[PlanNode], *, large_rows: int = DEFAULT_LARGE_ROWS) -> list[Finding]:
    out: list[Finding] = []
    for i, n in enumerate(nodes):
        rows = n.rows
        rel = n.relation or "?"
        if any(n.name == f or n.name.startswith(f + " ") or n.name.startswith(f + "(") for f in FULL_SCAN_NAMES):
            # what the scan *read*: the largest row count in its subtree (Storage/B-Tree Scan), not
            # what survived its query-processor filter
            removed = n.attr("Rows Removed by Filter")
            if rows is not None and removed and removed.strip().isdigit():
                rows += float(removed.strip()) * (n.loops or 1)
            for d in _subtree(nodes, i):
                if d.rows is not None and (rows is None or d.rows > rows):
                    rows = d.rows
            big = rows is not None and rows >= large_rows
            est = f"~{int(rows):,} rows" if rows is not None else "every row"
            out.append(Finding("full_scan", "warning" if big else "info", n.name, n.relation,
                               f"{n.name} on {rel} reads the whole table ({est}): give the query an index "
                               "(or a primary-key prefix) that matches its WHERE clause", n.line))
        qp = [v for k, v in n.attrs if k in QP_FILTER_KEYS]
        for cond in qp:
            removed = n.attr("Rows Removed by Filter")
            extra = f"; {removed} rows were shipped and thrown away" if removed else ""
            out.append(Finding("qp_filter", "warning", n.name, n.relation,
                               f"filter {cond} runs in the query processor after rows crossed the network"
                               f"{extra}: index its columns (Index Cond) or INCLUDE them in an index "
                               "so storage can filter", n.line))
        for cond in (v for k, v in n.attrs if k == "Join Filter"):
            out.append(Finding("join_filter", "info", n.name, n.relation,
                               f"join filter {cond} runs in the query processor", n.line))
        if n.name in ("Sort", "Incremental Sort") or n.name.endswith(" Sort"):
            key = n.attr("Sort Key") or "?"
            method = n.attr("Sort Method") or ""
            spilled = "external" in method.lower() or "disk" in method.lower()
            out.append(Finding("sort_spill" if spilled else "sort", "warning" if spilled else "info", n.name,
                               n.relation, f"sort on {key}"
                               + (f" spilled to disk ({method})" if spilled else "")
                               + ": an index in that order would return rows already sorted", n.line))
        if n.name.startswith("Storage Lookup"):
            out.append(Finding("storage_lookup", "info", n.name, n.relation,
                               f"{n.name} on {rel}: each index hit fetches the rest of the row from the table; "
                               "INCLUDE the missing columns in the index for an Index Only Scan", n.line))
    return out


def _subtree(nodes: list[PlanNode], root: int) -> list[PlanNode]:
    out: list[PlanNode] = []
    members = {root}
    for j in range(root + 1, len(nodes)):
        if nodes[j].parent in members:
            members.add(j)
            out.append(nodes[j])
    return out


def parse_explain(text: str, *, large_rows: int = DEFAULT_LARGE_ROWS) -> ExplainReport:
    """Parse a whole ``EXPLAIN`` text output (one line per row, or one string)."""
    if not text.strip():
        raise UsageError("the EXPLAIN output is empty")
    nodes, footer = parse_plan(text)
    dpu = parse_dpu(text)

    def ms(key: str) -> float | None:
        v = footer.get(key)
        m = _MS_RE.search(v or "")
        return float(m.group(1)) if m else None

    return ExplainReport(plan_text=text.rstrip("\n"), nodes=nodes, dpu=dpu,
                         findings=find_issues(nodes, large_rows=large_rows),
                         planning_ms=ms("Planning Time"), execution_ms=ms("Execution Time"),
                         query_identifier=footer.get("Query Identifier"),
                         analyzed=any(n.actual_rows is not None for n in nodes) or "Execution Time" in footer)


# --------------------------------------------------------------------------------------------
# Prices (engineer C owns the price table; use their loader when it exists)
# --------------------------------------------------------------------------------------------

def price_for(region: str, *, pricing_file: str | Path | None = None, settings: Any = None) -> Price | None:
    """The DPU price for ``region`` from engineer C's price table (``dsqlops.cost.pricing``:
    ``--pricing-file`` > config ``pricing_file`` > the shipped ``pricing/dsql.yaml``). Falls back to
    a small reader of the same file format when that module is unavailable. None when the table
    does not list the region (the report then carries no money, and says so)."""
    try:
        from dsqlops.cost import pricing as cost_pricing
    except ImportError:  # pragma: no cover - the cost package ships with dsqlops
        cost_pricing = None  # type: ignore[assignment]
    if cost_pricing is not None:
        from dsqlops.errors import ConfigError

        table = cost_pricing.load_for(str(pricing_file) if pricing_file else None, settings)
        try:
            rp = table.get(region)
        except ConfigError:
            return None
        return Price(rp.dpu_usd_per_million, region, f"{Path(table.path).name} as of {rp.as_of.isoformat()}",
                     rp.currency)
    path = Path(pricing_file) if pricing_file else Path(__file__).resolve().parents[2] / "pricing" / "dsql.yaml"
    if not path.is_file():
        return None
    return _read_price_file(path, region)


def _read_price_file(path: Path, region: str) -> Price | None:
    import yaml

    from dsqlops import yamlsafe

    try:
        data = yamlsafe.load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"cannot read the price table {path}: {e}") from None
    regions = data.get("regions") if isinstance(data, dict) else None
    entry = regions.get(region) if isinstance(regions, dict) else None
    if not isinstance(entry, dict):
        return None
    for key in ("dpu_usd_per_million", "dpu_per_million", "dpu"):
        if key in entry:
            value = Decimal(str(entry[key]))
            if key == "dpu" and value < 1:
                value *= MILLION  # a per-DPU price
            return Price(value, region, f"{path.name} (as_of {data.get('as_of', '?')})",
                         str(data.get("currency", "USD")))
    return None


def attach_price(report: ExplainReport, price: Price | None) -> ExplainReport:
    report.price = price
    return report


# --------------------------------------------------------------------------------------------
# Running EXPLAIN
# --------------------------------------------------------------------------------------------

_WRITE_RE = re.compile(r"\b(INSERT|UPDATE|DELETE|MERGE)\b", re.IGNORECASE)
_EXPLAINABLE_RE = re.compile(r"^\s*(\(\s*)*(SELECT|WITH|INSERT|UPDATE|DELETE|MERGE|VALUES|TABLE|EXECUTE)\b",
                             re.IGNORECASE)


def strip_sql(text: str) -> str:
    """One statement without trailing semicolons/whitespace; refuses several statements."""
    s = text.strip()
    while s.endswith(";"):
        s = s[:-1].rstrip()
    if not s:
        raise UsageError("no SQL statement given")
    if ";" in _without_literals(s):
        raise UsageError("explain takes one statement; this text has several (a ';' inside it)")
    if re.match(r"^\s*EXPLAIN\b", s, re.IGNORECASE):
        raise UsageError("give the statement without EXPLAIN: dsqlops adds EXPLAIN (ANALYZE, VERBOSE) itself")
    if not _EXPLAINABLE_RE.match(s):
        raise UsageError("only SELECT, WITH, INSERT, UPDATE, DELETE, MERGE, VALUES or TABLE statements can be "
                         "explained")
    return s


def _without_literals(s: str) -> str:
    s = re.sub(r"'(?:[^']|'')*'", "''", s)
    s = re.sub(r'"(?:[^"]|"")*"', '""', s)
    s = re.sub(r"--[^\n]*", "", s)
    return re.sub(r"/\*.*?\*/", "", s, flags=re.DOTALL)


def is_write(statement: str) -> bool:
    return bool(_WRITE_RE.search(_without_literals(statement)))


def run_explain(conn: Any, statement: str, *, params: list[Any] | None = None, analyze: bool = False,
                large_rows: int = DEFAULT_LARGE_ROWS, statement_timeout_ms: int | None = None) -> ExplainReport:
    """Run ``EXPLAIN (VERBOSE)`` or ``EXPLAIN (ANALYZE, VERBOSE)`` and parse it.

    Always inside a transaction that is **rolled back**, so an analysed INSERT/UPDATE/DELETE
    changes nothing (``report.rolled_back``). ``params`` are bound client-side to ``%s``
    placeholders (psycopg ``ClientCursor``), so the text DSQL sees is the one that is explained.
    """
    import psycopg
    from psycopg import sql

    stmt = strip_sql(statement)
    prefix = "EXPLAIN (ANALYZE, VERBOSE) " if analyze else "EXPLAIN (VERBOSE) "
    was_autocommit = conn.autocommit
    if was_autocommit:
        conn.autocommit = False
    try:
        with psycopg.ClientCursor(conn) as cur:
            if statement_timeout_ms:
                cur.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(int(statement_timeout_ms))))
            if params:
                cur.execute(prefix + stmt, params)
            else:
                # no parameters: the text runs as is ('%' is not taken for a placeholder)
                cur.execute(prefix + stmt)
            rows = cur.fetchall()
    finally:
        conn.rollback()
        if was_autocommit:
            conn.autocommit = True
    text = "\n".join(str(r[0]) for r in rows)
    report = parse_explain(text, large_rows=large_rows)
    report.analyzed = analyze
    report.rolled_back = analyze and is_write(stmt)
    return report


# --------------------------------------------------------------------------------------------
# Text output
# --------------------------------------------------------------------------------------------

def render_text(report: ExplainReport) -> str:
    """The human report: the plan, the DPU estimate and its price, and what to look at."""
    out: list[str] = [report.plan_text, ""]
    if report.dpu is None:
        out.append("DPU estimate: none in this plan" + (
            "" if report.analyzed else " (only EXPLAIN ANALYZE VERBOSE prints one: use --analyze)"))
    else:
        d = report.dpu
        out.append("DPU estimate (statement):")
        rows = [("compute", d.compute, None), ("read", d.read, d.read_txn_min), ("write", d.write, d.write_txn_min)]
        rows += [(k, v, None) for k, v in sorted(d.other.items())]
        for name, v, mn in rows:
            out.append(f"  {name:<10} {v:>12} DPU" + (f"   (transaction minimum {mn})" if mn is not None else ""))
        out.append(f"  {'total':<10} {d.total:>12} DPU")
        out.append(f"  as its own transaction (minimums applied): {d.billed_alone()} DPU")
        if report.price is not None:
            p = report.price
            out.append(f"Price: {p.per_million_dpu} {p.currency} per million DPU in {p.region} ({p.source})")
            out.append(f"  per execution:            {_money(report.cost_per_execution)} {p.currency}")
            out.append(f"  per million executions:   {_money(report.cost_per_million_executions)} {p.currency}")
            out.append(f"  as its own transaction:   {_money(report.cost_as_own_transaction)} {p.currency}")
        else:
            out.append("Price: no price table entry for this region (see 'dsqlops pricing')")
    if report.findings:
        out.append("")
        out.append("Findings:")
        for f in report.findings:
            out.append(f"  [{f.severity}] line {f.line}: {f.message}")
    else:
        out.append("")
        out.append("Findings: none (no full scans, query-processor filters, sorts or storage lookups)")
    return "\n".join(out) + "\n"
