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
to :func:`run`, which awaits it on the loop and switches back with the result.
The function's code stays synchronous; nothing else runs inside it while it is
between two waits, exactly as in a thread of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import greenlet

_P = ParamSpec("_P")
_T = TypeVar("_T")


class Bridged(greenlet.greenlet):
    """A greenlet running a function for :func:`run`, with whatever the caller
    attaches to it (the database session the function's statements use)."""

    session: Any = None


async def run(fn: Callable[_P, _T], session: Any, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``fn(*args, **kwargs)``, awaiting each awaitable it passes to :func:`wait`."""
    child = Bridged(lambda: fn(*args, **kwargs), parent=greenlet.getcurrent())
    child.session = session
    sent = child.switch()
    while not child.dead:
        try:
            value = await sent
        except BaseException as exc:  # the function sees the error where it waited
            sent = child.throw(exc)
        else:
            sent = child.switch(value)
    result: _T = sent
    return result


def current() -> Bridged | None:
    """The greenlet of the :func:`run` this code is inside, if any."""
    here = greenlet.getcurrent()
    return here if isinstance(here, Bridged) else None


def wait(awaitable: Awaitable[_T]) -> _T:
    """The result of ``awaitable``, awaited on the event loop by the enclosing :func:`run`."""
    here = current()
    if here is None or here.parent is None:
        raise RuntimeError("bridge.wait() called outside bridge.run()")
    result: _T = here.parent.switch(awaitable)
    return result
