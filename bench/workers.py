"""Worker processes for the benchmarks that run the real worker loop (bench/tasks.py,
bench/activities.py), and what their reports say about the run.

A bench script runs its workers as subprocesses of itself in a hidden ``--worker``
mode, one per CPU, each pinned before its zygote starts, as in production. They
talk in JSON lines on stdout and wait at a barrier on stdin:

1. the worker starts and says ``{"started": true}``;
2. told ``warm up``, it runs until idle (what the bench queued for it: one worker at a
   time, so each runs all of its own warm-up) and says ``ready`` with its CPU, its
   affinity and what it ran;
3. told ``go``, it runs until idle again and reports what it ran and what it cost.

The bench queues the work before ``go``, so the clock starts with every worker
released together; ``time.monotonic`` is system-wide on Linux, so a worker's times
compare with the bench's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import make_url

from corral.config import RuntimeConfig
from corral.db.raw import close_databases
from corral.runtime.affinity import available_cpus, pin_to_cpu
from corral.runtime.executor import Claim
from corral.runtime.records import ExecutionRecord
from corral.runtime.services import Services
from corral.runtime.worker import Worker, WorkerOptions
from corral.sandbox.limits import Outcome
from databases import ALL_BACKENDS, DEFAULT_POSTGRES_URL, Skipped, postgres_version
from tables import progress


def now_ms() -> int:
    """Wall-clock milliseconds, as the registry and the queue take ``now``."""
    return math.floor(time.time() * 1000)


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) clock ticks of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


# -- inside a worker process ------------------------------------------------------------

#: ``Worker.execute``: runs a claimed task, returns once it is recorded and settled.
Execute = Callable[[Claim], Coroutine[Any, Any, ExecutionRecord | None]]


@dataclass
class Completions:
    """What a worker finished: wraps ``Worker.execute``, which returns once the
    execution is recorded and its task settled. A bench that wants more of each
    execution overrides ``add`` (and ``reset``, ``report``)."""

    methods: Counter[str] = field(default_factory=Counter)
    failed: int = 0
    sandbox_cpu_ms: float = 0.0
    last_done: float = 0.0

    def wrap(self, run: Execute) -> Execute:
        async def timed(claim: Claim) -> ExecutionRecord | None:
            started = time.monotonic()
            record = await run(claim)
            self.add(claim, record, started, time.monotonic())
            return record

        return timed

    def add(
        self, claim: Claim, record: ExecutionRecord | None, started: float, done: float
    ) -> None:
        """One execution, claimed at ``started`` and done at ``done`` (monotonic)."""
        self.last_done = done
        self.methods[claim.task.method] += 1
        if record is not None:
            self.sandbox_cpu_ms += record.result.cpu_ms
            self.failed += record.result.outcome is not Outcome.OK

    def reset(self) -> None:
        self.methods.clear()
        self.failed = 0
        self.sandbox_cpu_ms = 0.0
        self.last_done = 0.0

    def report(self) -> dict[str, Any]:
        """What the worker's last message carries of them (JSON)."""
        return {
            "methods": dict(self.methods),
            "failed": self.failed,
            "sandbox_cpu_ms": self.sandbox_cpu_ms,
            "last_done": self.last_done,
        }


def say(message: dict[str, Any]) -> None:
    """One JSON line to the bench on stdout (progress and logs go to stderr)."""
    print(json.dumps(message), flush=True)


async def start_worker(
    services: Services, options: WorkerOptions, completions: Completions
) -> Worker:
    """A started worker with the full kernel sandbox, its executions counted."""
    worker = Worker(services, options=options)
    await worker.start()
    zygote = worker.zygote  # its report says which sandbox layers are on
    if zygote.report.get("insecure") or zygote.report.get("missing"):
        await close_worker(worker)
        raise RuntimeError(f"the sandbox is not complete: {zygote.report}")
    worker.execute = completions.wrap(worker.execute)  # type: ignore[method-assign,assignment]
    return worker


async def close_worker(worker: Worker) -> None:
    """The worker, its services and every shared database, closed."""
    await worker.close()
    await worker.services.close()
    close_databases()


async def serve(
    index: int, config: RuntimeConfig, options: WorkerOptions, completions: Completions
) -> None:
    """``--worker``: start, warm up when told, wait at the barrier, run until idle, report."""
    cpu = pin_to_cpu(index)  # before the zygote starts: its processes inherit the pin
    worker = await start_worker(Services(config), options, completions)
    executor = worker.executor
    assert executor is not None
    try:
        say({"started": True})
        if sys.stdin.readline() != "warm up\n":
            return  # the bench gave up
        await worker.run(until_idle=True)
        warm = dict(completions.methods)
        say({"ready": True, "cpu": cpu, "affinity": available_cpus(), "warm": warm})
        if sys.stdin.readline() != "go\n":
            return
        completions.reset()
        spawned = executor.pool.spawned
        cpu_before = time.process_time()
        await worker.run(until_idle=True)
        say(
            {
                **completions.report(),
                "host_cpu_s": time.process_time() - cpu_before,
                "spawned": executor.pool.spawned - spawned,
            }
        )
    finally:
        await close_worker(worker)


# -- the bench's side ---------------------------------------------------------------------


class WorkerProcess:
    """A ``--worker`` subprocess: JSON lines on its stdout, the barrier on its stdin."""

    def __init__(self, script: str, index: int, url: str, options: Sequence[str]) -> None:
        self.index = index
        command = [sys.executable, script, "--worker", str(index), "--db", url, *options]
        self.popen = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def read(self) -> dict[str, Any]:
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.index} exited early ({self.popen.wait()})")
        message: dict[str, Any] = json.loads(line)
        return message

    def tell(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(f"{line}\n")
        self.popen.stdin.flush()

    def stop(self) -> None:
        """Let it close its sandbox; kill it if it does not end soon."""
        assert self.popen.stdin is not None
        if not self.popen.stdin.closed:
            self.popen.stdin.close()  # a worker still at the barrier reads EOF and stops
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        if self.popen.returncode != 0:
            raise RuntimeError(f"worker {self.index} failed ({self.popen.returncode})")


@dataclass(frozen=True)
class Released:
    """One release of the workers: when, what each reported, how busy the machine was."""

    at: float  # time.monotonic() as the bench told them to go
    reports: list[dict[str, Any]]  # one a worker, in index order
    busy: float  # % of all CPUs busy from the release to the last report


def run_workers(
    script: str,
    url: str,
    count: int,
    *,
    options: Sequence[str] = (),
    warm_up: Callable[[int], None],
    warmed: tuple[str, int],
    work: Callable[[], None],
) -> Released:
    """Start ``count`` workers of ``script`` on ``url``, warm each up in turn, queue the
    work, release them together and collect their reports.

    ``warm_up(index)`` queues a worker's warm-up before it is told to run it, and it
    must then have run ``warmed`` (a method, how many times); ``work()`` queues what
    is measured. The workers are started together, each pinned to CPU ``index``.
    """
    processes: list[WorkerProcess] = []
    try:
        for index in range(count):
            processes.append(WorkerProcess(script, index, url, options))
        for process in processes:
            process.read()  # started
        method, times = warmed
        for process in processes:
            warm_up(process.index)
            process.tell("warm up")
            ready = process.read()
            if ready["affinity"] != [ready["cpu"]]:
                raise RuntimeError(f"worker {process.index} is not pinned: {ready}")
            if ready["warm"].get(method) != times:
                raise RuntimeError(f"worker {process.index} did not warm up: {ready}")
        work()
        busy, total = cpu_jiffies()
        released = time.monotonic()
        for process in processes:
            process.tell("go")
        reports = [process.read() for process in processes]
        busy_after, total_after = cpu_jiffies()
    finally:
        for process in processes:
            process.stop()
    busy, total = busy_after - busy, total_after - total
    return Released(released, reports, busy / total * 100 if total else 0.0)


# -- command line -------------------------------------------------------------------------


def add_database_arguments(parser: argparse.ArgumentParser, db_help: str) -> None:
    """``--backends``, ``--postgres-url`` and ``--db`` (its help: ``db_help``), as
    :func:`choose_backends` reads them."""
    parser.add_argument(
        "--backends",
        type=lambda s: [b.strip() for b in s.split(",") if b.strip()],
        help="comma-separated subset of sqlite,postgres (default: both; with --db, its own)",
    )
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_URL,
        help=f"a server to create the throwaway databases on (default {DEFAULT_POSTGRES_URL})",
    )
    parser.add_argument("--db", help=db_help)


def choose_backends(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """With ``--db``, the backends are that database's own (``--backends`` may only agree);
    without, both by default; then as :func:`check_arguments` checks them."""
    if args.db is not None:
        backend = "sqlite" if make_url(args.db).get_backend_name() == "sqlite" else "postgres"
        if args.backends not in (None, [backend]):
            parser.error(f"--db {args.db} is a {backend} database: --backends cannot differ")
        args.backends = [backend]
    elif args.backends is None:
        args.backends = list(ALL_BACKENDS)
    check_arguments(parser, args)


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``--backends`` names known backends only; ``--runs`` is 3 by default, 1 with
    ``--quick``, and at least 1."""
    unknown = [b for b in args.backends if b not in ALL_BACKENDS]
    if unknown or not args.backends:
        parser.error(f"--backends takes names from {','.join(ALL_BACKENDS)}, got {unknown}")
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
        parser.error("--runs must be at least 1")


# -- the report ---------------------------------------------------------------------------


@dataclass
class Context:
    """What the report says about the conditions of the run."""

    versions: list[str] = field(default_factory=list)  # of the database servers
    skipped: dict[str, str] = field(default_factory=dict)  # backend: why
    load_before: tuple[float, float, float] = field(default_factory=os.getloadavg)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0

    def usable(self, backends: Sequence[str], server_url: str) -> list[str]:
        """Those of ``backends`` that can run here; PostgreSQL's version is noted, or why
        it is skipped."""
        usable = []
        for backend in backends:
            if backend == "postgres":
                try:
                    self.versions.append(postgres_version(server_url))
                except Skipped as exc:
                    self.skipped[backend] = str(exc)
                    progress(f"[{backend}] skipped: {exc}")
                    continue
            usable.append(backend)
        return usable

    def finish(self) -> None:
        self.load_after = os.getloadavg()
        self.seconds = time.perf_counter() - self.started

    def machine(self) -> str:
        """The report's line on what ran it: versions, CPUs, load before and after, time."""
        return (
            f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
            + "".join(f"{v}, " for v in self.versions)
            + f"{platform.machine()}, CPUs {available_cpus()}; load average "
            f"{self.load_before[0]:.2f} before, {self.load_after[0]:.2f} after; "
            f"{self.seconds:.0f} s"
        )

    def skips(self) -> list[str]:
        """The report's closing lines: each backend skipped, and why."""
        return [f"\n{name} skipped: {why}" for name, why in self.skipped.items()]
