"""Data quality measures: pure functions from frames to results, no I/O and no Dagster."""
