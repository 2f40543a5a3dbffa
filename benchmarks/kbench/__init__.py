"""Helpers of benchmarks/kernels.py (see benchmarks/README.md)."""
