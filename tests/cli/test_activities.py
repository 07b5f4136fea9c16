"""``corral activities`` and ``corral priorities``: what operators read of the activities
agents write, on SQLite and PostgreSQL, and one line for every mistake."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from corral import Activity, ActivityType
from corral.config import RuntimeConfig
from corral.plot.service import NO_CAUSE
from corral.plot.tools import InstancePlot
from corral.runtime.services import Services
from corral.state import close_backends
from tests.cli.conftest import GREETER
from tests.cli.invoke import corral
from tests.support import FakeClock

LISTENER = """
from corral import Agent

class Listener(Agent):
    async def on_activity(self, activity, changes):
        await self.set("heard", activity)
        return changes["note"] if changes else activity
"""


@pytest.fixture
def url(sql_url: str) -> Iterator[str]:
    """An empty database of each SQL backend."""
    yield sql_url
    close_backends()


def install(url: str, agent: str, priority: str) -> str:
    code, out, err = corral("--db", url, "install", agent, "--priority", priority, "--json")
    assert code == 0, err
    return str(json.loads(out)["id"])


@pytest.fixture
def acme(url: str) -> str:
    """An instance of examples/greeter.py in priority work/acme."""
    assert corral("--db", url, "deploy", str(GREETER))[0] == 0
    return install(url, "greeter", "work/acme")


def plot_of(url: str, instance: str, priority: str, clock: FakeClock) -> InstancePlot:
    """``self.tools.plot`` of ``instance``, as an execution of it has it, on ``clock``."""
    services = Services(replace(RuntimeConfig(), database_url=url))
    return services.plot.bound(instance, "greeter", priority, NO_CAUSE, clock)


def listed(url: str, *options: str) -> list[dict[str, Any]]:
    code, out, err = corral("--db", url, "activities", "--json", *options)
    assert code == 0, err
    found: list[dict[str, Any]] = json.loads(out)
    return found


def rows(out: str, marker: str) -> list[list[str]]:
    """The cells of the table rows of ``out`` that hold ``marker``."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in out.splitlines()
        if marker in line
    ]


def made(plot: InstancePlot, clock: FakeClock, *titles: str) -> list[Activity]:
    """Activities made one second apart, in the order given."""
    activities = []
    for title in titles:
        clock.advance(1000)
        activities.append(plot.create_activity({"type": ActivityType.ACTION, "title": title}))
    return activities


def test_activities_are_listed_most_recently_changed_first(
    url: str, acme: str, clock: FakeClock
) -> None:
    plot = plot_of(url, acme, "work/acme", clock)
    first, second = made(plot, clock, "first", "second")
    clock.advance(1000)
    third = plot.create_activity(
        {
            "type": ActivityType.EVENT,
            "title": "[urgent] deploy :smile:",
            "source": "calendar:1",
            "meta": {"at": dt.datetime(2026, 1, 2, tzinfo=dt.UTC), "n": 1},
            "notes": [{"content": "agenda", "key": "agenda"}],
        }
    )
    clock.advance(1000)
    plot.add_note(first.id, "picked up", None)  # a change: first is now the newest

    found = listed(url)
    assert [a["id"] for a in found] == [first.id, third.id, second.id]
    assert found[1] == {
        "id": third.id,
        "type": "event",
        "title": "[urgent] deploy :smile:",
        "source": "calendar:1",
        "start": None,
        "end": None,
        "done": None,
        "meta": {"at": {"$datetime": "2026-01-02T00:00:00+00:00"}, "n": 1},
        "priority": "work/acme",
        "author": acme,
        "created_at": third.created_at.isoformat() if third.created_at else None,
        "updated_at": third.created_at.isoformat() if third.created_at else None,
        "notes": [note.to_json() for note in third.notes],
    }
    assert [n["content"] for n in found[0]["notes"]] == ["picked up"]

    code, out, err = corral("--db", url, "activities")
    assert (code, err) == (0, "")
    shown = rows(out, acme)
    assert [row[0] for row in shown] == [first.id, third.id, second.id]
    # An agent's text as it wrote it: neither markup nor emoji codes are read.
    assert shown[1][:8] == [
        third.id,
        "work/acme",
        "event",
        "[urgent] deploy :smile:",
        "calendar:1",
        "-",
        "1",
        acme,
    ]
    assert shown[0][1:8] == ["work/acme", "action", "first", "-", "no", "1", acme]
    assert shown[0][8] == stamp(clock_time(clock))


def test_a_priority_lists_itself_and_the_priorities_under_it(
    url: str, acme: str, clock: FakeClock
) -> None:
    ops = install(url, "greeter", "ops")
    (at_acme,) = made(plot_of(url, acme, "work/acme", clock), clock, "at acme")
    (at_ops,) = made(plot_of(url, ops, "ops", clock), clock, "at ops")

    assert [a["id"] for a in listed(url)] == [at_ops.id, at_acme.id]
    assert [a["id"] for a in listed(url, "--priority", "work")] == [at_acme.id]
    assert [a["id"] for a in listed(url, "--priority", "work/acme")] == [at_acme.id]
    assert [a["id"] for a in listed(url, "--priority", "ops")] == [at_ops.id]

    corral("--db", url, "priorities", "create", "work/other")
    code, out, err = corral("--db", url, "activities", "--priority", "work/other")
    assert (code, err) == (0, "no activities in priority work/other or under it\n")
    assert at_acme.id not in out


def test_more_activities_than_shown_are_said_with_the_command_for_the_next(
    url: str, acme: str, clock: FakeClock
) -> None:
    plot = plot_of(url, acme, "work/acme", clock)
    newest_first = made(plot, clock, *(f"a{n}" for n in range(5)))[::-1]

    code, out, err = corral("--db", url, "activities", "--json", "--limit", "2")
    assert code == 0
    page = json.loads(out)
    assert [a["id"] for a in page] == [a.id for a in newest_first[:2]]
    assert err == (
        "showing the 2 most recently changed activities; more exist: corral activities "
        f"--limit 2 --before {newest_first[1].id} lists the next ones\n"
    )

    code, out, err = corral(
        "--db", url, "activities", "--priority", "work", "--limit", "2",
        "--before", newest_first[1].id,
    )  # fmt: skip
    assert code == 0
    assert [row[0] for row in rows(out, acme)] == [a.id for a in newest_first[2:4]]
    assert err == (
        "showing the 2 most recently changed activities in priority work or under it; more "
        f"exist: corral activities --priority work --limit 2 --before {newest_first[3].id} "
        "lists the next ones\n"
    )

    code, out, err = corral(
        "--db", url, "activities", "--json", "--limit", "2", "--before", newest_first[3].id
    )
    assert (code, err) == (0, "")  # the last page: nothing more to say
    assert [a["id"] for a in json.loads(out)] == [newest_first[4].id]


def test_without_limit_fifty_are_shown_and_the_rest_said(
    url: str, acme: str, clock: FakeClock
) -> None:
    plot = plot_of(url, acme, "work/acme", clock)
    plot.create_activities([{"type": "note", "title": f"n{n}"} for n in range(51)])
    code, out, err = corral("--db", url, "activities", "--json")
    assert code == 0
    assert len(json.loads(out)) == 50
    assert err.startswith("showing the 50 most recently changed activities; more exist: ")
    assert "corral activities --before " in err


def test_show_prints_an_activity_and_its_notes_in_order(
    url: str, acme: str, clock: FakeClock
) -> None:
    plot = plot_of(url, acme, "work/acme", clock)
    activity = plot.create_activity(
        {
            "type": ActivityType.ACTION,
            "title": "Fix the login",
            "source": "github:issue:7",
            "start": dt.date(2026, 3, 1),
            "notes": [{"content": "reported\nby two users", "key": "report"}],
        }
    )
    clock.advance(60_000)
    plot.add_note(activity.id, "a second note", None)
    clock.advance(60_000)
    plot.add_note(activity.id, "reported by three users", "report")  # edited by key
    shown = plot.get_activity(activity.id)
    assert shown is not None
    report, second = shown.notes

    code, out, err = corral("--db", url, "activities", "show", activity.id)
    assert (code, err) == (0, "")
    head, *notes = out.split("\n\n")
    assert head.splitlines() == [
        f"id:       {activity.id}",
        "type:     action",
        "title:    Fix the login",
        "priority: work/acme",
        "source:   github:issue:7",
        "done:     no",
        "start:    2026-03-01 (all day)",
        "end:      -",
        "meta:     -",
        f"author:   {acme}",
        f"created:  {stamp(activity.created_at)}",
        f"updated:  {stamp(shown.updated_at)}",
        "notes:    2",
    ]
    assert notes == [
        f"1. note {report.id}, key report, by {acme} at {stamp(report.created_at)}, "
        f"edited {stamp(report.updated_at)}\n   reported by three users",
        f"2. note {second.id}, by {acme} at {stamp(second.created_at)}\n   a second note\n",
    ]

    code, out, _ = corral("--db", url, "activities", "show", activity.id, "--json")
    assert code == 0
    assert json.loads(out) == listed(url)[0]
    assert [n["content"] for n in json.loads(out)["notes"]] == [
        "reported by three users",
        "a second note",
    ]


def clock_time(clock: FakeClock) -> dt.datetime:
    return dt.datetime.fromtimestamp(clock.now_ms / 1000, dt.UTC)


def stamp(at: dt.datetime | None) -> str:
    assert at is not None
    return at.strftime("%Y-%m-%d %H:%M:%S")


def test_priorities_lists_instances_and_activities_and_create_makes_the_lineage(
    url: str, acme: str, clock: FakeClock
) -> None:
    made(plot_of(url, acme, "work/acme", clock), clock, "one", "two")
    code, out, err = corral("--db", url, "priorities", "create", "ops/oncall")
    assert (code, out, err) == (0, "ops/oncall\n", "")

    code, out, _ = corral("--db", url, "priorities", "--json")
    assert code == 0
    before = json.loads(out)
    assert [(p["name"], p["instances"], p["activities"]) for p in before] == [
        ("ops", 0, 0),
        ("ops/oncall", 0, 0),
        ("work", 0, 0),  # the activities of work/acme count there, not here
        ("work/acme", 1, 2),
    ]
    # Made again: nothing changes, not even when it was made.
    assert corral("--db", url, "priorities", "create", "ops/oncall") == (0, "ops/oncall\n", "")
    assert json.loads(corral("--db", url, "priorities", "--json")[1]) == before

    code, out, _ = corral("--db", url, "priorities")
    assert code == 0
    assert [row[:3] for row in rows(out, "work/acme")] == [["work/acme", "1", "2"]]


def test_activities_of_a_new_database_say_there_are_none(db: str) -> None:
    code, out, err = corral("--db", db, "activities")
    assert (code, err) == (0, "no activities\n")
    assert "id" in out  # the table's head, and no row
    assert corral("--db", db, "activities", "--json") == (0, "[]\n", "")
    assert corral("--db", db, "priorities", "--json") == (0, "[]\n", "")


RULE = (
    "is not a priority name: use letters, digits, '_', '.' and '-', nested with '/' "
    "(such as 'work/acme'), at most 8 levels and 200 characters"
)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["activities", "--priority", "nope"],
            "there is no priority 'nope' (see corral priorities)",
        ),
        (
            ["activities", "--priority", "work acme"],
            f"--priority 'work acme' {RULE} (see corral activities --help)",
        ),
        (
            ["activities", "show", "42"],
            "an activity id must be a UUID such as Uuid.generate() gives, got '42' "
            "(see corral activities)",
        ),
        (
            ["activities", "show", "0190a8a0-0000-7000-8000-000000000000"],
            "there is no activity '0190a8a0-0000-7000-8000-000000000000' (see corral activities)",
        ),
        (
            ["activities", "--before", "0190a8a0-0000-7000-8000-000000000000"],
            "there is no activity '0190a8a0-0000-7000-8000-000000000000' (see corral activities)",
        ),
        (
            ["activities", "show"],
            "usage: corral activities show ID (an activity id, a UUID) "
            "(see corral activities --help)",
        ),
        (
            ["activities", "show", "x", "--limit", "3"],
            "--limit: only for listing activities; usage: corral activities show ID "
            "(an activity id, a UUID) (see corral activities --help)",
        ),
        (
            ["activities", "work"],
            "unexpected 'work': corral activities lists activities (options only), and "
            "corral activities show ID shows one (see corral activities --help)",
        ),
        (
            ["activities", "--limit", "0"],
            "Invalid value for '--limit': 0 is not in the range 1<=x<=1000 "
            "(see corral activities --help)",
        ),
        (
            ["priorities", "create", "work//acme"],
            f"priority 'work//acme' {RULE} (see corral priorities --help)",
        ),
        (
            ["priorities", "create"],
            "usage: corral priorities create NAME (such as work or work/acme) "
            "(see corral priorities --help)",
        ),
        (
            ["priorities", "work"],
            "unexpected 'work': corral priorities lists them, and corral priorities create "
            "NAME makes one (see corral priorities --help)",
        ),
        (
            ["install", "greeter", "--priority", "work/acme corp"],
            f"--priority 'work/acme corp' {RULE} (see corral install --help)",
        ),
        (["dev", ".", "--priority", "-work"], f"--priority '-work' {RULE} (see corral dev --help)"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_mistakes_are_one_line(db: str, args: list[str], message: str) -> None:
    code, out, err = corral("--db", db, *args)
    assert code != 0
    assert (out, err) == ("", f"Error: {message}\n")


def test_a_malformed_install_priority_installs_nothing(db: str) -> None:
    assert corral("--db", db, "deploy", str(GREETER))[0] == 0
    assert corral("--db", db, "install", "greeter", "--priority", "a b")[0] == 2
    assert corral("--db", db, "instances", "--json") == (0, "[]\n", "")
    assert corral("--db", db, "priorities", "--json") == (0, "[]\n", "")


def test_activities_in_event_tasks_records_and_state_print_as_tagged_json(
    url: str, acme: str, clock: FakeClock, tmp_path: Path
) -> None:
    """An event's task carries the activity, an agent may return one or keep one in its
    store: each prints as ``{"$activity": ...}``, as ``corral activities --json`` has it."""
    agent = tmp_path / "listener.py"
    agent.write_text(LISTENER)
    assert corral("--db", url, "deploy", str(agent))[0] == 0
    listener = install(url, "listener", "work")
    assert corral("--db", url, "worker", "--until-idle")[0] == 0  # the activates

    plot = plot_of(url, acme, "work/acme", clock)
    (activity,) = made(plot, clock, "heard of")
    code, out, err = corral("--db", url, "tasks", listener, "--json")
    assert code == 0, err
    (event,) = json.loads(out)
    assert event["trigger"] == "activity"
    assert event["args"][0] == {"$activity": listed(url)[0]}
    assert event["args"][1] is None  # a new activity

    assert corral("--db", url, "worker", "--until-idle")[0] == 0
    code, out, err = corral("--db", url, "state", "get", listener, "heard", "--json")
    assert code == 0, err
    assert json.loads(out) == {"$activity": listed(url)[0]}

    clock.advance(1000)
    note = plot.add_note(activity.id, "seen", "seen")
    assert corral("--db", url, "worker", "--until-idle")[0] == 0
    code, out, _ = corral("--db", url, "executions", listener, "--limit", "1", "--json")
    assert code == 0
    (record,) = json.loads(out)
    assert (record["trigger"], record["outcome"]) == ("activity", "ok")
    assert record["result"] == {"$note": note.to_json()}
