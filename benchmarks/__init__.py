"""Flowgate's benchmarks; `python benchmarks/run.py` (or `make bench`) runs them."""
