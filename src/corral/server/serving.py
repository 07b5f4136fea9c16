"""Serving the app over HTTP with uvicorn, and stopping gracefully.

The listening socket is bound first (``Listener``), before anything else starts:
an address in use is one clear error, and with port 0 the port the kernel chose
is known in time to become the webhook URLs' base. Stopping (``stop``: SIGTERM
or Ctrl-C for ``corral serve``; ``corral dev`` calls it from its own handler)
closes the socket, lets the requests in flight finish (a sync webhook's handler
included), then shuts the app down; a second Ctrl-C drops what is still in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import socket
from collections.abc import Callable, Iterator

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from corral.config import WebhookSettings
from corral.errors import ListenError

#: The most bytes a request's line and headers may take (servers commonly take 8-16 KiB
#: of headers; senders' signatures and tokens fit many times over).
MAX_HEAD_BYTES = 64 * 1024
#: While a head is being read, bytes reach the parser in slices of this size, so the
#: count stops within one slice of ``MAX_HEAD_BYTES``.
_HEAD_SLICE = 8 * 1024
#: Seconds a refused connection is read and dropped before it is closed.
LINGER_S = 2.0
#: Seconds past the sync deadline that requests in flight are given to finish at a stop.
STOP_MARGIN_S = 5.0
_HEAD_TOO_LARGE = (
    b'{"error": {"code": "headers_too_large", "message": "the request line and headers '
    b"take more than " + str(MAX_HEAD_BYTES).encode() + b' bytes"}}'
)


class Listener:
    """A bound, listening TCP socket, and the URL it answers at."""

    def __init__(self, host: str, port: int, *, option: str = "--port") -> None:
        """Bind and listen; ``ListenError`` if that fails (``option``: what to change)."""
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
        except (socket.gaierror, UnicodeError) as exc:
            raise ListenError(f"cannot listen on {host}: {exc}") from None
        self.socket = socket.socket(family, kind, proto)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind(address)
            self.socket.listen(2048)
        except OSError as exc:
            self.socket.close()
            raise ListenError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}"
                + (f"; choose another with {option}" if exc.errno == 98 else "")
            ) from None
        self.host = host
        self.port: int = self.socket.getsockname()[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        self.socket.close()


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with each request's head bounded.

    httptools gathers a request's URL and headers however long they are (tried: 20 MB
    of headers were taken and held), so a sender could make the server hold as much
    memory as it cares to send, and so slow or stop every tenant's webhooks. Here the
    bytes received while a head is being read are counted, and fed to the parser in
    slices so that the count stops within a slice of the limit; past it, the answer is
    431 and the connection is closed. Bodies are bounded by the intake (413).
    """

    _reading_head = True
    _head_bytes = 0
    _refused = False

    def on_headers_complete(self) -> None:
        self._reading_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head, self._head_bytes = True, 0

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # read and dropped until the connection closes (see ``_refuse_head``)
        while self._reading_head and data:
            piece, data = data[:_HEAD_SLICE], data[_HEAD_SLICE:]
            self._head_bytes += len(piece)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse_head()
                return
            super().data_received(piece)
            if self._refused or self.transport.is_closing():
                return
        if data:
            super().data_received(data)

    def _refuse_head(self) -> None:
        """Answer 431 and close. Closing a socket with unread bytes makes the kernel
        reset the connection, which can destroy the answer before the sender reads it;
        so the answer is sent with the write side shut, what else arrives is dropped,
        and the connection is closed a moment later (a "lingering close")."""
        self._refused = True
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(_HEAD_TOO_LARGE)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + _HEAD_TOO_LARGE
        )
        self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


def stop_grace_s(webhooks: WebhookSettings) -> float:
    """How long requests in flight may take to finish once a server is stopped: a sync
    handler's deadline and a margin. A sender trickling a body cannot hold a stop longer."""
    return webhooks.sync_deadline_s + STOP_MARGIN_S


class HttpServer(uvicorn.Server):
    """uvicorn on a ``Listener``; ``on_ready`` once the app has started and requests
    are taken. ``own_signals``: SIGTERM and SIGINT stop it (``corral serve``); else its
    owner calls ``stop`` (``corral dev``)."""

    def __init__(
        self,
        app: ASGIApp,
        listener: Listener,
        *,
        on_ready: Callable[[], None] | None = None,
        own_signals: bool = True,
        access_log: bool = False,
        grace_s: float,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        """``grace_s``: how long requests in flight may take to finish once stopped
        (``stop_grace_s``); those still running then are dropped. ``on_stop``: called
        as the stop begins, to end what would otherwise run on (the app's live
        streams: ``app.state.streams.stop``)."""
        super().__init__(
            uvicorn.Config(
                app,
                lifespan="on",
                http=BoundedHttpProtocol,
                log_level="warning",
                access_log=access_log,
                timeout_graceful_shutdown=math.ceil(grace_s),  # whole seconds
            )
        )
        self.listener = listener
        self._on_ready = on_ready
        self._own_signals = own_signals
        self._on_stop = on_stop

    async def run_until_stopped(self) -> None:
        await self.serve(sockets=[self.listener.socket])
        if self.started and self.force_exit:
            # uvicorn leaves both behind when stopped at once: the requests in flight
            # are dropped, and the app still shuts down (its sandboxes closed).
            for task in self.server_state.tasks:
                task.cancel()
            await asyncio.gather(*self.server_state.tasks, return_exceptions=True)
            await self.lifespan.shutdown()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._on_stop is not None:
            self._on_stop()
        await super().shutdown(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._on_ready is not None:
            self._on_ready()

    def stop(self) -> None:
        """Stop taking requests, finish those in flight, then shut the app down."""
        self.should_exit = True

    def stop_now(self) -> None:
        """Stop without waiting for the requests in flight (a second Ctrl-C)."""
        self.should_exit = self.force_exit = True

    def _on_signal(self) -> None:
        if self.should_exit:
            self.stop_now()
        else:
            self.stop()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's own handlers raise the signal again once stopped, which kills the
        process before its owner closes what it opened; these only stop the server."""
        if not self._own_signals:
            yield
            return
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal)
        try:
            yield
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
