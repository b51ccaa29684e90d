"""Benchmarks that print figures (not tests); see docs/benchmarks.md.

Run each from the repository root as a module, e.g. ``.venv/bin/python -m bench.cache_read``, so
that ``bench`` and the fake servers in ``fks_pipelines_tests.fakes`` import without path tricks.
"""
