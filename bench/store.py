"""Store throughput, host-side, per execution: how fast one agent can use its store.

DESIGN §5 sets the store bars: at least 10,000 single ``get``/``set`` per second
per execution on SQLite, and ``set_many``/``get_many`` of 1,000 keys in at most
10 ms. Those bars are for code running inside the sandbox, where every call also
crosses the RPC channel; this script measures the layer underneath, the async
:class:`corral.state.Store` API called directly on the host, so its figures are
the ceiling the sandboxed numbers can approach, not the bar itself.

For each backend (memory, SQLite in a fresh temporary file, PostgreSQL in a
fresh throwaway database) it loads ``--keys`` keys into one scope with
``set_many`` in batches of 1,000, then times, in one asyncio loop with
sequential awaits (one execution, no concurrency):

- ``get``, ``has``, ``set``, ``set_with_ttl`` on random existing keys;
- ``keys(prefix)`` with prefixes that select 100 keys (an index range scan),
  and one ``keys('')`` over the whole scope;
- ``get_many`` and ``set_many`` of 1,000 random existing keys.

The store has the default quotas (64 MiB, 100,000 keys) as an execution's store
has, so each write also pays its quota check; ``--no-quotas`` measures the store
as host-side code opens it, without (every write still keeps its scope's usage).

It also times the value codec alone (encode and decode of the same small dict),
since every get and set pays it. The machine has 2 noisy cores, so every figure
is the median of several runs, each sized to take a fixed time, with the
spread (min-max) beside it.

Run: ``.venv/bin/python bench/store.py [--backends memory,sqlite,postgres]
[--keys 100000] [--quick] [--no-quotas]``. Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import random
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from corral import codec
from corral.quotas import Quotas
from corral.state import Store, StoreBackend, open_backend
from databases import DEFAULT_POSTGRES_URL, Skipped, fresh_database, postgres_version
from tables import DASH, compact, ms, progress, render

BATCH = 1_000  # keys per set_many/get_many call, and per set_many while loading
PREFIX_SLICE = 100  # keys selected by one keys(prefix) call
TTL_MS = 3_600_000  # long enough that nothing expires while we measure
SCOPE = "bench"
ALL_BACKENDS = ("memory", "sqlite", "postgres")

SINGLE_BAR = "≥ 10,000/s on SQLite, in the sandbox (host-side here; the sandbox adds RPC)"
BATCH_BAR = "≤ 10 ms on SQLite"


# -- the keys and values --------------------------------------------------------


@dataclass(frozen=True)
class Keyspace:
    """``size`` keys ``item:000000``... whose prefixes minus two digits select 100 keys."""

    size: int

    @property
    def width(self) -> int:
        return max(len(str(self.size - 1)), 3)

    def key(self, i: int) -> str:
        return f"item:{i:0{self.width}d}"

    @staticmethod
    def value(i: int) -> dict[str, Any]:
        return {"n": i, "name": f"item-{i}", "tags": ["a", "b"]}

    def prefix(self, slice_no: int) -> str:
        return f"item:{slice_no:0{self.width - 2}d}"

    def random_key(self, rng: random.Random) -> str:
        return self.key(rng.randrange(self.size))

    def random_pair(self, rng: random.Random) -> tuple[str, dict[str, Any]]:
        i = rng.randrange(self.size)
        return self.key(i), self.value(i)

    def random_prefix(self, rng: random.Random) -> str:
        return self.prefix(rng.randrange(self.size // PREFIX_SLICE))

    def random_keys(self, rng: random.Random) -> list[str]:
        return [self.key(i) for i in rng.sample(range(self.size), BATCH)]

    def random_batch(self, rng: random.Random) -> dict[str, dict[str, Any]]:
        return {self.key(i): self.value(i) for i in rng.sample(range(self.size), BATCH)}


# -- what is timed ----------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """The runs of one figure, each of ``calls`` calls."""

    calls: int  # per run
    seconds: list[float]  # one per run
    items: int  # keys per call

    @property
    def rates(self) -> list[float]:
        return [self.calls / s for s in self.seconds]

    @property
    def ms_per_call(self) -> list[float]:
        return [s / self.calls * 1000 for s in self.seconds]

    @property
    def median_rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.ms_per_call)


@dataclass(frozen=True)
class Op:
    """One store call: how to make a fresh argument, and how to make the call."""

    name: str
    items: int  # keys handled per call
    batch: bool  # report ms per call and keys/s rather than calls/s
    make_arg: Callable[[random.Random], Any]
    call: Callable[[Store, Any], Awaitable[object]]
    bar: str = ""
    meets_bar: Callable[[Measurement], bool] | None = None


def single_bar_met(m: Measurement) -> bool:
    return m.median_rate >= 10_000


def batch_bar_met(m: Measurement) -> bool:
    return m.median_ms <= 10.0


def store_ops(space: Keyspace) -> list[Op]:
    """Every timed call, in the order it runs and is reported."""
    return [
        Op(
            "get",
            items=1,
            batch=False,
            make_arg=space.random_key,
            call=lambda s, key: s.get(key),
            bar=SINGLE_BAR,
            meets_bar=single_bar_met,
        ),
        Op(
            "set",
            items=1,
            batch=False,
            make_arg=space.random_pair,
            call=lambda s, pair: s.set(*pair),
            bar=SINGLE_BAR,
            meets_bar=single_bar_met,
        ),
        Op(
            "set_with_ttl",
            items=1,
            batch=False,
            make_arg=space.random_pair,
            call=lambda s, pair: s.set_with_ttl(pair[0], pair[1], TTL_MS),
        ),
        Op(
            "has",
            items=1,
            batch=False,
            make_arg=space.random_key,
            call=lambda s, key: s.has(key),
        ),
        Op(
            f"keys(prefix) ({PREFIX_SLICE} keys)",
            items=PREFIX_SLICE,
            batch=False,
            make_arg=space.random_prefix,
            call=lambda s, prefix: s.keys(prefix),
        ),
        Op(
            f"keys('') ({space.size:,} keys)",
            items=space.size,
            batch=True,
            make_arg=lambda _: "",
            call=lambda s, prefix: s.keys(prefix),
        ),
        Op(
            f"get_many ({BATCH:,} keys)",
            items=BATCH,
            batch=True,
            make_arg=space.random_keys,
            call=lambda s, keys: s.get_many(keys),
            bar=BATCH_BAR,
            meets_bar=batch_bar_met,
        ),
        Op(
            f"set_many ({BATCH:,} keys)",
            items=BATCH,
            batch=True,
            make_arg=space.random_batch,
            call=lambda s, pairs: s.set_many(pairs),
            bar=BATCH_BAR,
            meets_bar=batch_bar_met,
        ),
    ]


# -- timing -------------------------------------------------------------------------


Timer = Callable[[int], Awaitable[float]]
"""Run ``n`` fresh calls and return the seconds they took."""


@dataclass(frozen=True)
class Plan:
    runs: int  # repetitions; the median is reported
    seconds: float  # target duration of one repetition


async def measure(timer: Timer, plan: Plan, items: int = 1) -> Measurement:
    calls = await calibrate(timer, plan.seconds)
    seconds = []
    for _ in range(plan.runs):
        gc.collect()
        seconds.append(await timer(calls))
    return Measurement(calls, seconds, items)


async def calibrate(timer: Timer, target: float) -> int:
    """Calls per run for a run to take about ``target`` seconds; doubles as warm-up."""
    n = 1
    while True:
        elapsed = max(await timer(n), 1e-9)
        if elapsed >= target / 8:
            return max(1, round(n * target / elapsed))
        n *= 4


def op_timer(store: Store, op: Op, rng: random.Random) -> Timer:
    async def timer(n: int) -> float:
        args = [op.make_arg(rng) for _ in range(n)]  # built before the clock starts
        call = op.call
        start = time.perf_counter()
        for arg in args:
            await call(store, arg)
        return time.perf_counter() - start

    return timer


def codec_timer(fn: Callable[[], object]) -> Timer:
    async def timer(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return time.perf_counter() - start

    return timer


# -- backends -----------------------------------------------------------------------


@contextmanager
def memory_backend() -> Iterator[StoreBackend]:
    backend = open_backend(None)
    try:
        yield backend
    finally:
        backend.close()


@contextmanager
def sqlite_backend() -> Iterator[StoreBackend]:
    with fresh_database("sqlite") as url:
        yield open_backend(url)


@contextmanager
def postgres_backend(admin_url: str, notes: list[str]) -> Iterator[StoreBackend]:
    """A fresh ``corral_bench_<random>`` database, dropped again at the end."""
    version = postgres_version(admin_url)
    with fresh_database("postgres", admin_url) as url:
        notes.append(f"{version}, database {make_url(url).database}")
        yield open_backend(url)


# -- one backend --------------------------------------------------------------------


@dataclass
class Results:
    """Measurements per backend and operation, and why a backend was skipped."""

    ops: dict[str, dict[str, Measurement]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


async def load(store: Store, space: Keyspace, label: str) -> None:
    start = time.perf_counter()
    for first in range(0, space.size, BATCH):
        stop = min(first + BATCH, space.size)
        await store.set_many({space.key(i): space.value(i) for i in range(first, stop)})
    elapsed = time.perf_counter() - start
    progress(
        f"[{label}] loaded {space.size:,} keys with set_many in batches of {BATCH:,}: "
        f"{elapsed:.1f} s ({space.size / elapsed:,.0f} keys/s)"
    )


async def check(store: Store, space: Keyspace) -> None:
    """Make sure the timed calls do the work they claim to do."""
    if await store.get(space.key(0)) != space.value(0):
        raise RuntimeError("get did not return what set_many stored")
    if len(await store.keys(space.prefix(0))) != PREFIX_SLICE:
        raise RuntimeError(f"a prefix does not select {PREFIX_SLICE} keys")
    if len(await store.keys()) != space.size:
        raise RuntimeError(f"keys('') does not list {space.size:,} keys")


async def bench_backend(
    label: str, backend: StoreBackend, space: Keyspace, plan: Plan, quotas: Quotas | None
) -> dict[str, Measurement]:
    store = Store(backend, SCOPE, quotas=quotas)
    progress(f"[{label}] loading {space.size:,} keys ...")
    await load(store, space, label)
    await check(store, space)
    rng = random.Random(label)
    out: dict[str, Measurement] = {}
    for op in store_ops(space):
        m = out[op.name] = await measure(op_timer(store, op, rng), plan, op.items)
        summary = f"{m.median_ms:.2f} ms/call" if op.batch else f"{m.median_rate:,.0f}/s"
        progress(f"[{label}] {op.name}: {summary} ({plan.runs} runs of {m.calls:,} calls)")
    return out


def open_target(
    name: str, args: argparse.Namespace, notes: list[str]
) -> AbstractContextManager[StoreBackend]:
    if name == "memory":
        return memory_backend()
    if name == "sqlite":
        return sqlite_backend()
    return postgres_backend(args.postgres_url, notes)


async def bench_codec(plan: Plan) -> dict[str, Measurement]:
    value = Keyspace.value(12_345)
    data = codec.encode(value)
    fns: dict[str, Callable[[], object]] = {
        "encode": lambda: codec.encode(value),
        "decode": lambda: codec.decode(data),
        "encode+decode": lambda: codec.decode(codec.encode(value)),
    }
    out = {}
    for name, fn in fns.items():
        out[name] = await measure(codec_timer(fn), plan)
        progress(f"[codec] {name}: {out[name].median_rate:,.0f}/s")
    return out


async def run(args: argparse.Namespace, space: Keyspace, plan: Plan) -> Results:
    results = Results()
    for name in args.backends:
        try:
            with open_target(name, args, results.notes) as backend:
                quotas = None if args.no_quotas else Quotas()
                results.ops[name] = await bench_backend(name, backend, space, plan, quotas)
        except Skipped as exc:
            results.skipped[name] = str(exc)
            progress(f"[{name}] skipped: {exc}")
    results.ops["codec"] = await bench_codec(plan)
    return results


# -- the report ---------------------------------------------------------------------


def rate_cell(m: Measurement) -> str:
    return f"{m.median_rate:,.0f}/s ({compact(min(m.rates))}{DASH}{compact(max(m.rates))})"


def ms_cell(m: Measurement) -> str:
    low, high = min(m.ms_per_call), max(m.ms_per_call)
    return f"{ms(m.median_ms)} ms ({ms(low)}{DASH}{ms(high)})"


def keys_rate_cell(m: Measurement) -> str:
    return f"{m.median_rate * m.items:,.0f} keys/s"


def cell(
    results: Results, backend: str, op: Op, fmt: Callable[[Measurement], str], judge: bool
) -> str:
    """A formatted figure; SQLite's carries a verdict against the bar when ``judge``."""
    if backend in results.skipped:
        return "skipped"
    m = results.ops[backend][op.name]
    if backend != "sqlite":
        return fmt(m)
    verdict = "" if not judge or op.meets_bar is None else "✓" if op.meets_bar(m) else "✗"
    return f"{fmt(m)} {verdict:1}"


def table_rows(results: Results, backends: Sequence[str], space: Keyspace) -> list[list[str]]:
    def cells(op: Op, fmt: Callable[[Measurement], str], judge: bool) -> list[str]:
        return [cell(results, b, op, fmt, judge) for b in backends]

    rows = []
    for op in store_ops(space):
        if op.batch:
            rows.append([f"{op.name}, per call", *cells(op, ms_cell, True), op.bar])
            rows.append(["  throughput", *cells(op, keys_rate_cell, False), ""])
        else:
            rows.append([op.name, *cells(op, rate_cell, True), op.bar])
    return rows


def report(results: Results, args: argparse.Namespace, space: Keyspace, plan: Plan) -> str:
    backends = list(args.backends)
    header = ["operation", *backends, "bar (DESIGN §5)"]
    codec_rows = [
        [name, rate_cell(m), f"{m.median_ms * 1000:.2f}"]
        for name, m in results.ops["codec"].items()
    ]
    lines = [
        "Corral store benchmark: host-side, async Store API, one asyncio loop, sequential "
        "awaits (per execution)",
        f"{space.size:,} keys in the scope, "
        + ("no quotas" if args.no_quotas else "the default quotas (an execution's store)")
        + f"; each figure is the median of {plan.runs} runs of ~{plan.seconds:g} s each, "
        f"with (min{DASH}max) beside it",
        f"Python {platform.python_version()}, SQLAlchemy {sa.__version__}, "
        f"SQLite {sqlite3.sqlite_version}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs" + "".join(f"; {n}" for n in results.notes),
        "",
        render(header, table_rows(results, backends, space), left=(0, len(header) - 1)),
        "",
        "✓/✗: the SQLite figure against its bar. The single get/set bar holds inside the sandbox,",
        "where each call also crosses the RPC channel: these host-side figures are its ceiling.",
        "",
        f"Codec alone, value {Keyspace.value(12_345)!r} "
        f"({len(codec.encode(Keyspace.value(12_345)))} bytes):",
        render(["codec", "calls/s", "µs/call"], codec_rows),
    ]
    lines += [f"\n{name} column skipped: {why}" for name, why in results.skipped.items()]
    return "\n".join(lines)


# -- command line -------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--backends",
        default=",".join(ALL_BACKENDS),
        type=lambda s: [b.strip() for b in s.split(",") if b.strip()],
        help="comma-separated subset of memory,sqlite,postgres (default: all)",
    )
    parser.add_argument(
        "--keys", type=int, help="keys in the scope (default 100,000; 10,000 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer keys and runs")
    parser.add_argument(
        "--no-quotas", action="store_true", help="a store without quotas (host-side code's)"
    )
    parser.add_argument("--runs", type=int, help="repetitions per figure (default 5; 3 quick)")
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_URL,
        help=f"a server to create the throwaway database on (default {DEFAULT_POSTGRES_URL})",
    )
    args = parser.parse_args(argv)
    unknown = [b for b in args.backends if b not in ALL_BACKENDS]
    if unknown or not args.backends:
        parser.error(f"--backends takes names from {','.join(ALL_BACKENDS)}, got {unknown}")
    if args.keys is None:
        args.keys = 10_000 if args.quick else 100_000
    if args.keys < BATCH:
        parser.error(f"--keys must be at least {BATCH:,} (one set_many batch of distinct keys)")
    if args.runs is None:
        args.runs = 3 if args.quick else 5
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    space = Keyspace(args.keys)
    plan = Plan(runs=args.runs, seconds=0.1 if args.quick else 0.4)
    started = time.perf_counter()
    results = asyncio.run(run(args, space, plan))
    print(report(results, args, space, plan))
    progress(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
