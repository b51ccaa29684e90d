"""Provider clients and their shared HTTP runtime. No Dagster imports here."""
