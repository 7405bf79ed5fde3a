"""``dsqlops sandbox flush-metrics``: publish the sandbox's DPU metrics to its CloudWatch now."""

from __future__ import annotations

import click

from dsqlops.cli.common import CliEnv, output_option, pass_env, timeout_option
from dsqlops.cli.sandbox import _sdir, dir_option


@click.command("flush-metrics")
@dir_option
@timeout_option(30.0)
@output_option
@pass_env
def flush_metrics(env: CliEnv, directory: str | None, timeout: float) -> None:
    """Publish every sandbox cluster's DPU metrics to the sandbox CloudWatch now.

    The sandbox publishes once a minute on its own; this publishes at once (what the cluster did
    since the last publication), so `dsqlops metrics` and `dsqlops cost` see it immediately.

    \b
    Example:
      dsqlops sandbox flush-metrics
      dsqlops -o json sandbox flush-metrics
    """
    from dsqlops.errors import NotFoundError
    from dsqlops.sandbox.metering import request_flush

    sdir = _sdir(directory)
    if not sdir.path.is_dir() or sdir.load_runtime() is None:
        raise NotFoundError(f"no sandbox is running in {sdir.path}", hint="run `dsqlops sandbox start` first")
    state = request_flush(sdir.path, timeout=timeout)
    rows = []
    for cid, m in sorted((state.get("last_published") or {}).items()):
        rows.append({"cluster_id": cid, "published_at": state.get("last_flush"),
                     "total_dpu": round(m.get("TotalDPU", 0.0), 6), "compute_dpu": round(m.get("ComputeDPU", 0.0), 6),
                     "read_dpu": round(m.get("ReadDPU", 0.0), 6), "write_dpu": round(m.get("WriteDPU", 0.0), 6),
                     "transactions": int(m.get("TotalTransactions", 0)),
                     "occ_conflicts": int(m.get("OccConflicts", 0)),
                     "bytes_read": int(m.get("BytesRead", 0)), "bytes_written": int(m.get("BytesWritten", 0)),
                     "storage_bytes": int(m.get("ClusterStorageSize", 0))})
    env.render(rows, empty_message="no ready cluster to meter")
