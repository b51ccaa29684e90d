"""Dagster wiring only: resources, partitions and assets built on the pure core."""
