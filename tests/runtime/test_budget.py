"""``run`` shares the execution's request budget; ``run_task`` gets a new one (SPEC §1.2).

Also the errors an agent sees for bad callback targets: a method that does not
exist, and a token that names no callback of this instance.
"""

from __future__ import annotations

from typing import Any

import pytest

from corral import codec
from corral.sdk.operations import Op
from tests.runtime.conftest import Runtime

BUDGET = """
from corral.sdk import Agent

class Budgeted(Agent):
    limits = {"requests": 50}

    async def activate(self, priority):
        pass

    async def inner(self, count, label):
        for i in range(count):
            await self.set(f"{label}:{i}", i)
        return {"left": self.budget.requests_left}

    async def outer(self):
        await self.set("outer", True)                          # 1
        token = await self.callback(self.inner, 7, "inline")   # 2
        inline = await self.run(token)                         # 3: the run, + 7
        await self.run_task(await self.callback(self.inner, 7, "task"))  # 2 more
        return {"inline_left": inline["left"], "left": self.budget.requests_left}

    async def direct(self):
        before = self.budget.requests_left
        inline = await self.run(self.inner, 5, "direct")
        return {"before": before, "inline_left": inline["left"]}

    async def exhaust(self):
        token = await self.callback(self.inner, 60, "over")
        await self.run(token)
"""


@pytest.mark.exercises(Op.CALLBACK_CREATE, Op.CALLBACK_GET, Op.TASK_RUN)
async def test_run_shares_the_budget_and_run_task_gets_a_fresh_one(runtime: Runtime) -> None:
    await runtime.deploy("budgeted", BUDGET)
    instance = runtime.install("budgeted")
    runtime.executor.queue.enqueue(
        instance.id, "outer", codec.encode([]), now=runtime.executor.now()
    )
    await runtime.idle()

    records = {r["method"]: r for r in runtime.executions(instance.id)}
    assert sorted(records) == ["activate", "inner", "outer"]  # one execution each
    outer, task = records["outer"], records["inner"]
    used = 1 + 1 + (1 + 7) + 2
    assert outer["outcome"] == "ok"
    assert outer["requests_used"] == used
    # Inside the inline run, the caller's budget: 10 spent by then.
    assert outer["result"] == {"inline_left": 50 - 10, "left": 50 - used}
    # The task is an execution of its own, from a full budget.
    assert task["outcome"] == "ok"
    assert task["requests_used"] == 7
    assert task["result"] == {"left": 50 - 7}
    assert task["id"] != outer["id"]
    store = runtime.store(instance.id)
    assert len(await store.keys("inline:")) == 7
    assert len(await store.keys("task:")) == 7


async def _run_alone(runtime: Runtime, method: str) -> tuple[dict[str, Any], str]:
    """One task running ``method`` of a fresh instance: its record, and the instance."""
    await runtime.deploy("budgeted", BUDGET)
    instance = runtime.install("budgeted")
    runtime.executor.queue.enqueue(
        instance.id, method, codec.encode([]), now=runtime.executor.now()
    )
    await runtime.idle()
    [record] = runtime.executions(instance.id, method)
    return record, instance.id


async def _run_direct(runtime: Runtime) -> dict[str, Any]:
    record, _ = await _run_alone(runtime, "direct")
    assert record["outcome"] == "ok"
    return record


async def test_run_of_a_method_charges_its_requests_to_the_caller(runtime: Runtime) -> None:
    record = await _run_direct(runtime)
    assert record["requests_used"] >= 5
    assert record["result"]["before"] - record["result"]["inline_left"] >= 5


@pytest.mark.exercises(Op.RUN_INLINE)
async def test_run_of_a_method_counts_as_a_request(runtime: Runtime) -> None:
    record = await _run_direct(runtime)
    assert record["requests_used"] == 1 + 5


async def test_run_cannot_escape_the_budget_of_its_execution(runtime: Runtime) -> None:
    exhaust, instance = await _run_alone(runtime, "exhaust")
    assert exhaust["outcome"] == "request_limit"
    assert exhaust["requests_used"] == 50  # the 51st was refused inside the sandbox
    assert exhaust["error"]["type"] == "RequestLimitExceeded"
    # What was done before stays done: 48 of the 60 sets (2 went on callback, get).
    assert len(await runtime.store(instance).keys("over:")) == 48


BAD_TARGETS = """
from corral.sdk import Agent

class Targets(Agent):
    async def activate(self, priority):
        pass

    async def real(self):
        return "ran"

    async def try_(self, what, arg=None):
        try:
            if what == "callback-name":
                await self.callback("nope")
            elif what == "callback-helper":
                await self.callback("set")
            elif what == "callback-foreign":
                await self.callback(print)
            elif what == "run_task-token":
                await self.run_task(arg)
            elif what == "run-token":
                await self.run(arg)
            elif what == "schedule-token":
                await self.schedule_task("k", arg, None)
            elif what == "raw-callback":
                await self._channel.call("callbacks.create", "nope", b"\\x90")
            elif what == "raw-run_task":
                await self._channel.call("tasks.run_task", ["method", "set"], None)
        except Exception as exc:
            return [type(exc).__name__, str(exc)]
        return None
"""


def _no_callback(token: str) -> str:
    return (
        f"there is no callback {token!r} for this instance: it was deleted, or it belongs "
        "to another instance"
    )


@pytest.mark.parametrize(
    ("what", "arg", "error"),
    [
        (
            "callback-name",
            None,
            ["ValueError", "Targets has no public method 'nope' a callback can run"],
        ),
        # The SDK's own helpers are not entry points.
        (
            "callback-helper",
            None,
            ["ValueError", "Targets has no public method 'set' a callback can run"],
        ),
        (
            "callback-foreign",
            None,
            [
                "TypeError",
                "a callback names one of this agent's own methods: pass self.method or its name",
            ],
        ),
        ("run_task-token", "cb_bogus", ["LookupError", _no_callback("cb_bogus")]),
        ("run-token", "cb_bogus", ["LookupError", _no_callback("cb_bogus")]),
        # Past the SDK's checks, the host refuses the same things.
        (
            "raw-callback",
            None,
            ["ValueError", "Targets has no public method 'nope' a callback can run"],
        ),
        (
            "raw-run_task",
            None,
            ["ValueError", "Targets has no public method 'set' a callback can run"],
        ),
    ],
)
async def test_bad_callback_targets_raise_clear_errors_inside_the_agent(
    runtime: Runtime, what: str, arg: str | None, error: list[str]
) -> None:
    await runtime.deploy("targets", BAD_TARGETS)
    instance = runtime.install("targets")
    runtime.executor.queue.enqueue(
        instance.id, "try_", codec.encode([what, arg]), now=runtime.executor.now()
    )
    await runtime.idle()
    [record] = runtime.executions(instance.id, "try_")
    assert record["outcome"] == "ok"
    assert record["result"] == error
    assert runtime.tasks(instance.id) == []  # nothing was queued by the failed call


async def test_another_instances_callback_token_is_unknown_here(runtime: Runtime) -> None:
    await runtime.deploy("targets", BAD_TARGETS)
    first, second = runtime.install("targets"), runtime.install("targets")
    await runtime.idle()
    token = runtime.executor.callbacks.create(
        first.id, "real", codec.encode([]), now=runtime.executor.now()
    )
    runtime.executor.queue.enqueue(
        second.id, "try_", codec.encode(["run_task-token", token]), now=runtime.executor.now()
    )
    await runtime.idle()
    [record] = runtime.executions(second.id, "try_")
    assert record["result"] == ["LookupError", _no_callback(token)]
    assert [r["method"] for r in runtime.executions(first.id)] == ["activate"]
