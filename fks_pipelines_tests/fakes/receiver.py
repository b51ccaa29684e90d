"""A Slack-compatible incoming webhook that records what it is sent, and can be down."""

from __future__ import annotations

import json

from fks_pipelines_tests.fakes.server import LocalHttpServer, Request, Response

PATH = "/hook"


class WebhookReceiver(LocalHttpServer):
    """Accepts any post (HTTP 200), or answers HTTP 503 while ``down``."""

    def __init__(self) -> None:
        super().__init__(self._handle)
        self.down = False

    @property
    def hook(self) -> str:
        return f"{self.url}{PATH}"

    def messages(self) -> list[dict]:
        """The JSON bodies posted to the hook, oldest first."""
        return [json.loads(r.body) for r in self.requests_to(PATH)]

    def _handle(self, request: Request) -> Response:
        if self.down:
            return Response(status=503, body=b"down")
        return Response.json({"ok": True})
