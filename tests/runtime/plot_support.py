"""Agents and helpers shared by the plot tool's runtime suites (SPEC §1.4).

``PLOTTER``'s ``do`` runs expressions over ``plot`` (its ``self.tools.plot``) one
after the other in one execution, as an agent's code would call them, and keeps
what each returned, or the error it raised as ``"Type: message"``, in its store:
the test reads them back there, as the codec stored them (``count(call)`` keeps
only how many the call returned). Its ``on_activity`` keeps every event it hears
under ``heard:``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from corral import Activity, codec
from tests.runtime.conftest import Runtime

QUIET = """
import datetime as dt
import inspect
from corral import Activity, ActivityType, Agent, Note, Uuid
from corral.sdk.operations import Op

async def count(call):
    return len(await call)

class Plotter(Agent):
    async def do(self, calls, given):
        out = []
        names = {
            "self": self, "plot": self.tools.plot, "ActivityType": ActivityType, "Uuid": Uuid,
            "Activity": Activity, "Note": Note, "Op": Op, "dt": dt, "out": out, "given": given,
            "count": count,
        }
        for call in calls:
            try:
                value = eval(call, names)
                if inspect.isawaitable(value):
                    value = await value
            except Exception as exc:
                value = f"{type(exc).__name__}: {exc}"
            out.append(value)
        await self.set("out", out)
        return len(out)
"""

PLOTTER = (
    QUIET
    + """
    async def on_activity(self, activity, changes=None):
        await self.set(f"heard:{Uuid.generate()}", [activity, changes])
"""
)

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def at(ms: int) -> dt.datetime:
    """A time of the runtime's clock, as activities carry it."""
    return EPOCH + dt.timedelta(milliseconds=ms)


async def plotter(
    runtime: Runtime, priority: str, *, agent: str = "plotter", code: str = PLOTTER
) -> str:
    """A new instance of ``code`` in ``priority``, activated."""
    await runtime.deploy(agent, code)
    instance = runtime.install(agent, priority=priority).id
    await runtime.idle()
    return instance


async def do(runtime: Runtime, instance: str, *calls: str, **given: Any) -> list[Any]:
    """Run the calls in one execution of ``instance`` (and whatever they cause), and
    return what each gave."""
    return (await run_do(runtime, instance, *calls, **given))[0]


async def run_do(
    runtime: Runtime, instance: str, *calls: str, **given: Any
) -> tuple[list[Any], dict[str, Any]]:
    """``do``, and the record of its execution."""
    before = {r["id"] for r in runtime.executions(instance, "do")}
    enqueue(runtime, instance, "do", list(calls), given)
    await runtime.idle()
    [record] = [r for r in runtime.executions(instance, "do") if r["id"] not in before]
    assert record["outcome"] == "ok", record["error"]
    return await runtime.store(instance).get("out"), record


def enqueue(runtime: Runtime, instance: str, method: str, *args: Any) -> None:
    runtime.executor.queue.enqueue(
        instance, method, codec.encode(list(args)), now=runtime.executor.now()
    )


async def heard(runtime: Runtime, instance: str) -> list[tuple[Activity, dict[str, Any] | None]]:
    """The events the instance has heard since the last look, in the order they ran."""
    store = runtime.store(instance)
    entries = await store.list_entries("heard:")
    await store.clear_many([key for key, _ in entries])
    return [(activity, changes) for _, (activity, changes) in entries]


def titles(activities: list[Activity]) -> list[str]:
    return [a.title for a in activities]
