"""Benchmarks behind `dqn bench` (not part of the algorithm)."""
