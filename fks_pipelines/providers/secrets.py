"""One registry of the secrets this process sends, and the scrubbing that keeps them at home.

Every API key or token a :class:`~fks_pipelines.providers.http.ProviderHttp` sends (in a
credential header or as a query parameter) is registered here when the session is built, in its
raw and URL-encoded forms. Two things then apply the registry, whatever code path is involved:

- :class:`~fks_pipelines.providers.errors.ProviderError` scrubs its ``reason``, ``vendor_code``,
  ``str()`` and ``args`` when it is built, so a vendor message that quotes the key (CoinMarketCap's
  ``This API Key ... is invalid``, Alpha Vantage's ``We have detected your API key as ...``), or a
  parser quoting a payload value, cannot carry it into an alert, a run's failure or a log line.
- Log records: from the first registration on, every record the process creates is scrubbed
  before any handler sees it (:func:`scrub_record`, installed as a log record factory). A logger
  filter would not do: Python applies a logger's filters only to records logged on that very
  logger, not to those propagating from its children, so a filter on ``fks_pipelines`` would miss
  ``fks_pipelines.providers.http`` and one on ``httpcore`` misses ``httpcore.http11``.
  :class:`RedactSecrets` is the same scrubbing as a ``logging.Filter``, for handlers that receive
  records made elsewhere (another process, a queue).

Pitfalls:

- Truncate *after* scrubbing (:func:`clip`): a key cut in half no longer matches. As a second
  line of defence, an error reason that ends in a key's first characters (a key truncated by a
  length limit) has them cut (``scrub(..., partial_tail=True)``); log messages are not cut so,
  because a message that happens to end like a key begins is far likelier there.
- Values shorter than :data:`MIN_SECRET_LENGTH` are not registered: no provider issues keys that
  short, and public placeholders such as EODHD's ``demo`` token would otherwise be scrubbed out
  of every message that says "demo".
- The registry only grows: a key stays scrubbed for the life of the process.
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import quote, quote_plus

MIN_SECRET_LENGTH = 8
MIN_PARTIAL_LENGTH = 6
"""Shortest start of a key that ``scrub(..., partial_tail=True)`` cuts from the end of a text."""
MASK = "***"

_lock = threading.Lock()
_forms: frozenset[str] = frozenset()
_pattern: re.Pattern[str] | None = None
_factory_installed = False


def register(secret: str | None) -> None:
    """Scrub ``secret`` (and its URL-encoded forms) from errors and logs from now on.

    ``None``, empty and short values (see :data:`MIN_SECRET_LENGTH`) are ignored.
    """
    global _forms, _pattern
    if not secret or len(str(secret)) < MIN_SECRET_LENGTH:
        return
    secret = str(secret)
    forms = {secret, quote_plus(secret), quote(secret, safe=""), quote(secret)}
    with _lock:
        if forms <= _forms:
            return
        _forms = _forms | forms
        # Longest first, so that an encoded form is replaced whole rather than around its core.
        _pattern = re.compile("|".join(re.escape(f) for f in sorted(_forms, key=len, reverse=True)))
        _install_factory()


def is_registered(secret: str) -> bool:
    """Whether ``secret`` is scrubbed (for tests and diagnostics)."""
    return secret in _forms


def scrub(text: str, *, partial_tail: bool = False) -> str:
    """``text`` with every registered secret replaced by ``***``.

    Args:
        text: Any text.
        partial_tail: Also replace the first characters of a key (at least
            :data:`MIN_PARTIAL_LENGTH`) that end ``text``: a key truncated by a length limit.
    """
    pattern = _pattern
    if pattern is None or not text:
        return text
    text = pattern.sub(MASK, text)
    return _cut_partial_tail(text) if partial_tail else text


def clip(value: object, limit: int) -> str:
    """``str(value)`` scrubbed, then cut to ``limit`` characters: how vendor text is quoted."""
    return scrub(str(value))[:limit]


def _cut_partial_tail(text: str) -> str:
    for form in _forms:
        for size in range(min(len(form), len(text)) - 1, MIN_PARTIAL_LENGTH - 1, -1):
            if text.endswith(form[:size]):
                return text[:-size] + MASK
    return text


def scrub_record(record: logging.LogRecord) -> None:
    """Scrub a log record in place: its message (formatted with its args) and exception text."""
    if _pattern is None:
        return
    try:
        message = record.getMessage()
    except Exception:  # a malformed record is the handler's to report, as logging does
        return
    scrubbed = scrub(message)
    if scrubbed != message:
        record.msg, record.args = scrubbed, ()
    if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
        text = logging.Formatter().formatException(record.exc_info)
        scrubbed = scrub(text)
        if scrubbed != text:
            record.exc_text = scrubbed
    if record.stack_info:
        record.stack_info = scrub(record.stack_info)


class RedactSecrets(logging.Filter):
    """:func:`scrub_record` as a filter, for a handler that receives records made elsewhere."""

    def filter(self, record: logging.LogRecord) -> bool:
        scrub_record(record)
        return True


def _install_factory() -> None:
    """Chain a record factory that scrubs every record at creation (once per process)."""
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        scrub_record(record)
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True
