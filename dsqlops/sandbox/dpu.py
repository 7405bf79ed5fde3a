"""Aurora DSQL's documented DPU billing formulas, as pure functions (docs/dsql-facts.md §5.1).

Per transaction (AWS "How billing works in Aurora DSQL"):

* ``ComputeDPU = compute seconds`` (the sum of processing time, planning included);
* ``WriteDPU = max(bytes_written, 1024) × 0.00004883`` — every row or index entry written is billed
  at least 128 bytes, so a one-row write pays the 1 KiB transaction minimum (0.05 DPU);
* ``ReadDPU = max(bytes_read, 2048) × 0.00000183105`` — every storage read is billed at least
  128 bytes, the transaction minimum is 2 KiB (0.00375 DPU);
* a write also reads: the primary-key uniqueness check of every inserted row is a storage read.

The transaction minimums apply only to a transaction that reads (resp. writes) at all: a
read-only transaction pays no write minimum. ``EXPLAIN ANALYZE VERBOSE`` shows statement-level
figures *without* the minimums and prints the minimums beside them ("Transaction minimum:
0.00375"), which is what :func:`statement_dpu` and :func:`format_estimate` reproduce.

These functions know nothing of PostgreSQL: the sandbox's metering (``metering.py``) and the
EXPLAIN rewrite (``explain_dpu.py``) feed them with what they can observe.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: DPU per byte written / read, and the per-transaction and per-row minimums (docs/dsql-facts.md §5.1).
WRITE_DPU_PER_BYTE = 0.00004883
READ_DPU_PER_BYTE = 0.00000183105
WRITE_MIN_BYTES = 1024
READ_MIN_BYTES = 2048
ROW_MIN_BYTES = 128

#: The transaction minimums in DPU, as DSQL prints them (0.05000 and 0.00375).
WRITE_MIN_DPU = WRITE_MIN_BYTES * WRITE_DPU_PER_BYTE
READ_MIN_DPU = READ_MIN_BYTES * READ_DPU_PER_BYTE


@dataclass(frozen=True)
class Dpu:
    """DPU components of one unit of work (a statement, a transaction, or a metering interval)."""

    compute: float = 0.0
    read: float = 0.0
    write: float = 0.0

    @property
    def total(self) -> float:
        return self.compute + self.read + self.write

    def __add__(self, other: Dpu) -> Dpu:
        return Dpu(self.compute + other.compute, self.read + other.read, self.write + other.write)

    def to_dict(self) -> dict[str, float]:
        return {"compute_dpu": self.compute, "read_dpu": self.read, "write_dpu": self.write,
                "total_dpu": self.total}


def row_bytes(widths: Iterable[float]) -> int:
    """Billed bytes of rows (or index entries) of these widths: each at least 128 bytes."""
    return int(sum(max(float(w), ROW_MIN_BYTES) for w in widths))


def rows_bytes(rows: float, width: float) -> int:
    """Billed bytes of ``rows`` rows of the same average ``width``."""
    if rows <= 0:
        return 0
    return round(rows * max(float(width), ROW_MIN_BYTES))


def write_dpu(bytes_written: float, *, minimum: bool = True) -> float:
    """WriteDPU of a transaction that wrote ``bytes_written`` billed bytes (0 if it wrote nothing)."""
    if bytes_written <= 0:
        return 0.0
    b = max(bytes_written, WRITE_MIN_BYTES) if minimum else bytes_written
    return b * WRITE_DPU_PER_BYTE


def read_dpu(bytes_read: float, *, minimum: bool = True) -> float:
    """ReadDPU of a transaction that read ``bytes_read`` billed bytes (0 if it read nothing)."""
    if bytes_read <= 0:
        return 0.0
    b = max(bytes_read, READ_MIN_BYTES) if minimum else bytes_read
    return b * READ_DPU_PER_BYTE


def transaction_dpu(*, compute_seconds: float, bytes_read: float, bytes_written: float) -> Dpu:
    """The billed DPU of one transaction, transaction minimums applied."""
    return Dpu(compute=max(compute_seconds, 0.0), read=read_dpu(bytes_read), write=write_dpu(bytes_written))


def statement_dpu(*, compute_seconds: float, bytes_read: float, bytes_written: float) -> Dpu:
    """A statement-level estimate as EXPLAIN ANALYZE VERBOSE shows it: no transaction minimums."""
    return Dpu(compute=max(compute_seconds, 0.0), read=read_dpu(bytes_read, minimum=False),
               write=write_dpu(bytes_written, minimum=False))


def insert_bytes(rows: int, width: float, *, secondary_indexes: int = 0,
                 index_entry_width: float = ROW_MIN_BYTES) -> tuple[int, int]:
    """(bytes_read, bytes_written) of inserting ``rows`` rows of ``width`` bytes.

    Every row is written once to the table (which *is* the primary-key B-tree) and once per
    secondary index; every row also costs a primary-key uniqueness read (≥128 B).
    """
    written = rows_bytes(rows, width) + secondary_indexes * rows_bytes(rows, index_entry_width)
    read = rows_bytes(rows, ROW_MIN_BYTES)
    return read, written


def point_read_bytes(width: float = ROW_MIN_BYTES) -> int:
    """Bytes read by a primary-key point lookup of one row."""
    return rows_bytes(1, width)


def format_estimate(stmt: Dpu) -> list[str]:
    """The ``Statement DPU Estimate`` block, line for line as DSQL prints it.

    A read (write) line carries ``(Transaction minimum: …)`` when the statement read (wrote)
    something but less than the transaction minimum — as in the AWS documentation's examples: a
    3-row INSERT shows both minimums, a 120-row SELECT above the read minimum shows none, and a
    point lookup shows the read minimum::

        Statement DPU Estimate:
          Compute: 0.01550 DPU
          Read: 0.00307 DPU (Transaction minimum: 0.00375)
          Write: 0.01875 DPU (Transaction minimum: 0.05000)
          Total: 0.03732 DPU
    """
    def note(value: float, minimum: float) -> str:
        return f" (Transaction minimum: {minimum:.5f})" if 0 < value < minimum else ""

    return ["Statement DPU Estimate:",
            f"  Compute: {stmt.compute:.5f} DPU",
            f"  Read: {stmt.read:.5f} DPU" + note(stmt.read, READ_MIN_DPU),
            f"  Write: {stmt.write:.5f} DPU" + note(stmt.write, WRITE_MIN_DPU),
            f"  Total: {stmt.total:.5f} DPU"]
