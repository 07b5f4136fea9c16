"""A tick-driven plugin (seed 003): trades on ticks, with a TTL cooldown between trades."""

from corral import Plugin

COOLDOWN_MS = 5_000


class Momentum(Plugin):
    tick_ms = 2_000

    async def decide(self, ctx):
        ticks = (await ctx.state.get_or_default("ticks", 0)) + 1
        await ctx.state.set("ticks", ticks)
        if await ctx.state.has("cooldown"):
            ctx.log.info("tick %d: cooling down, no trade", ticks)
            return "hold"
        await ctx.state.set_with_ttl("cooldown", True, COOLDOWN_MS)
        trades = (await ctx.state.get_or_default("trades", 0)) + 1
        await ctx.state.set("trades", trades)
        ctx.log.info(
            "tick %d: trade #%d, cooling down for %d s", ticks, trades, COOLDOWN_MS // 1000
        )
        return "trade"
