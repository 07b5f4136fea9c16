"""Activity events: 1,000 activities created in one call, run as 1,000 ``on_activity``
executions of a second instance, sandbox and all.

Issue 17 asks for the two figures of an import: how long the one call that creates
the activities takes, and how long until the last event it caused has run. Two
instances of one agent share a priority. The author runs ``create``: one
``self.tools.plot.create_activities`` call with ``--count`` new actions, each with
a title, a ``source``, a small ``meta`` and one note, as a sync would make them
(the call checks them on the host, writes the activities, their notes, and one
event task per activity for every other instance of the priority, in one
transaction, and answers the activities). The listener runs a no-op
``on_activity`` for each event. Measured per run, on a fresh database (a SQLite
file in a temporary directory, or a throwaway PostgreSQL database, dropped after):

1. **create call**: ``create_activities`` as the agent times it, in the sandbox
   (``time.perf_counter`` around the ``await``).
2. **create execution**: the execution that makes the call, from the moment its
   worker starts it (claimed) until it is done (recorded, its task row deleted).
3. **first event / last event**: from the release of the workers, the create task
   already queued, until the first event execution starts and until the last one
   is done (recorded, its row deleted); and the events' rate between the two.

An instance's activity events run at most ``ACTIVITY_EVENTS_AT_ONCE`` (4) at a time
over all workers, so the listener's events queue behind one another whatever the
number of workers: they are measured with 1 and with 2 worker processes, run as in
production (``WorkerOptions()``: concurrency 4), each pinned to its own CPU before
its zygote starts (as bench/tasks.py runs them: subprocesses of this script in a
hidden ``--worker`` mode, started together, warmed up one at a time while the
others wait at the barrier, then released together). A worker's warm-up runs a
no-op task of each instance and a create of 8 activities, whose 8 events leave the
listener's warm processes (up to 4 per instance) in that worker. Afterwards every
run checks that the listener ran each event once, successfully, that the author
heard none of its own, that each activity exists once and that the queue is empty.

The machine has 2 noisy cores shared with other work: each figure is the median
of ``--runs`` runs with the spread (min-max) beside it, the worker counts taking
turns (the order reverses every run); beside them, CPU time per event of the
worker processes and of the sandboxed processes, and how busy the whole machine
was (PostgreSQL's server included).

Run: ``.venv/bin/python bench/activities.py [--quick] [--runs N] [--count N]
[--backends sqlite,postgres] [--postgres-url URL] [--db URL]`` (3 runs, about 2
minutes; ``--quick``: one run). ``--db URL`` runs on that database instead of fresh
ones (its schema migrated first; each run installs two instances of its own, in a
priority of its own, so keep it otherwise idle: its workers run whatever is queued
there). Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from corral import codec
from corral.config import RuntimeConfig
from corral.db.raw import Database, close_databases, open_database
from corral.db.tasks import ACTIVITY_EVENTS_AT_ONCE
from corral.plot.service import EVENT_METHOD
from corral.runtime.describe import describe_code
from corral.runtime.executor import Claim
from corral.runtime.records import ExecutionRecord
from corral.runtime.services import Services
from corral.runtime.worker import WorkerOptions
from databases import BACKEND_NAMES, fresh_database
from tables import DASH, Figures, Spread, fmt_ms, fmt_rate, progress, render
from workers import (
    Completions,
    Context,
    add_database_arguments,
    choose_backends,
    now_ms,
    run_workers,
    serve,
)

AGENT_NAME = "bench-activities"
#: Activities a worker's warm-up creates: enough events to warm every process the
#: listener may run them in (``sandbox.pool.PER_INSTANCE``, 4) twice over.
WARM = 8
WORKER_COUNTS = (1, 2)

AGENT = """
import time

from corral import ActivityType, Agent


class BenchActivities(Agent):
    def noop(self):
        return None

    async def create(self, prefix, count):
        batch = [
            {
                "type": ActivityType.ACTION,
                "title": f"item {i} of the import",
                "source": f"{prefix}:{i}",
                "meta": {"n": i, "score": i % 101},
                "notes": [{"key": "description", "content": f"Item {i}, as the API described it."}],
            }
            for i in range(count)
        ]
        started = time.perf_counter()
        made = await self.tools.plot.create_activities(batch)
        return {"call_ms": (time.perf_counter() - started) * 1000, "made": len(made)}

    def on_activity(self, activity, changes):
        return None
"""


def runtime(url: str) -> RuntimeConfig:
    """The configuration on ``url`` as ``corral worker`` builds it: default limits and
    quotas (activity events neither count against nor wait on the listener's rate limits)."""
    return RuntimeConfig(database_url=url)


def services(url: str) -> Services:
    return Services(runtime(url))


# -- inside a worker process ------------------------------------------------------------


@dataclass
class Times(Completions):
    """What a worker ran, and when (``time.monotonic``, the same clock in every process
    on Linux): besides the counts, when its events started and ended, and its create."""

    create: dict[str, Any] | None = None
    first_event: float | None = None
    last_event: float | None = None

    def add(
        self, claim: Claim, record: ExecutionRecord | None, started: float, done: float
    ) -> None:
        super().add(claim, record, started, done)
        method = claim.task.method
        if method == EVENT_METHOD:
            # counted as they end: the first to start need not be the first to end
            first = self.first_event
            self.first_event = started if first is None else min(first, started)
            self.last_event = done
        elif method == "create" and record is not None:
            self.create = {
                "started": started,
                "done": done,
                "result": record.result.result,
                "failure": record.result.failure_line,
            }

    def reset(self) -> None:
        super().reset()
        self.create = self.first_event = self.last_event = None

    def report(self) -> dict[str, Any]:
        return {
            **super().report(),
            "create": self.create,
            "first_event": self.first_event,
            "last_event": self.last_event,
        }


# -- one run ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """One run's instances, in a priority of their own."""

    priority: str
    author: str
    listener: str


def prepare(url: str, description: dict[str, Any]) -> Setup:
    registry = services(url).registry
    registry.deploy(AGENT_NAME, AGENT, description, now=now_ms())
    priority = f"bench-{secrets.token_hex(4)}"
    author, listener = (
        registry.install(AGENT_NAME, priority=priority, config={}, now=now_ms()).id
        for _ in range(2)
    )
    return Setup(priority, author, listener)


def enqueue(url: str, instance: str, method: str, *args: Any) -> None:
    built = services(url)
    built.queue.enqueue(instance, method, codec.encode(list(args)), now=now_ms())


def executions(db: Database, instance: str) -> dict[tuple[str, str], int]:
    with db.transaction(write=False) as cur:
        rows = db.execute(
            cur,
            "SELECT method, outcome, count(*) FROM executions WHERE instance = :instance "
            "GROUP BY method, outcome",
            {"instance": instance},
        ).fetchall()
    return {(method, outcome): int(n) for method, outcome, n in rows}


def scalar(db: Database, statement: str, params: dict[str, Any]) -> int:
    with db.transaction(write=False) as cur:
        return int(db.execute(cur, statement, params).fetchone()[0])


def verify(url: str, setup: Setup, workers: int, count: int) -> None:
    """Every event ran once, ok, on the listener alone; each activity exists once."""
    db = open_database(url)
    expected = workers * WARM + count
    heard = executions(db, setup.listener)
    if heard.get((EVENT_METHOD, "ok"), 0) != expected or any(o != "ok" for _, o in heard):
        raise RuntimeError(f"the listener ran {heard}, expected {expected} ok {EVENT_METHOD}")
    authored = executions(db, setup.author)
    if any(m == EVENT_METHOD or o != "ok" for m, o in authored):
        raise RuntimeError(f"the author ran {authored}: it must hear none of its own changes")
    held = scalar(
        db,
        "SELECT count(DISTINCT source) FROM activities WHERE priority = :priority",
        {"priority": setup.priority},
    )
    if held != expected:
        raise RuntimeError(f"{held} activities in {setup.priority}, expected {expected}")
    left = scalar(
        db,
        "SELECT count(*) FROM tasks WHERE instance IN (:a, :b)",
        {"a": setup.author, "b": setup.listener},
    )
    if left:
        raise RuntimeError(f"{left} task(s) left in the queue")


@contextmanager
def database(backend: str, args: argparse.Namespace) -> Iterator[str]:
    if args.db is not None:
        open_database(args.db)  # migrates
        try:
            yield args.db
        finally:
            close_databases()
        return
    with fresh_database(backend, args.postgres_url) as url:
        yield url


def run_once(
    backend: str, workers: int, args: argparse.Namespace, description: dict[str, Any]
) -> dict[str, float]:
    with database(backend, args) as url:
        setup = prepare(url, description)

        def warm_up(index: int) -> None:
            enqueue(url, setup.author, "noop")
            enqueue(url, setup.listener, "noop")
            enqueue(url, setup.author, "create", f"warm{index}", WARM)

        released = run_workers(
            __file__,
            url,
            workers,
            warm_up=warm_up,
            warmed=(EVENT_METHOD, WARM),
            work=lambda: enqueue(url, setup.author, "create", "import", args.count),
        )
        reports = released.reports
        [create] = [r["create"] for r in reports if r["create"] is not None]
        if create["failure"] is not None:
            raise RuntimeError(f"the create execution failed: {create['failure']}")
        verify(url, setup, workers, args.count)
    if create["result"]["made"] != args.count or any(r["failed"] for r in reports):
        raise RuntimeError(f"the runs went wrong: {reports}")
    first = min(r["first_event"] for r in reports if r["first_event"] is not None)
    last = max(r["last_event"] for r in reports if r["last_event"] is not None)
    events = [r["methods"].get(EVENT_METHOD, 0) for r in reports]
    return {
        "call_ms": create["result"]["call_ms"],
        "create_ms": (create["done"] - create["started"]) * 1000,
        "first_ms": (first - released.at) * 1000,
        "last_ms": (last - released.at) * 1000,
        "events_per_s": args.count / (last - first),
        "host_us": sum(r["host_cpu_s"] for r in reports) / args.count * 1e6,
        "sandbox_us": sum(r["sandbox_cpu_ms"] for r in reports) / args.count * 1e3,
        "busy": released.busy,
        "spawned": sum(r["spawned"] for r in reports),
        "first_share": events[0] / args.count * 100,
    }


def bench(args: argparse.Namespace) -> tuple[Figures, Context]:
    figures = Figures()
    context = Context()
    description = asyncio.run(describe_code(AGENT))
    server = args.db if args.db is not None else args.postgres_url
    backends = context.usable(args.backends, server)
    for run in range(args.runs):
        order = WORKER_COUNTS if run % 2 == 0 else WORKER_COUNTS[::-1]
        for backend in backends:
            for workers in order:
                measured = run_once(backend, workers, args, description)
                for name, value in measured.items():
                    figures.add(f"{backend}.{workers}.{name}", value)
                progress(
                    f"run {run + 1}/{args.runs} [{backend}] {workers} worker(s): create call "
                    f"{measured['call_ms']:.0f} ms, execution {measured['create_ms']:.0f} ms; "
                    f"last event {measured['last_ms']:.0f} ms after release "
                    f"({measured['events_per_s']:,.0f} events/s)"
                )
    context.finish()
    args.backends = backends
    return figures, context


# -- the report -------------------------------------------------------------------------


def fmt_events(s: Spread) -> str:
    """Events per second, the spread in full (a few thousand: ``compact`` would round)."""
    return fmt_rate(s, lambda x: f"{x:,.0f}")


ROWS: tuple[tuple[str, str, Callable[[Spread], str]], ...] = (
    ("call_ms", "create_activities call, in the agent", fmt_ms),
    ("create_ms", "create execution, claimed -> done", fmt_ms),
    ("first_ms", "first event started, from release", fmt_ms),
    ("last_ms", "last event done, from release", fmt_ms),
    ("events_per_s", "events, first started -> last done", fmt_events),
)
DETAILS: tuple[tuple[str, str, Callable[[Spread], str]], ...] = (
    ("host_us", "worker CPU per event", lambda s: f"{s.median:,.0f} µs"),
    ("sandbox_us", "sandbox CPU per event", lambda s: f"{s.median:,.0f} µs"),
    ("busy", "machine busy", lambda s: f"{s.median:.0f}%"),
    ("spawned", "sandbox processes spawned", lambda s: f"{s.median:.0f}"),
    ("first_share", "events on worker 0", lambda s: f"{s.median:.0f}%"),
)


def table(figures: Figures, backends: Sequence[str], rows: Sequence[Any]) -> str:
    header = ["", *(BACKEND_NAMES[b] for b in backends)]
    lines: list[list[str]] = []
    for workers in WORKER_COUNTS:
        lines.append([f"{workers} worker{'s' * (workers > 1)}:"])
        for key, label, fmt in rows:
            lines.append([f"  {label}", *(fmt(figures[f"{b}.{workers}.{key}"]) for b in backends)])
    return render(header, lines)


def report(figures: Figures, context: Context, args: argparse.Namespace) -> str:
    backends = list(args.backends)
    where = f"on {args.db}" if args.db is not None else "on a fresh database each run"
    lines = [
        f"Corral activity events: one create_activities call of {args.count:,} activities -> "
        f"{args.count:,} on_activity executions of another instance (full kernel sandbox)",
        f"each figure is the median of {args.runs} run{'s' * (args.runs > 1)} with "
        f"(min{DASH}max) beside it, {where}; workers pinned one per CPU, concurrency "
        f"{WorkerOptions().concurrency} each; an instance's events run "
        f"{ACTIVITY_EVENTS_AT_ONCE} at a time",
        context.machine(),
        "",
        table(figures, backends, ROWS),
        "",
        "Release: the workers start serving, the create task already queued. Done: the "
        "execution recorded and its task row deleted.",
        "",
        "Where the time goes (medians): CPU time of the worker processes and of the "
        "sandboxed processes per event,",
        "share of all CPUs busy from release to report (the database server included), "
        "sandboxed processes started.",
        table(figures, backends, DETAILS),
    ]
    lines += context.skips()
    return "\n".join(lines)


# -- command line -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: one run")
    parser.add_argument("--runs", type=int, help="repetitions per figure (default 3; 1 quick)")
    parser.add_argument(
        "--count", type=int, default=1_000, help="activities in the one call (default 1000)"
    )
    add_database_arguments(
        parser, "run on this database instead of fresh ones (keep it otherwise idle)"
    )
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    choose_backends(parser, args)
    if not 1 <= args.count <= 5_000:
        parser.error("--count must be from 1 to 5000 (what one create_activities call takes)")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker is not None:
        asyncio.run(serve(args.worker, runtime(args.db), WorkerOptions(), Times()))
        return
    progress(
        f"{args.runs} run(s) of {args.count:,} activities with 1 and 2 workers on "
        f"{', '.join(args.backends)} ..."
    )
    figures, context = bench(args)
    print(report(figures, context, args))
    progress(f"done in {context.seconds:.0f} s")


if __name__ == "__main__":
    main()
