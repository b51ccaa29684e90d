"""The warehouse: tables, idempotent partition writes and reads. SQLAlchemy; no Dagster imports."""
