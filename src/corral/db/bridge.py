"""Blocking-style database code, run on the event loop: each wait is an ``await``.

The store, the task queue and the registry are written once, as plain functions
over a cursor. On SQLite they run as they are: a call takes microseconds. On
PostgreSQL each statement waits on the network, and running those functions in
threads (``asyncio.to_thread``) cost more than the statements did: measured on
these machines with a worker pinned to one CPU, a chain step's five database
calls spent 1.4 ms of CPU in the pool's threads (about 240 µs a call, against
60 µs for the same call made sequentially), the threads and the event loop
taking the GIL and the CPU from each other.

Here a function runs in a greenlet on the event loop's thread instead. When the
database layer has to wait, it hands the awaitable (an async psycopg call) up
to :func:`wait`'s driver, which resumes the greenlet with the result once it is
in. The function's code stays synchronous; nothing else runs inside it while it
is between two waits, exactly as in a thread of its own.

The greenlet is driven by callbacks, not by a task of its own: a task costs an
event-loop iteration to start and another to hand its result on, and a chain
step makes four such calls (measured: 21 loop iterations a step with a task per
call and a shield around it). A caller that stops waiting (cancelled) does not
stop the function: it runs on to its end, so no statement is left half-sent on a
connection the next call would take.

The same greenlets serve long synchronous work that is not the database's: the
sandbox host decodes a large frame in one, and :func:`pause` gives the loop a turn
every millisecond of it, so one agent's large value does not hold up the others.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import greenlet

_T = TypeVar("_T")

#: How long a function inside :func:`start` may run before :func:`pause` gives the
#: event loop a turn.
SLICE_S: Final = 0.001


class Bridged(greenlet.greenlet):
    """A greenlet running a function for :func:`start`, with whatever the caller
    attaches to it (the database session the function's statements use)."""

    session: Any = None
    #: ``time.perf_counter()`` when the function last started or resumed.
    resumed_at = 0.0


def start(
    fn: Callable[[], _T],
    session: Any,
    result: asyncio.Future[_T],
    finished: Callable[[], None],
) -> None:
    """Run ``fn()`` until its first wait, then on from each wait's callback; its
    return value or error goes to ``result`` (unless the caller cancelled it), and
    ``finished()`` is called once it has returned or raised, whatever ``result``
    became."""
    child = Bridged(fn)
    child.session = session

    def advance(resume: Callable[[Any], Any], value: Any) -> None:
        # Whoever runs this (the loop, or a caller's task) is where the function's
        # next wait switches back to.
        child.parent = greenlet.getcurrent()
        child.resumed_at = time.perf_counter()
        try:
            sent = resume(value)
        except BaseException as exc:
            finished()
            if not result.done():
                result.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        if child.dead:
            finished()
            if not result.done():
                result.set_result(sent)
            return
        if isinstance(sent, _Armed):
            sent.arm(lambda value: advance(child.switch, value))
        else:
            asyncio.ensure_future(sent).add_done_callback(resumed)

    def resumed(waited: asyncio.Future[Any]) -> None:
        if waited.cancelled():
            advance(child.throw, asyncio.CancelledError())
        elif (error := waited.exception()) is not None:
            advance(child.throw, error)
        else:
            advance(child.switch, waited.result())

    advance(lambda _: child.switch(), None)


def current() -> Bridged | None:
    """The greenlet of the :func:`start` this code is inside, if any."""
    here = greenlet.getcurrent()
    return here if isinstance(here, Bridged) else None


def wait(awaitable: Awaitable[_T]) -> _T:
    """The result of ``awaitable``, awaited on the event loop for the enclosing
    :func:`start`."""
    here = current()
    if here is None or here.parent is None:
        raise RuntimeError("bridge.wait() called outside bridge.start()")
    result: _T = here.parent.switch(awaitable)
    return result


def pause() -> None:
    """Give the event loop a turn if the enclosing :func:`start`'s function has run for
    ``SLICE_S`` since it last started or waited; outside :func:`start`, nothing.

    Long synchronous work called from such a function (decoding a large value a
    sandboxed process sent, ``codec.decode(data, pacing=codec.Pacing(pause))``) calls
    this between its steps, so that everything else on the loop keeps running meanwhile.
    """
    here = current()
    if here is None or time.perf_counter() - here.resumed_at < SLICE_S:
        return
    loop = asyncio.get_running_loop()

    def next_turn(resume: Callable[[Any], None]) -> None:
        loop.call_soon(resume, None)

    wait_armed(next_turn)


class _Armed:
    """A wait that resumes its function from the callback that ends it (see ``wait_armed``)."""

    def __init__(self, arm: Callable[[Callable[[Any], None]], None]) -> None:
        self.arm = arm


def wait_armed(arm: Callable[[Callable[[Any], None]], None]) -> Any:
    """What ``arm``'s callback is given: ``arm(resume)`` is called on the event loop
    and must arrange for ``resume(value)`` to be called once, with the value.

    For waits that end in a loop callback of their own (a socket becoming ready):
    the function goes on inside that callback, not in a later loop iteration as it
    would after a future's, one iteration a wait sooner.
    """
    return wait(_Armed(arm))  # type: ignore[arg-type]
