"""``corral tasks`` and ``corral worker``: the queue and who works it."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
from pathlib import Path

import sqlalchemy as sa

from tests.cli.invoke import corral
from tests.support import closed_port


def test_deploy_install_and_a_worker_run_a_chain_of_tasks(db: str, tmp_path: Path) -> None:
    agent = tmp_path / "pager.py"
    agent.write_text(
        "from corral import Agent\n"
        "class Pager(Agent):\n"
        "    async def activate(self, priority):\n"
        "        print(f'activated for {priority}')\n"
        "        await self.run_task(await self.callback(self.page, 1))\n"
        "    async def page(self, n):\n"
        "        await self.set('pages', n)\n"
        "        if n < 5:\n"
        "            await self.run_task(await self.callback(self.page, n + 1))\n"
    )
    code, out, _ = corral("--db", db, "deploy", str(agent), "--json")
    assert code == 0
    assert json.loads(out)["version"] == 1
    code, out, _ = corral("--db", db, "install", "pager", "--priority", "work", "--json")
    instance = json.loads(out)["id"]
    code, _, err = corral("--db", db, "worker", "--until-idle")
    assert code == 0
    assert "6 execution(s) run" in err
    assert corral("--db", db, "state", "get", instance, "pages")[1].strip() == "5"
    code, out, _ = corral("--db", db, "executions", instance, "--json")
    records = json.loads(out)
    assert [r["method"] for r in records].count("page") == 5
    assert {r["outcome"] for r in records} == {"ok"}
    _, out, _ = corral("--db", db, "logs", instance)
    assert "info: activated for work" in out
    _, out, _ = corral("--db", db, "deploy", str(agent), "--json")
    assert json.loads(out)["created"] is False  # same code: same version


def test_a_worker_stops_on_a_database_error_that_waiting_would_not_fix(db: str) -> None:
    assert corral("--db", db, "migrate")[0] == 0
    with contextlib.closing(sqlite3.connect(db.removeprefix("sqlite:///"))) as conn:
        conn.execute("DROP TABLE tasks")  # a schema broken behind Corral's back
    code, _, err = corral("--db", db, "worker")
    assert code == 1
    assert err == (
        "Error: the worker stopped on a database error that waiting would not fix: "
        "OperationalError: no such table: tasks; check the database URL, its user's rights "
        "and the schema (corral migrate), then start the worker again\n"
    )


def test_a_worker_that_cannot_reach_its_database_says_so(postgres_server: str) -> None:
    with closed_port() as port:
        url = sa.make_url(postgres_server).set(port=port).render_as_string(False)
        code, _, err = corral("--db", url, "worker")
    assert code == 1
    assert err.startswith("Error: cannot start the worker: the database is unreachable (")
    assert err.endswith("Connection refused); start it again once the database is up\n")


def test_task_commands_name_what_is_wrong(db: str) -> None:
    code, _, err = corral("--db", db, "tasks", "retry", "99")
    assert code == 1
    assert "there is no dead-lettered task 99 (see corral tasks --dead)" in err
    code, _, err = corral("--db", db, "tasks", "cancel", "x")
    assert code == 2
    assert "usage: corral tasks cancel ID (a task id, a number)" in err
    code, _, err = corral("--db", db, "tasks", "cancel", "7")
    assert code == 1
    assert "there is no pending task 7 (it may have run, or be running now)" in err
    code, _, err = corral("--db", db, "uninstall", "nobody-1")
    assert code == 1
    assert "there is no instance 'nobody-1' (see corral instances)" in err


def test_times_in_json_are_iso_dates_as_in_executions(db: str, tmp_path: Path) -> None:
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    agent = tmp_path / "hello.py"
    agent.write_text(
        "from corral import Agent\nclass A(Agent):\n    def activate(self, p):\n        pass\n"
    )
    assert corral("--db", db, "deploy", str(agent))[0] == 0
    instance = json.loads(corral("--db", db, "install", "hello", "--json")[1])["id"]
    _, out, _ = corral("--db", db, "tasks", instance, "--json")
    [activate] = json.loads(out)
    _, out, _ = corral("--db", db, "instances", "--json")
    [installed] = json.loads(out)
    assert corral("--db", db, "worker", "--until-idle")[0] == 0
    _, out, _ = corral("--db", db, "executions", instance, "--json")
    [executed] = json.loads(out)
    times = [
        activate["run_at"],
        activate["created_at"],
        installed["created_at"],
        executed["started_at"],
    ]
    assert all(before <= dt.datetime.fromisoformat(t) <= dt.datetime.now(dt.UTC) for t in times)
    assert (activate["lease_until"], installed["limits_reset_at"]) == (None, None)
