"""``corral exec`` of methods that use the plot tool: there is no priority to write in.

Activities belong to the priority an instance is installed for, and ``corral exec``
runs the agent without one: a write is refused with a message saying where to run
it, and nothing was written; a read finds nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.sdk.operations import Op
from tests.cli.invoke import corral

AGENT = """
from datetime import UTC, datetime
from corral import Activity, ActivityType, Agent, Note, Uuid

ID = "0190b3a0-0000-7000-8000-000000000001"

class Planner(Agent):
    async def write(self, how):
        plot = self.tools.plot
        if how == "create_activity":
            await plot.create_activity({"type": ActivityType.ACTION, "title": "t"})
        elif how == "create_activities":
            await plot.create_activities([{"type": ActivityType.NOTE}])
        elif how == "update_activity":
            await plot.update_activity(ID, title="t")
        else:
            await plot.add_note(ID, "hi")

    async def read(self):
        plot = self.tools.plot
        return [
            await plot.get_activity(ID),
            await plot.get_activity_by_source("gh:1"),
            await plot.find_activities(type=ActivityType.ACTION, done=False),
        ]

    async def value(self):
        # What an agent may return: an Activity it made itself, shown as JSON.
        when = datetime(2026, 5, 1, tzinfo=UTC)
        note = Note(ID, "hi", "k", None, when, when)
        return Activity(ID, ActivityType.TASK, "t", (note,), done=False, priority="work")
"""


@pytest.fixture
def agent(tmp_path: Path) -> str:
    path = tmp_path / "planner.py"
    path.write_text(AGENT)
    return str(path)


@pytest.mark.parametrize(
    "how",
    [
        pytest.param("create_activity", marks=pytest.mark.exercises(Op.PLOT_CREATE)),
        pytest.param("create_activities", marks=pytest.mark.exercises(Op.PLOT_CREATE_MANY)),
        pytest.param("update_activity", marks=pytest.mark.exercises(Op.PLOT_UPDATE)),
        pytest.param("add_note", marks=pytest.mark.exercises(Op.PLOT_ADD_NOTE)),
    ],
)
def test_exec_refuses_a_write_saying_to_run_the_agent_as_an_instance(agent: str, how: str) -> None:
    code, out, _ = corral("exec", agent, "write", "--arg", f'"{how}"', "--json")
    assert code == 1
    record = json.loads(out)
    assert record["error"]["type"] == "RuntimeError"
    assert record["error"]["message"] == (
        f"{how} needs an installed instance: activities belong to the priority an instance "
        "is installed for, and corral exec runs the agent without one, so nothing was "
        "written; run it with corral dev AGENT.py"
    )


@pytest.mark.exercises(Op.PLOT_GET, Op.PLOT_GET_BY_SOURCE, Op.PLOT_FIND)
def test_exec_reads_find_nothing_without_an_error(agent: str) -> None:
    code, out, _ = corral("exec", agent, "read", "--json")
    record = json.loads(out)
    assert (code, record["outcome"], record["result"]) == (0, "ok", [None, None, []])


def test_exec_shows_an_activity_an_agent_returns(agent: str) -> None:
    code, out, err = corral("exec", agent, "value", "--json")
    assert code == 0, err
    when = "2026-05-01T00:00:00+00:00"
    note = {
        "id": "0190b3a0-0000-7000-8000-000000000001",
        "key": "k",
        "content": "hi",
        "author": None,
        "created_at": when,
        "updated_at": when,
    }
    # The object corral activities --json prints for it, tagged as an activity.
    assert json.loads(out)["result"] == {
        "$activity": {
            "id": "0190b3a0-0000-7000-8000-000000000001",
            "type": "action",
            "title": "t",
            "source": None,
            "start": None,
            "end": None,
            "done": False,
            "meta": None,
            "priority": "work",
            "author": None,
            "created_at": None,
            "updated_at": None,
            "notes": [note],
        }
    }
