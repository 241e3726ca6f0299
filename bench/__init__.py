"""Benchmark tools, not part of the server package: run_benchmarks.py (`make bench`) and
feedbench.py (a load generator for any running server)."""
