"""Server-Sent Events: live streams of new rows (``logs/stream``), a few at a time.

A stream is one long response: it reads what is new every ``POLL_S`` and sends it
as events, with a comment line when there is nothing to keep proxies from closing
an idle connection. Each open stream costs a database read per poll, so a server
keeps at most ``MAX_STREAMS`` open (past that, 503 with ``Retry-After``), and
each ends:

- when its client goes away (checked at every poll, and a send to a closed
  connection ends it too), giving back its place;
- when the server stops (``Streams.stop``, called by ``HttpServer`` as it begins
  to stop): with an ``end`` event, at once, so that a stop waits for no stream.

A browser's ``EventSource`` reconnects by itself after an end, sending the id of
the last event it saw (``Last-Event-ID``); a stream started with one goes on from
there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

from starlette.requests import ClientDisconnect, Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from corral.server.api.auth import ApiError

#: Streams one server keeps open at once.
MAX_STREAMS: Final = 16
#: Seconds between reads of what is new.
POLL_S: Final = 0.5
#: Seconds of quiet after which a comment line is sent.
KEEPALIVE_S: Final = 15.0
#: What a browser waits before reconnecting (ms), sent as the stream's ``retry``.
RETRY_MS: Final = 2000


class Streams:
    """The streams open on one server: how many, and the signal that ends them all."""

    def __init__(self, limit: int = MAX_STREAMS) -> None:
        if limit < 1:
            raise ValueError(f"a server takes at least one stream, got a limit of {limit}")
        self.limit = limit
        self.open = 0
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """End every open stream (each sends ``end``), and refuse new ones: the server
        is stopping."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def take(self) -> None:
        """A place for one more stream; ``ApiError`` 503 when all are taken or the server
        is stopping."""
        if self.stopping:
            raise ApiError(503, "unavailable", "the server is stopping", {"retry-after": "5"})
        if self.open >= self.limit:
            raise ApiError(
                503,
                "too_many_streams",
                f"this server has {self.limit} streams open, its most; try again later "
                "or another server",
                {"retry-after": "5"},
            )
        self.open += 1

    def give_back(self) -> None:
        self.open -= 1

    def place(self) -> _Place:
        """A place for one more stream (``take``), given back once by ``_Place.leave``."""
        self.take()
        return _Place(self)

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the server starts to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)


class _Place:
    """One stream's place: given back once, by whichever end comes first."""

    def __init__(self, streams: Streams) -> None:
        self._streams: Streams | None = streams

    def leave(self) -> None:
        if self._streams is not None:
            self._streams.give_back()
            self._streams = None


class _StreamResponse(StreamingResponse):
    """A stream that gives back its place however the response ends: its events run
    out, its client goes away before or while it is sent (then there is no one to
    answer: nothing more is said)."""

    def __init__(self, events: AsyncIterator[str], place: _Place) -> None:
        super().__init__(
            events,
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )
        self.place = place

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except ClientDisconnect:
            pass
        finally:
            self.place.leave()


def event(data: Any, *, name: str | None = None, event_id: int | str | None = None) -> str:
    """One event as the stream sends it: its id, its name, and its data as JSON."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    head += f"event: {name}\n" if name is not None else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


def stream(
    request: Request,
    streams: Streams,
    poll: Callable[[], Awaitable[list[tuple[int | str, Any]]]],
) -> StreamingResponse:
    """A response streaming ``poll``'s (id, data) pairs as events, until the client
    goes away or the server stops; its place is taken now (``Streams.take``) and given
    back when it ends, however it ends."""
    place = streams.place()

    async def events() -> AsyncIterator[str]:
        try:
            yield f"retry: {RETRY_MS}\n\n"
            quiet = 0.0
            while not streams.stopping:
                if await request.is_disconnected():
                    return
                found = await poll()
                for event_id, data in found:
                    yield event(data, event_id=event_id)
                if found:
                    quiet = 0.0
                elif quiet >= KEEPALIVE_S:
                    yield ": keepalive\n\n"
                    quiet = 0.0
                await streams.pause(POLL_S)
                quiet += POLL_S
            yield event({"reason": "the server is stopping"}, name="end")
        finally:
            place.leave()

    return _StreamResponse(events(), place)
