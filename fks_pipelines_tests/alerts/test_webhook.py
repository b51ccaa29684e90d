"""Alert messages, fingerprints and backoff, without Dagster."""

import logging

import pytest

from fks_pipelines.alerts.webhook import Alert, WebhookSender, next_attempt_delay, slack_message
from fks_pipelines_tests.fakes.server import LocalHttpServer, Request, Response

ALERT = Alert("ohlcv/polygon/1d", "completeness", "WARN", "2 of 3 partitions incomplete", ("a|b",))


def test_the_message_is_slack_compatible_and_links_into_the_ui() -> None:
    message = slack_message(ALERT, "https://dagster.example/")

    assert message["text"] == (
        "WARN ohlcv/polygon/1d [a|b] check completeness: 2 of 3 partitions incomplete"
        " <https://dagster.example/assets/ohlcv/polygon/1d?view=checks|open in Dagster>"
    )
    assert message["blocks"][0]["text"]["text"] == "*2 of 3 partitions incomplete*"
    assert slack_message(ALERT, None)["link"] is None


def test_the_same_failure_has_the_same_fingerprint() -> None:
    again = Alert(**{**ALERT.to_json(), "partitions": ("a|b",), "run_id": "other", "attempts": 3})
    other = Alert(**{**ALERT.to_json(), "partitions": ("c|d",)})

    assert again.fingerprint == ALERT.fingerprint
    assert other.fingerprint != ALERT.fingerprint
    assert Alert.from_json(ALERT.to_json()) == ALERT


def test_backoff_doubles_up_to_an_hour() -> None:
    assert [next_attempt_delay(n) for n in (1, 2, 3)] == [30.0, 60.0, 120.0]
    assert next_attempt_delay(20) == 3600.0


def test_the_webhook_url_never_reaches_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(_request: Request) -> Response:
        return Response(status=500)

    with LocalHttpServer(refuse) as server, caplog.at_level(logging.DEBUG):
        url = f"{server.url}/services/T000/B000/s3cr3tT0ken"
        with WebhookSender(url) as sender:
            assert sender.send(ALERT, None) is False

    assert "s3cr3tT0ken" not in caplog.text
    assert "HTTP 500" in caplog.text
