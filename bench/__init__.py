"""Load benchmarks for the whole system (see bench/fanout.py)."""
