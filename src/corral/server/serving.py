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
import signal
import socket
from collections.abc import Callable, Iterator

import uvicorn
from starlette.types import ASGIApp

from corral.errors import ListenError


class Listener:
    """A bound, listening TCP socket, and the URL it answers at."""

    def __init__(self, host: str, port: int) -> None:
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
                + ("; choose another with --port" if exc.errno == 98 else "")
            ) from None
        self.host = host
        self.port: int = self.socket.getsockname()[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        self.socket.close()


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
    ) -> None:
        super().__init__(
            uvicorn.Config(
                app,
                lifespan="on",
                http="httptools",
                log_level="warning",
                access_log=access_log,
                # In-flight requests finish, however long a sync handler may take.
                timeout_graceful_shutdown=None,
            )
        )
        self.listener = listener
        self._on_ready = on_ready
        self._own_signals = own_signals

    async def run_until_stopped(self) -> None:
        await self.serve(sockets=[self.listener.socket])
        if self.started and self.force_exit:
            # uvicorn leaves both behind when stopped at once: the requests in flight
            # are dropped, and the app still shuts down (its sandboxes closed).
            for task in self.server_state.tasks:
                task.cancel()
            await asyncio.gather(*self.server_state.tasks, return_exceptions=True)
            await self.lifespan.shutdown()

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
