"""The least ``memory_mb`` with which a fresh sandboxed process runs small executions.

``Limits`` refuses a ``memory_mb`` below its floor (16 MiB, src/corral/sandbox/limits.py):
below some size a process cannot start, and the execution ends in a
``ConnectionResetError`` or a ``memory_limit`` the agent could do nothing about.
This script finds that size. For each ``memory_mb`` it runs, ``--rounds`` times,
each of three methods in a process of its own that has never run the agent (the
first execution pays for loading the agent, as after a deploy):

- ``plain``: returns a number;
- ``stored``: one store ``set`` and one ``get``;
- ``rows``: builds 2,000 small dicts and serialises them to JSON (~140 KB).

It does so twice: with a memory group per process where the host can make one (the
kernel bounds resident memory: the tight case), and with ``RLIMIT_AS`` alone.

Run: ``.venv/bin/python bench/memory_floor.py [--sizes 2,3,4,5,6,8,16] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter

from corral.runtime.tools import store_tools
from corral.sandbox.limits import Limits
from corral.sandbox.zygote import Zygote
from corral.state import open_store

AGENT = """
import json
from corral.sdk import Agent

class Small(Agent):
    def plain(self):
        return 1

    async def stored(self):
        await self.store.set("k", {"a": [1, 2, 3]})
        return await self.store.get("k")

    def rows(self):
        return len(json.dumps([{"i": i, "s": "x" * 50} for i in range(2000)]))
"""
METHODS = ("plain", "stored", "rows")


async def _run(zygote: Zygote, memory_mb: int, method: str) -> str:
    """How one execution in a fresh process with ``memory_mb`` ended."""
    # Built past the floor's check on purpose: this measures below it.
    limits = object.__new__(Limits)
    for name, value in vars(Limits()).items():
        object.__setattr__(limits, name, memory_mb if name == "memory_mb" else value)
    try:
        process = await zygote.spawn(limits)
    except ConnectionError as exc:
        return type(exc).__name__
    try:
        tools = store_tools(open_store(None, "m"))
        result = await process.execute(AGENT, method, [], limits, tools)
        return result.outcome.value
    except ConnectionError as exc:
        return type(exc).__name__
    finally:
        await process.close()


async def main(sizes: list[int], rounds: int) -> None:
    zygote = await Zygote.start()
    groups = zygote.memory_cgroups
    try:
        for label, use_groups in (("memory group + RLIMIT_AS", True), ("RLIMIT_AS only", False)):
            if use_groups and groups is None:
                print(f"{label}: this host cannot make memory groups; skipped")
                continue
            zygote.memory_cgroups = groups if use_groups else None
            print(f"{label}: outcomes of {rounds} fresh processes per method")
            print(f"{'memory_mb':>9}  " + "  ".join(f"{m:<36}" for m in METHODS))
            for size in sizes:
                cells = []
                for method in METHODS:
                    seen = Counter([await _run(zygote, size, method) for _ in range(rounds)])
                    cells.append(", ".join(f"{n} x {outcome}" for outcome, n in seen.most_common()))
                print(f"{size:>9}  " + "  ".join(f"{c:<36}" for c in cells))
    finally:
        zygote.memory_cgroups = groups
        await zygote.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2,3,4,5,6,8,16")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main([int(s) for s in args.sizes.split(",")], args.rounds))
