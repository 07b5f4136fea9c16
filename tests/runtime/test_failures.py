"""Tasks over a limit are retried with backoff, then dead-lettered (SPEC §1.2, §1.6);
a recurring task keeps firing whatever its runs do.

Backoff has no jitter here, so each retry is due exactly ``base_ms * 2**(n-1)``
after the failed attempt, and the test moves the fake clock to it.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest
from click.testing import CliRunner

from corral import codec
from corral.cli import main
from corral.config import Retries, RuntimeConfig
from corral.tasks.queue import Backoff
from tests.runtime.conftest import Runtime, RuntimeFactory

BACKOFF = Backoff(base_ms=60_000, cap_ms=3_600_000, jitter=0)

OVER_LIMITS = """
import asyncio
from corral.sdk import Agent

class Greedy(Agent):
    limits = {"requests": 10, "cpu_s": 0.2, "timeout_s": 1.0}  # CPU runs out first, even when busy

    async def activate(self, priority):
        pass

    async def requests(self):
        await self.set("attempts", (await self.get("attempts") or 0) + 1)
        for i in range(20):
            await self.set(f"k{i}", i)

    async def cpu(self):
        await self.set("attempts", (await self.get("attempts") or 0) + 1)
        while True:
            pass

    async def timeout(self):
        await self.set("attempts", (await self.get("attempts") or 0) + 1)
        await asyncio.sleep(30)
"""


@pytest.mark.parametrize(
    ("method", "outcome", "error_type", "last_error"),
    [
        (
            "requests",
            "request_limit",
            "RequestLimitExceeded",
            "request_limit: RequestLimitExceeded: ",
        ),
        # The kernel stopped the process: the outcome is the error's type, said once.
        ("cpu", "cpu_limit", "cpu_limit", "cpu_limit: the execution used its whole CPU"),
        ("timeout", "timeout", "timeout", "timeout: the execution ran past its wall-clock"),
    ],
)
async def test_a_task_over_a_limit_is_retried_then_dead_lettered(
    runtime_factory: RuntimeFactory, method: str, outcome: str, error_type: str, last_error: str
) -> None:
    runtime: Runtime = await runtime_factory(RuntimeConfig(retries=Retries(3, BACKOFF)))
    await runtime.deploy("greedy", OVER_LIMITS)
    instance = runtime.install("greedy")
    runtime.executor.queue.enqueue(
        instance.id, method, codec.encode([]), now=runtime.executor.now()
    )
    await runtime.idle()

    store = runtime.store(instance.id)
    for attempt, delay_ms in ((1, 60_000), (2, 120_000)):
        # Not yet due: the retry waits for its backoff.
        assert await store.get("attempts") == attempt
        [task] = runtime.tasks(instance.id)
        assert (task.state, task.attempts, task.method) == ("queued", attempt, method)
        assert task.run_at == runtime.clock.now_ms + delay_ms
        assert task.last_error is not None
        assert task.last_error.startswith(last_error)
        await runtime.advance(delay_ms - 1_000)
        assert await store.get("attempts") == attempt  # a second early: still waiting
        await runtime.advance(task.run_at - runtime.clock.now_ms)

    assert await store.get("attempts") == 3
    assert runtime.tasks(instance.id) == []
    [dead] = runtime.tasks(instance.id, dead=True)
    assert (dead.state, dead.attempts, dead.method) == ("dead", 3, method)
    assert dead.last_error is not None
    assert dead.last_error.startswith(last_error)

    records = runtime.executions(instance.id, method)
    assert [r["outcome"] for r in records] == [outcome] * 3
    assert all(r["error"]["type"] == error_type for r in records)
    if method == "requests":
        # Work before the limit stays done: the attempt counter, then 8 of 20 sets.
        assert all(r["requests_used"] == 10 for r in records)
        assert await store.keys("k") == [f"k{i}" for i in range(8)]
    assert (
        f"task {dead.id} ({method}) dead-lettered after 3 attempt(s): {dead.last_error}"
        in runtime.logs(instance.id)
    )
    # The queue shows it dead until someone retries or cancels it, and so does the CLI.
    assert [t.id for t in runtime.executor.queue.list(dead=True)] == [dead.id]
    shown = CliRunner().invoke(
        main, ["--db", runtime.url, "tasks", "--dead", "--json", instance.id]
    )
    assert shown.exit_code == 0, shown.output
    [listed] = json.loads(shown.output)
    assert (listed["id"], listed["state"], listed["last_error"]) == (
        dead.id,
        "dead",
        dead.last_error,
    )


RECURRING = """
from corral.sdk import Agent

class Beat(Agent):
    async def activate(self, priority):
        await self.schedule_recurring("beat", self.beat, 60_000)

    async def beat(self):
        n = (await self.get("beats") or 0) + 1
        await self.set("beats", n)
        raise RuntimeError(f"beat {n} failed")
"""


async def test_a_recurring_task_keeps_firing_after_its_callback_raises(
    runtime_factory: RuntimeFactory,
) -> None:
    # One attempt per fired run: each tick's failure is final, and the next tick still comes.
    runtime: Runtime = await runtime_factory(RuntimeConfig(retries=Retries(1, BACKOFF)))
    await runtime.deploy("beat", RECURRING)
    instance = runtime.install("beat")
    await runtime.idle()
    start = runtime.clock.now_ms
    [schedule] = runtime.tasks(instance.id)
    assert (schedule.state, schedule.key, schedule.run_at) == ("recurring", "beat", start + 60_000)

    ticks = 5
    for tick in range(1, ticks + 1):
        await runtime.advance(30_000)
        assert len(runtime.executions(instance.id, "beat")) == tick - 1  # not due yet
        await runtime.advance(30_000)
        assert len(runtime.executions(instance.id, "beat")) == tick

    records = runtime.executions(instance.id, "beat")
    assert [r["outcome"] for r in records] == ["error"] * ticks
    assert Counter(r["error"]["type"] for r in records) == {"RuntimeError": ticks}
    assert await runtime.store(instance.id).get("beats") == ticks
    # The schedule is still armed for the next interval; each failed copy is a dead letter.
    [schedule] = runtime.tasks(instance.id)
    assert (schedule.state, schedule.run_at) == ("recurring", start + (ticks + 1) * 60_000)
    dead = runtime.tasks(instance.id, dead=True)
    assert len(dead) == ticks
    assert {t.last_error for t in dead} == {
        f"RuntimeError: beat {n} failed" for n in range(1, ticks + 1)
    }


async def test_a_failing_recurring_run_is_retried_without_delaying_the_schedule(
    runtime_factory: RuntimeFactory,
) -> None:
    # One at a time: the retry and the next tick are due together, and the agent's
    # counter is a plain read-then-write.
    runtime: Runtime = await runtime_factory(
        RuntimeConfig(retries=Retries(2, BACKOFF)), concurrency=1
    )
    await runtime.deploy("beat", RECURRING)
    instance = runtime.install("beat")
    await runtime.idle()
    await runtime.advance(60_000)  # the first tick fails; its retry is due in 60 s
    await runtime.advance(60_000)  # the retry and the second tick both run
    records = runtime.executions(instance.id, "beat")
    assert len(records) == 3
    assert await runtime.store(instance.id).get("beats") == 3
    # The schedule is armed at its own pace; the second tick's copy awaits its retry,
    # the first's has spent both attempts.
    schedule, retry = sorted(runtime.tasks(instance.id), key=lambda t: t.state, reverse=True)
    assert (schedule.state, schedule.run_at) == ("recurring", runtime.clock.now_ms + 60_000)
    assert (retry.state, retry.attempts, retry.run_at) == (
        "queued",
        1,
        runtime.clock.now_ms + 60_000,
    )
    [dead] = runtime.tasks(instance.id, dead=True)
    assert dead.attempts == 2


FORGER = """
import os
import struct
import sys
import time

import msgpack

from corral import codec
from corral.sdk import Agent


class Forger(Agent):
    def cheat(self, spin_s):
        # The id the runtime answers this execution under is a local of its frame below.
        frame = sys._getframe()
        while frame.f_code.co_name != "_invoke":
            frame = frame.f_back
        body = msgpack.packb(
            ["done", frame.f_locals["exec_id"], codec.encode("forged"), False],
            use_bin_type=True,
        )
        os.write(3, struct.pack(">I", len(body)) + body)
        end = time.process_time() + spin_s
        while time.process_time() < end:
            pass

    def ping(self):
        return "pong"
"""


async def test_a_record_is_corrected_when_its_process_went_on_computing(
    runtime: Runtime,
) -> None:
    """An agent that reports its own completion and keeps computing is recorded as
    killed, with the CPU it used after its report, not as a cheap success."""
    await runtime.deploy("forger", FORGER)
    instance = runtime.install("forger")
    runtime.executor.queue.enqueue(
        instance.id, "cheat", codec.encode([5.0]), now=runtime.executor.now()
    )
    await runtime.idle()
    deadline = asyncio.get_running_loop().time() + 10
    while runtime.executions(instance.id, "cheat")[0]["outcome"] == "ok":
        assert asyncio.get_running_loop().time() < deadline, "the record was never corrected"
        await asyncio.sleep(0.02)  # polling the database for the correction, with a deadline
    [record] = runtime.executions(instance.id, "cheat")
    assert record["outcome"] == "killed"
    message = record["error"]["message"]
    assert message.startswith(
        "the sandboxed process kept running after it reported its result ("
    ), message
    assert record["cpu_ms"] >= 20
    assert f"killed: {message}" in runtime.logs(instance.id)  # as any failure is logged
    runtime.executor.queue.enqueue(
        instance.id, "ping", codec.encode([]), now=runtime.executor.now()
    )
    await runtime.idle()
    assert [r["outcome"] for r in runtime.executions(instance.id, "ping")] == ["ok"]
