"""Task throughput and latency through the real worker loop, sandbox and all.

DESIGN §5 sets the task bars: 5,000 no-op ``run_task`` executions, sandboxed, on
2 worker processes at ≥ 2,500/s on SQLite and ≥ 2,000/s on PostgreSQL; a chain of
1,000 tasks each scheduling the next at ≥ 1,000/s; and an enqueue → done round
trip with p50 ≤ 2 ms when a worker is idle. It also lists what unsandboxed Python
queues reach on a machine like ours (Huey+Redis 3,222/s drain, 2,156/s chain,
0.5 ms round trip, ...). This script measures the same three things on the
runtime as built: ``corral.runtime.worker.Worker`` with its executor, its warm
sandboxed process per instance (the full kernel sandbox) and the task table on
SQLite (a file in a temporary directory) or PostgreSQL (a throwaway database,
dropped after it), a fresh database for every measurement, and prints them
beside the bars and those reference figures, with ratios.

1. **Drain**: 5,000 no-op tasks (``def noop(self): return None``) are enqueued up
   front, spread round-robin over 10 instances so that no single instance's warm
   process is the bottleneck (a second concurrent execution of a busy instance
   gets a fresh process of its own, ``SandboxPool``). Timed from the release of
   the workers until the last task is done (its execution recorded and its row
   deleted); tasks/s.
2. **Chain**: a task runs ``step``, which bumps a counter in the instance's store
   and, until it reaches 1,000, schedules the next step with
   ``await self.run_task(self.step)``. Timed from the release of the workers
   until the last step is done; steps/s. With 2 workers it is measured twice: one
   chain (as the bar and the reference queues have it: only one step is ever due,
   and the second worker only gets a step if its poll comes at the right time) and
   two independent chains of 500 on two instances at once, 1,000 steps in all as
   for one chain.
3. **Round trip**: with a worker idle, the bench enqueues one task (one
   ``TaskQueue.enqueue``), wakes the worker and waits until the task is done
   (its execution record written, its row gone: ``Worker.execute`` has returned);
   p50/p99 over 200, after a warm-up, with the median of its parts beside it.

The workers run as they would in production, one process per CPU, each pinned
with ``corral.runtime.affinity.pin_to_cpu(index)`` before its zygote starts, so
its sandboxed processes share its CPU. They are subprocesses of this script
(``--worker``, a hidden mode), started together before the clock and then told
one after the other to run until idle over one warm-up task per instance (so
every worker has a warm process for every instance, and the ``activate`` hook
each install queues is out of the way; the others wait on their stdin meanwhile,
so each gets all of its own warm-up); then each waits at the barrier, a line on
its stdin. The bench then enqueues the work, notes the time, releases every worker
and collects from each when its last task finished (``time.monotonic`` is
system-wide on Linux). The round trip runs in a pinned subprocess too, with the
worker in-process. Each worker runs ``WorkerOptions()``'s default concurrency
(``--concurrency`` to change it). The default rate limits (200 per 5 minutes per
instance) would suspend a benchmark instance, so both are raised out of reach;
the two per-execution counting queries still run, as in production.

The machine has 2 noisy cores shared with other work, so each figure is the
median of several runs with the spread (min-max) beside it; the scenarios take
turns (the order reverses every run) so background load hits them alike. Beside
each throughput figure: CPU time per task of the worker processes (database
calls, the host side of the sandbox RPC, the loop) and of the sandboxed
processes, and how busy the whole machine was (PostgreSQL's server included).

Run: ``.venv/bin/python bench/tasks.py [--quick] [--runs N] [--backends
sqlite,postgres] [--concurrency N]`` (3 runs, about 5 minutes; ``--quick``: one
run of 1,000 tasks, chains of 200 and 50 round trips, under a minute).
``--profile`` prints instead where a single-process drain (on the first of
``--backends``) spends its time, pinned like a worker: wall time per SQL
statement, then a cProfile (top functions by own time). Progress goes to
stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from corral import codec
from corral.config import RateLimits, RuntimeConfig
from corral.db.raw import Database, open_database
from corral.runtime.affinity import pin_to_cpu
from corral.runtime.describe import describe_code
from corral.runtime.executor import Claim
from corral.runtime.records import ExecutionRecord
from corral.runtime.services import Services
from corral.runtime.worker import WorkerOptions
from corral.state import SqlBackend, Store
from databases import ALL_BACKENDS, BACKEND_NAMES, DEFAULT_POSTGRES_URL, fresh_database
from tables import DASH, Figures, Spread, fmt_ms, fmt_rate, ms, percentile, progress, render
from workers import (
    Completions,
    Context,
    check_arguments,
    close_worker,
    now_ms,
    run_workers,
    say,
    serve,
    start_worker,
)

AGENT_NAME = "bench"
DRAIN_INSTANCES = 10  # the drain's tasks go round-robin over this many instances
COUNTER = "steps"  # the chain's counter in the store
NO_ARGS = codec.encode([])
ROUND_TRIP_WARMUP = 20
ROUND_TRIP_PAUSE_S = 0.005  # between round trips: the worker settles back to idle

# Both rate windows, raised out of reach: the counting queries still run.
CONFIG = RuntimeConfig(rate_limits=RateLimits(per_5min=10**9, per_24h=10**9))


def runtime(url: str) -> RuntimeConfig:
    """The configuration of every process on ``url``: ``CONFIG`` there."""
    return replace(CONFIG, database_url=url)


def services(url: str) -> Services:
    """The runtime on ``url``, built as every Corral process builds it."""
    return Services(runtime(url))


AGENT = """
from corral import Agent

LENGTH = {length}


class Bench(Agent):
    def noop(self):
        return None

    async def step(self):
        n = await self.store.get_or_default("{counter}", 0) + 1
        await self.store.set("{counter}", n)
        if n < LENGTH:
            await self.run_task(self.step)
"""


def agent_code(chain_length: int) -> str:
    return AGENT.format(length=chain_length, counter=COUNTER)


# -- what is measured -----------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    drain: int  # tasks
    chain: int  # steps per chain
    round_trips: int

    @classmethod
    def for_run(cls, quick: bool) -> Sizes:
        if quick:
            return cls(drain=1_000, chain=200, round_trips=50)
        return cls(drain=5_000, chain=1_000, round_trips=200)


@dataclass(frozen=True)
class Scenario:
    kind: str  # "drain" or "chain"
    workers: int
    chains: int = 0

    @property
    def key(self) -> str:
        return f"{self.kind}.{self.workers}w.{self.chains}c"

    def tasks(self, sizes: Sizes) -> int:
        return sizes.drain if self.kind == "drain" else self.steps(sizes) * self.chains

    def steps(self, sizes: Sizes) -> int:
        """Steps per chain: the chains share the chain length between them."""
        return sizes.chain // max(1, self.chains)

    @property
    def instances(self) -> int:
        return DRAIN_INSTANCES if self.kind == "drain" else self.chains

    @property
    def method(self) -> str:
        return "noop" if self.kind == "drain" else "step"

    def label(self, sizes: Sizes) -> str:
        workers = f"{self.workers} worker{'s' * (self.workers > 1)}"
        if self.kind == "drain":
            return f"drain {sizes.drain:,} no-op tasks, {workers}"
        if self.chains == 1:
            return f"chain of {sizes.chain:,}, {workers}"
        return f"{self.chains} chains of {self.steps(sizes):,} at once, {workers}"


SCENARIOS = (
    Scenario("drain", 1),
    Scenario("drain", 2),
    Scenario("chain", 1, chains=1),
    Scenario("chain", 2, chains=1),
    Scenario("chain", 2, chains=2),
)
DRAIN_2W = Scenario("drain", 2)
CHAIN_2W = Scenario("chain", 2, chains=1)  # the one the chain bar and references are held to


# -- the round trips, in a process of their own -----------------------------------------


async def round_trips(url: str, count: int, concurrency: int) -> None:
    """``--round-trip``: an in-process worker, idle; enqueue one task at a time."""
    cpu = pin_to_cpu(0)
    done = Completions()
    worker = await start_worker(services(url), WorkerOptions(concurrency=concurrency), done)
    executor = worker.executor
    assert executor is not None
    (instance,) = [i.id for i in executor.registry.instances()]
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[float] | None = None
    started: list[float] = []  # when Worker.execute was entered: the task was claimed
    sandbox_ms: list[float] = []

    wrapped = worker.execute

    async def entered(claim: Claim) -> ExecutionRecord | None:
        started.append(time.perf_counter())
        record = await wrapped(claim)
        if record is not None:
            sandbox_ms.append(record.result.duration_ms)
        if waiter is not None and not waiter.done() and claim.task.method == "noop":
            waiter.set_result(time.perf_counter())
        return record

    worker.execute = entered  # type: ignore[method-assign]
    serving = asyncio.create_task(worker.run())
    total: list[float] = []
    enqueue: list[float] = []
    pickup: list[float] = []
    run: list[float] = []
    try:
        for i in range(ROUND_TRIP_WARMUP + count):
            await asyncio.sleep(ROUND_TRIP_PAUSE_S)
            waiter = loop.create_future()
            started.clear()
            sandbox_ms.clear()
            t0 = time.perf_counter()
            executor.queue.enqueue(instance, "noop", NO_ARGS, now=executor.now())
            t1 = time.perf_counter()
            worker.wake()
            t3 = await asyncio.wait_for(waiter, 30)
            if i < ROUND_TRIP_WARMUP:
                continue
            t2 = started[-1]
            total.append(t3 - t0)
            enqueue.append(t1 - t0)
            pickup.append(t2 - t1)
            run.append(t3 - t2)
    finally:
        # On Python 3.11, asyncio.wait_for swallows a cancel that arrives as the awaited
        # thing completes, and Worker.run waits on its wake event that way: a cancel
        # right after a task finished (wake set) can be lost. So cancel until it ends.
        while not serving.done():
            serving.cancel()
            await asyncio.wait({serving}, timeout=0.1)
        await close_worker(worker)
    say(
        {
            "cpu": cpu,
            "p50": percentile(total, 0.5) * 1000,
            "p99": percentile(total, 0.99) * 1000,
            "enqueue_p50": percentile(enqueue, 0.5) * 1000,
            "pickup_p50": percentile(pickup, 0.5) * 1000,
            "run_p50": percentile(run, 0.5) * 1000,
            "sandbox_p50": percentile(sandbox_ms, 0.5) if sandbox_ms else 0.0,
            "failed": done.failed,
        }
    )


# -- setup and checks -------------------------------------------------------------------


class Agents:
    """The agent's code for each chain length, each described once (in a sandbox)."""

    def __init__(self) -> None:
        self._descriptions: dict[str, dict[str, Any]] = {}

    def get(self, chain_length: int) -> tuple[str, dict[str, Any]]:
        code = agent_code(chain_length)
        if code not in self._descriptions:
            self._descriptions[code] = asyncio.run(describe_code(code))
        return code, self._descriptions[code]


def prepare(url: str, code: str, description: dict[str, Any], instances: int) -> list[str]:
    """Deploy the agent and install ``instances`` instances; their ids."""
    registry = services(url).registry
    registry.deploy(AGENT_NAME, code, description, now=now_ms())
    return [
        registry.install(AGENT_NAME, priority="normal", config={}, now=now_ms()).id
        for _ in range(instances)
    ]


def enqueue_many(url: str, instances: Sequence[str], method: str, count: int) -> None:
    """``count`` tasks round-robin over ``instances``, in one transaction: the rows
    ``TaskQueue.enqueue`` writes, without a commit each (this is setup, not timed)."""
    built = services(url)
    db, queue = built.database, built.queue
    now = now_ms()
    with db.transaction(write=True):
        for i in range(count):
            queue.enqueue(instances[i % len(instances)], method, NO_ARGS, now=now)


def outcomes(db: Database) -> dict[tuple[str, str], int]:
    with db.transaction(write=False) as cur:
        rows = db.execute(
            cur, "SELECT method, outcome, count(*) FROM executions GROUP BY method, outcome"
        ).fetchall()
    return {(method, outcome): int(n) for method, outcome, n in rows}


def tasks_left(db: Database) -> int:
    with db.transaction(write=False) as cur:
        return int(db.execute(cur, "SELECT count(*) FROM tasks").fetchone()[0])


async def counters(db: Database, instances: Sequence[str]) -> list[Any]:
    backend = SqlBackend(db)
    return [await Store(backend, instance).get(COUNTER) for instance in instances]


def verify(url: str, scenario: Scenario, sizes: Sizes, instances: Sequence[str]) -> None:
    """Every task ran once, ok, and nothing is left in the queue."""
    db = open_database(url)
    expected = scenario.tasks(sizes)
    if scenario.method == "noop":  # and each worker's warm-up
        expected += scenario.workers * len(instances)
    counts = outcomes(db)
    ran = counts.get((scenario.method, "ok"), 0)
    bad = {k: n for k, n in counts.items() if k[1] != "ok"}
    if ran != expected or bad:
        raise RuntimeError(f"{scenario.key}: {ran} ok executions of {expected}; others: {bad}")
    if (left := tasks_left(db)) != 0:
        raise RuntimeError(f"{scenario.key}: {left} task(s) left in the queue")
    if scenario.kind == "chain":
        found = asyncio.run(counters(db, instances))
        steps = scenario.steps(sizes)
        if found != [steps] * len(instances):
            raise RuntimeError(f"{scenario.key}: chain counters {found}, not {steps}")


# -- the bench's side ---------------------------------------------------------------------


def run_scenario(
    backend: str,
    scenario: Scenario,
    args: argparse.Namespace,
    sizes: Sizes,
    agents: Agents,
    figures: Figures,
) -> str:
    code, description = agents.get(scenario.steps(sizes) if scenario.kind == "chain" else 1)
    with fresh_database(backend, args.postgres_url) as url:
        instances = prepare(url, code, description, scenario.instances)
        # the drain's tasks at once; a chain's first step on each of its instances
        method, count = (
            ("noop", sizes.drain) if scenario.kind == "drain" else ("step", len(instances))
        )
        released = run_workers(
            __file__,
            url,
            scenario.workers,
            options=["--concurrency", str(args.concurrency)],
            warm_up=lambda index: enqueue_many(url, instances, "noop", len(instances)),
            warmed=("noop", len(instances)),
            work=lambda: enqueue_many(url, instances, method, count),
        )
        verify(url, scenario, sizes, instances)
    reports = released.reports
    tasks = scenario.tasks(sizes)
    seconds = max(r["last_done"] for r in reports) - released.at
    done = [r["methods"].get(scenario.method, 0) for r in reports]
    if sum(done) != tasks or any(r["failed"] for r in reports):
        raise RuntimeError(f"{scenario.key}: the workers report {done}, expected {tasks}")
    name = f"{backend}.{scenario.key}"
    figures.add(f"{name}.rate", tasks / seconds)
    figures.add(f"{name}.wall_us", seconds / tasks * 1e6)
    figures.add(f"{name}.host_us", sum(r["host_cpu_s"] for r in reports) / tasks * 1e6)
    figures.add(f"{name}.sandbox_us", sum(r["sandbox_cpu_ms"] for r in reports) / tasks * 1e3)
    figures.add(f"{name}.busy", released.busy)
    figures.add(f"{name}.spawned", sum(r["spawned"] for r in reports))
    figures.add(f"{name}.first_share", done[0] / tasks * 100)
    split = "/".join(f"{n:,}" for n in done)
    return f"{tasks / seconds:,.0f}/s ({seconds:.2f} s, per worker {split})"


def run_round_trip(
    backend: str,
    args: argparse.Namespace,
    sizes: Sizes,
    agents: Agents,
    figures: Figures,
) -> str:
    with fresh_database(backend, args.postgres_url) as url:
        prepare(url, *agents.get(1), 1)
        command = [
            sys.executable,
            __file__,
            "--round-trip",
            str(sizes.round_trips),
            "--db",
            url,
            "--concurrency",
            str(args.concurrency),
        ]
        out = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True).stdout
        report: dict[str, Any] = json.loads(out)
        ran = outcomes(open_database(url)).get(("noop", "ok"), 0)
        if report["failed"] or ran != ROUND_TRIP_WARMUP + sizes.round_trips:
            raise RuntimeError(f"round trip: {ran} ok executions, {report['failed']} failed")
    for part in ("p50", "p99", "enqueue_p50", "pickup_p50", "run_p50", "sandbox_p50"):
        figures.add(f"{backend}.rt.{part}", report[part])
    return f"p50 {report['p50']:.2f} ms, p99 {report['p99']:.2f} ms"


def bench(args: argparse.Namespace, sizes: Sizes) -> tuple[Figures, Context]:
    figures = Figures()
    context = Context()
    agents = Agents()
    backends = context.usable(args.backends, args.postgres_url)
    for run in range(args.runs):
        order = list(SCENARIOS) if run % 2 == 0 else list(SCENARIOS)[::-1]
        for backend in backends:
            for scenario in order:
                summary = run_scenario(backend, scenario, args, sizes, agents, figures)
                progress(
                    f"run {run + 1}/{args.runs} [{backend}] {scenario.label(sizes)}: {summary}"
                )
            summary = run_round_trip(backend, args, sizes, agents, figures)
            progress(f"run {run + 1}/{args.runs} [{backend}] round trip: {summary}")
    context.finish()
    args.backends = backends
    return figures, context


# -- the report ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """An unsandboxed queue as DESIGN §5 lists it: (low, high) where it gives a range."""

    name: str
    drain: tuple[float, float] | None
    chain: tuple[float, float] | None = None
    round_trip_ms: float | None = None


REFERENCES = (
    Reference("Huey+Redis", (3222, 3222), (2156, 2156), 0.5),
    Reference("Huey+SQLite", (2170, 2170), (1800, 1800), 1.6),
    Reference("Dramatiq+Redis", (2100, 2100), (188, 188)),
    Reference("Celery+Redis", (434, 659)),
    Reference("procrastinate (PostgreSQL)", (225, 290)),
    Reference("RQ (fork per job)", (49, 49)),
)
GOAL = 1.2  # DESIGN §5: the long-run goal is 1.2x the best of them


def fmt_range(low: float, high: float, fmt: Callable[[float], str]) -> str:
    return fmt(low) if low == high else f"{fmt(low)}{DASH}{fmt(high)}"


def drain_bar(backend: str) -> float:
    return 2_500 if backend == "sqlite" else 2_000


BARS: dict[str, tuple[str, Callable[[str, float], bool]]] = {
    DRAIN_2W.key: (
        "≥ 2,500/s SQLite, ≥ 2,000/s PostgreSQL",
        lambda b, v: v >= drain_bar(b),
    ),
    CHAIN_2W.key: ("≥ 1,000/s", lambda b, v: v >= 1_000),
    "rt.p50": ("≤ 2 ms", lambda b, v: v <= 2.0),
    "rt.p99": ("", lambda b, v: True),
}


def cell(figures: Figures, backend: str, key: str, fmt: Callable[[Spread], str]) -> str:
    name = f"{backend}.{key}"
    if name not in figures:
        return "skipped"
    spread = figures[name]
    bar = BARS.get(key.removesuffix(".rate"))
    if bar is None or not bar[0]:
        return f"{fmt(spread)}  "
    return f"{fmt(spread)} {'✓' if bar[1](backend, spread.median) else '✗'}"


def main_table(figures: Figures, backends: Sequence[str], sizes: Sizes) -> str:
    header = ["", *(BACKEND_NAMES[b] for b in backends), "bar (DESIGN §5)"]
    rows: list[list[str]] = []
    for scenario in SCENARIOS:
        key = f"{scenario.key}.rate"
        bar = BARS.get(scenario.key, ("", None))[0]
        rows.append(
            [scenario.label(sizes), *(cell(figures, b, key, fmt_rate) for b in backends), bar]
        )
    for part, label in (("p50", "round trip p50, idle worker"), ("p99", "round trip p99")):
        key = f"rt.{part}"
        bar = BARS[key][0]
        rows.append([label, *(cell(figures, b, key, fmt_ms) for b in backends), bar])
    return render(header, rows, left=(0, len(header) - 1))


def ratio(ours: float, low: float, high: float, *, lower_is_better: bool = False) -> str:
    """Corral's speed against theirs: above 1 means Corral is faster."""
    values = sorted(low / ours if lower_is_better else ours / x for x in (low, high))
    return fmt_range(values[0], values[1], lambda x: f"{x:.2f}")


def reference_table(figures: Figures, backends: Sequence[str]) -> str:
    ours = {
        (b, what): figures[f"{b}.{key}"].median
        for b in backends
        for what, key in (("drain", f"{DRAIN_2W.key}.rate"), ("chain", f"{CHAIN_2W.key}.rate"))
        if f"{b}.{key}" in figures
    }
    ours.update(
        {(b, "rt"): figures[f"{b}.rt.p50"].median for b in backends if f"{b}.rt.p50" in figures}
    )
    short = {"sqlite": "SQLite", "postgres": "PG"}
    header = ["unsandboxed queue", "drain/s"]
    header += [f"x{short[b]}" for b in backends]
    header += ["chain/s"] + [f"x{short[b]}" for b in backends]
    header += ["round trip"] + [f"x{short[b]}" for b in backends]

    def ratios(what: str, theirs: tuple[float, float] | None, lower: bool = False) -> list[str]:
        if theirs is None:
            return ["" for _ in backends]
        return [
            ratio(ours[(b, what)], *theirs, lower_is_better=lower) if (b, what) in ours else "-"
            for b in backends
        ]

    def rate(r: tuple[float, float] | None) -> str:
        return "" if r is None else fmt_range(*r, lambda x: f"{x:,.0f}")

    rows = []
    refs = list(REFERENCES)
    best_drain = max(r.drain[1] for r in refs if r.drain)
    best_chain = max(r.chain[1] for r in refs if r.chain)
    best_rt = min(r.round_trip_ms for r in refs if r.round_trip_ms)
    goal = Reference(
        f"goal: {GOAL:g}x the best",
        (best_drain * GOAL,) * 2,
        (best_chain * GOAL,) * 2,
        best_rt / GOAL,
    )
    for ref in [*refs, goal]:
        rt = (ref.round_trip_ms, ref.round_trip_ms) if ref.round_trip_ms else None
        rows.append(
            [
                ref.name,
                rate(ref.drain),
                *ratios("drain", ref.drain),
                rate(ref.chain),
                *ratios("chain", ref.chain),
                f"{ms(ref.round_trip_ms)} ms" if ref.round_trip_ms else "",
                *ratios("rt", rt, lower=True),
            ]
        )
    return render(header, rows)


def detail_table(figures: Figures, backends: Sequence[str], sizes: Sizes) -> str:
    header = [
        "",
        "wall/task",
        "worker CPU/task",
        "sandbox CPU/task",
        "machine busy",
        "spawns",
        "on worker 0",
    ]
    rows: list[list[str]] = []
    for backend in backends:
        rows.append([f"{BACKEND_NAMES[backend]}:"])
        for scenario in SCENARIOS:
            name = f"{backend}.{scenario.key}"
            if f"{name}.rate" not in figures:
                continue
            rows.append(
                [
                    f"  {scenario.label(sizes)}",
                    f"{figures[f'{name}.wall_us'].median:,.0f} µs",
                    f"{figures[f'{name}.host_us'].median:,.0f} µs",
                    f"{figures[f'{name}.sandbox_us'].median:,.0f} µs",
                    f"{figures[f'{name}.busy'].median:.0f}%",
                    f"{figures[f'{name}.spawned'].median:,.0f}",
                    f"{figures[f'{name}.first_share'].median:.0f}%",
                ]
            )
    return render(header, rows)


def round_trip_parts(figures: Figures, backends: Sequence[str]) -> str:
    header = ["", "enqueue", "wake → claimed", "claimed → done", "of which sandbox", "total"]
    rows = []
    for b in backends:
        if f"{b}.rt.p50" not in figures:
            continue
        rows.append(
            [
                BACKEND_NAMES[b],
                *(
                    f"{ms(figures[f'{b}.rt.{part}'].median)} ms"
                    for part in ("enqueue_p50", "pickup_p50", "run_p50", "sandbox_p50", "p50")
                ),
            ]
        )
    return render(header, rows)


def report(figures: Figures, context: Context, args: argparse.Namespace, sizes: Sizes) -> str:
    backends = list(args.backends)
    lines = [
        "Corral task benchmark: sandboxed tasks through the worker loop (full kernel sandbox), "
        "worker processes pinned one per CPU",
        f"each figure is the median of {args.runs} run{'s' * (args.runs > 1)} with "
        f"(min{DASH}max) beside it; "
        f"concurrency {args.concurrency} per worker; drain over {DRAIN_INSTANCES} instances",
        context.machine(),
        "",
        main_table(figures, backends, sizes),
        "",
        "✓/✗: the median against its bar. The chain bar is held to one chain on 2 workers; "
        "2 chains share",
        "its steps (half each, counted together). Drain and chain: from the release of "
        "the workers to",
        "the last task done (recorded, row deleted). Round trip: enqueue in the bench "
        "process, wake, wait for done.",
        "",
        "Against the unsandboxed queues DESIGN §5 lists (2 cores, 2 workers, medians): Corral "
        "with 2 workers",
        "(drain; chain: one chain) and its round trip p50; x = Corral's speed over theirs, "
        "above 1 = Corral faster.",
        reference_table(figures, backends),
        "",
        "Where the time goes, per task (medians): wall = elapsed / tasks; worker CPU = CPU "
        "time of the worker",
        "processes (all threads) / tasks; sandbox CPU = the sandboxed processes' CPU time as "
        "recorded per",
        "execution; machine busy = share of all CPUs busy from release to report "
        "(database server included);",
        "spawns = sandboxed processes started during the run (0 when every execution found "
        "its instance's",
        "warm process free); on worker 0 = its share of the tasks.",
        detail_table(figures, backends, sizes),
        "",
        "Round trip, medians of the parts (each part's own p50: they need not add up):",
        round_trip_parts(figures, backends),
    ]
    lines += context.skips()
    return "\n".join(lines)


# -- profile --------------------------------------------------------------------------------


class StatementTimes:
    """Wall time per SQL statement on one ``Database``, and per transaction around them.

    Wraps the instance's ``execute``, ``run_alone`` (a PostgreSQL call's single
    statements) and ``transaction``: every hot-path statement goes through them. A
    transaction's own cost (taking the lock, BEGIN, COMMIT) is its time minus that of
    the statements inside it. SQLite only: there a transaction never awaits, so
    nothing else runs inside one.
    """

    def __init__(self, db: Database) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self._inside = 0.0  # statement time in the current transaction
        self._depth = 0  # transactions open (an inner one joins the outer)
        execute, run_alone, transaction = db.execute, db.run_alone, db.transaction

        def timed(run: Callable[..., Any]) -> Callable[..., Any]:
            def timed_run(where: Any, statement: str, params: Any = None) -> Any:
                start = time.perf_counter()
                try:
                    return run(where, statement, params)
                finally:
                    elapsed = time.perf_counter() - start
                    self._inside += elapsed
                    self.add(" ".join(statement.split()), elapsed)

            return timed_run

        @contextmanager
        def timed_transaction(*, write: bool) -> Iterator[Any]:
            if self._depth:  # joins the open transaction: counted with it
                with transaction(write=write) as cursor:
                    yield cursor
                return
            start = time.perf_counter()
            self._inside = 0.0
            self._depth += 1
            try:
                with transaction(write=write) as cursor:
                    yield cursor
            finally:
                self._depth -= 1
            kind = "BEGIN IMMEDIATE ... COMMIT" if write else "BEGIN ... COMMIT (read)"
            self.add(
                f"{kind}, lock and Python around it", time.perf_counter() - start - self._inside
            )

        self._db = db
        db.execute = timed(execute)  # type: ignore[method-assign]
        db.run_alone = timed(run_alone)  # type: ignore[method-assign]
        db.transaction = timed_transaction  # type: ignore[method-assign]

    def remove(self) -> None:
        """Back to the class's own methods."""
        del self._db.execute, self._db.run_alone, self._db.transaction

    def add(self, label: str, seconds: float) -> None:
        self.seconds[label] += seconds
        self.calls[label] += 1

    def table(self, tasks: int, width: int = 70) -> str:
        rows = [
            [
                label if len(label) <= width else label[: width - 3] + "...",
                f"{self.calls[label] / tasks:.2f}",
                f"{seconds / self.calls[label] * 1e6:.1f}",
                f"{seconds / tasks * 1e6:.0f}",
            ]
            for label, seconds in sorted(self.seconds.items(), key=lambda kv: -kv[1])
        ]
        total = sum(self.seconds.values())
        rows.append(
            [
                "all of them",
                f"{sum(self.calls.values()) / tasks:.2f}",
                "",
                f"{total / tasks * 1e6:.0f}",
            ]
        )
        return render(["statement", "per task", "µs each", "µs per task"], rows)


async def drain_in_process(
    url: str,
    instances: Sequence[str],
    tasks: int,
    concurrency: int,
    profiler: cProfile.Profile | None,
) -> tuple[float, float, Completions]:
    """One warmed-up worker in this process drains ``tasks``; (wall s, CPU s, completions)."""
    enqueue_many(url, instances, "noop", len(instances))
    done = Completions()
    worker = await start_worker(services(url), WorkerOptions(concurrency=concurrency), done)
    try:
        await worker.run(until_idle=True)
        enqueue_many(url, instances, "noop", tasks)
        done.reset()
        cpu_before = time.process_time()
        start = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        await worker.run(until_idle=True)
        if profiler is not None:
            profiler.disable()
        wall = time.perf_counter() - start
        host = time.process_time() - cpu_before
    finally:
        await worker.close()
        await worker.services.close()
    if done.methods["noop"] != tasks or done.failed:
        raise RuntimeError(f"the drain ran {dict(done.methods)}, {done.failed} failed")
    return wall, host, done


async def profile(tasks: int, concurrency: int, backend: str, admin_url: str) -> str:
    """Where a single-process drain spends its time, pinned like a worker.

    Two drains of ``tasks`` no-op tasks by one worker in this process: the first with
    every SQL statement timed (cheap: a clock read around each), the second under
    cProfile (which slows Python code down, so its rate is lower). On SQLite every
    database call runs on the event loop's thread, so the profile sees all of the
    worker's own work; on PostgreSQL it runs in threads, which cProfile does not see
    (the statement table, timed in whichever thread runs them, does). The sandboxed
    processes run on the same CPU: the time they take after the host wakes them shows
    up inside the host's ``socket.send``.
    """
    cpu = pin_to_cpu(0)
    code = agent_code(10)
    description = await describe_code(code)
    profiler = cProfile.Profile()
    out = io.StringIO()
    with fresh_database(backend, admin_url) as url:
        instances = prepare(url, code, description, DRAIN_INSTANCES)
        statements = StatementTimes(open_database(url))
        runs = [await drain_in_process(url, instances, tasks, concurrency, None)]
        statements.remove()
        runs.append(await drain_in_process(url, instances, tasks, concurrency, profiler))
    out.write(
        f"Drains of {tasks:,} no-op tasks over {DRAIN_INSTANCES} instances, one worker "
        f"(concurrency {concurrency}) in this process pinned to CPU {cpu}, {backend}.\n"
    )
    for what, (wall, host, done) in zip(("statements timed", "under cProfile"), runs, strict=True):
        out.write(
            f"{what}: {tasks / wall:,.0f}/s; per task: wall {wall / tasks * 1e6:,.0f} µs, "
            f"worker CPU {host / tasks * 1e6:,.0f} µs, sandbox CPU "
            f"{done.sandbox_cpu_ms / tasks * 1e3:,.0f} µs (on the same CPU)\n"
        )
    table = statements.table(tasks)
    out.write(f"\nSQL on the hot path (first drain), wall time:\n{table}\n\n")
    out.write("cProfile (second drain); a coroutine counts one call per resumption:\n")
    for order in ("tottime", "cumulative"):
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats(order).print_stats(30)
    return out.getvalue()


# -- command line ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: smaller, fewer runs")
    parser.add_argument("--runs", type=int, help="repetitions per figure (default 3; 1 quick)")
    parser.add_argument(
        "--backends",
        default=",".join(ALL_BACKENDS),
        type=lambda s: [b.strip() for b in s.split(",") if b.strip()],
        help="comma-separated subset of sqlite,postgres (default: both)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=WorkerOptions().concurrency,
        help=f"executions at once per worker (default {WorkerOptions().concurrency}, "
        "the runtime's)",
    )
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_URL,
        help=f"a server to create the throwaway databases on (default {DEFAULT_POSTGRES_URL})",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print where a single-process drain spends its time instead (statements "
        "and a cProfile), on the first of --backends",
    )
    # internal: a worker subprocess (its index: the CPU it pins to), or the round trips
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--round-trip", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = Sizes.for_run(args.quick)
    if args.worker is not None:
        options = WorkerOptions(concurrency=args.concurrency)
        asyncio.run(serve(args.worker, runtime(args.db), options, Completions()))
    elif args.round_trip is not None:
        asyncio.run(round_trips(args.db, args.round_trip, args.concurrency))
    elif args.profile:
        print(
            asyncio.run(profile(sizes.drain, args.concurrency, args.backends[0], args.postgres_url))
        )
    else:
        progress(
            f"{args.runs} run(s) of {len(SCENARIOS)} scenarios and a round trip on "
            f"{', '.join(args.backends)} ..."
        )
        figures, context = bench(args, sizes)
        print(report(figures, context, args, sizes))
        progress(f"done in {context.seconds:.0f} s")


if __name__ == "__main__":
    main()
