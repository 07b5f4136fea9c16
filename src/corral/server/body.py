"""Request bodies bounded before they are read (the admin API, the dashboard's forms).

Webhook intake (``/hooks/``) bounds its bodies itself, by each webhook's cap. Every
other route takes at most ``MAX_BODY_BYTES``: a request that declares more is
answered 413 before anything is read, and one that sends more than it declared (or
declares nothing) is cut off as it passes the bound, so no request makes the server
hold more than that in memory, whoever sends it (a read token may post to an
operate route; the sign-in form takes anyone's post).
"""

from __future__ import annotations

import json
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.errors import BodyTooLarge

#: The largest body a route other than ``/hooks/`` takes: a deploy's code (1,000,000
#: characters at most) as JSON fits.
MAX_BODY_BYTES: Final = 4 * 1024 * 1024
_EXEMPT: Final = "/hooks/"


class BodyLimit:
    """ASGI middleware: bodies of at most ``max_bytes`` outside ``/hooks/``."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").startswith(_EXEMPT):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        received = 0
        started = False

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded, tracked)
        except BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"error": {"code": "too_large", "message": too_large(self.max_bytes)}})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})


def too_large(max_bytes: int = MAX_BODY_BYTES) -> str:
    return f"a request body here is at most {max_bytes:,} bytes"
