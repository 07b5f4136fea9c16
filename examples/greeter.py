"""A small agent to try `corral exec` on: it remembers visitors in its store.

corral exec examples/greeter.py greet --arg '"ann"'      # a throwaway store
corral deploy examples/greeter.py && corral install greeter     # prints its id
corral exec examples/greeter.py greet --arg '"ann"' --instance greeter-XXXXXXXX
# run the last one twice: the count persists in the instance's store
"""

from datetime import UTC, datetime

from corral import Agent


class Greeter(Agent):
    limits = {"requests": 100}  # a greeting needs a handful; fail fast if it loops

    async def greet(self, name: str) -> dict[str, object]:
        visits = await self.store.get_or_default(f"visits:{name}", 0) + 1
        await self.store.set_many({f"visits:{name}": visits, "last_seen": datetime.now(UTC)})
        # A short cooldown: a second greeting within a minute is quieter.
        quiet = await self.store.has(f"cooldown:{name}")
        await self.store.set_with_ttl(f"cooldown:{name}", True, 60_000)
        print(f"greeting {name} (visit {visits})")
        return {
            "message": f"hi {name}" if quiet else f"Hello, {name}!",
            "visits": visits,
            "requests_left": self.budget.requests_left,
        }

    async def visitors(self) -> list[str]:
        return [key.removeprefix("visits:") for key in await self.store.keys("visits:")]
