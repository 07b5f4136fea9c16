"""Helpers shared by the test suites: fake clocks, exact comparison, child processes,
a TCP proxy for network outages."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import math
import multiprocessing
import socket
import struct
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from multiprocessing.synchronize import Barrier
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from corral import codec
from corral.activities import Activity, Note
from corral.runtime.webhooks import Webhook, Webhooks

# 2025-06-15T15:06:40Z: a realistic epoch value, so millisecond arithmetic is exercised
# at the magnitude real clocks have.
START_MS = 1_750_000_000_000


class FakeClock:
    """A clock for ``Store(clock=...)``: time moves only when the test moves it."""

    def __init__(self, start_ms: int = START_MS) -> None:
        self.now_ms = start_ms

    @property
    def now(self) -> float:
        """Seconds since the epoch, as ``time.time()`` would say."""
        return self()

    def __call__(self) -> float:
        seconds = self.now_ms / 1000
        # The store reads floor(clock() * 1000); make that exactly now_ms even where
        # the division rounded down by one unit in the last place.
        while math.floor(seconds * 1000) < self.now_ms:
            seconds = math.nextafter(seconds, math.inf)
        return seconds

    def advance(self, ms: int) -> None:
        if ms < 0:
            raise ValueError("a clock only moves forward")
        self.now_ms += ms


class FakeTimer:
    """A monotonic clock to sleep on (``runtime.network.throttle.Timer``) only the test moves.

    A sleeper wakes when ``advance`` passes its time; ``sleeping(n)`` returns once
    ``n`` sleepers wait, which is how a test knows a request is being held back.
    """

    def __init__(self) -> None:
        self.now_s = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._changed = asyncio.Event()

    def now(self) -> float:
        return self.now_s

    async def sleep(self, seconds: float) -> None:
        entry = (self.now_s + seconds, asyncio.get_running_loop().create_future())
        self._sleepers.append(entry)
        self._changed.set()
        try:
            await entry[1]
        finally:
            self._sleepers.remove(entry)

    def advance(self, seconds: float) -> None:
        self.now_s += seconds
        for wake_at, future in self._sleepers:
            if wake_at <= self.now_s and not future.done():
                future.set_result(None)

    async def sleeping(self, count: int = 1) -> None:
        while len(self._sleepers) < count:
            self._changed.clear()
            await self._changed.wait()


def unique_scope(label: str = "scope") -> str:
    return f"{label}-{uuid.uuid4().hex}"


#: Every table Corral keeps data in (the migrations' own bookkeeping aside).
TABLES = (
    "state",
    "state_usage",  # after "state": its triggers keep this table
    "state_locks",
    "agents",
    "versions",
    "instances",
    "tasks",
    "callbacks",
    "executions",
    "logs",
    "webhooks",
    "deliveries",
    "priorities",
    "activities",
    "notes",
    "tokens",
    "metric_snapshots",
)


def wipe(engine: sa.Engine) -> None:
    """Delete every row of every table, so a test starts from an empty database."""
    with engine.begin() as conn:
        for table in TABLES:
            conn.execute(sa.text(f"DELETE FROM {table}"))


# -- exact comparison ---------------------------------------------------------------


def assert_identical(expected: Any, actual: Any, path: str = "value") -> None:
    """Assert ``actual`` is ``expected`` in type and value, all the way down.

    ``==`` is not enough here: ``1 == 1.0 == True``, ``Decimal('1.1') == Decimal('1.10')``,
    aware datetimes compare equal across zones, and ``nan != nan``.
    """
    kind = type(expected)
    assert type(actual) is kind, f"{path}: expected {kind.__name__}, got {type(actual).__name__}"
    if kind is float:
        assert struct.pack(">d", actual) == struct.pack(">d", expected), (
            f"{path}: {actual!r} is not bit-for-bit {expected!r}"
        )
    elif kind is Decimal:
        assert actual.as_tuple() == expected.as_tuple(), f"{path}: {actual!r} != {expected!r}"
    elif kind in (list, tuple):
        assert len(actual) == len(expected), f"{path}: length {len(actual)} != {len(expected)}"
        for i, (want, got) in enumerate(zip(expected, actual, strict=True)):
            assert_identical(want, got, f"{path}[{i}]")
    elif kind is dict:
        assert list(actual) == list(expected), f"{path}: keys {list(actual)} != {list(expected)}"
        for key in expected:
            assert_identical(expected[key], actual[key], f"{path}[{key!r}]")
    elif kind in (set, frozenset):
        _assert_same_members(expected, actual, path)
    elif kind in (Activity, Note):
        for field in dataclasses.fields(expected):
            name = field.name
            assert_identical(getattr(expected, name), getattr(actual, name), f"{path}.{name}")
    elif kind in (dt.datetime, dt.time):
        fields = ("hour", "minute", "second", "microsecond", "fold")
        if kind is dt.datetime:
            fields = ("year", "month", "day", *fields)
        for name in fields:
            assert getattr(actual, name) == getattr(expected, name), f"{path}.{name}"
        _assert_same_tz(expected.tzinfo, actual.tzinfo, f"{path}.tzinfo")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def _assert_same_members(expected: Any, actual: Any, path: str) -> None:
    assert len(actual) == len(expected), f"{path}: {actual!r} != {expected!r}"
    remaining = list(actual)
    for want in expected:
        for i, got in enumerate(remaining):
            try:
                assert_identical(want, got, path)
            except AssertionError:
                continue
            del remaining[i]
            break
        else:
            raise AssertionError(f"{path}: member {want!r} missing from {actual!r}")


def _assert_same_tz(expected: dt.tzinfo | None, actual: dt.tzinfo | None, path: str) -> None:
    assert type(actual) is type(expected), f"{path}: {actual!r} != {expected!r}"
    if isinstance(expected, ZoneInfo):
        assert isinstance(actual, ZoneInfo)
        assert actual.key == expected.key, f"{path}: {actual.key} != {expected.key}"
    elif expected is not None:
        assert actual is not None
        assert actual.utcoffset(None) == expected.utcoffset(None), f"{path}: offset"
        assert actual.tzname(None) == expected.tzname(None), f"{path}: name"


# -- child processes ----------------------------------------------------------------

#: Children start from a fresh interpreter, as separate workers would: nothing is
#: inherited from the parent but the arguments.
SPAWN = multiprocessing.get_context("spawn")


def _child(target: Callable[..., Any], args: tuple[Any, ...], index: int, results: Any) -> None:
    try:
        results.put((index, True, target(*args)))
    except BaseException:
        # Let siblings waiting at a barrier fail at once instead of timing out.
        for arg in args:
            if isinstance(arg, Barrier):
                arg.abort()
        results.put((index, False, traceback.format_exc()))


def run_in_processes(
    calls: list[tuple[Callable[..., Any], tuple[Any, ...]]], timeout: float = 120
) -> list[Any]:
    """Run each ``(target, args)`` in its own spawned process, all at once.

    Returns the targets' return values in order; an exception in a child fails the
    test with the child's traceback. Targets must be module-level functions.
    """
    results = SPAWN.Queue()
    processes = [
        SPAWN.Process(target=_child, args=(target, args, i, results), daemon=True)
        for i, (target, args) in enumerate(calls)
    ]
    for process in processes:
        process.start()
    try:
        outcomes = {}
        for _ in processes:
            index, ok, value = results.get(timeout=timeout)
            outcomes[index] = (ok, value)
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    failures = [value for ok, value in outcomes.values() if not ok]
    assert not failures, "a child process failed:\n" + "\n".join(failures)
    return [outcomes[i][1] for i in range(len(processes))]


# -- network ------------------------------------------------------------------------


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections while the ``with`` lasts.

    It is bound by a socket that does not listen: nothing answers on it, and no other
    process can take it meanwhile. A port bound and given back could be taken by a
    server started on port 0 at that moment, by another test of a parallel run, say.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


class TcpProxy:
    """A TCP proxy on 127.0.0.1 between clients and ``target``, for outages on demand.

    ``cut`` closes every connection through it, both ends, and closes its port, so
    new connections are refused: what a client sees when the network or the server
    goes away. ``restore`` listens on the same port again. Threads, not the test's
    event loop, carry the bytes: a test blocked on its own database call does not
    hold up the client's.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.port = 0
        self.restore()

    def url(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's."""
        return sa.make_url(url).set(host="127.0.0.1", port=self.port).render_as_string(False)

    def restore(self) -> None:
        """Accept connections again (on the same port, once it has one)."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Close every connection through the proxy and refuse new ones."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        if listener is not None:
            listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            listener.close()
        for sock in sockets:
            _close(sock)

    @property
    def connections(self) -> int:
        """Connections open through the proxy now."""
        with self._lock:
            return len(self._sockets) // 2

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # cut
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._listener is not listener:  # cut while this one connected
                    _close(client)
                    _close(upstream)
                    continue
                self._sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._sockets -= {source, sink}
        _close(source)
        _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def make_webhook(
    webhooks: Webhooks,
    instance: str,
    method: str,
    extra: Sequence[Any] = (),
    *,
    now: int,
    mode: str = "async",
    verify: dict[str, Any] | None = None,
    max_body_bytes: int | None = None,
) -> Webhook:
    """A webhook of the instance made by the platform (no quota), as an agent's
    ``create_webhook`` would make it."""
    return webhooks.create(
        instance,
        method,
        codec.encode(list(extra)),
        mode=mode,
        verify=verify,
        max_body_bytes=max_body_bytes,
        now=now,
        quotas=None,
    )
