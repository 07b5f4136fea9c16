"""A recurring digest: the platform re-arms it every interval, whatever each run does."""

from datetime import UTC, datetime

from corral import Agent

INTERVAL_MS = 10_000


class Digest(Agent):
    async def activate(self, priority):
        await self.schedule_recurring("digest", self.send_digest, INTERVAL_MS)
        print(f"digest scheduled every {INTERVAL_MS // 1000} s")

    async def send_digest(self):
        count = (await self.get("digests") or 0) + 1
        await self.set("digests", count)
        print(f"digest #{count} at {datetime.now(UTC):%H:%M:%S}")
        return count
