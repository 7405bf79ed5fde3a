"""A CloudWatch GetMetricData double at botocore's ``before-send``: it enforces the real per-call
limits (500 queries, 100,800 datapoints), pages results with ``NextToken`` (overlapping pages by
one datapoint, so de-duplication is exercised), and can answer with query-compatible throttling
errors. moto does none of this. Because it sits at ``before-send``, botocore's retry handler runs
exactly as against AWS (``Stubber`` would bypass it).

Responses are JSON: botocore 1.44's CloudWatch model lists smithy-rpc-v2-cbor, json and query,
and the client picks ``json`` (awsQueryCompatible: the error code comes from x-amzn-query-error).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse


def _jsonable(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return v.timestamp()
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


class _Raw:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **_kw: Any):
        yield self.body


def response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> AWSResponse:
    h = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "stub"}
    h.update(headers or {})
    raw = json.dumps(_jsonable(body)).encode()
    return AWSResponse("https://monitoring.us-east-1.amazonaws.com/", status, h, _Raw(raw))


@dataclass
class CloudWatchLimits:
    #: (cluster_id, metric) -> {timestamp: value}; what GetMetricData "has".
    data: dict[tuple[str, str], dict[dt.datetime, float]] = field(default_factory=dict)
    page_points: int = 100_800
    overlap: int = 1
    throttle: int = 0
    throttle_code: str = "Throttling"
    partial_without_token: bool = False
    max_queries: int = 500
    max_points: int = 100_800
    sends: int = 0
    calls: int = 0
    violations: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    _params: dict[str, Any] | None = None

    def install(self, client: Any) -> CloudWatchLimits:
        client.meta.events.register("before-parameter-build.cloudwatch.GetMetricData", self._capture)
        client.meta.events.register("before-send.cloudwatch.GetMetricData", self._send)
        return self

    def _capture(self, params: dict[str, Any], **_kw: Any) -> None:
        self.calls += 1
        self._params = copy.deepcopy(params)
        self.requests.append(self._params)

    def _send(self, request: Any, **_kw: Any) -> AWSResponse:
        self.sends += 1
        if self.throttle > 0:
            self.throttle -= 1
            return response(400, {"__type": f"com.amazonaws.cloudwatch#{self.throttle_code}",
                                  "message": "Rate exceeded"},
                            {"x-amzn-query-error": f"{self.throttle_code};Sender"})
        p = self._params or {}
        queries = p["MetricDataQueries"]
        start, end = p["StartTime"], p["EndTime"]
        if len(queries) > self.max_queries:
            self.violations.append(f"{len(queries)} queries in one call")
        period = queries[0]["MetricStat"]["Period"]
        pts = len(queries) * math.ceil((end - start).total_seconds() / period)
        if pts > self.max_points:
            self.violations.append(f"{pts} datapoints in one call")
        if int(start.timestamp()) % period:
            self.violations.append(f"StartTime {start} not aligned to {period}")
        items: list[tuple[str, dt.datetime, float]] = []
        for q in queries:
            ms = q["MetricStat"]
            cid = ms["Metric"]["Dimensions"][0]["Value"]
            series = self.data.get((cid, ms["Metric"]["MetricName"]), {})
            for t in sorted(series):
                if start <= t < end:
                    items.append((q["Id"], t, series[t]))
        offset = int(p.get("NextToken") or 0)
        page = items[offset:offset + self.page_points]
        nxt = offset + len(page)
        results: dict[str, dict[str, Any]] = {q["Id"]: {"Id": q["Id"], "Label": q["Id"], "Timestamps": [],
                                                         "Values": [], "StatusCode": "Complete"} for q in queries}
        for qid, t, v in page:
            results[qid]["Timestamps"].append(t)
            results[qid]["Values"].append(float(v))
        remaining = {qid for qid, _t, _v in items[nxt:]}
        for qid in remaining:
            results[qid]["StatusCode"] = "PartialData"
        body: dict[str, Any] = {"MetricDataResults": list(results.values()), "Messages": []}
        if nxt < len(items):
            body["NextToken"] = str(max(nxt - self.overlap, offset + 1))
        elif self.partial_without_token and results:
            next(iter(results.values()))["StatusCode"] = "PartialData"
        return response(200, body)
