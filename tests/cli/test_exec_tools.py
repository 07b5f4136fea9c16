"""``corral exec`` of methods that use callbacks and tasks, as its user sees it.

One execution without a worker: callbacks work for as long as it lasts; a task,
which only a worker would run, is refused with a message saying where to run it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from corral.cli import main
from corral.sdk.operations import Op

AGENT = """
from datetime import UTC, datetime, timedelta
from corral import Agent

class Chores(Agent):
    async def greet(self, greeting, name):
        return f"{greeting}, {name}"

    async def callbacks(self):
        hello = await self.callback(self.greet, "world")
        bye = await self.callback("greet", "moon")
        said = [await self.run(hello, "hello"), await self.run(bye, "bye")]
        await self.delete_callback(hello)
        try:
            await self.run(hello, "again")
        except LookupError as exc:
            said.append(str(exc))
        await self.delete_all_callbacks()
        try:
            await self.run(bye, "again")
        except LookupError as exc:
            said.append(type(exc).__name__)
        return said

    async def tidy(self):
        # What a deactivate hook does: nothing is pending here, and that is no error.
        await self.cancel_task("no-such-token")
        await self.cancel_all_tasks()
        await self.cancel_scheduled_task("sync")
        return "tidy"

    async def queue(self, how):
        later = datetime.now(UTC) + timedelta(minutes=5)
        if how == "run_task":
            await self.run_task(self.tidy)
        elif how == "schedule_task":
            await self.schedule_task("sync", self.tidy, later)
        else:
            await self.schedule_recurring("sync", self.tidy, 60_000)

    async def hoard(self):
        return [await self.callback(self.tidy) for _ in range(3)]
"""


def corral(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def agent(tmp_path: Path) -> str:
    path = tmp_path / "chores.py"
    path.write_text(AGENT)
    return str(path)


def exec_json(agent: str, method: str, env: dict[str, str] | None = None) -> tuple[int, Any]:
    code, out, err = corral("exec", agent, method, "--json", env=env)
    assert out, err
    return code, json.loads(out)


@pytest.mark.exercises(
    Op.CALLBACK_CREATE, Op.CALLBACK_GET, Op.CALLBACK_DELETE, Op.CALLBACK_DELETE_ALL
)
def test_exec_makes_runs_and_deletes_callbacks(agent: str) -> None:
    code, record = exec_json(agent, "callbacks")
    assert (code, record["outcome"]) == (0, "ok"), record["error"]
    hello, bye, deleted, all_deleted = record["result"]
    assert (hello, bye, all_deleted) == ("hello, world", "bye, moon", "LookupError")
    assert deleted.startswith("there is no callback 'cb_")
    assert deleted.endswith(
        "in this execution: corral exec keeps the callbacks an execution makes until it "
        "ends, and this one was deleted or made by another"
    )


@pytest.mark.exercises(Op.TASK_CANCEL, Op.TASK_CANCEL_ALL, Op.TASK_CANCEL_SCHEDULED)
def test_exec_cancels_what_is_not_pending_without_an_error(agent: str) -> None:
    code, record = exec_json(agent, "tidy")
    assert (code, record["outcome"], record["result"]) == (0, "ok", "tidy")


@pytest.mark.parametrize(
    "how",
    [
        pytest.param("run_task", marks=pytest.mark.exercises(Op.TASK_RUN)),
        pytest.param("schedule_task", marks=pytest.mark.exercises(Op.TASK_SCHEDULE)),
        pytest.param("schedule_recurring", marks=pytest.mark.exercises(Op.TASK_SCHEDULE_RECURRING)),
    ],
)
def test_exec_refuses_a_task_saying_to_run_the_agent_under_a_worker(agent: str, how: str) -> None:
    code, out, _ = corral("exec", agent, "queue", "--arg", f'"{how}"')
    assert code == 1
    # The table wraps the error; the traceback under it ends with the whole line.
    assert out.rstrip().splitlines()[-1] == (
        f"RuntimeError: {how} needs a worker: corral exec runs one method and no worker, so "
        "nothing was queued; to see the agent's tasks run, run it with corral dev AGENT.py"
    )


@pytest.mark.exercises(Op.CALLBACK_CREATE)
def test_exec_holds_callbacks_to_the_instance_quota(agent: str) -> None:
    code, record = exec_json(agent, "hoard", env={"CORRAL_QUOTAS_CALLBACKS": "2"})
    assert (code, record["outcome"]) == (1, "error")
    assert record["error"]["type"] == "QuotaExceeded"
    assert record["error"]["message"] == (
        "this instance has 2 callbacks, and its quota is 2: delete those it no longer needs "
        "(delete_callback) before making more (nothing was made)"
    )
