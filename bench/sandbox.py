"""Sandbox latency and store-over-RPC throughput, with the full kernel sandbox on.

DESIGN §5 sets the bars this script checks, and §2 chose a warm sandboxed
process per instance because the probe measured a fresh fork at ~7 ms against
0.1-0.2 ms for a warm round trip. This script measures what the built sandbox
(``Zygote.start()`` with every layer: user and network namespace, capabilities
dropped, no-new-privs, Landlock, seccomp, rlimits) actually costs:

1. **Warm**: a trivial handler (``def noop(self): return None``) through
   ``SandboxPool.execute`` with the instance's process reused; p50/p99 per run.
   The bar (p50 ≤ 2 ms, p99 ≤ 10 ms) is for task claimed -> handler returned ->
   recorded; this is the sandbox part only: no task queue or record write yet.
2. **Cold**: ``zygote.spawn`` alone, and spawn + first execution (the bar:
   p50 ≤ 15 ms). Retiring the process (close, exit, reap) is timed apart.
3. **Strict**: ``SandboxPool(strict=True)``, a fresh process per execution,
   retirement included since the caller waits for it; and strict/warm.
4. **Store from inside the sandbox**: an agent method that awaits ``store.get``
   or ``store.set`` N times in a row, or in ``asyncio.gather`` batches of 32, on
   SQLite (a file in a temporary directory) and in memory; timed inside the
   agent, so the figure is calls per second within one execution. Also
   ``get_many``/``set_many`` of 1,000 keys, ms per call. Bars: ≥ 10,000 single
   calls/s on SQLite, ≤ 10 ms per 1,000-key batch.
5. **Where the time goes**: per warm execution, sequential store call and batch,
   wall time against the host's CPU time, the sandboxed process's CPU time (read
   from the kernel) and the same Store call made directly on the host.
6. **Ablation**: the warm noop and sequential ``store.get`` (memory) with the
   host, the zygote and its children pinned to CPU 0 against unpinned, each in a
   fresh subprocess so this process stays unpinned. The probe measured a
   cross-CPU socketpair round trip at 162 µs against 12 µs on one CPU.

The probe's figures (``../shared/research/sandbox-probe/REPORT.md``) are printed
beside ours for context. The machine has 2 noisy cores shared with other work,
so each figure is the median of several runs with the spread (min-max) beside
it, and the measurements take turns within each run (round-robin) so that
background load hits them alike.

Run: ``.venv/bin/python bench/sandbox.py [--quick] [--runs N]``; ``--profile``
prints a cProfile of the host side of a sequential ``store.set`` loop instead.
Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import math
import os
import platform
import pstats
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.runtime.tools import store_tools
from corral.sandbox.host import ToolHandler, Zygote
from corral.sandbox.limits import ExecutionResult, Limits, Outcome
from corral.sandbox.pool import SandboxPool
from corral.state import Store, close_backends, open_store
from tables import DASH, compact, ms, progress, render

SCOPE = "bench"
VERSION = "v1"
KEYS = 1_000  # keys the store loops cycle through; also the get_many/set_many batch
GATHER = 32  # store calls in flight per asyncio.gather batch
WARMUP = 50  # executions before the first timed warm run
NOOP = "noop"  # the instance the warm noop runs as; the store loops use store-<backend>

AGENT = """
import asyncio
import time

from corral.sdk import Agent


def key(i, keys):
    return f"k{i % keys:05d}"


def value(i):
    return {"n": i, "name": f"item-{i}", "tags": ["a", "b"]}


class Bench(Agent):
    def noop(self):
        return None

    def _call(self, op, i, keys):
        if op == "get":
            return self.store.get(key(i, keys))
        return self.store.set(key(i, keys), value(i))

    async def sequential(self, op, n, keys):
        start = time.perf_counter()
        for i in range(n):
            await self._call(op, i, keys)
        return time.perf_counter() - start

    async def gathered(self, op, n, keys, batch):
        start = time.perf_counter()
        for first in range(0, n, batch):
            stop = min(first + batch, n)
            await asyncio.gather(*(self._call(op, i, keys) for i in range(first, stop)))
        return time.perf_counter() - start

    async def batches(self, op, calls, keys):
        names = [key(i, keys) for i in range(keys)]
        pairs = {name: value(i) for i, name in enumerate(names)}
        seconds = []
        for _ in range(calls):
            start = time.perf_counter()
            if op == "get_many":
                found = await self.store.get_many(names)
                assert found[-1] is not None
            else:
                await self.store.set_many(pairs)
            seconds.append(time.perf_counter() - start)
        return seconds
"""


def value(i: int) -> dict[str, Any]:
    """The value the agent stores, for loading the store and direct host calls."""
    return {"n": i, "name": f"item-{i}", "tags": ["a", "b"]}


def key(i: int) -> str:
    return f"k{i % KEYS:05d}"


# -- sizes and figures ----------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """How much one run does of each measurement."""

    warm: int  # warm executions
    cold: int  # spawns, each followed by a first execution
    strict: int  # strict-mode executions
    ops: int  # store calls per loop execution
    batch_calls: int  # get_many/set_many calls per execution

    @classmethod
    def for_run(cls, quick: bool) -> Sizes:
        if quick:
            return cls(warm=300, cold=30, strict=30, ops=500, batch_calls=5)
        return cls(warm=2_000, cold=200, strict=200, ops=2_000, batch_calls=20)

    @property
    def store_limits(self) -> Limits:
        """One set of limits for every store execution, so the warm process is kept."""
        return Limits(requests=self.ops + 10)


@dataclass(frozen=True)
class Spread:
    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)


@dataclass
class Figures:
    """Every figure, one value per run, by name."""

    runs: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, name: str, value: float) -> None:
        self.runs[name].append(value)

    def __getitem__(self, name: str) -> Spread:
        return Spread(self.runs[name])

    def __contains__(self, name: str) -> bool:
        return bool(self.runs.get(name))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``q`` of them at or below."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def add_latencies(figures: Figures, name: str, seconds: Sequence[float]) -> None:
    figures.add(f"{name}.p50", percentile(seconds, 0.50) * 1000)
    figures.add(f"{name}.p99", percentile(seconds, 0.99) * 1000)


# -- the harness ----------------------------------------------------------------------


@dataclass
class Harness:
    """A running zygote, a warm pool and a strict pool, and a store per backend."""

    zygote: Zygote
    pool: SandboxPool
    strict: SandboxPool
    stores: dict[str, Store]
    tools: dict[str, ToolHandler]
    sizes: Sizes

    async def execute(
        self, instance: str, method: str, args: list[Any], backend: str = "memory"
    ) -> ExecutionResult:
        limits = Limits() if instance == NOOP else self.sizes.store_limits
        result = await self.pool.execute(
            instance, VERSION, AGENT, method, args, limits, self.tools[backend]
        )
        return checked(result, method)

    async def close(self) -> None:
        await self.pool.close()
        await self.strict.close()
        await self.zygote.close()


def checked(result: ExecutionResult, method: str) -> ExecutionResult:
    if result.outcome is not Outcome.OK:
        raise RuntimeError(f"{method} ended {result.outcome.value}: {result.error}")
    return result


async def start_zygote() -> Zygote:
    zygote = await Zygote.start()  # the full kernel sandbox: no insecure flag
    if zygote.report.get("insecure") or zygote.report.get("missing"):
        await zygote.close()
        raise RuntimeError(f"the sandbox is not complete: {zygote.report}")
    return zygote


async def load(store: Store) -> None:
    await store.set_many({key(i): value(i) for i in range(KEYS)})
    if await store.get(key(KEYS - 1)) != value(KEYS - 1):
        raise RuntimeError("the store did not return what was loaded")


async def open_harness(db_dir: Path, sizes: Sizes) -> Harness:
    stores = {
        "sqlite": open_store(f"sqlite:///{db_dir / 'bench.db'}", SCOPE),
        "memory": open_store(None, SCOPE),
    }
    for store in stores.values():
        await load(store)
    zygote = await start_zygote()
    tools = {name: store_tools(store) for name, store in stores.items()}
    return Harness(
        zygote, SandboxPool(zygote), SandboxPool(zygote, strict=True), stores, tools, sizes
    )


async def warm_up(h: Harness) -> None:
    """Start the warm processes and let every code path run once before the clock."""
    for _ in range(WARMUP):
        await h.execute(NOOP, "noop", [])
    for backend in h.stores:
        for op in ("get", "set"):
            await h.execute(f"store-{backend}", "sequential", [op, 100, KEYS], backend)
            await h.execute(f"store-{backend}", "gathered", [op, 100, KEYS, GATHER], backend)
        for op in ("get_many", "set_many"):
            await h.execute(f"store-{backend}", "batches", [op, 1, KEYS], backend)


# -- the measurements -----------------------------------------------------------------


def involuntary_switches() -> int:
    """Times this process was preempted: by the sandboxed process it woke, mostly."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


async def measure_warm(h: Harness, figures: Figures) -> None:
    """Warm noop executions: latency percentiles and the CPU each side spends."""
    n = h.sizes.warm
    seconds: list[float] = []
    child_ms = 0.0
    spawned = h.pool.spawned
    gc.collect()
    switches = involuntary_switches()
    cpu = time.process_time()
    for _ in range(n):
        start = time.perf_counter()
        result = await h.execute(NOOP, "noop", [])
        seconds.append(time.perf_counter() - start)
        child_ms += result.cpu_ms
    host_cpu = time.process_time() - cpu
    figures.add("warm.preempted", (involuntary_switches() - switches) / n)
    add_latencies(figures, "warm", seconds)
    figures.add("warm.wall_us", statistics.fmean(seconds) * 1e6)
    figures.add("warm.host_cpu_us", host_cpu / n * 1e6)
    figures.add("warm.child_cpu_us", child_ms / n * 1000)
    figures.add("warm.respawns", h.pool.spawned - spawned)


async def measure_cold(h: Harness, figures: Figures) -> None:
    """A new sandboxed process: spawn alone, first execution, both together, and retirement."""
    spawn: list[float] = []
    first: list[float] = []
    retire: list[float] = []
    limits = Limits()
    gc.collect()
    for _ in range(h.sizes.cold):
        start = time.perf_counter()
        process = await h.zygote.spawn(limits)
        ready = time.perf_counter()
        result = await process.execute(AGENT, "noop", [], limits, h.tools["memory"])
        done = time.perf_counter()
        checked(result, "noop")
        await process.close()  # waits until the zygote has reaped it: not in "cold"
        spawn.append(ready - start)
        first.append(done - ready)
        retire.append(time.perf_counter() - done)
    add_latencies(figures, "spawn", spawn)
    add_latencies(figures, "first", first)
    add_latencies(figures, "retire", retire)
    add_latencies(figures, "cold", [a + b for a, b in zip(spawn, first, strict=True)])


async def measure_strict(h: Harness, figures: Figures) -> None:
    """Strict mode: every execution in a fresh process, retired before it returns."""
    seconds: list[float] = []
    gc.collect()
    for _ in range(h.sizes.strict):
        start = time.perf_counter()
        result = await h.strict.execute(
            "strict", VERSION, AGENT, "noop", [], Limits(), h.tools["memory"]
        )
        seconds.append(time.perf_counter() - start)
        checked(result, "noop")
    add_latencies(figures, "strict", seconds)
    figures.add("strict/warm", figures.runs["strict.p50"][-1] / figures.runs["warm.p50"][-1])


async def timed_execution(
    h: Harness, figures: Figures, name: str, calls: int, method: str, args: list[Any], backend: str
) -> ExecutionResult:
    """One store execution of ``calls`` calls, with wall and CPU time per call on each side."""
    gc.collect()
    switches = involuntary_switches()
    cpu = time.process_time()
    start = time.perf_counter()
    result = await h.execute(f"store-{backend}", method, args, backend)
    wall = time.perf_counter() - start
    host_cpu = time.process_time() - cpu
    figures.add(f"{name}.preempted", (involuntary_switches() - switches) / calls)
    figures.add(f"{name}.wall_us", wall / calls * 1e6)
    figures.add(f"{name}.host_cpu_us", host_cpu / calls * 1e6)
    figures.add(f"{name}.child_cpu_us", result.cpu_ms / calls * 1000)
    return result


async def measure_loop(h: Harness, figures: Figures, backend: str, op: str, mode: str) -> None:
    """One execution of ``ops`` store calls, sequential or gathered; rate timed in the agent."""
    n = h.sizes.ops
    args: list[Any] = [op, n, KEYS] if mode == "sequential" else [op, n, KEYS, GATHER]
    name = f"{backend}.{op}.{mode}"
    result = await timed_execution(h, figures, name, n, mode, args, backend)
    figures.add(f"{name}.rate", n / result.result)


async def measure_batches(h: Harness, figures: Figures, backend: str, op: str) -> None:
    """get_many/set_many of 1,000 keys from inside the sandbox: median ms per call."""
    n = h.sizes.batch_calls
    name = f"{backend}.{op}"
    result = await timed_execution(h, figures, name, n, "batches", [op, n, KEYS], backend)
    figures.add(f"{name}.ms", statistics.median(result.result) * 1000)


def direct_call(store: Store, op: str) -> Callable[[int], Awaitable[object]]:
    """The Store call the agent's ``op`` makes, for the i-th call, made on the host."""
    names = [key(i) for i in range(KEYS)]
    pairs = {name: value(i) for i, name in enumerate(names)}
    calls: dict[str, Callable[[int], Awaitable[object]]] = {
        "get": lambda i: store.get(key(i)),
        "set": lambda i: store.set(key(i), value(i)),
        "get_many": lambda _: store.get_many(names),
        "set_many": lambda _: store.set_many(pairs),
    }
    return calls[op]


async def measure_direct(h: Harness, figures: Figures, backend: str, op: str) -> None:
    """The same Store call made directly on the host, no sandbox: what the RPC adds to."""
    call = direct_call(h.stores[backend], op)
    n = h.sizes.batch_calls if op.endswith("_many") else h.sizes.ops
    gc.collect()
    start = time.perf_counter()
    for i in range(n):
        await call(i)
    figures.add(f"{backend}.{op}.direct_us", (time.perf_counter() - start) / n * 1e6)


async def one_run(h: Harness, figures: Figures) -> None:
    await measure_warm(h, figures)
    await measure_cold(h, figures)
    await measure_strict(h, figures)
    for backend in ("sqlite", "memory"):
        for op in ("get", "set"):
            await measure_loop(h, figures, backend, op, "sequential")
            await measure_loop(h, figures, backend, op, "gathered")
            await measure_direct(h, figures, backend, op)
        for op in ("get_many", "set_many"):
            await measure_batches(h, figures, backend, op)
            await measure_direct(h, figures, backend, op)


def run_summary(figures: Figures) -> str:
    last = {name: values[-1] for name, values in figures.runs.items()}
    return (
        f"warm p50 {last['warm.p50']:.3f} ms, cold p50 {last['cold.p50']:.2f} ms, "
        f"strict p50 {last['strict.p50']:.2f} ms, "
        f"SQLite get {last['sqlite.get.sequential.rate']:,.0f}/s, "
        f"set {last['sqlite.set.sequential.rate']:,.0f}/s"
    )


# -- the ablation: pinned to one CPU against unpinned, each in a subprocess ------------


async def ablation_worker(mode: str, quick: bool) -> dict[str, Any]:
    """Runs in the subprocess: pin (or not), then the warm noop and sequential get."""
    if mode == "pinned":
        os.sched_setaffinity(0, {0})  # the zygote and its children inherit it
    sizes = Sizes.for_run(quick)
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        h = await open_harness(Path(tmp), sizes)
        try:
            child = await h.zygote.spawn(Limits())
            child_affinity = sorted(os.sched_getaffinity(child.pid))
            await child.close()
            for _ in range(WARMUP):
                await h.execute(NOOP, "noop", [])
            await h.execute("store-memory", "sequential", ["get", 100, KEYS])
            figures = Figures()
            await measure_warm(h, figures)
            await measure_loop(h, figures, "memory", "get", "sequential")
        finally:
            await h.close()
            close_backends()
    return {
        "affinity": sorted(os.sched_getaffinity(0)),
        "child_affinity": child_affinity,
        "figures": {name: values[-1] for name, values in figures.runs.items()},
    }


async def run_ablation_worker(mode: str, quick: bool) -> dict[str, Any]:
    command = [sys.executable, __file__, "--ablation-worker", mode, *(["--quick"] * quick)]
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the {mode} ablation worker failed ({process.returncode})")
    report: dict[str, Any] = json.loads(out)
    expected = [0] if mode == "pinned" else sorted(os.sched_getaffinity(0))
    if report["child_affinity"] != expected:
        raise RuntimeError(f"{mode}: a sandboxed process ran on CPUs {report['child_affinity']}")
    return report


async def measure_ablation(figures: Figures, quick: bool, run: int) -> None:
    """One pinned and one unpinned subprocess, taking turns at going first."""
    modes = ("pinned", "unpinned") if run % 2 == 0 else ("unpinned", "pinned")
    reports = {mode: await run_ablation_worker(mode, quick) for mode in modes}
    for mode, report in reports.items():
        for name, value in report["figures"].items():
            figures.add(f"{mode}.{name}", value)
    pinned, unpinned = (reports[m]["figures"] for m in ("pinned", "unpinned"))
    figures.add("ablation.p50", unpinned["warm.p50"] / pinned["warm.p50"])
    rate = "memory.get.sequential.rate"
    figures.add("ablation.get", pinned[rate] / unpinned[rate])


# -- the whole benchmark ----------------------------------------------------------------


@dataclass
class Context:
    """What the report says about the conditions of the run."""

    layers: list[str]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    seconds: float = 0.0


async def bench(sizes: Sizes, runs: int, quick: bool) -> tuple[Figures, Context]:
    figures = Figures()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        h = await open_harness(Path(tmp), sizes)
        try:
            layers = [layer["name"] for layer in h.zygote.report["layers"]]
            context = Context(layers, os.getloadavg())
            progress(f"zygote up, layers: {', '.join(layers)}; warming up ...")
            await warm_up(h)
            for run in range(runs):
                await one_run(h, figures)
                progress(f"run {run + 1}/{runs}: {run_summary(figures)}")
                await measure_ablation(figures, quick, run)
                progress(
                    f"run {run + 1}/{runs}: pinned/unpinned warm p50 "
                    f"{figures.runs['ablation.p50'][-1]:.2f}x faster, "
                    f"get {figures.runs['ablation.get'][-1]:.2f}x"
                )
        finally:
            await h.close()
            close_backends()
    context.load_after = os.getloadavg()
    context.seconds = time.perf_counter() - started
    return figures, context


# -- the report -------------------------------------------------------------------------


def fmt_ms(s: Spread) -> str:
    return f"{ms(s.median)} ms ({ms(s.low)}{DASH}{ms(s.high)})"


def fmt_rate(s: Spread) -> str:
    return f"{s.median:,.0f}/s ({compact(s.low)}{DASH}{compact(s.high)})"


def fmt_ratio(s: Spread) -> str:
    return f"{s.median:.2f}x ({s.low:.2f}{DASH}{s.high:.2f})"


@dataclass(frozen=True)
class Row:
    label: str
    figure: str
    fmt: Callable[[Spread], str]
    bar: str = ""
    meets: Callable[[float], bool] | None = None
    probe: str = ""


def at_most(limit: float) -> Callable[[float], bool]:
    return lambda x: x <= limit


def at_least(limit: float) -> Callable[[float], bool]:
    return lambda x: x >= limit


PROBE_RPC = "sequential RPC 5.5-10.4k req/s"
PROBE_PIPELINED = "pipelined 12.8-17.8k/s (8 in flight), 16-25k/s (64)"


def store_rows(backend: str, bars: bool) -> list[Row]:
    single = "≥ 10,000/s" if bars else ""
    rows = [
        Row(
            f"store.{op} sequential, {backend}",
            f"{backend}.{op}.sequential.rate",
            fmt_rate,
            single,
            at_least(10_000) if bars else None,
            PROBE_RPC,
        )
        for op in ("get", "set")
    ]
    rows += [
        Row(
            f"store.{op} gather x{GATHER}, {backend}",
            f"{backend}.{op}.gathered.rate",
            fmt_rate,
            probe=PROBE_PIPELINED,
        )
        for op in ("get", "set")
    ]
    rows += [
        Row(
            f"{op}, {KEYS:,} keys, per call, {backend}",
            f"{backend}.{op}.ms",
            fmt_ms,
            "≤ 10 ms" if bars else "",
            at_most(10) if bars else None,
        )
        for op in ("get_many", "set_many")
    ]
    return rows


def sections() -> list[tuple[str, list[Row]]]:
    return [
        (
            "Warm: noop through SandboxPool.execute, instance's process reused",
            [
                Row(
                    "warm noop, p50",
                    "warm.p50",
                    fmt_ms,
                    "≤ 2 ms *",
                    at_most(2),
                    "warm RPC p50 94-207 µs",
                ),
                Row(
                    "warm noop, p99",
                    "warm.p99",
                    fmt_ms,
                    "≤ 10 ms *",
                    at_most(10),
                    "warm RPC p90 114-544 µs",
                ),
            ],
        ),
        (
            "Cold: zygote.spawn, then the first execution in the new process",
            [
                Row(
                    "spawn alone, p50",
                    "spawn.p50",
                    fmt_ms,
                    probe="fork to child loop up ~4.0-4.9 ms",
                ),
                Row("spawn alone, p99", "spawn.p99", fmt_ms),
                Row("first execution alone, p50", "first.p50", fmt_ms),
                Row(
                    "spawn + first execution, p50",
                    "cold.p50",
                    fmt_ms,
                    "≤ 15 ms",
                    at_most(15),
                    "fork per invocation ~7 ms (6.7-6.9)",
                ),
                Row("spawn + first execution, p99", "cold.p99", fmt_ms),
                Row(
                    "retire alone (close, exit, reap), p50",
                    "retire.p50",
                    fmt_ms,
                    probe="zygote reaps, tells host +2.3-2.5 ms",
                ),
            ],
        ),
        (
            "Strict: SandboxPool(strict=True), a fresh process per execution, retired",
            [
                Row(
                    "strict noop, p50",
                    "strict.p50",
                    fmt_ms,
                    probe="fork per invocation ~7 ms",
                ),
                Row("strict noop, p99", "strict.p99", fmt_ms),
                Row(
                    "strict / warm, p50",
                    "strict/warm",
                    fmt_ratio,
                    probe="warm 40-70x cheaper than fork",
                ),
            ],
        ),
        ("Store from inside the sandbox (calls per second within one execution)", []),
        ("", store_rows("sqlite", bars=True)),
        ("", store_rows("memory", bars=False)),
        (
            "Ablation: host, zygote and children pinned to CPU 0, vs unpinned (subprocesses)",
            [
                Row(
                    "warm noop p50, unpinned",
                    "unpinned.warm.p50",
                    fmt_ms,
                    probe="cross-CPU round trip 162 µs",
                ),
                Row(
                    "warm noop p50, pinned",
                    "pinned.warm.p50",
                    fmt_ms,
                    probe="one-CPU round trip 12 µs",
                ),
                Row("  pinned speed-up (unpinned / pinned)", "ablation.p50", fmt_ratio),
                Row(
                    "store.get sequential, memory, unpinned",
                    "unpinned.memory.get.sequential.rate",
                    fmt_rate,
                ),
                Row(
                    "store.get sequential, memory, pinned",
                    "pinned.memory.get.sequential.rate",
                    fmt_rate,
                    probe="asyncio both ends 52-78 µs on one CPU",
                ),
                Row("  pinned speed-up (pinned / unpinned)", "ablation.get", fmt_ratio),
            ],
        ),
    ]


def verdict(row: Row, spread: Spread) -> str:
    if row.meets is None:
        return row.bar
    return f"{row.bar} {'✓' if row.meets(spread.median) else '✗'}"


def main_table(figures: Figures) -> str:
    rows: list[list[str]] = []
    for title, section in sections():
        if title:
            rows.append([title])
        for row in section:
            if row.figure in figures:
                spread = figures[row.figure]
                rows.append([row.label, row.fmt(spread), verdict(row, spread), row.probe])
    header = ["measure", f"median (min{DASH}max)", "bar (DESIGN §5)", "probe, for context"]
    return render(header, rows, left=(0, 2, 3))


@dataclass(frozen=True)
class Cost:
    """One row of the cost table: a figure prefix, and the direct Store call to set beside it."""

    label: str
    prefix: str
    direct: str | None = None


def costs() -> list[Cost]:
    rows = [
        Cost("warm noop, per execution", "warm"),
        Cost("  in a subprocess, unpinned", "unpinned.warm"),
        Cost("  in a subprocess, pinned to CPU 0", "pinned.warm"),
    ]
    for backend in ("sqlite", "memory"):
        for op in ("get", "set"):
            name = f"{backend}.{op}"
            rows.append(Cost(f"store.{op} sequential, {backend}", f"{name}.sequential", name))
            if name == "memory.get":  # the one the ablation repeats
                rows += [
                    Cost("  in a subprocess, unpinned", "unpinned.memory.get.sequential", name),
                    Cost(
                        "  in a subprocess, pinned to CPU 0", "pinned.memory.get.sequential", name
                    ),
                ]
    rows += [
        Cost(f"{op}, {KEYS:,} keys, {backend}", f"{backend}.{op}", f"{backend}.{op}")
        for backend in ("sqlite", "memory")
        for op in ("get_many", "set_many")
    ]
    return rows


def cost_rows(figures: Figures) -> list[list[str]]:
    """Wall time against CPU time on each side, per warm execution or per store call."""
    rows = []
    for cost in costs():
        if f"{cost.prefix}.wall_us" not in figures:
            continue
        wall, host, child = (
            figures[f"{cost.prefix}.{part}_us"].median for part in ("wall", "host_cpu", "child_cpu")
        )
        direct = figures[f"{cost.direct}.direct_us"].median if cost.direct else 0.0
        rows.append(
            [
                cost.label,
                f"{wall:,.0f}",
                f"{host:,.0f}",
                f"{direct:,.0f}" if cost.direct else "-",
                f"{host - direct:,.0f}",
                f"{child:,.0f}",
                f"{wall - host - child:,.0f}",
                f"{figures[f'{cost.prefix}.preempted'].median:.2f}",
            ]
        )
    return rows


def cost_table(figures: Figures) -> str:
    header = [
        "µs per execution or call (medians)",
        "wall",
        "host CPU",
        "of it: Store call",
        "host rest",
        "child CPU",
        "neither on CPU",
        "host preempted",
    ]
    return render(header, cost_rows(figures))


def report(figures: Figures, context: Context, sizes: Sizes, runs: int) -> str:
    respawns = figures["warm.respawns"]
    lines = [
        "Corral sandbox benchmark: full kernel sandbox (Zygote.start(), no insecure flag)",
        f"layers: {', '.join(context.layers)}",
        f"each figure: median of {runs} runs (min{DASH}max); per run {sizes.warm:,} warm "
        f"executions, {sizes.cold:,} cold starts, {sizes.strict:,} strict executions, store "
        f"loops of {sizes.ops:,} calls over {KEYS:,} keys, {sizes.batch_calls} batch calls",
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"kernel {platform.release()}, {os.cpu_count()} CPUs; load average "
        f"{context.load_before[0]:.2f} before, {context.load_after[0]:.2f} after; "
        f"{context.seconds:.0f} s",
        "",
        main_table(figures),
        "",
        "* DESIGN's bar is task claimed -> handler returned -> recorded; these figures are the",
        "  sandbox part only: no task queue or record write yet.",
        f"Warm runs use the pool's defaults (max_executions=1000): the process was respawned "
        f"{respawns.median:.0f} ({respawns.low:.0f}{DASH}{respawns.high:.0f}) times per run.",
        "Store rates are timed inside the agent; batch figures are the median call of each run.",
        "",
        "Where the time goes, per warm execution or per store call (sequential, or one batch):",
        cost_table(figures),
        "",
        "host CPU: this process's CPU time over the execution(s); Store call: the same call made",
        "directly on the host, no sandbox (wall); host rest: host CPU minus that (RPC, asyncio,",
        "codec, execution bookkeeping); child CPU: the sandboxed process's, read from the kernel;",
        "neither on CPU: wall minus both, i.e. waiting for wake-ups and for other load (negative",
        "where the two sides overlap); host preempted: involuntary context switches of the host",
        "per execution or call (about 1: the process it woke ran on its CPU at once).",
    ]
    return "\n".join(lines)


# -- the profile ------------------------------------------------------------------------


async def profile(sizes: Sizes) -> str:
    """cProfile of the host side of one execution of sequential store.set on SQLite.

    The timer is the wall clock, so the host's waits for the sandboxed process show
    up where they happen; the count of involuntary context switches says how many
    of those waits were the host being preempted by the process it had just woken.
    """
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        h = await open_harness(Path(tmp), sizes)
        try:
            await warm_up(h)
            args: list[Any] = ["set", sizes.ops, KEYS]
            profiler = cProfile.Profile()
            before = resource.getrusage(resource.RUSAGE_SELF)
            profiler.enable()
            result = await h.execute("store-sqlite", "sequential", args, "sqlite")
            profiler.disable()
            after = resource.getrusage(resource.RUSAGE_SELF)
        finally:
            await h.close()
            close_backends()
    preempted = (after.ru_nivcsw - before.ru_nivcsw) / sizes.ops
    waited = (after.ru_nvcsw - before.ru_nvcsw) / sizes.ops
    out = io.StringIO()
    out.write(
        f"Host side of one execution of {sizes.ops:,} sequential store.set on SQLite "
        f"({sizes.ops / result.result:,.0f}/s under the profiler).\n"
        "Wall-clock timer: time spent waiting for the sandboxed process is included.\n"
        f"Per call, the host was preempted {preempted:.2f} times (involuntary context "
        f"switches) and blocked {waited:.2f} times (voluntary).\n"
    )
    for order in ("cumulative", "tottime"):
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats(order).print_stats(15)
    return out.getvalue()


# -- command line -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: smaller runs, fewer")
    parser.add_argument("--runs", type=int, help="repetitions per figure (default 7; 3 quick)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print a cProfile of the host side of a sequential store.set loop instead",
    )
    parser.add_argument("--ablation-worker", choices=("pinned", "unpinned"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 3 if args.quick else 7
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = Sizes.for_run(args.quick)
    if args.ablation_worker:
        print(json.dumps(asyncio.run(ablation_worker(args.ablation_worker, args.quick))))
    elif args.profile:
        print(asyncio.run(profile(sizes)))
    else:
        figures, context = asyncio.run(bench(sizes, args.runs, args.quick))
        print(report(figures, context, sizes, args.runs))
        progress(f"done in {context.seconds:.0f} s")


if __name__ == "__main__":
    main()
