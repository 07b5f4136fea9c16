"""Deploying a new version while work is pending (SPEC §1.2: callbacks resolve by name).

A chain of tasks waits on future ``run_at`` times; a deploy between two runs of the
worker must make the rest of the chain run the new code, through both kinds of
target (a method named directly, and a callback token made by the old version),
and queue the ``upgrade`` hook. A method the new version lacks dead-letters with a
message that names it and the version.
"""

from __future__ import annotations

from datetime import timedelta

from click.testing import CliRunner

from corral import codec
from corral.cli import main
from tests.runtime.conftest import Runtime

MINUTE_MS = 60_000

CHAIN_V1 = """
from datetime import UTC, datetime, timedelta
from corral.sdk import Agent

VERSION = "v1"

class Chain(Agent):
    async def activate(self, priority):
        # Later runs are due at fixed times from here: the test moves its clock to them.
        await self.set("start", datetime.now(UTC))
        await self.set("steps", [])
        token = await self.callback(self.step, "via-callback")
        await self.set("token", token)
        await self.run_task(token)
        await self.run_task(self.tick)

    async def step(self, how):
        steps = await self.get("steps")
        steps.append((VERSION, how, len(steps) + 1))
        await self.set("steps", steps)
        if len(steps) < 6:
            later = await self.get("start") + timedelta(minutes=10 * len(steps))
            await self.run_task(await self.get("token"), run_at=later)
        return VERSION

    async def tick(self):
        ticks = (await self.get("ticks") or 0) + 1
        await self.set("ticks", ticks)
        await self.set(f"tick:{ticks}", VERSION)
        if ticks < 4:
            later = await self.get("start") + timedelta(minutes=10 * ticks)
            await self.schedule_task("tick", self.tick, later)
        return VERSION
"""

CHAIN_V2 = (
    CHAIN_V1.replace('VERSION = "v1"', 'VERSION = "v2"')
    + """
    async def upgrade(self):
        await self.set("upgraded_to", VERSION)
        return "upgraded"
"""
)


async def test_chain_runs_new_code_after_a_deploy_mid_chain(runtime: Runtime) -> None:
    first = await runtime.deploy("chain", CHAIN_V1)
    instance = runtime.install("chain")
    await runtime.idle()  # activate, step 1, tick 1
    store = runtime.store(instance.id)
    start = await store.get("start")

    async def round_(n: int) -> None:  # step n + 1 and tick n + 1 are due
        await runtime.advance_to(start + timedelta(minutes=10 * n))

    await round_(1)  # step 2, tick 2
    assert [s[0] for s in await store.get("steps")] == ["v1", "v1"]

    second = await runtime.deploy("chain", CHAIN_V2)
    assert (first.version.number, second.version.number) == (1, 2)
    assert second.created
    assert second.upgraded == [instance.id]
    await runtime.idle()  # only the upgrade hook is due now
    assert await store.get("upgraded_to") == "v2"
    assert len(await store.get("steps")) == 2

    for n in range(2, 6):
        await round_(n)

    steps = await store.get("steps")
    assert steps == [
        ("v1", "via-callback", 1),
        ("v1", "via-callback", 2),
        ("v2", "via-callback", 3),
        ("v2", "via-callback", 4),
        ("v2", "via-callback", 5),
        ("v2", "via-callback", 6),
    ]
    assert [await store.get(f"tick:{n}") for n in range(1, 5)] == ["v1", "v1", "v2", "v2"]

    records = runtime.executions(instance.id)
    assert all(r["outcome"] == "ok" for r in records)
    by_method = {
        method: sorted((r["version"], r["result"]) for r in records if r["method"] == method)
        for method in ("activate", "step", "tick", "upgrade")
    }
    assert by_method == {
        "activate": [(1, None)],
        "step": [(1, "v1")] * 2 + [(2, "v2")] * 4,
        "tick": [(1, "v1")] * 2 + [(2, "v2")] * 2,
        "upgrade": [(2, "upgraded")],
    }
    upgrade = next(r for r in records if r["method"] == "upgrade")
    assert upgrade["trigger"] == "lifecycle"
    assert runtime.tasks(instance.id) == []


async def test_redeploying_identical_code_makes_no_version_and_no_upgrade(
    runtime: Runtime,
) -> None:
    await runtime.deploy("chain", CHAIN_V2)
    instance = runtime.install("chain")
    await runtime.idle()
    again = await runtime.deploy("chain", CHAIN_V2)
    assert (again.version.number, again.created, again.upgraded) == (1, False, [])
    await runtime.idle()
    assert [r["method"] for r in runtime.executions(instance.id)].count("upgrade") == 0


LATER_V1 = """
from datetime import UTC, datetime, timedelta
from corral.sdk import Agent

class Later(Agent):
    async def activate(self, priority):
        when = datetime.now(UTC) + timedelta(minutes=10)
        await self.schedule_task("reminder", self.remind, when)
        await self.run_task(await self.callback(self.remind, "from-callback"), run_at=when)

    async def remind(self, how="direct"):
        await self.set(f"reminded:{how}", True)
"""

LATER_V2 = """
from corral.sdk import Agent

class Later(Agent):
    async def activate(self, priority):
        pass

    async def other(self):
        pass
"""

LATER_V3 = LATER_V1 + "\n# the same methods again, as version 3\n"


async def test_a_method_missing_from_the_new_version_is_dead_lettered(runtime: Runtime) -> None:
    await runtime.deploy("later", LATER_V1)
    instance = runtime.install("later")
    await runtime.idle()
    assert len(runtime.tasks(instance.id)) == 2

    await runtime.deploy("later", LATER_V2)
    await runtime.advance(11 * MINUTE_MS)

    assert runtime.tasks(instance.id) == []
    dead = runtime.tasks(instance.id, dead=True)
    assert len(dead) == 2
    assert sorted(codec.decode(task.args) for task in dead) == [[], ["from-callback"]]
    for task in dead:
        assert task.method == "remind"
        assert task.last_error == (
            "later v2 has no method 'remind' (its methods: activate, other); deploy a "
            f"version that has it, then: corral tasks retry {task.id}"
        )
    logs = runtime.logs(instance.id)
    for task in dead:
        assert f"task {task.id} dead-lettered: {task.last_error}" in logs
    # Nothing ran it: the dead letters are not executions.
    assert [r["method"] for r in runtime.executions(instance.id)] == ["activate"]

    # The way out the message names: deploy a version with the method, retry.
    await runtime.deploy("later", LATER_V3)
    for task in dead:
        runtime.executor.queue.retry_dead(task.id, now=runtime.executor.now())
    await runtime.idle()
    store = runtime.store(instance.id)
    assert await store.keys("reminded:") == ["reminded:direct", "reminded:from-callback"]
    assert runtime.tasks(instance.id, dead=True) == []
    remind = [r for r in runtime.executions(instance.id) if r["method"] == "remind"]
    assert [(r["version"], r["outcome"]) for r in remind] == [(3, "ok"), (3, "ok")]


async def test_the_retry_command_named_by_a_dead_letter_works(runtime: Runtime) -> None:
    await runtime.deploy("later", LATER_V1)
    instance = runtime.install("later")
    await runtime.idle()
    await runtime.deploy("later", LATER_V2)
    await runtime.advance(11 * MINUTE_MS)
    dead = runtime.tasks(instance.id, dead=True)[0]
    assert dead.last_error is not None
    command = dead.last_error.rpartition("then: corral ")[2].split()
    assert command == ["tasks", "retry", str(dead.id)]

    await runtime.deploy("later", LATER_V3)
    result = CliRunner().invoke(main, ["--db", runtime.url, *command])
    assert result.exit_code == 0, result.output
    assert result.output == f"task {dead.id} queued again\n"
    pending = {t.id: t.method for t in runtime.tasks(instance.id)}
    assert pending[dead.id] == "remind"  # beside v3's queued upgrade
