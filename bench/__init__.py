"""Benchmarks against the bundled Klaviyo sandbox (`make bench` -> `python -m bench.run`).

Every figure is a ratio of two things measured in the same run; results go to `bench/results.json`.
"""
