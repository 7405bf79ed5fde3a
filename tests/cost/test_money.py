"""Money in every view: Decimal, rounded once from the unrounded amount, never negative (zero or not)."""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from dsqlops.cost import tables
from dsqlops.cost.model import ClusterUsage, estimate, money
from dsqlops.cost.report import Report, ReportConfig, evaluate_budgets, render
from dsqlops.output import render_to_string, to_jsonable
from tests.cost.test_model import PRICES, t

H = dt.timedelta(hours=1)
NOV, DEC = t(2026, 11, 1), t(2026, 12, 1)
NEG = re.compile(r"(?<![\w.])-\d")  # a minus sign in front of a number, e.g. "-0.00" or "-1.5"

_hour = st.integers(min_value=0, max_value=719).map(lambda h: NOV + h * H)
_dpu = st.decimals(min_value=0, max_value=200_000, places=6, allow_nan=False, allow_infinity=False)
_usage = st.builds(
    lambda cid, region, dpu, stor: ClusterUsage(cid, region, dpu={"TotalDPU": dpu}, storage_bytes=stor),
    st.sampled_from(["a" * 26, "b" * 26, "c" * 26, "d" * 26, "e" * 26]),
    st.sampled_from(["us-east-1", "us-east-2"]),
    st.dictionaries(_hour, _dpu, max_size=4),
    st.dictionaries(_hour, st.integers(min_value=0, max_value=3 * 10**9).map(D), max_size=4),
)


def _views(usages: list[ClusterUsage]) -> dict[str, str]:
    e = estimate(usages, PRICES, start=NOV, end=t(2026, 11, 20), now=t(2026, 11, 20), forecast=True)
    cfg = ReportConfig(total_budget=D(1), cluster_budgets={u.cluster_id: D(1) for u in usages})
    rep = Report(e, cfg, evaluate_budgets(e, cfg))
    rows, cols = tables.table(e)
    out = {"json": json.dumps(to_jsonable(e.to_dict())), "table": render_to_string(rows, "table", columns=cols),
           "csv": render_to_string(tables.cluster_rows(e), "csv")}
    out.update({f"report-{f}": render(rep, f) for f in ("md", "csv", "json", "prometheus", "html")})
    return out


@settings(max_examples=80, deadline=None)
@given(st.lists(_usage, min_size=1, max_size=5, unique_by=lambda u: u.cluster_id))
def test_no_view_ever_shows_a_negative_amount(usages):
    for name, text in _views(usages).items():
        assert not NEG.search(text), (name, NEG.search(text).group(0), text[:2000])


def test_clusters_inside_the_free_tier_are_exactly_zero_in_every_view():
    # Four small clusters, all inside the free tier. Their GB-months have 28 significant digits, so a
    # proportional split of "all of it" is not exact in Decimal (this case left the last one at -1E-28).
    sizes = {"a": (2744, [479113694, 359148230, 536956140, 986880881, 870103381, 584206868, 3657238, 990628089,
                          172561581]),
             "b": (29814, [387461072, 229713525, 156920466, 962083355, 622989033, 159145959]),
             "c": (19319, [433766460, 340591944]),
             "d": (28403, [451893904, 882058354, 386581692, 366592844, 914688109, 278929939, 653734398, 395657479,
                           40374732])}
    usages = [ClusterUsage(k * 26, "us-east-1", dpu={"TotalDPU": {NOV: D(dpu)}},
                           storage_bytes={NOV + i * H: D(b) for i, b in enumerate(stor)})
              for k, (dpu, stor) in sizes.items()]
    e = estimate(usages, PRICES, start=NOV, end=DEC, now=NOV + 10 * H)
    assert all(c.total_usd == 0 and not c.total_usd.is_signed() for c in e.clusters), [c.total_usd for c in e.clusters]
    for name, text in _views(usages).items():
        assert not NEG.search(text), (name, text[:2000])


def test_money_never_returns_negative_zero_and_rounds_half_up():
    assert str(money(D("-0.004"))) == "0.00"
    assert str(money(D("-1E-26"))) == "0.00"
    assert str(money(D("0.005"))) == "0.01"
    assert str(money(D("2.675"))) == "2.68"
