"""PostgreSQL connections for ``Database.call``: lent to one call at a time, and
waiting for the server on the event loop that runs the call.

A call's statements run in a greenlet (``corral.db.bridge``) over one of these
connections; whatever transaction the call has open lives on its ``Session``, as
a thread's lives in thread-local state. The connections are synchronous psycopg
connections whose waits go to the loop, so they belong to no loop: any loop's
call may take one.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import re
import select
import selectors
import threading
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

import psycopg
from psycopg import generators, pq
from psycopg.adapt import PyFormat, Transformer

from corral.db import bridge
from corral.db.errors import raise_if_unavailable

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: Connections a pool keeps open at most; more calls at once wait for one.
#: As many as the thread pool that ran these calls before had threads on 2 cores.
MAX_SESSIONS = 6

#: Statements a connection keeps prepared at most; others are parsed each time.
#: The runtime has a few dozen, and a multi-row variant per row count.
MAX_PREPARED = 256


class Session:
    """One connection, lent to one call at a time, and the transaction that call has
    open on it (what a thread keeps in ``Database._local``)."""

    def __init__(self, owner: object, connection: LoopConnection, *, bitmap_scans: bool) -> None:
        #: The ``Database`` it belongs to: another database's code inside the call
        #: uses that database's own connections.
        self.owner = owner
        self.connection = connection
        #: Whether the server may plan bitmap scans on it (see ``TaskQueue.claim``).
        self.bitmap_scans = bitmap_scans
        self.cursor: Any = None
        self.write = False
        self.pipeline: Any = None


class SessionPool:
    """Up to ``MAX_SESSIONS`` sessions of one database, opened with ``options``."""

    def __init__(
        self, owner: object, conninfo: str, *, commit_waits: bool = True, bitmap_scans: bool = True
    ) -> None:
        """``commit_waits``: commits wait for the disk (``synchronous_commit``);
        ``bitmap_scans``: the planner may use them (``enable_bitmapscan``)."""
        self._owner = owner
        self._conninfo = conninfo
        self._bitmap_scans = bitmap_scans
        settings = {"synchronous_commit": commit_waits, "enable_bitmapscan": bitmap_scans}
        self._options = " ".join(
            f"-c {name}=off" for name, enabled in settings.items() if not enabled
        )
        self._lock = threading.Lock()
        self._idle: list[Session] = []
        self._open: list[Session] = []
        self._opening = 0
        self._waiters: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]
        self._waiters = collections.deque()
        #: Calls waiting for a session (kept: the loop holds tasks only weakly).
        self._starting: set[asyncio.Task[None]] = set()

    def submit(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> asyncio.Future[_T]:
        """``fn(*args, **kwargs)`` in a greenlet, over a session of this pool: started
        at once when a session is idle. The future is the caller's: cancelling it
        does not stop the call, which ends as it would have and gives its session back."""
        loop = asyncio.get_running_loop()
        result: asyncio.Future[_T] = loop.create_future()
        with self._lock:
            session = self._idle.pop() if self._idle else None
        if session is not None:
            self._start(session, lambda: fn(*args, **kwargs), result)
        else:
            later = loop.create_task(self._start_later(lambda: fn(*args, **kwargs), result))
            self._starting.add(later)
            later.add_done_callback(self._starting.discard)
        return result

    def _start(self, session: Session, call: Callable[[], _T], result: asyncio.Future[_T]) -> None:
        bridge.start(call, session, result, lambda: self._checkin(session))

    async def _start_later(self, call: Callable[[], _T], result: asyncio.Future[_T]) -> None:
        try:
            session = await self._checkout()
        except BaseException as exc:  # could not connect: the caller hears why
            if not result.done():
                result.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        self._start(session, call, result)

    async def _checkout(self) -> Session:
        """An idle session, a new one while fewer than ``MAX_SESSIONS`` are open, or
        else the next one given back."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._idle:
                    return self._idle.pop()
                if len(self._open) + self._opening < MAX_SESSIONS:
                    self._opening += 1
                    break
                waiter = loop.create_future()
                self._waiters.append((loop, waiter))
            await waiter
        try:
            connection = await asyncio.to_thread(
                LoopConnection.connect, self._conninfo, autocommit=True, options=self._options
            )
        except psycopg.Error as exc:
            raise_if_unavailable(exc)
            raise
        finally:
            with self._lock:
                self._opening -= 1
        session = Session(self._owner, connection, bitmap_scans=self._bitmap_scans)
        with self._lock:
            self._open.append(session)
        return session

    def _checkin(self, session: Session) -> None:
        stale: list[Session] = []
        with self._lock:
            if session.connection.closed:  # broken: the next checkout may open another
                # The idle ones most likely are too (a restart or a network cut ends
                # them all), and each would fail the next call given it: a worker
                # back from an outage would find it again once per connection.
                stale, self._idle = self._idle, []
                for dropped in (session, *stale):
                    if dropped in self._open:
                        self._open.remove(dropped)
            else:
                self._idle.append(session)
            waiter = self._waiters.popleft() if self._waiters else None
        for dropped in stale:
            dropped.connection.close()
        if waiter is not None:
            loop, future = waiter
            loop.call_soon_threadsafe(_resolve, future)

    def close(self) -> None:
        with self._lock:
            sessions, self._open, self._idle = self._open, [], []
        for session in sessions:
            session.connection.close()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class LoopConnection(psycopg.Connection[Any]):
    """A psycopg connection that, inside ``bridge.start``, waits on the event loop.

    Every statement of psycopg's goes through ``wait``, which drives a generator of
    socket waits. Only a wait that cannot be met at once (the server's answer is not
    in yet) goes to the loop; asking the loop for the others, as psycopg's async
    connections do for each command a pipeline sends, cost a loop iteration and two
    selector changes each (measured: async psycopg spent more CPU per chain step
    than threads did).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: (statement, parameter types) -> the name it is prepared under here.
        self._statements: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        self._statement_names = itertools.count()

    def run(self, sql: str, params: Mapping[str, Any], *, again: bool = False) -> Rows:
        """One statement with ``:name`` parameters, on its own in autocommit: the hot
        paths' single statements, prepared once per connection.

        Sent through libpq directly, with psycopg's adapters for the values and the
        rows: its cursor's bookkeeping (a cursor, a query object, the prepare
        manager's counts) cost about a third of a store read's client CPU, measured
        on these machines (180 against 125 µs a call).

        A statement whose result's shape a migration changed since it was prepared
        (``SELECT *`` after a new column) is refused by the server before it runs;
        it is prepared afresh and run ``again``, once. So is one the server no longer
        has: psycopg sends ``DEALLOCATE ALL`` after the ROLLBACK of a transaction in
        which it prepared statements of its own (an ``executemany``), and ours go too.
        """
        query, names = _numbered(sql)
        tx = Transformer.from_context(self)
        values = tx.dump_sequence([params[name] for name in names], [PyFormat.AUTO] * len(names))
        types = tuple(tx.types or ())
        pgconn = self.pgconn
        key = (query, types)
        prepared = self._statements.get(key)
        if prepared is None and len(self._statements) < MAX_PREPARED:
            prepared = b"corral_%d" % next(self._statement_names)
            pgconn.send_prepare(prepared, query, param_types=types)
            self._result(self.wait(generators.execute(pgconn)))
            self._statements[key] = prepared
        if prepared is None:
            pgconn.send_query_params(
                query, values, param_formats=tx.formats, param_types=types, result_format=TEXT
            )
        else:
            pgconn.send_query_prepared(
                prepared, values, param_formats=tx.formats, result_format=TEXT
            )
        try:
            result = self._result(self.wait(generators.execute(pgconn)))
        except psycopg.errors.FeatureNotSupported:  # "cached plan must not change result type"
            if prepared is None or again:
                raise
            del self._statements[key]
            return self.run(sql, params, again=True)
        except psycopg.errors.InvalidSqlStatementName:  # "prepared statement ... does not exist"
            if prepared is None or again:
                raise
            self._statements.clear()  # DEALLOCATE ALL took every one
            return self.run(sql, params, again=True)
        if result.status != pq.ExecStatus.TUPLES_OK:
            return Rows([], result.command_tuples)
        tx.set_pgresult(result)
        return Rows(tx.load_rows(0, result.ntuples, tuple), result.command_tuples)

    def _result(self, results: list[pq.abc.PGresult]) -> pq.abc.PGresult:
        """The one result of a single statement, or its error raised as psycopg would."""
        (result,) = results
        if result.status == pq.ExecStatus.FATAL_ERROR:
            raise psycopg.errors.error_from_result(result, encoding=self.info.encoding)
        return result

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        if bridge.current() is None:
            return super().wait(gen, interval, timeout)
        fd = self.pgconn.socket
        try:
            wanted = next(gen)
            while True:
                readers, writers, _ = select.select(
                    (fd,) if wanted & READ else (), (fd,) if wanted & WRITE else (), (), 0
                )
                ready = (READ if readers else 0) | (WRITE if writers else 0)
                if not ready:
                    ready = bridge.wait_armed(functools.partial(_when_ready, fd, wanted))
                wanted = gen.send(ready)
        except StopIteration as done:
            return done.value


READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
TEXT = pq.Format.TEXT

#: A ``:name`` parameter of the statements the database layer is given (not a ``::type`` cast).
PARAMETER = re.compile(r"(?<!:):(\w+)")


class Rows:
    """What the hot paths read of a statement's cursor: its rows and row count."""

    __slots__ = ("rowcount", "rows")

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int | None) -> None:
        self.rows = rows
        self.rowcount = -1 if rowcount is None else rowcount

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows


@functools.lru_cache(maxsize=1024)
def _numbered(sql: str) -> tuple[bytes, tuple[str, ...]]:
    """``sql`` with its ``:name`` parameters as libpq's ``$1, $2, ...``, and the names
    in that order (a name used twice is one parameter)."""
    names: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        return f"${names.setdefault(match[1], len(names) + 1)}"

    return PARAMETER.sub(number, sql).encode(), tuple(names)


def _when_ready(fd: int, wanted: int, resume: Callable[[int], None]) -> None:
    """Call ``resume`` with what ``fd`` became ready for, of ``wanted``, once it is."""
    loop = asyncio.get_running_loop()
    if wanted == READ:  # nearly always: waiting for the server's answer

        def readable() -> None:
            loop.remove_reader(fd)
            resume(READ)

        loop.add_reader(fd, readable)
        return

    def on(ready: int) -> None:
        loop.remove_reader(fd)
        loop.remove_writer(fd)
        resume(ready)

    if wanted & READ:
        loop.add_reader(fd, on, READ)
    if wanted & WRITE:
        loop.add_writer(fd, on, WRITE)
