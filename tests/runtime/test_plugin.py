"""A tick-driven plugin (SPEC §1.5) keeps a cooldown in ``ctx.state`` with a TTL.

The platform ticks ``decide`` every ``tick_ms``; the TTL is measured by the
runtime's clock, so moving the fake clock one tick at a time makes every decision
predictable.
"""

from __future__ import annotations

from tests.runtime.conftest import Runtime

MOMENTUM = """
from corral.sdk import Plugin

class Momentum(Plugin):
    tick_ms = 1000

    async def decide(self, ctx):
        tick = await ctx.state.get_or_default("ticks", 0) + 1
        await ctx.state.set("ticks", tick)
        if await ctx.state.has("cooldown"):
            return ["hold", tick]
        trades = await ctx.state.get_or_default("trades", [])
        await ctx.state.set("trades", [*trades, tick])
        await ctx.state.set_with_ttl("cooldown", tick, 3_500)
        return ["trade", tick]
"""


async def test_plugin_decisions_respect_a_ttl_cooldown(runtime: Runtime) -> None:
    await runtime.deploy("momentum", MOMENTUM)
    instance = runtime.install("momentum")
    await runtime.idle()  # activate (not defined by the plugin: nothing to run)
    [schedule] = runtime.tasks(instance.id)
    installed = runtime.clock.now_ms
    assert (schedule.state, schedule.method, schedule.run_at) == (
        "recurring",
        "on_tick",
        installed + 1000,
    )

    for tick in range(1, 13):
        await runtime.advance(999)
        assert len(runtime.executions(instance.id, "on_tick")) == tick - 1  # not yet
        await runtime.advance(1)
        records = runtime.executions(instance.id, "on_tick")
        assert sorted(r["result"][1] for r in records) == list(range(1, tick + 1))

    assert {(r["trigger"], r["outcome"]) for r in records} == {("tick", "ok")}
    decisions = sorted((r["result"] for r in records), key=lambda result: result[1])

    # A trade every fourth tick: the cooldown set at tick t (t s after install)
    # lasts 3.5 s, so ticks t+1..t+3 hold and t+4 trades again.
    assert decisions == [["trade" if tick % 4 == 1 else "hold", tick] for tick in range(1, 13)]
    store = runtime.store(instance.id)
    assert await store.get("trades") == [1, 5, 9]
    assert await store.get("ticks") == 12
    assert await store.get("cooldown") == 9  # set at 9 s, expires at 12.5 s
    runtime.clock.advance(500)
    assert await store.get("cooldown") is None
    assert runtime.executions(instance.id, "activate") == []
