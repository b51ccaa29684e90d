"""Check-failure alerts as Slack-compatible JSON, delivered with a bounded, non-blocking retry.

An :class:`Alert` is one failed check evaluation. Its :attr:`Alert.fingerprint` identifies "the
same failure" (asset, check, severity, reason, partitions) so that a failure repeated by every
run alerts once per de-duplication window. :class:`WebhookSender` posts one alert with a short
timeout and never raises: a receiver that is down makes :meth:`WebhookSender.send` return
``False``, and the caller keeps the alert for a later attempt (:func:`next_attempt_delay`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from urllib.parse import quote

from fks_pipelines.providers import secrets

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
BASE_DELAY_S = 30.0
MAX_DELAY_S = 3600.0


@dataclass(frozen=True)
class Alert:
    """One failed check, as a person should read it."""

    asset: str  # user string, e.g. ohlcv/binance/1h
    check: str
    severity: str  # ERROR or WARN
    reason: str
    partitions: tuple[str, ...] = ()
    run_id: str | None = None
    attempts: int = 0
    next_at: float = 0.0

    @property
    def fingerprint(self) -> str:
        key = "|".join((self.asset, self.check, self.severity, self.reason, *self.partitions))
        return hashlib.sha256(key.encode()).hexdigest()[:24]

    def link(self, ui_url: str | None) -> str | None:
        if not ui_url:
            return None
        return f"{ui_url.rstrip('/')}/assets/{quote(self.asset)}?view=checks"

    def line(self) -> str:
        where = f" [{', '.join(self.partitions)}]" if self.partitions else ""
        return f"{self.severity} {self.asset}{where} check {self.check}: {self.reason}"

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "partitions": list(self.partitions)}

    @classmethod
    def from_json(cls, raw: dict[str, object]) -> Alert:
        return cls(**{**raw, "partitions": tuple(raw.get("partitions", ()))})  # type: ignore[arg-type]


def slack_message(alert: Alert, ui_url: str | None) -> dict[str, object]:
    """A Slack incoming-webhook body: ``text`` for any receiver, blocks for Slack itself."""
    link = alert.link(ui_url)
    text = alert.line() + (f" <{link}|open in Dagster>" if link else "")
    fields = [
        {"type": "mrkdwn", "text": f"*Asset*\n{alert.asset}"},
        {"type": "mrkdwn", "text": f"*Check*\n{alert.check}"},
        {"type": "mrkdwn", "text": f"*Severity*\n{alert.severity}"},
        {"type": "mrkdwn", "text": f"*Partitions*\n{', '.join(alert.partitions) or '-'}"},
    ]
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{alert.reason}*"}},
            {"type": "section", "fields": fields},
            *(
                [{"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{link}|Dagster>"}]}]
                if link
                else []
            ),
        ],
        "asset": alert.asset,
        "check": alert.check,
        "severity": alert.severity,
        "partitions": list(alert.partitions),
        "reason": alert.reason,
        "link": link,
    }


def next_attempt_delay(attempts: int) -> float:
    """Seconds before attempt ``attempts + 1``: exponential from 30 s, at most an hour."""
    return min(BASE_DELAY_S * 2 ** max(attempts - 1, 0), MAX_DELAY_S)


class WebhookSender:
    """Posts alerts to one webhook URL; the URL (which may hold a token) is never logged."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        # httpx is imported by the sender, not with the module: loading the code location
        # imports the alert sensor, which builds a sender only when it has alerts to deliver.
        import httpx

        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s))
        self._url = url
        secrets.register(url)

    def send(self, alert: Alert, ui_url: str | None) -> bool:
        """True when the receiver accepted the alert (2xx); never raises."""
        import httpx  # loaded by __init__ already, see there

        try:
            response = self._client.post(self._url, json=slack_message(alert, ui_url))
        except httpx.HTTPError as exc:
            log.warning("alert webhook unreachable (%s); will retry", type(exc).__name__)
            return False
        if response.is_success:
            return True
        log.warning("alert webhook answered HTTP %d; will retry", response.status_code)
        return False

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> WebhookSender:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
