"""The one renderer: table | json | csv | yaml, plus progress on stderr.

JSON contract (stable): snake_case keys as the core returns them, times as ISO-8601 UTC strings
ending in ``Z``, numbers as numbers, **money and other Decimals as strings** (exact, never floats),
bytes as hex. ``None`` is ``null`` in JSON/YAML and empty in table/CSV.

stdout carries data only; :class:`Progress` and :func:`warn` write to stderr.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from enum import Enum
from typing import Any, TextIO

FORMATS = ("table", "json", "csv", "yaml")


def to_jsonable(value: Any) -> Any:
    """Convert core values (dataclasses, Decimal, datetime, Enum, sets) into JSON-safe values."""
    import dataclasses

    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, Enum):
        return to_jsonable(value.value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if hasattr(value, "to_dict"):
            return to_jsonable(value.to_dict())
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted(to_jsonable(v) for v in value)
    if isinstance(value, Iterable):
        return [to_jsonable(v) for v in value]
    return str(value)


def _cell(value: Any) -> str:
    v = to_jsonable(value)
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_cell(x)}" for k, x in v.items())
    if isinstance(v, list):
        return ", ".join(_cell(x) for x in v)
    return str(v)


def _rows(data: Any) -> tuple[list[str], list[list[str]]]:
    data = to_jsonable(data)
    if isinstance(data, dict):
        # A single object: a two-column key/value table.
        return ["field", "value"], [[k, _cell(v)] for k, v in data.items()]
    if not data:
        return [], []
    if all(isinstance(r, dict) for r in data):
        cols: list[str] = []
        for r in data:
            for k in r:
                if k not in cols:
                    cols.append(k)
        return cols, [[_cell(r.get(c)) for c in cols] for r in data]
    return ["value"], [[_cell(r)] for r in data]


def render(data: Any, fmt: str = "table", *, columns: Sequence[str] | None = None,
           stream: TextIO | None = None, empty_message: str | None = None) -> None:
    """Write ``data`` (a dict, or a list of dicts/dataclasses) to ``stream`` (stdout)."""
    out = stream if stream is not None else sys.stdout
    if columns is not None and isinstance(data, list):
        data = [{c: to_jsonable(r).get(c) for c in columns} for r in data]
    if fmt == "json":
        out.write(json.dumps(to_jsonable(data), indent=2, ensure_ascii=False) + "\n")
    elif fmt == "yaml":
        import yaml

        out.write(yaml.safe_dump(to_jsonable(data), sort_keys=False, allow_unicode=True))
    elif fmt == "csv":
        cols, rows = _rows(data)
        w = csv.writer(out, lineterminator="\n")
        if cols:
            w.writerow(cols)
        w.writerows(rows)
    elif fmt == "table":
        cols, rows = _rows(data)
        if not rows:
            if empty_message:
                warn(empty_message)
            return
        from tabulate import tabulate

        out.write(tabulate(rows, headers=cols, tablefmt="simple", disable_numparse=True) + "\n")
    else:  # pragma: no cover - the CLI's Choice refuses other values
        raise ValueError(f"unknown output format {fmt!r}")
    out.flush()


def render_to_string(data: Any, fmt: str = "table", **kw: Any) -> str:
    buf = io.StringIO()
    render(data, fmt, stream=buf, **kw)
    return buf.getvalue()


def warn(message: str, *, stream: TextIO | None = None) -> None:
    """A warning line on stderr."""
    err = stream if stream is not None else sys.stderr
    err.write(f"warning: {message}\n")
    err.flush()


def info(message: str, *, stream: TextIO | None = None) -> None:
    """An informational line on stderr (never stdout, which carries data only)."""
    err = stream if stream is not None else sys.stderr
    err.write(message + "\n")
    err.flush()


class Progress:
    """A live status line on stderr, only on a TTY and only when enabled.

    ``update("CREATING")`` rewrites the line with the elapsed time; ``done()`` ends it.
    On a non-TTY (cron, CI, pipes) it stays silent unless ``always=True``, in which case each
    *changed* status is written as its own line (useful for logs).
    """

    def __init__(self, label: str, *, enabled: bool = True, stream: TextIO | None = None,
                 always: bool = False):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled and (self.tty or always)
        self.start = time.monotonic()
        self._last: str | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def update(self, status: str) -> None:
        if not self.enabled:
            return
        line = f"{self.label}: {status} ({self.elapsed():.0f}s)"
        if self.tty:
            self.stream.write("\r\033[K" + line)
        elif status != self._last:
            self.stream.write(line + "\n")
        self._last = status
        self.stream.flush()

    def done(self, status: str | None = None) -> None:
        if not self.enabled:
            return
        if status is not None:
            self.update(status)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
