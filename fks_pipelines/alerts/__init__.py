"""Alerts on failed asset checks: the message, its fingerprint, and delivery to a webhook."""
