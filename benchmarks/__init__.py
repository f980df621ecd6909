"""Benchmark suites: `python -m benchmarks NAME [args]` runs benchmarks/NAME/__main__.py."""
