"""``self.tools.plot`` as an agent author relies on it (SPEC §1.4), on each database.

Real agents in the sandbox call every method of the plot tool through the worker
(``tests.runtime.plot_support``): activities are created, upserted by source,
updated, found and noted within the instance's priority and those under it, bad
input is refused with a message naming the field, and nothing outside the
instance's view can be read or changed. The events these changes cause are in
test_plot_events.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from dataclasses import replace

import pytest

from corral import Activity, ActivityType, Note, Uuid, codec
from corral.activities import MAX_BATCH
from corral.config import RuntimeConfig
from corral.quotas import Quotas
from corral.sdk.operations import Op
from tests.runtime.conftest import Runtime, RuntimeFactory
from tests.runtime.plot_support import QUIET, at, do, enqueue, heard, plotter, titles
from tests.support import assert_identical

MINUTE_MS = 60_000


def all_activities(runtime: Runtime, priority: str | None = None) -> list[Activity]:
    """Every activity, as an operator lists them."""
    return runtime.services.plot.activities(priority, limit=10_000)


@pytest.mark.exercises(Op.PLOT_CREATE, Op.PLOT_GET)
async def test_create_activity_returns_it_as_stored_and_get_activity_reads_it_back(
    runtime: Runtime,
) -> None:
    instance = await plotter(runtime, "work")
    chosen = Uuid.generate()
    start = dt.datetime(2026, 5, 1, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    meta = {"labels": ("ci", "bug"), "points": 3, "due": dt.date(2026, 5, 2), "ids": {1, 2}}
    out = await do(
        runtime,
        instance,
        """plot.create_activity({
            "id": given["id"], "type": ActivityType.TASK, "title": "Fix the build",
            "source": "github:issue:1", "start": given["start"], "end": given["end"],
            "meta": given["meta"],
            "notes": [{"content": "**first**", "key": "c1"}, {"content": "second"}],
        })""",
        "plot.get_activity(given['id'])",
        "plot.create_activity({'type': ActivityType.NOTE, 'title': 'no id'})",
        "plot.get_activity(Uuid.generate())",
        "plot.get_activity('not-an-id')",
        # An Activity and a Note are values: the agent stores them and reads them back.
        "self.set('kept', [out[0], out[0].notes[0]])",
        "self.get('kept')",
        "out[-1] == [out[0], out[0].notes[0]] and type(out[-1][0]) is Activity",
        "out[-2][0].type is ActivityType.ACTION and type(out[-2][1]) is Note",
        "out[0].to_json()['meta']",
        id=chosen,
        start=start,
        end=start + dt.timedelta(hours=1),
        meta=meta,
    )
    made, got, plain, missing, malformed, _, kept, equal, typed, shown = out
    now = at(runtime.clock.now_ms)
    assert isinstance(made, Activity)
    assert (made.id, made.type, made.title, made.source) == (
        chosen,
        ActivityType.ACTION,
        "Fix the build",
        "github:issue:1",
    )
    assert (made.start, made.end, made.done, made.priority, made.author) == (
        start,
        start + dt.timedelta(hours=1),
        False,  # an ACTION is not done until it is
        "work",
        instance,
    )
    assert_identical(meta, made.meta)
    assert (made.created_at, made.updated_at) == (now, now)
    first, second = made.notes
    assert (first.content, first.key, second.content, second.key) == (
        "**first**",
        "c1",
        "second",
        None,
    )
    assert all(n.author == instance and n.created_at == n.updated_at == now for n in made.notes)
    assert all(uuid.UUID(n.id).version == 7 for n in made.notes)
    assert_identical(made, got)
    assert_identical(got, all_activities(runtime)[1])  # as the operator sees it too

    assert uuid.UUID(plain.id).version == 7
    assert (plain.type, plain.title, plain.done, plain.notes, plain.source, plain.meta) == (
        ActivityType.NOTE,
        "no id",
        None,  # only an ACTION can be done
        (),
        None,
        None,
    )
    assert missing is None
    assert malformed == (
        "ValueError: get_activity: id must be a UUID such as Uuid.generate() gives, got 'not-an-id'"
    )
    assert_identical([made, made.notes[0]], kept)
    assert_identical([made, made.notes[0]], await runtime.store(instance).get("kept"))
    assert equal is True
    assert typed is True
    assert shown == {
        "labels": {"$tuple": ["ci", "bug"]},
        "points": 3,
        "due": {"$date": "2026-05-02"},
        "ids": {"$set": [1, 2]},
    }


@pytest.mark.exercises(Op.PLOT_CREATE, Op.PLOT_GET_BY_SOURCE)
async def test_get_activity_by_source_finds_it_in_the_priority_and_under_it(
    runtime: Runtime,
) -> None:
    work = await plotter(runtime, "work")
    acme = await plotter(runtime, "work/acme")
    (made,) = await do(runtime, acme, "plot.create_activity({'type': 'event', 'source': 'cal:1'})")
    (mine,) = await do(runtime, work, "plot.create_activity({'type': 'note', 'source': 'wiki:1'})")
    found = await do(
        runtime,
        work,
        "plot.get_activity_by_source('cal:1')",
        "plot.get_activity_by_source('cal:2')",
        "plot.get_activity_by_source('')",
        "plot.get_activity_by_source(5)",
    )
    assert found == [
        made,
        None,
        "ValueError: get_activity_by_source: source must be a non-empty str, got ''",
        "ValueError: get_activity_by_source: source must be a non-empty str, got 5",
    ]
    assert made.priority == "work/acme"
    # work/acme does not see what is in work, above it.
    assert await do(
        runtime, acme, "plot.get_activity_by_source('wiki:1')", "plot.get_activity(given['id'])",
        id=mine.id,
    ) == [None, None]  # fmt: skip


@pytest.mark.exercises(Op.PLOT_CREATE, Op.PLOT_FIND, Op.PLOT_UPDATE)
async def test_find_activities_newest_first_by_each_filter(runtime: Runtime) -> None:
    work = await plotter(runtime, "work")
    acme = await plotter(runtime, "work/acme")
    made: list[Activity] = []
    for call in (
        "{'type': ActivityType.ACTION, 'title': 'a1', 'source': 'gh:issue:1'}",
        "{'type': ActivityType.NOTE, 'title': 'a2', 'source': 'gh:pr:2'}",
        "{'type': ActivityType.EVENT, 'title': 'a3'}",
        "{'type': ActivityType.TASK, 'title': 'a4', 'done': True, 'source': 'jira:3', "
        "'priority': 'work/acme'}",
    ):
        runtime.clock.advance(MINUTE_MS)
        made += await do(runtime, work, f"plot.create_activity({call})")
    assert titles(made) == ["a1", "a2", "a3", "a4"]
    third = at(runtime.clock.now_ms - MINUTE_MS)
    found = await do(
        runtime,
        work,
        "plot.find_activities()",
        "plot.find_activities(type=ActivityType.ACTION)",
        "plot.find_activities(type=ActivityType.TASK)",
        "plot.find_activities(type='event')",
        "plot.find_activities(done=True)",
        "plot.find_activities(done=False)",
        "plot.find_activities(source_prefix='gh:')",
        "plot.find_activities(source_prefix='gh:issue:')",
        "plot.find_activities(since=given['third'])",
        "plot.find_activities(limit=2)",
        "plot.find_activities(type=ActivityType.ACTION, done=False, source_prefix='gh')",
        "plot.find_activities(source_prefix='nothing')",
        third=third,
    )
    assert [titles(f) for f in found] == [
        ["a4", "a3", "a2", "a1"],
        ["a4", "a1"],
        ["a4", "a1"],
        ["a3"],
        ["a4"],
        ["a1"],  # a NOTE or an EVENT is neither done nor not done
        ["a2", "a1"],
        ["a1"],
        ["a4", "a3"],
        ["a4", "a3"],
        ["a1"],
        [],
    ]
    assert_identical(made[::-1], found[0])
    assert [titles(f) for f in await do(runtime, acme, "plot.find_activities()")] == [["a4"]]

    runtime.clock.advance(MINUTE_MS)  # a change makes an activity the newest
    await do(runtime, work, "plot.update_activity(given['id'], title='a1!')", id=made[0].id)
    (newest,) = await do(runtime, work, "plot.find_activities(limit=1)")
    assert titles(newest) == ["a1!"]

    refused = await do(
        runtime,
        work,
        "plot.find_activities(limit=0)",
        "plot.find_activities(limit=101)",
        "plot.find_activities(limit='5')",
        "plot.find_activities(done='yes')",
        "plot.find_activities(since=dt.datetime(2026, 1, 1))",
        "plot.find_activities(since='2026-01-01')",
        "plot.find_activities(type='chore')",
        "plot.find_activities(source_prefix='')",
    )
    assert refused == [
        "ValueError: find_activities: limit must be a whole number from 1 to 100",
        "ValueError: find_activities: limit must be a whole number from 1 to 100",
        "ValueError: find_activities: limit must be a whole number from 1 to 100",
        "ValueError: find_activities: done must be True, False or None, got 'yes'",
        "ValueError: find_activities: since must be a timezone-aware datetime or None",
        "ValueError: find_activities: since must be a timezone-aware datetime or None",
        "ValueError: find_activities: type must be ActivityType.ACTION, ActivityType.EVENT or "
        "ActivityType.NOTE (TASK is ACTION), got 'chore'",
        "ValueError: find_activities: source_prefix must be a non-empty str or None",
    ]

    # A prefix is text, not a pattern ('%' and '_' are letters like any other).
    await do(
        runtime,
        work,
        "plot.create_activities([{'type': 'note', 'source': s} for s in given['sources']])",
        sources=["a%b", "aXb", "a_c", "A%b", "é%1"],
    )
    found = await do(
        runtime,
        work,
        "plot.find_activities(source_prefix='a%')",
        "plot.find_activities(source_prefix='a_')",
        "plot.find_activities(source_prefix='é')",
    )
    assert [sorted(a.source for a in f) for f in found] == [["a%b"], ["a_c"], ["é%1"]]


@pytest.mark.exercises(Op.PLOT_CREATE, Op.PLOT_UPDATE, Op.PLOT_GET)
async def test_update_activity_changes_only_the_fields_given(runtime: Runtime) -> None:
    work = await plotter(runtime, "work")
    await plotter(runtime, "work/acme")  # the priority exists
    start = dt.datetime(2026, 5, 1, 9, tzinfo=dt.UTC)
    (made,) = await do(
        runtime,
        work,
        "plot.create_activity({'type': 'note', 'title': 't', 'source': 's', 'start': "
        "given['start'], 'meta': {'a': 1}, 'notes': [{'content': 'n'}]})",
        start=start,
    )
    runtime.clock.advance(MINUTE_MS)
    out = await do(
        runtime,
        work,
        "plot.update_activity(given['id'], title='renamed')",
        "plot.update_activity(given['id'], type=ActivityType.TASK)",
        "plot.update_activity(given['id'], done=True)",
        "plot.update_activity(given['id'], meta=None, end=given['end'])",
        "plot.update_activity(given['id'], priority='work/acme')",
        "plot.get_activity(given['id'])",
        id=made.id,
        end=start + dt.timedelta(days=1),
    )
    renamed, action, done, cleared, moved, got = out
    now = at(runtime.clock.now_ms)
    assert renamed == replace(made, title="renamed", updated_at=now)
    assert action == replace(renamed, type=ActivityType.ACTION, done=False)
    assert done == replace(action, done=True)
    assert cleared == replace(done, meta=None, end=start + dt.timedelta(days=1))
    assert moved == replace(cleared, priority="work/acme")
    assert_identical(moved, got)
    assert (got.created_at, got.author, got.source, got.notes) == (
        made.created_at,
        work,
        "s",
        made.notes,
    )

    refused = await do(
        runtime,
        work,
        "plot.update_activity(given['id'], source='t')",
        "plot.update_activity(given['id'], notes=[])",
        "plot.update_activity(given['id'], author='me')",
        "plot.update_activity(given['id'], colour='red')",
        "plot.update_activity(given['id'], title=None)",
        "plot.update_activity(given['id'], type=ActivityType.NOTE, done=True)",
        "plot.update_activity(given['id'], end=given['early'])",
        "plot.update_activity(given['id'], priority='home')",
        "plot.update_activity(given['id'], priority='work/acme/new')",
        "plot.update_activity(given['missing'], title='x')",
        "plot.update_activity('nope', title='x')",
        "plot.update_activity(given['id'], type=ActivityType.NOTE)",
        id=made.id,
        early=start - dt.timedelta(days=1),
        missing=(missing := Uuid.generate()),
    )
    assert refused[:11] == [
        "ValueError: update_activity: 'source' cannot be changed: a source is an activity's "
        "external identity and never changes",
        "ValueError: update_activity: 'notes' cannot be changed: add notes with "
        "add_note(activity_id, content, key=...)",
        "ValueError: update_activity: 'author' cannot be changed: author is set by Corral",
        "ValueError: update_activity: unknown field 'colour'; the fields are type, title, "
        "start, end, done, meta, priority",
        "ValueError: update_activity.title must be a str of at most 1000 characters, got None",
        "ValueError: update_activity.done: only an ACTION can be done; this is a NOTE",
        "ValueError: update_activity.end (2026-04-30 09:00:00+00:00) is before its start "
        "(2026-05-01 09:00:00+00:00)",
        "ValueError: update_activity.priority 'home' is outside this instance's priority 'work'",
        "ValueError: there is no priority 'work/acme/new': the operator creates it with "
        "corral priorities create work/acme/new",
        f"LookupError: update_activity: there is no activity {missing} in priority 'work' or "
        "under it",
        "ValueError: update_activity: id must be a UUID such as Uuid.generate() gives, got 'nope'",
    ]
    # An ACTION made a NOTE is no longer done or not: it has no done at all.
    assert (refused[11].type, refused[11].done) == (ActivityType.NOTE, None)


@pytest.mark.exercises(Op.PLOT_CREATE, Op.PLOT_ADD_NOTE, Op.PLOT_GET)
async def test_add_note_adds_a_note_or_updates_the_one_with_its_key(runtime: Runtime) -> None:
    work = await plotter(runtime, "work")
    (made,) = await do(runtime, work, "plot.create_activity({'type': 'action', 'title': 't'})")
    runtime.clock.advance(MINUTE_MS)
    first = at(runtime.clock.now_ms)
    plain, again, keyed = await do(
        runtime,
        work,
        "plot.add_note(given['id'], 'looks **good**')",
        "plot.add_note(given['id'], 'looks **good**')",  # the same content: that note
        "plot.add_note(given['id'], 'build: red', key='ci')",
        id=made.id,
    )
    assert isinstance(plain, Note)
    assert (plain.content, plain.key, plain.author, plain.created_at) == (
        "looks **good**",
        None,
        work,
        first,
    )
    assert again == plain
    assert (keyed.content, keyed.key) == ("build: red", "ci")

    runtime.clock.advance(MINUTE_MS)
    replaced, noted = await do(
        runtime,
        work,
        "plot.add_note(given['id'], 'build: green', key='ci')",
        "plot.get_activity(given['id'])",
        id=made.id,
    )
    assert replaced == replace(keyed, content="build: green", updated_at=at(runtime.clock.now_ms))
    assert noted.notes == (plain, replaced)  # in the order they were added
    assert noted.updated_at == at(runtime.clock.now_ms)

    refused = await do(
        runtime,
        work,
        "plot.add_note(given['id'], 5)",
        "plot.add_note(given['id'], 'c', key='k' * 201)",
        "plot.add_note(given['id'], 'c', key=5)",
        "plot.add_note(given['missing'], 'c')",
        "plot.add_note('nope', 'c')",
        id=made.id,
        missing=(missing := Uuid.generate()),
    )
    assert refused == [
        "ValueError: add_note: content must be a str (markdown), got int",
        f"ValueError: add_note: key must be a str of at most 200 characters or None, got "
        f"{repr('k' * 201)[:57]}...",
        "ValueError: add_note: key must be a str of at most 200 characters or None, got 5",
        f"LookupError: add_note: there is no activity {missing} in priority 'work' or under it",
        "ValueError: add_note: activity_id must be a UUID such as Uuid.generate() gives, got "
        "'nope'",
    ]


IMPORT = "plot.create_activities(given['batch'])"


@pytest.mark.exercises(Op.PLOT_CREATE_MANY, Op.PLOT_CREATE, Op.PLOT_FIND)
async def test_creating_by_an_existing_source_updates_that_activity(runtime: Runtime) -> None:
    work = await plotter(runtime, "work")
    other = await plotter(runtime, "work")
    acme = await plotter(runtime, "work/acme")
    batch = [
        {"type": "action", "title": f"issue {n}", "source": f"gh:{n}",
         "notes": [{"content": f"opened {n}"}, {"content": "labels: bug", "key": "labels"}]}
        for n in range(3)
    ]  # fmt: skip
    (made,) = await do(runtime, work, IMPORT, batch=batch)
    runtime.clock.advance(MINUTE_MS)
    # The same import again, by this instance or another one of the tree: no change.
    (same,) = await do(runtime, work, IMPORT, batch=batch)
    (also,) = await do(runtime, other, IMPORT, batch=batch)
    assert_identical(made, same)
    assert_identical(made, also)

    # Only what differs changes: a title, a note by key, a new note; the rest stays.
    batch[1] = {"type": "action", "source": "gh:1", "title": "issue 1 (renamed)",
                "notes": [{"content": "labels: bug, ci", "key": "labels"},
                          {"content": "closed"}]}  # fmt: skip
    (changed,) = await do(runtime, other, IMPORT, batch=batch)
    now = at(runtime.clock.now_ms)
    assert (changed[0], changed[2]) == (made[0], made[2])
    one = changed[1]
    assert (one.id, one.title, one.author, one.updated_at) == (
        made[1].id,
        "issue 1 (renamed)",
        work,  # the author is who created it
        now,
    )
    opened, labels, closed = one.notes
    assert opened == made[1].notes[0]
    assert labels == replace(made[1].notes[1], content="labels: bug, ci", updated_at=now)
    assert (closed.content, closed.author) == ("closed", other)

    # An id names the activity as well as its source does; work/acme, under work,
    # upserts in the same tree.
    in_acme, by_source = await do(
        runtime,
        acme,
        "plot.create_activity({'type': 'event', 'id': given['id'], 'title': 'x', "
        "'priority': 'work/acme'})",
        "plot.create_activity({'type': 'event', 'source': 'gh:acme', 'title': 'y'})",
        id=(chosen := Uuid.generate()),
    )
    again = await do(
        runtime,
        work,
        "plot.create_activity({'type': 'event', 'id': given['id'], 'title': 'x2'})",
        "plot.create_activity({'type': 'event', 'source': 'gh:acme', 'meta': {'k': 1}})",
        id=chosen,
    )
    assert (in_acme.id, in_acme.priority) == (chosen, "work/acme")
    assert (again[0].id, again[0].title, again[0].priority) == (chosen, "x2", "work/acme")
    assert (again[1].id, again[1].title, again[1].meta) == (by_source.id, "y", {"k": 1})
    assert len(all_activities(runtime)) == 5
    (found,) = await do(runtime, work, "plot.find_activities(source_prefix='gh:')")
    assert sorted(a.source for a in found) == ["gh:0", "gh:1", "gh:2", "gh:acme"]


@pytest.mark.exercises(Op.PLOT_CREATE_MANY)
async def test_a_batch_with_one_bad_activity_creates_nothing(runtime: Runtime) -> None:
    work = await plotter(runtime, "work")
    listener = await plotter(runtime, "work")
    good = [{"type": "note", "title": f"n{n}", "source": f"s:{n}"} for n in range(3)]
    chosen = Uuid.generate()
    for bad, message in [
        # Caught as the batch is read...
        ({"type": "note", "title": 5},
         "activities[2].title must be a str of at most 1000 characters, got 5"),
        ({"type": "note", "colour": "red"},
         "activities[2]: unknown field 'colour'; the fields are id, type, title, notes, "
         "source, start, end, done, meta, priority"),
        ({"type": "note", "source": "s:0"},
         "activities[2].source 's:0' repeats activities[0]'s: a batch names each activity once"),
        ({"type": "note", "id": chosen, "notes": [{"content": "c", "id": chosen}]},
         f"activities[3].notes: note id {chosen} is also given in activities[2]: each note "
         "needs its own id"),
        # ... or only once the whole activity is known, inside the transaction.
        ({"type": "note", "done": False},
         "activities[2].done: only an ACTION can be done; this is a NOTE"),
        ({"type": "note", "start": dt.date(2026, 5, 2), "end": dt.date(2026, 5, 1)},
         "activities[2].end (2026-05-01) is before its start (2026-05-02)"),
        ({"type": "note", "priority": "work/nowhere"},
         "there is no priority 'work/nowhere': the operator creates it with corral priorities "
         "create work/nowhere"),
    ]:  # fmt: skip
        last = {**good[2], "notes": [{"content": "c", "id": chosen}]}
        out = await do(runtime, work, IMPORT, batch=[*good[:2], bad, last])
        assert out == [f"ValueError: {message}"]
    assert all_activities(runtime) == []
    # Nothing was written, so nothing was announced.
    assert await heard(runtime, listener) == []
    assert runtime.tasks(listener) == []
    # The same batch, good, is written whole.
    (made,) = await do(runtime, work, IMPORT, batch=good)
    assert titles(made) == ["n0", "n1", "n2"]
    assert sorted(titles(all_activities(runtime))) == ["n0", "n1", "n2"]
    assert len(await heard(runtime, listener)) == 3

    refused = await do(
        runtime,
        work,
        "plot.create_activities({'type': 'note'})",
        "plot.create_activities([{'type': 'note', 'id': given['id']}, "
        "{'type': 'note', 'source': 's:0'}])",
        id=made[0].id,
    )
    assert refused == [
        "ValueError: create_activities takes a list of activity dicts, got dict",
        f"ValueError: activities[1] and activities[0] name the same activity ({made[0].id}), "
        "one by id and one by source: a batch names each once",
    ]


@pytest.mark.exercises(Op.PLOT_CREATE, Op.PLOT_CREATE_MANY)
async def test_notes_sent_again_are_the_activity_s_own_by_id(runtime: Runtime) -> None:
    # An agent that mirrors another system sends what it has, notes and all: the
    # notes it read from the activity are that activity's, and a note it names by
    # id is that note, whatever the others say.
    work = await plotter(runtime, "work")
    (made,) = await do(
        runtime,
        work,
        "plot.create_activity({'type': 'action', 'source': 'gh:1', 'title': 't', "
        "'notes': [{'content': 'a', 'key': 'k'}, {'content': 'b'}]})",
    )
    runtime.clock.advance(MINUTE_MS)
    out = await do(
        runtime,
        work,
        "plot.create_activity({'type': 'action', 'source': 'gh:1', "
        "'notes': list(given['a'].notes)})",
        "plot.create_activity({'type': 'action', 'source': 'gh:1', 'notes': "
        "[{'id': n.id, 'content': n.content} for n in given['a'].notes]})",
        "plot.create_activities([{'type': 'action', 'id': given['a'].id, 'notes': "
        "list(given['a'].notes)}])",
        a=made,
    )
    assert out == [made, made, [made]]

    # Comment 2 edited to say what comment 1 says is still comment 2, edited.
    (edited,) = await do(
        runtime,
        work,
        "plot.create_activity({'type': 'action', 'source': 'gh:1', "
        "'notes': [{'id': given['b'], 'content': 'a'}]})",
        b=made.notes[1].id,
    )
    now = at(runtime.clock.now_ms)
    b = replace(made.notes[1], content="a", updated_at=now)
    assert edited == replace(made, notes=(made.notes[0], b), updated_at=now)


def over_32_kib(size: int, call: str = "create_activity") -> str:
    return (
        f"ValueError: {call}: the activity would hold {size:,} bytes (title, meta and notes), "
        "over the 32,768 an activity may: keep large content elsewhere and link to it"
    )


@pytest.mark.exercises(Op.PLOT_CREATE, Op.PLOT_CREATE_MANY, Op.PLOT_ADD_NOTE)
async def test_what_an_activity_and_a_call_may_hold_is_bounded(runtime: Runtime) -> None:
    work = await plotter(runtime, "work")
    blob = {"blob": "x" * 33_000}
    fits = {"blob": "x" * 30_000}
    (made,) = await do(runtime, work, "plot.create_activity({'type': 'note', 'title': 'notes'})")
    out = await do(
        runtime,
        work,
        "plot.create_activity({'type': 'note', 'meta': given['blob']})",
        "plot.create_activity({'type': 'note', 'title': 'x' * 1001})",
        "plot.create_activity({'type': 'note', 'title': 'x' * 1000})",
        "plot.create_activities([{'type': 'note'}] * 5001)",
        "plot.create_activity({'type': 'note', 'priority': 'work//acme'})",
        # A note counts its content, key and author, and what its id and times take.
        "plot.add_note(given['id'], 'n' * 10_000, key='k1')",
        "plot.add_note(given['id'], 'n' * 10_000, key='k2')",
        "plot.add_note(given['id'], 'n' * 10_000, key='k3')",
        "plot.add_note(given['id'], 'n' * 10_000, key='k4')",
        # Each of these fits, but not the answer, which the sandbox's frame bounds.
        "plot.create_activities([{'type': 'note', 'meta': given['fits']}] * 110)",
        blob=blob,
        fits=fits,
        id=made.id,
    )
    note = 10_000 + 2 + len(work) + 128
    answer = 110 * (len(codec.encode(fits)) + 600)  # what an activity costs beyond its size
    assert [o if isinstance(o, str) else type(o).__name__ for o in out] == [
        over_32_kib(len(codec.encode(blob))),
        "ValueError: create_activity.title must be a str of at most 1000 characters, got "
        f"{repr('x' * 1001)[:57]}...",
        "Activity",
        "ValueError: create_activities takes at most 5,000 activities in one call, got 5,001: "
        "split the batch",
        "ValueError: create_activity.priority 'work//acme' is not a priority name: use letters, "
        "digits, '_', '.' and '-', nested with '/' (such as 'work/acme'), at most 8 levels and "
        "200 characters",
        "Note",
        "Note",
        "Note",
        over_32_kib(len("notes") + 1 + 4 * note, "add_note"),  # meta None is one byte
        f"ValueError: create_activities: the activities of this call hold about {answer:,} "
        "bytes, more than one answer may carry (3,145,728): nothing was created; send fewer at "
        "once",
    ]
    assert sorted(titles(all_activities(runtime))) == ["notes", "x" * 1000]
    with pytest.raises(ValueError, match=r"^--priority 'Work Stuff' is not a priority name: "):
        runtime.install("plotter", priority="Work Stuff")


@pytest.mark.exercises(Op.PLOT_CREATE_MANY, Op.PLOT_FIND)
async def test_a_page_of_the_largest_activities_fits_in_one_answer(runtime: Runtime) -> None:
    # Tiny notes cost more than their content: their ids and times are counted too,
    # or a hundred activities of hundreds of empty notes each would make an answer
    # larger than the sandbox's frame, and every find_activities of the priority
    # (this instance's and those of the instances above it) would fail.
    work = await plotter(runtime, "work")
    per_note = len(work) + 128
    most = (32_768 - 1) // per_note  # meta None is one byte
    out = await do(
        runtime,
        work,
        "count(plot.create_activities(given['batch'][:50]))",
        "count(plot.create_activities(given['batch'][50:]))",
        "count(plot.find_activities())",
        "plot.create_activity({'type': 'note', 'notes': [{'content': ''}] * (given['most'] + 1)})",
        batch=[{"type": "note", "notes": [{"content": ""}] * most}] * 100,
        most=most,
    )
    assert out == [50, 50, 100, over_32_kib(1 + (most + 1) * per_note)]


@pytest.mark.exercises(
    Op.PLOT_CREATE, Op.PLOT_GET, Op.PLOT_GET_BY_SOURCE, Op.PLOT_FIND, Op.PLOT_UPDATE,
    Op.PLOT_ADD_NOTE,
)  # fmt: skip
async def test_an_instance_cannot_reach_another_priority_s_activities(runtime: Runtime) -> None:
    work = await plotter(runtime, "work")
    acme = await plotter(runtime, "work/acme")
    other = await plotter(runtime, "work/other")
    home = await plotter(runtime, "home")
    workshop = await plotter(runtime, "workshop")  # "work" is a prefix of its name only
    theirs, in_acme = await do(
        runtime,
        work,
        "plot.create_activity({'type': 'action', 'title': 'theirs', 'source': 'gh:1'})",
        "plot.create_activity({'type': 'action', 'title': 'acme', 'source': 'gh:2', "
        "'priority': 'work/acme'})",
    )
    before = all_activities(runtime)
    for outsider, name, seen, visible in [
        (home, "home", theirs, []),
        (workshop, "workshop", theirs, []),
        (other, "work/other", in_acme, []),
        (acme, "work/acme", theirs, [in_acme]),  # below work, acme sees only its own
    ]:
        out = await do(
            runtime,
            outsider,
            "plot.get_activity(given['a'].id)",
            "plot.get_activity_by_source(given['a'].source)",
            "plot.find_activities()",
            "plot.update_activity(given['a'].id, title='mine')",
            "plot.add_note(given['a'].id, 'mine')",
            "plot.create_activity({'type': 'note', 'priority': given['a'].priority})",
            "plot.create_activity({'type': 'note', 'id': given['a'].id, 'title': 'mine'})",
            "plot.create_activities([{'type': 'note'}, {'type': 'note', 'priority': 'work'}])",
            a=seen,
        )
        assert out == [
            None,
            None,
            visible,
            f"LookupError: update_activity: there is no activity {seen.id} in priority "
            f"{name!r} or under it",
            f"LookupError: add_note: there is no activity {seen.id} in priority {name!r} or "
            "under it",
            f"ValueError: create_activity.priority {seen.priority!r} is outside this "
            f"instance's priority {name!r}: it may create activities there or under it",
            f"ValueError: create_activity.id {seen.id} is already the id of another activity: "
            "choose a new one (Uuid.generate())",
            f"ValueError: activities[1].priority 'work' is outside this instance's priority "
            f"{name!r}: it may create activities there or under it",
        ]
    # A source is unique in the whole tree (work and everything under it), so
    # work/other cannot take one that an activity of work/acme has either.
    refused = await do(
        runtime,
        other,
        "plot.create_activity({'type': 'note', 'source': 'gh:2', 'title': 'mine'})",
        "plot.create_activities([{'type': 'note'}, {'type': 'note', 'source': 'gh:2'}])",
    )
    assert refused == [
        "ValueError: create_activity.source 'gh:2' is already the source of an activity "
        "outside this instance's priority 'work/other': a source is unique in the priority "
        "tree 'work'",
        "ValueError: activities[1].source 'gh:2' is already the source of an activity outside "
        "this instance's priority 'work/other': a source is unique in the priority tree 'work'",
    ]
    assert all_activities(runtime) == before
    # Another tree may use the same source: it names another activity there.
    (at_home,) = await do(runtime, home, "plot.create_activity({'type': 'note', 'source': 'gh:1'})")
    assert (at_home.id != theirs.id, at_home.priority) == (True, "home")
    # work sees work/acme's activity, and may change it.
    out = await do(
        runtime,
        work,
        "plot.get_activity_by_source('gh:2')",
        "plot.add_note(given['id'], 'from work')",
        "plot.find_activities()",
        id=in_acme.id,
    )
    assert out[0] == in_acme
    assert out[1].content == "from work"
    assert titles(out[2]) == ["acme", "theirs"]


@pytest.mark.exercises(Op.PLOT_CREATE_MANY, Op.PLOT_CREATE)
async def test_the_activities_quota_counts_creations_and_writes_nothing_past_it(
    runtime_factory: RuntimeFactory,
) -> None:
    runtime = await runtime_factory(RuntimeConfig(quotas=Quotas(activities=5)))
    work = await plotter(runtime, "work")
    other = await plotter(runtime, "work")
    three = [{"type": "note", "source": f"s:{n}"} for n in range(3)]
    out = await do(
        runtime,
        work,
        "count(plot.create_activities(given['three']))",
        "plot.create_activities(given['three'] + given['more'])",
        # Updating by source or by id creates nothing, so the quota does not count it.
        "count(plot.create_activities([{**a, 'title': 'changed'} for a in given['three']]))",
        "count(plot.create_activities(given['more'][:2]))",
        "plot.create_activity({'type': 'note'})",
        three=three,
        more=[{"type": "note", "source": f"t:{n}"} for n in range(3)],
    )
    assert out == [
        3,
        # The three named by source exist: three more would make six.
        "QuotaExceeded: this instance would have created 6 activities, over its quota of 5: "
        "update activities (create by source) rather than creating new ones, or ask the "
        "operator to raise [quotas] activities",
        3,
        2,
        "QuotaExceeded: this instance would have created 6 activities, over its quota of 5: "
        "update activities (create by source) rather than creating new ones, or ask the "
        "operator to raise [quotas] activities",
    ]
    assert len(all_activities(runtime)) == 5
    # The quota is each instance's own.
    five = [{"type": "note"}] * 5
    out = await do(runtime, other, "count(plot.create_activities(given['five']))", five=five)
    assert out == [5]


@pytest.mark.exercises(
    Op.PLOT_CREATE, Op.PLOT_CREATE_MANY, Op.PLOT_UPDATE, Op.PLOT_FIND, Op.PLOT_ADD_NOTE,
    Op.PLOT_GET_BY_SOURCE,
)  # fmt: skip
async def test_hostile_arguments_are_refused_and_change_nothing(runtime: Runtime) -> None:
    work = await plotter(runtime, "work")
    (mine, other) = await do(
        runtime,
        work,
        "plot.create_activity({'type': 'note', 'source': 'gh:1', 'notes': [{'content': 'x'}]})",
        "plot.create_activity({'type': 'note', 'source': 'gh:2'})",
    )
    before = all_activities(runtime)
    out = await do(
        runtime,
        work,
        # What the SDK would never send, sent straight down the channel.
        "self._channel.call(Op.PLOT_CREATE, given['mine'])",
        "self._channel.call(Op.PLOT_CREATE_MANY, {'type': 'note'})",
        "self._channel.call(Op.PLOT_UPDATE, given['mine'].id, ['title'])",
        "self._channel.call(Op.PLOT_FIND, 'note', 'yes', None, None, 5)",
        "self._channel.call(Op.PLOT_CREATE, {'type': 'note', 'notes': [given['mine']]})",
        # A note of one activity given to another: its id is taken.
        "plot.create_activity({'type': 'note', 'source': 'gh:2', "
        "'notes': list(given['mine'].notes)})",
        "plot.create_activities([{'type': 'note', 'notes': [{'content': 'a', 'id': given['n']}]},"
        " {'type': 'note', 'notes': [{'content': 'b', 'id': given['n']}]}])",
        # A NUL, which PostgreSQL cannot keep in text, is refused on every database.
        "plot.create_activity({'type': 'note', 'title': 'a\\x00b'})",
        "plot.create_activity({'type': 'note', 'source': 'gh:\\x00'})",
        "plot.add_note(given['mine'].id, 'a\\x00b')",
        "plot.add_note(given['mine'].id, 'c', key='\\x00')",
        "plot.get_activity_by_source('gh:\\x00')",
        "plot.find_activities(source_prefix='gh:\\x00')",
        # The codec refuses, in the sandbox, what it could not store.
        "plot.create_activity({'type': 'note', 'meta': {'a': {1: 2}}})",
        "plot.create_activity({'type': 'note', 'meta': "
        "__import__('functools').reduce(lambda a, _: [a], range(200), 'bottom')})",
        "plot.create_activity({'type': 'note', 'title': '\\ud800'})",
        "plot.update_activity(given['mine'].id, meta={'f': lambda: 1})",
        mine=mine,
        n=(note := Uuid.generate()),
    )
    nul = "contains a NUL character (\\x00); remove it"
    assert out[:13] == [
        "ValueError: create_activity must be a dict of activity fields, got Activity",
        "ValueError: create_activities takes a list of activity dicts, got dict",
        "ValueError: update_activity takes the fields to change as keyword arguments",
        "ValueError: find_activities: done must be True, False or None, got 'yes'",
        "ValueError: create_activity.notes[0] must be a dict with 'content' (and 'id', 'key'), "
        "got Activity",
        f"ValueError: create_activity.notes: note id {mine.notes[0].id} is already the id of a "
        "note of another activity: choose a new one (Uuid.generate())",
        f"ValueError: activities[1].notes: note id {note} is also given in activities[0]: each "
        "note needs its own id",
        f"ValueError: create_activity.title {nul}",
        f"ValueError: create_activity.source {nul}",
        f"ValueError: add_note: content {nul}",
        f"ValueError: add_note: key {nul}",
        f"ValueError: get_activity_by_source: source {nul}",
        f"ValueError: find_activities: source_prefix {nul}",
    ]
    assert out[13:15] == [
        "TypeError: value['meta']['a']: dict keys must be str, found int 1; convert the keys "
        "with str(...)",
        f"TypeError: value['meta']{'[0]' * 99}: the value is nested more than 100 containers "
        "deep; flatten it, or split it across several keys",
    ]
    assert out[15].startswith("TypeError: value['title']: cannot store text with a lone surrogate")
    assert out[16].startswith("TypeError: value['meta']['f']: cannot store an object of type func")
    assert all_activities(runtime) == before
    assert other.notes == ()


RACER = (
    QUIET
    + """
    async def race(self, sources):
        # Wait for the other racer, then import the same sources at once.
        ready = {"type": "event", "source": f"ready:{Uuid.generate()}"}
        await self.tools.plot.create_activity(ready)
        while len(await self.tools.plot.find_activities(source_prefix="ready:")) < 2:
            await asyncio.sleep(0.005)
        made = await self.tools.plot.create_activities(
            [{"type": "action", "title": s, "source": s} for s in sources]
        )
        await self.set("made", [a.id for a in made])
"""
).replace("import inspect", "import asyncio\nimport inspect")


@pytest.mark.exercises(Op.PLOT_CREATE_MANY, Op.PLOT_FIND)
async def test_two_workers_importing_the_same_sources_at_once_make_each_activity_once(
    runtime_factory: RuntimeFactory,
) -> None:
    first = await runtime_factory(concurrency=1)
    second = await runtime_factory(concurrency=1)
    racers = [await plotter(first, "work", agent="racer", code=RACER) for _ in range(2)]
    listener = await plotter(first, "work")
    sources = [f"gh:{n}" for n in range(200)]
    for racer in racers:
        enqueue(first, racer, "race", sources)
    await asyncio.gather(first.idle(), second.idle())
    records = [r for racer in racers for r in first.executions(racer, "race")]
    assert [r["outcome"] for r in records] == ["ok", "ok"], [r["error"] for r in records]
    made = [await first.store(racer).get("made") for racer in racers]
    assert made[0] == made[1]
    assert len(set(made[0])) == 200
    assert len(all_activities(first)) == 202  # and the two ready signals
    # The second import changed nothing, so the listener heard each activity once.
    events = await heard(first, listener)
    assert len(events) == 202
    assert {a.id for a, _ in events} >= set(made[0])
    assert all(changes is None for _, changes in events)


@pytest.mark.exercises(Op.PLOT_CREATE_MANY)
async def test_a_batch_of_the_most_activities_a_call_takes_is_created(runtime: Runtime) -> None:
    author = await plotter(runtime, "work")
    (made,) = await do(
        runtime,
        author,
        f"count(plot.create_activities([{{'type': 'note'}} for _ in range({MAX_BATCH})]))",
    )
    assert made == MAX_BATCH
