"""Load and OCC benchmarks: workloads (workloads), the runner and its pools (runner, pools), latency
histograms (histogram), OCC-retried transactions (txn), cost per 1,000 transactions (cost), result
files (results) and the replayed banking talk (demo). See docs/bench.md."""
