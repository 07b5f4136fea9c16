"""PostgreSQL from async code: Corral's own connection machinery against psycopg's.

Issue 15 asks that where a well-kept library does what home-made connection code
does, both be measured side by side and the library kept unless the figures say
otherwise. Corral's async code reaches PostgreSQL through ``Database.call`` and
``call_deferred``: synchronous database functions run in a greenlet on the event
loop (``corral.db.bridge``) over ``LoopConnection``s lent by a ``SessionPool``
(``corral.db.sessions``), single statements sent through libpq directly and
transactions pipelined (``corral.db.raw``). The library's way is
``psycopg.AsyncConnection`` with plain ``await``, connections lent by
``psycopg_pool.AsyncConnectionPool``, and ``conn.pipeline()`` for a transaction.

Three patterns the runtime really uses, on a throwaway database
(``corral_bench_<random>``, dropped after it), each timed on every path:

- **get**: one single-statement read by primary key, as the store's ``get``
  (``SELECT value ... WHERE key = :key``, a 60-byte ``bytea`` back);
- **write**: a short write transaction, BEGIN, an UPDATE, an INSERT and COMMIT
  sent as one pipeline (as ``Database.transaction`` sends them, and as
  ``History.amend`` writes: a row changed, a log line added);
- both again from ``--concurrency`` callers at once on one event loop (16 and 64
  by default), as a worker running many executions makes them.

The paths, each with the same statements and the same session settings as the
worker's calls (``call_deferred``: ``synchronous_commit=off``,
``enable_bitmapscan=off``; checked on each path before timing):

- ``home-made``: ``await database.call_deferred(fn, ...)``, ``fn`` a plain function
  calling ``database.fetch_one`` or opening ``database.transaction(write=True)``;
- ``psycopg pool``: ``async with pool.connection() as conn`` around the same
  statement (``await conn.execute``) or transaction (``conn.pipeline()``, then
  ``conn.transaction()``); the pool holds as many connections as ``SessionPool``
  may open (``MAX_SESSIONS``), so concurrent callers share as many here as there;
- ``psycopg conn``: the same, one caller on one ``AsyncConnection`` kept open (no
  pool): what the pool's own checkout costs, by difference. One caller only;
- ``pool, transaction()``: the single caller's write as psycopg's documentation
  writes one, ``conn.transaction()`` inside ``conn.pipeline()``, whose nested
  pipelines sync after BEGIN, after the statements and after COMMIT, and the outer
  one once more: four round trips where the others send BEGIN, the statements and
  COMMIT and sync once (the same messages as ``Database.transaction``'s, checked
  with libpq's trace).

Both libraries prepare a statement once per connection (psycopg after its fifth
use): the warm-up runs every statement on every connection first. Each figure is
the median of ``--runs`` runs of the same calls (the paths take turns, in an order
reversed every run, so background load hits them alike), with the spread
(min-max) beside it: wall time per call, and the process's CPU time per call,
which is what bounds a worker on a 2-core host (the loop, psycopg, the pool; the
server's CPU is the same statements on every path and not counted).

Run: ``.venv/bin/python bench/connections.py [--runs N] [--quick]
[--concurrency 16,64] [--postgres-url URL]`` (5 runs, about a minute;
``--quick``: 2 short runs). Progress goes to stderr, the report to stdout. The
figures, and what was decided from them: ``docs/database.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import platform
import pstats
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
import psycopg_pool
from sqlalchemy.engine import make_url

from corral.db.raw import Database, open_database
from corral.db.sessions import MAX_SESSIONS
from databases import DEFAULT_POSTGRES_URL, Skipped, fresh_database
from tables import DASH, compact, progress, render

ITEMS = 10_000  # rows the reads and writes pick from at random
VALUE = bytes(range(60))  # about a codec-encoded small dict, as the store keeps
#: ``Database.call_deferred``'s session settings (``SessionPool(commit_waits=False,
#: bitmap_scans=False)``), given to psycopg's connections too.
DEFERRED_OPTIONS = "-c synchronous_commit=off -c enable_bitmapscan=off"

SCHEMA = (
    "CREATE TABLE bench_items (key text PRIMARY KEY, value bytea NOT NULL, "
    "version bigint NOT NULL DEFAULT 0)",
    "CREATE TABLE bench_log (id bigserial PRIMARY KEY, key text NOT NULL, "
    "at bigint NOT NULL, line text NOT NULL)",
)
LOAD = (
    "INSERT INTO bench_items (key, value) "
    "SELECT 'item:' || n, :value FROM generate_series(0, :last) AS n"
)
GET = "SELECT value FROM bench_items WHERE key = :key"
UPDATE = "UPDATE bench_items SET value = :value, version = version + 1 WHERE key = :key"
INSERT = "INSERT INTO bench_log (key, at, line) VALUES (:key, :at, :line)"
SETTINGS = "SELECT current_setting('synchronous_commit'), current_setting('enable_bitmapscan')"


def key(i: int) -> str:
    return f"item:{i}"


# -- the paths ------------------------------------------------------------------------


class Path(Protocol):
    """One way from async code to PostgreSQL, making the benchmark's calls."""

    name: str

    def serves(self, pattern: Pattern) -> bool:
        """Whether the pattern is timed on this path."""
        ...

    async def get(self, key: str) -> bytes: ...

    async def write(self, key: str, at: int) -> None: ...

    async def settings(self) -> tuple[str, str]: ...


def get_value(row: Any) -> bytes:
    if row is None:
        raise RuntimeError("the read found no row")
    return bytes(row[0])


class HomeMade:
    """``Database.call_deferred`` over its greenlets and ``SessionPool``."""

    name = "home-made"

    @staticmethod
    def serves(pattern: Pattern) -> bool:
        return True

    def __init__(self, database: Database) -> None:
        self.database = database

    async def get(self, key: str) -> bytes:
        db = self.database
        return get_value(await db.call_deferred(db.fetch_one, GET, {"key": key}))

    async def write(self, key: str, at: int) -> None:
        await self.database.call_deferred(self._write, key, at)

    def _write(self, key: str, at: int) -> None:
        db = self.database
        with db.transaction(write=True) as cur:
            db.execute(cur, UPDATE, {"key": key, "value": VALUE})
            db.execute(cur, INSERT, {"key": key, "at": at, "line": "written"})

    async def settings(self) -> tuple[str, str]:
        db = self.database
        row = await db.call_deferred(db.fetch_one, SETTINGS)
        return row[0], row[1]


class Statements:
    """The same statements in psycopg's placeholder style, on a psycopg connection."""

    def __init__(self, database: Database) -> None:
        self.get, self.update, self.insert = (database.sql(s) for s in (GET, UPDATE, INSERT))

    async def read(self, conn: psycopg.AsyncConnection[Any], key: str) -> bytes:
        cursor = await conn.execute(self.get, {"key": key})
        return get_value(await cursor.fetchone())

    async def write(self, conn: psycopg.AsyncConnection[Any], key: str, at: int) -> None:
        """BEGIN, the two statements and COMMIT in one pipeline, synced once at its end:
        the same messages, in the same order, as ``Database.transaction`` sends (checked
        with libpq's trace). On an error the pool rolls back the connection it is given
        back; a replacement of ``Database.transaction`` would do so itself."""
        async with conn.pipeline():
            cursor = conn.cursor()
            await cursor.execute("BEGIN")
            await cursor.execute(self.update, {"key": key, "value": VALUE})
            await cursor.execute(self.insert, {"key": key, "at": at, "line": "written"})
            await cursor.execute("COMMIT")

    async def write_in_transaction(
        self, conn: psycopg.AsyncConnection[Any], key: str, at: int
    ) -> None:
        """``write`` as psycopg's documentation writes it, with ``conn.transaction()``:
        its nested pipelines sync after BEGIN, after the statements and after COMMIT,
        and the outer one as it closes, four round trips where ``write`` makes one."""
        async with conn.pipeline(), conn.transaction():
            cursor = conn.cursor()
            await cursor.execute(self.update, {"key": key, "value": VALUE})
            await cursor.execute(self.insert, {"key": key, "at": at, "line": "written"})


async def library_settings(conn: psycopg.AsyncConnection[Any]) -> tuple[str, str]:
    row = await (await conn.execute(SETTINGS)).fetchone()
    assert row is not None
    return row[0], row[1]


class PsycopgPool:
    """``psycopg.AsyncConnection``s lent by ``psycopg_pool.AsyncConnectionPool``."""

    name = "psycopg pool"

    @staticmethod
    def serves(pattern: Pattern) -> bool:
        return True

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool[Any], sql: Statements) -> None:
        self.pool = pool
        self.sql = sql

    async def get(self, key: str) -> bytes:
        async with self.pool.connection() as conn:
            return await self.sql.read(conn, key)

    async def write(self, key: str, at: int) -> None:
        async with self.pool.connection() as conn:
            await self.sql.write(conn, key, at)

    async def settings(self) -> tuple[str, str]:
        async with self.pool.connection() as conn:
            return await library_settings(conn)


class PsycopgPoolTransaction(PsycopgPool):
    """``PsycopgPool`` whose writes use ``conn.transaction()``: single-caller writes only."""

    name = "pool, transaction()"

    async def write(self, key: str, at: int) -> None:
        async with self.pool.connection() as conn:
            await self.sql.write_in_transaction(conn, key, at)

    @staticmethod
    def serves(pattern: Pattern) -> bool:
        return pattern.kind == "write" and pattern.callers == 1


class PsycopgConnection:
    """One ``psycopg.AsyncConnection`` kept open: psycopg without a pool."""

    name = "psycopg conn"

    @staticmethod
    def serves(pattern: Pattern) -> bool:
        return pattern.callers == 1  # one connection serves one caller at a time

    def __init__(self, conn: psycopg.AsyncConnection[Any], sql: Statements) -> None:
        self.conn = conn
        self.sql = sql

    async def get(self, key: str) -> bytes:
        return await self.sql.read(self.conn, key)

    async def write(self, key: str, at: int) -> None:
        await self.sql.write(self.conn, key, at)

    async def settings(self) -> tuple[str, str]:
        return await library_settings(self.conn)


# -- the patterns ---------------------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    """A kind of call, made by ``callers`` callers at once on one event loop."""

    kind: str  # "get" or "write"
    callers: int

    @property
    def name(self) -> str:
        what = "get (1 statement)" if self.kind == "get" else "write (BEGIN+2+COMMIT)"
        return f"{what}, {self.callers} caller{'s' if self.callers > 1 else ''}"

    def paths(self, paths: Sequence[Path]) -> list[Path]:
        return [p for p in paths if p.serves(self)]


@dataclass
class Timing:
    """The runs of one pattern on one path."""

    calls: int = 0
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    @property
    def us_per_call(self) -> list[float]:
        return [s / self.calls * 1e6 for s in self.wall_s]

    @property
    def cpu_us_per_call(self) -> list[float]:
        return [s / self.calls * 1e6 for s in self.cpu_s]

    @property
    def rates(self) -> list[float]:
        return [self.calls / s for s in self.wall_s]


class Counter:
    """The log lines the writes must have added (checked at the end)."""

    def __init__(self) -> None:
        self.writes = 0


async def time_calls(
    path: Path, pattern: Pattern, keys: Sequence[str], written: Counter
) -> tuple[float, float]:
    """Wall and CPU seconds for ``keys`` calls, split evenly among the pattern's callers."""
    call: Callable[[str], Awaitable[object]]
    if pattern.kind == "get":
        call = path.get
    else:
        at = time.time_ns()

        def call(key: str) -> Awaitable[None]:
            return path.write(key, at)

    async def caller(mine: Sequence[str]) -> None:
        for k in mine:
            await call(k)

    shares = [keys[n :: pattern.callers] for n in range(pattern.callers)]
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller(share) for share in shares))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if pattern.kind == "write":
        written.writes += len(keys)
    return wall, cpu


def random_keys(rng: random.Random, count: int) -> list[str]:
    return [key(rng.randrange(ITEMS)) for _ in range(count)]


async def calibrate(
    path: Path, pattern: Pattern, seconds: float, rng: random.Random, written: Counter
) -> int:
    """Calls per run for a run to take about ``seconds`` on ``path``; warms it up too."""
    n = 64
    while True:
        wall, _ = await time_calls(path, pattern, random_keys(rng, n), written)
        if wall >= seconds / 8:
            return max(pattern.callers, round(n * seconds / wall))
        n *= 4


async def warm_up(paths: Sequence[Path], patterns: Sequence[Pattern], written: Counter) -> None:
    """Every statement on every connection of every path, past psycopg's prepare
    threshold, and every pool at its full size (the most callers there will be)."""
    rng = random.Random("warm-up")
    widest = max(patterns, key=lambda p: p.callers)
    for kind in ("get", "write"):
        for path in paths:
            pattern = Pattern(
                kind, widest.callers if not isinstance(path, PsycopgConnection) else 1
            )
            await time_calls(path, pattern, random_keys(rng, 40 * pattern.callers), written)


async def measure(
    paths: Sequence[Path], patterns: Sequence[Pattern], runs: int, seconds: float
) -> tuple[dict[tuple[str, str], Timing], int]:
    """Timings by (pattern, path), and the writes made (for the check)."""
    written = Counter()
    await warm_up(paths, patterns, written)
    rng = random.Random("bench")
    timings: dict[tuple[str, str], Timing] = {}
    for pattern in patterns:
        first = pattern.paths(paths)[0]
        calls = await calibrate(first, pattern, seconds, rng, written)
        for path in pattern.paths(paths):
            timings[pattern.name, path.name] = Timing(calls)
    for run in range(runs):
        for pattern in patterns:
            order = pattern.paths(paths)
            for path in order if run % 2 == 0 else reversed(order):
                timing = timings[pattern.name, path.name]
                wall, cpu = await time_calls(path, pattern, random_keys(rng, timing.calls), written)
                timing.wall_s.append(wall)
                timing.cpu_s.append(cpu)
        progress(f"run {run + 1}/{runs} done ({os.getloadavg()[0]:.2f} load)")
    return timings, written.writes


async def count_work(
    path: Path, pattern: Pattern, written: Counter, calls: int = 1_000
) -> tuple[float, float]:
    """Python function calls and event-loop iterations per call: which way each path
    went, to explain its CPU. Counted, yet not independent of timing: a path that
    finds the server's answer already in when it looks (the home-made one checks
    before asking the loop) does less, so the counts move with the machine's load,
    and the profiler, which slows the client down, makes that likelier (the
    iterations are counted without it)."""
    rng = random.Random("counts")
    loop = asyncio.get_running_loop()
    iterations = 0
    # Private, but the one place every iteration of asyncio's loop goes through.
    run_once = loop._run_once  # type: ignore[attr-defined]

    def counted() -> None:
        nonlocal iterations
        iterations += 1
        run_once()

    loop._run_once = counted  # type: ignore[attr-defined]
    try:
        await time_calls(path, pattern, random_keys(rng, calls), written)
    finally:
        del loop._run_once  # type: ignore[attr-defined]
    profile = cProfile.Profile()
    profile.enable()
    await time_calls(path, pattern, random_keys(rng, calls), written)
    profile.disable()
    return pstats.Stats(profile).total_calls / calls, iterations / calls  # type: ignore[attr-defined]


async def count(
    paths: Sequence[Path], patterns: Sequence[Pattern]
) -> tuple[dict[tuple[str, str], tuple[float, float]], int]:
    """``count_work`` by (pattern, path) for the single-caller patterns, and the writes made."""
    written = Counter()
    counts = {
        (pattern.name, path.name): await count_work(path, pattern, written)
        for pattern in patterns
        if pattern.callers == 1
        for path in pattern.paths(paths)
    }
    return counts, written.writes


# -- the database ---------------------------------------------------------------------


def prepare(database: Database) -> None:
    with database.transaction(write=True) as cur:
        for statement in SCHEMA:
            cur.execute(statement)
        database.execute(cur, LOAD, {"value": VALUE, "last": ITEMS - 1})


@dataclass(frozen=True)
class Results:
    timings: dict[tuple[str, str], Timing]
    #: (Python function calls, event-loop iterations) per call, one caller.
    counts: dict[tuple[str, str], tuple[float, float]]
    notes: list[str]


async def run(url: str, patterns: Sequence[Pattern], runs: int, seconds: float) -> Results:
    database = open_database(url)
    prepare(database)
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection_kwargs: dict[str, Any] = {"autocommit": True, "options": DEFERRED_OPTIONS}
    sql = Statements(database)
    pool = psycopg_pool.AsyncConnectionPool(
        conninfo, min_size=MAX_SESSIONS, max_size=MAX_SESSIONS, kwargs=connection_kwargs, open=False
    )
    await pool.open(wait=True)
    kept = await psycopg.AsyncConnection.connect(conninfo, **connection_kwargs)
    version = kept.info.server_version // 10000
    try:
        paths: list[Path] = [
            HomeMade(database),
            PsycopgPool(pool, sql),
            PsycopgConnection(kept, sql),
            PsycopgPoolTransaction(pool, sql),
        ]
        for path in paths:
            if await path.settings() != ("off", "off"):
                raise RuntimeError(f"{path.name}: not the worker's session settings")
        timings, writes = await measure(paths, patterns, runs, seconds)
        counts, counted_writes = await count(paths, patterns)
        writes += counted_writes
        (logged,) = database.fetch_one("SELECT count(*) FROM bench_log")
        if logged != writes:
            raise RuntimeError(f"{writes} writes made {logged} log lines")
    finally:
        await kept.close()
        await pool.close()
    notes = [
        f"PostgreSQL {version}",
        f"psycopg {psycopg.__version__}, psycopg_pool {psycopg_pool.__version__}",
        f"{MAX_SESSIONS} connections per pool",
    ]
    return Results(timings, counts, notes)


# -- the report -------------------------------------------------------------------------


def spread(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}{DASH}{fmt(max(values))})"


def us(x: float) -> str:
    return f"{x:.0f}"


#: The rows of each pattern: a figure's name, its values per run, how to print one;
#: and whether it is a cost, which gets the ratio of psycopg pool's to home-made's.
FIGURES: list[tuple[str, Callable[[Timing], list[float]], Callable[[float], str], bool]] = [
    ("calls/s", lambda t: t.rates, compact, False),
    ("µs/call", lambda t: t.us_per_call, us, True),
    ("CPU µs/call", lambda t: t.cpu_us_per_call, us, True),
]


def report(
    results: Results, patterns: Sequence[Pattern], runs: int, load: tuple[float, float]
) -> str:
    timings = results.timings
    names = [HomeMade.name, PsycopgPool.name, PsycopgConnection.name, PsycopgPoolTransaction.name]
    header = ["pattern", "figure", *names, "pool ÷ home-made"]
    rows: list[list[str]] = []
    for pattern in patterns:
        for n, (figure, values, fmt, cost) in enumerate(FIGURES):
            cells = [
                spread(values(timings[pattern.name, name]), fmt)
                if (pattern.name, name) in timings
                else "-"
                for name in names
            ]
            pool = statistics.median(values(timings[pattern.name, PsycopgPool.name]))
            home = statistics.median(values(timings[pattern.name, HomeMade.name]))
            rows.append(
                [
                    pattern.name if n == 0 else "",
                    figure,
                    *cells,
                    f"{pool / home:.2f}" if cost else "",
                ]
            )
    lines = [
        "PostgreSQL from async code: Corral's home-made connections against psycopg's own",
        f"each figure the median of {runs} runs with (min{DASH}max) beside it; CPU: this "
        "process's, per call; last column: psycopg pool's median cost over home-made's",
        f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} before, {load[1]:.2f} after; " + "; ".join(results.notes),
        "",
        render(header, rows, left=(0, 1)),
        "",
        "Work per call, one caller, counted over 1,000 calls (Python function calls, cProfile's",
        "count; event-loop iterations, without the profiler):",
        render(header[:-1], count_rows(results, patterns, names), left=(0, 1)),
    ]
    return "\n".join(lines)


def count_rows(results: Results, patterns: Sequence[Pattern], names: list[str]) -> list[list[str]]:
    rows = []
    for pattern in patterns:
        if pattern.callers != 1:
            continue
        for n, figure in enumerate(("Python calls", "loop iterations")):
            cells = [
                f"{results.counts[pattern.name, name][n]:.{1 if n else 0}f}"
                if (pattern.name, name) in results.counts
                else "-"
                for name in names
            ]
            rows.append([pattern.name if n == 0 else "", figure, *cells])
    return rows


# -- command line -----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, help="runs per figure (default 5; 2 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: short and few runs")
    parser.add_argument(
        "--concurrency",
        default="16,64",
        type=lambda s: [int(n) for n in s.split(",") if n.strip()],
        help="callers at once for the concurrent patterns (default 16,64)",
    )
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_URL,
        help=f"a server to create the throwaway database on (default {DEFAULT_POSTGRES_URL})",
    )
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 2 if args.quick else 5
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if any(n < 2 for n in args.concurrency):
        parser.error("--concurrency takes numbers of callers of at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    patterns = [Pattern(kind, n) for kind in ("get", "write") for n in (1, *args.concurrency)]
    seconds = 0.1 if args.quick else 0.5
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    try:
        with fresh_database("postgres", args.postgres_url) as url:
            results = asyncio.run(run(url, patterns, args.runs, seconds))
    except Skipped as exc:
        raise SystemExit(f"cannot run: {exc}") from None
    print(report(results, patterns, args.runs, (load_before, os.getloadavg()[0])))
    progress(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
