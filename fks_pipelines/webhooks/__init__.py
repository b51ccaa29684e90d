"""Signed webhook intake: signatures, event shapes, the Redis stream, the intake itself."""
