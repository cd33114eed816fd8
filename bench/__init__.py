"""Benchmarks: `python -m bench.eta` measures the accuracy of the time estimates."""
