"""A worker killed with SIGKILL mid-run loses no task (SPEC §1.2: tasks are durable).

A worker in a separate process serves an instance that fans out 200 tasks and
one long one; once executions are recorded and the long one is in flight, the
process is killed. A fresh worker then finishes everything: every task's effect
happened at least once, and only the executions the dead worker had in flight
ran twice. ``TaskQueue.recover`` hands back at once the rows leased by a process
that no longer exists on this host, without waiting for their lease to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from corral.config import Retries, RuntimeConfig
from corral.db.raw import close_databases
from corral.tasks.queue import Backoff
from tests.runtime.conftest import NO_RATE_LIMITS, Runtime, RuntimeFactory

TASKS = 200
CONCURRENCY = 2  # the worker that is killed

FAN_OUT = """
import asyncio
from corral.sdk import Agent

class Fan(Agent):
    async def activate(self, priority):
        await self.run_task(self.slow)
        for i in range(200):
            await self.run_task(await self.callback(self.work, i))

    async def slow(self):
        await self.set("slow_starts", (await self.get("slow_starts") or 0) + 1)
        # A long execution: it lasts until every short task is done.
        while len(await self.store.keys("done:")) < 200:
            await asyncio.sleep(0.05)
        await self.set("slow_done", True)
        return "slow"

    async def work(self, i):
        await asyncio.sleep(0.02)
        await self.set(f"done:{i:03d}", True)
        return i
"""

WORKER_SCRIPT = f"""
import asyncio
import sys

from corral.config import RateLimits, RuntimeConfig
from corral.runtime.services import Services
from corral.runtime.worker import Worker, WorkerOptions


async def main() -> None:
    config = RuntimeConfig(
        database_url=sys.argv[1], rate_limits=RateLimits(per_5min=10**9, per_24h=10**9)
    )
    worker = Worker(
        Services(config), options=WorkerOptions(concurrency={CONCURRENCY}, poll_s=0.01)
    )
    print("serving", flush=True)
    await worker.run()


asyncio.run(main())
"""

#: How long the killed worker may take to get to the point where it is killed.
DEADLINE_S = 60


def start_worker(
    url: str, tmp_path: Path, source: str = WORKER_SCRIPT
) -> tuple[subprocess.Popen[bytes], Path]:
    """A worker process serving ``url``, in a session of its own, running ``source``
    (a script that takes the URL as its argument); and its output file."""
    script = tmp_path / "worker.py"
    script.write_text(source)
    output = tmp_path / "worker.log"
    with output.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, str(script), url],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, output


def kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def session_processes(session: int) -> list[int]:
    """Live (not zombie) processes of a session: a worker, its zygote, its sandboxes."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[3]) == session:  # state, ..., session id
            found.append(int(entry))
    return found


def kill_session(session: int) -> None:
    """End what is left of a worker process's session: only processes this test started."""
    for pid in session_processes(session):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def test_sigkill_of_a_worker_mid_run_loses_no_task(
    runtime_factory: RuntimeFactory, tmp_path: Path
) -> None:
    # Real time throughout: the worker in the other process uses the real clock.
    config = RuntimeConfig(
        rate_limits=NO_RATE_LIMITS, retries=Retries(backoff=Backoff(base_ms=0, jitter=0))
    )
    runtime: Runtime = await runtime_factory(config, clock=time.time, concurrency=4)
    await runtime.deploy("fan", FAN_OUT)
    instance = runtime.install("fan")
    store = runtime.store(instance.id)

    worker, output = start_worker(runtime.url, tmp_path)
    try:
        deadline = time.monotonic() + DEADLINE_S
        # Bounded polling on the database: the long task has started and is still
        # running, and a good number of the short ones have been recorded.
        while True:
            assert worker.poll() is None, f"the worker exited early:\n{output.read_text()}"
            assert time.monotonic() < deadline, f"no progress:\n{output.read_text()}"
            recorded = len(runtime.executions(instance.id, "work"))
            if recorded >= 20 and await store.get("slow_starts") == 1:
                break
            await asyncio.sleep(0.01)
        os.kill(worker.pid, signal.SIGKILL)
        assert worker.wait(timeout=10) == -signal.SIGKILL
    finally:
        kill(worker)
        kill_session(worker.pid)  # see test_a_killed_workers_sandboxed_processes_exit

    assert not await store.has("slow_done")  # killed in flight: it outlasts the others
    recorded_before = len(runtime.executions(instance.id, "work"))
    assert recorded_before < TASKS  # killed mid-run, with work left
    leased = [t for t in runtime.tasks(instance.id) if t.state == "running"]
    assert {t.leased_by for t in leased} == {f"{socket.gethostname()}:{worker.pid}"}
    assert "slow" in {t.method for t in leased}
    assert len(leased) <= CONCURRENCY

    # A fresh worker takes the dead one's leases back at once and finishes the rest.
    await runtime.idle()

    assert runtime.tasks(instance.id) == []
    assert runtime.tasks(instance.id, dead=True) == []
    assert await store.keys("done:") == [f"done:{i:03d}" for i in range(TASKS)]
    assert await store.get("slow_done") is True
    assert await store.get("slow_starts") == 2  # once killed, once to the end

    records = runtime.executions(instance.id)
    assert all(r["outcome"] == "ok" for r in records)
    runs = Counter(r["result"] for r in records if r["method"] == "work")
    assert set(runs) == set(range(TASKS))  # each item at least once
    # Only what the dead worker had in flight may have run twice.
    assert sum(runs.values()) - TASKS <= CONCURRENCY
    assert Counter(r["method"] for r in records)["slow"] == 1
    assert Counter(r["method"] for r in records)["activate"] == 1


SLEEPER = """
import asyncio
from corral.sdk import Agent

class Sleeper(Agent):
    async def activate(self, priority):
        await self.set("started", True)
        await asyncio.sleep(30)
"""


async def test_a_killed_workers_sandboxed_processes_exit(sandbox: None, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/crash.db"  # the sandbox's behaviour, whatever the database
    runtime = Runtime(url, time.time, RuntimeConfig())
    await runtime.worker.start()
    try:
        await runtime.deploy("sleeper", SLEEPER)
        instance = runtime.install("sleeper")
        store = runtime.store(instance.id)
        worker, output = start_worker(url, tmp_path)
        try:
            deadline = time.monotonic() + DEADLINE_S
            while not await store.get("started"):  # the execution is in flight
                assert worker.poll() is None, output.read_text()
                assert time.monotonic() < deadline, output.read_text()
                await asyncio.sleep(0.01)
            assert len(session_processes(worker.pid)) == 3  # worker, zygote, sandbox
            kill(worker)
            for _ in range(50):  # up to 1 s
                left = session_processes(worker.pid)
                if not left:
                    break
                await asyncio.sleep(0.02)
            assert left == [], "still running 1 s after their worker was killed"
        finally:
            kill(worker)
            kill_session(worker.pid)
    finally:
        await runtime.close()
        close_databases()
