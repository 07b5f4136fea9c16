"""A fake paginated HTTP API for the batched-sync example: 20 pages of 50 items.

Not part of Corral: ``make run`` (``examples/demo/run.py``) serves it beside the
example agents, and the example's tests serve it on a free port.

``GET /items?page=N`` answers ``{"page": N, "pages": 20, "items": [...],
"next_page": N + 1}``, with ``next_page`` null on the last page; an item is
``{"id", "title", "score", "description"}``. The items are computed from their
number, so every run serves the same data and a test can check a sync's totals.

An agent cannot read the host's environment or its install config, so the
address is fixed: 127.0.0.1:8765, which ``examples/batched_sync.py`` names.
``CORRAL_DEMO_API_PORT`` moves it (then change the example to match). It is
served by the standard library's threaded HTTP server, on threads of its own,
so the worker's event loop never waits on it.
"""

from __future__ import annotations

import errno
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
DEFAULT_PORT = 8765
PORT_ENV = "CORRAL_DEMO_API_PORT"
PAGES = 20
PER_PAGE = 50
KINDS = ("bug report", "feature request", "question")


class PortTaken(OSError):
    """Something already listens on the demo API's port."""


def items(page: int) -> list[dict[str, Any]]:
    """The items of one page (1-based): ids run on from page to page."""
    first = (page - 1) * PER_PAGE
    return [item(n) for n in range(first, first + PER_PAGE)]


def item(n: int) -> dict[str, Any]:
    """Item ``n``: its score (0-100) spreads over the pages, as does its kind."""
    score = (n * 37) % 101
    kind = KINDS[n % len(KINDS)]
    return {
        "id": n,
        "title": f"item {n}",
        "score": score,
        "description": f"A {kind} filed as item {n}; the reporter rated it {score} of 100.",
    }


def page(number: int) -> dict[str, Any]:
    return {
        "page": number,
        "pages": PAGES,
        "items": items(number),
        "next_page": number + 1 if number < PAGES else None,
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a sync reuses its connection
    # Headers and body go out in two writes; with Nagle on, the body would wait for
    # the client's delayed ACK (40 ms a page).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/items":
            self._answer(404, {"error": "not found: the API serves GET /items?page=N"})
            return
        raw = parse_qs(url.query).get("page", ["1"])[0]
        if not raw.isdigit() or not 1 <= int(raw) <= PAGES:
            self._answer(400, {"error": f"page must be a number from 1 to {PAGES}, got {raw!r}"})
            return
        self._answer(200, page(int(raw)))

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the sync's own log lines say what it fetched."""


class PagedApi:
    """The API, served on a daemon thread until :meth:`close` (or the process ends)."""

    def __init__(self, port: int | None = None) -> None:
        chosen = configured_port() if port is None else port
        try:
            self._server = ThreadingHTTPServer((HOST, chosen), _Handler)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise PortTaken(
                f"cannot serve the demo API on {HOST}:{chosen}: the port is taken (another "
                f"`make run`?). Stop that, or set {PORT_ENV} to a free port and change API "
                "in examples/batched_sync.py to match"
            ) from None
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://{HOST}:{self.port}"
        threading.Thread(target=self._server.serve_forever, name="paged-api", daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def configured_port() -> int:
    raw = os.environ.get(PORT_ENV)
    if raw is None:
        return DEFAULT_PORT
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{PORT_ENV} must be a port number from 1 to 65535, got {raw!r}")
    return int(raw)
