"""``corral executions`` and ``corral logs``: what happened, and why it failed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.invoke import corral

#: An agent whose every task fails: ``boom`` raises, ``spin`` runs past its timeout.
FAILING = """\
from corral import Agent


class Failing(Agent):
    limits = {"timeout_s": 0.5}

    async def activate(self, priority):
        await self.run_task(await self.callback(self.boom))
        await self.run_task(await self.callback(self.spin))

    def boom(self):
        raise ValueError("the upstream said no")

    def spin(self):
        while True:
            pass
"""

#: Long enough that a table of its instance's id is wider than 80 columns.
NAME = "a-failing-agent-with-a-name-as-long-as-people-write-them"


@pytest.fixture
def failed(db: str, tmp_path: Path) -> str:
    """An instance whose ``boom`` and ``spin`` ran once each under a worker and failed."""
    agent = tmp_path / "failing.py"
    agent.write_text(FAILING)
    assert corral("--db", db, "deploy", str(agent), "--name", NAME)[0] == 0
    code, out, _ = corral("--db", db, "install", NAME, "--json")
    assert code == 0
    # Until idle: the failed tasks wait out their backoff, so each ran once.
    assert corral("--db", db, "worker", "--until-idle")[0] == 0
    return str(json.loads(out)["id"])


def test_logs_say_why_an_execution_failed(db: str, failed: str) -> None:
    code, out, _ = corral("--db", db, "logs", failed)
    assert code == 0
    said = [line.split(" ", 3)[3] for line in out.splitlines()]  # less the date and time
    assert said == [
        "error: ValueError: the upstream said no",
        "error: timeout: the execution ran past its wall-clock timeout and was stopped",
    ]


def test_the_executions_table_has_the_error_and_whole_ids(db: str, failed: str) -> None:
    code, out, _ = corral("--db", db, "executions", failed)
    assert code == 0
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines()]
    rows = [row for row in rows if row]
    # A row's wrapped error goes on over the next lines, whose other cells are empty.
    errors = {}
    for row in rows:
        if row[1]:
            method = row[2]
            errors[method] = row[-1]
        else:
            errors[method] += " " + row[-1]
    assert [row[1] for row in rows if row[1]] == [failed] * 3  # whole, though wider than 80
    assert errors == {
        "spin": "timeout: the execution ran past its wall-clock timeout and was stopped",
        "boom": "ValueError: the upstream said no",
        "activate": "",
    }


def test_an_outcome_is_said_once(db: str, failed: str) -> None:
    code, out, _ = corral("--db", db, "tasks", failed, "--json")
    assert code == 0
    assert {task["method"]: task["last_error"] for task in json.loads(out)} == {
        "boom": "ValueError: the upstream said no",
        "spin": "timeout: the execution ran past its wall-clock timeout and was stopped",
    }


def test_a_workers_traceback_names_the_agent_and_version(db: str, failed: str) -> None:
    code, out, _ = corral("--db", db, "executions", failed, "--json")
    assert code == 0
    [boom] = [r for r in json.loads(out) if r["method"] == "boom"]
    assert boom["error"]["traceback"] == (
        "Traceback (most recent call last):\n"
        f'  File "<{NAME} v1>", line 12, in boom\n'
        '    raise ValueError("the upstream said no")\n'
        "ValueError: the upstream said no\n"
    )
