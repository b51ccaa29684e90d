"""The HTTP service: data routes over the core and signed webhook intake (FastAPI)."""
