"""Benchmarks: one module per measured capability, run as `python -m bench.<name>`."""
