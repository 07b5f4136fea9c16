"""A source is unique in a priority tree, also where an instance cannot see the
activity that has it: creating with that source is refused, saying so."""

from __future__ import annotations

import pytest

from corral.sdk.operations import Op
from tests.runtime.conftest import Runtime

IMPORTER = """
from corral import Agent, ActivityType

class Importer(Agent):
    async def activate(self, priority):
        try:
            made = await self.tools.plot.create_activity(
                {"type": ActivityType.NOTE, "title": priority, "source": "github:issue:1"}
            )
        except ValueError as exc:
            await self.set("said", str(exc))
        else:
            await self.set("said", made.priority)
"""


@pytest.mark.exercises(Op.PLOT_CREATE)
async def test_a_source_held_outside_the_view_is_refused_naming_the_field(
    runtime: Runtime,
) -> None:
    await runtime.deploy("importer", IMPORTER)
    runtime.executor.plot.add_priority("work/other", now=runtime.executor.now())
    acme = runtime.install("importer", priority="work/acme")
    await runtime.idle()
    other = runtime.install("importer", priority="work/other")
    await runtime.idle()

    assert await runtime.store(acme.id).get("said") == "work/acme"
    assert await runtime.store(other.id).get("said") == (
        "create_activity.source 'github:issue:1' is already the source of an activity "
        "outside this instance's priority 'work/other': a source is unique in the priority "
        "tree 'work'"
    )
    (kept,) = runtime.executor.plot.activities("work", limit=10)
    assert (kept.title, kept.priority) == ("work/acme", "work/acme")
