"""Activities and their priorities, read from the shell: ``activities`` (list, show)
and ``priorities`` (list, create).

Agents write activities (``self.tools.plot``); operators read them here, and make
the priorities agents may file them under (docs/activities.md). Titles, sources
and notes are the agents' text: they print as they are, never read as markup.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Final

import click
from rich.text import Text

from corral.activities import Activity, ActivityType, priority_name
from corral.cli.context import Context, checked_priority, now_ms
from corral.cli.output import iso, json_option, print_json, print_table, table, when
from corral.tagged_json import to_tagged

#: Activities listed when ``--limit`` is not given, and the most it may ask for.
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 1000

_SHOW_USAGE: Final = "usage: corral activities show ID (an activity id, a UUID)"
_CREATE_USAGE: Final = "usage: corral priorities create NAME (such as work or work/acme)"


@click.command(
    context_settings={"ignore_unknown_options": False},
    help="Activities, most recently changed first, with their notes counted; or one "
    "activity with its notes. Times are UTC.\n\n"
    "corral activities [--priority NAME] [--limit N] [--before ID] · corral activities show ID\n\n"
    "--priority lists that priority and the priorities under it, as an agent installed "
    "there sees them. When more activities exist than are shown, stderr says so and how "
    "to see the next ones (--before the last id shown).",
)
@click.argument("words", nargs=-1, metavar="[show ID]")
@click.option(
    "--priority",
    metavar="NAME",
    callback=checked_priority,
    help="Only this priority and those under it (such as work or work/acme).",
)
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_LIMIT),
    help=f"Activities listed at most (default {DEFAULT_LIMIT}).",
)
@click.option(
    "--before",
    metavar="ID",
    help="List the activities after this one (the last id of the previous page).",
)
@json_option
@click.pass_obj
def activities(
    obj: Context,
    words: tuple[str, ...],
    priority: str | None,
    limit: int | None,
    before: str | None,
    as_json: bool,
) -> None:
    # One command rather than a group, as corral tasks: a group would take the word
    # "show" and the listing's options apart.
    if words and words[0] == "show":
        if len(words) != 2:
            raise click.UsageError(_SHOW_USAGE)
        given = [name for name, v in (("--priority", priority), ("--limit", limit),
                                      ("--before", before)) if v is not None]  # fmt: skip
        if given:
            raise click.UsageError(
                f"{' and '.join(given)}: only for listing activities; {_SHOW_USAGE}"
            )
        _show(obj.services.plot.activity(words[1]), as_json)
        return
    if words:
        raise click.UsageError(
            f"unexpected {words[0]!r}: corral activities lists activities (options only), "
            "and corral activities show ID shows one"
        )
    _list(obj, priority, limit or DEFAULT_LIMIT, before, as_json)


def _list(
    obj: Context, priority: str | None, limit: int, before: str | None, as_json: bool
) -> None:
    plot = obj.services.plot
    after = None if before is None else plot.activity(before)
    found = plot.activities(priority, limit=limit + 1, before=after)
    more = len(found) > limit
    found = found[:limit]
    if as_json:
        print_json([a.to_json() for a in found])
    else:
        shown = table(
            "id", "priority", "type", "title", "source", "done", "notes", "author", "updated",
            text="title",
        )  # fmt: skip
        for a in found:
            shown.add_row(
                a.id,
                Text(a.priority),
                a.type.value,
                Text(a.title),
                Text(a.source or "-"),
                _done(a),
                str(len(a.notes)),
                a.author or "-",
                _when(a.updated_at),
            )
        print_table(shown)
    where = "" if priority is None else f" in priority {priority} or under it"
    if more:
        again = "corral activities" + (f" --priority {priority}" if priority else "")
        again += f" --limit {limit}" if limit != DEFAULT_LIMIT else ""
        click.echo(
            f"showing the {limit} most recently changed activities{where}; more exist: "
            f"{again} --before {found[-1].id} lists the next ones",
            err=True,
        )
    elif not found and not as_json:
        click.echo(f"no activities{where}" + (" after that one" if before else ""), err=True)


def _show(activity: Activity, as_json: bool) -> None:
    if as_json:
        print_json(activity.to_json())
        return
    a = activity
    meta = "-" if a.meta is None else json.dumps(to_tagged(a.meta), ensure_ascii=False)
    fields = [
        ("id", a.id),
        ("type", a.type.value),
        ("title", a.title),
        ("priority", a.priority),
        ("source", a.source or "-"),
        ("done", _done(a)),
        ("start", _day_or_time(a.start)),
        ("end", _day_or_time(a.end)),
        ("meta", meta),
        ("author", a.author or "- (an operator)"),
        ("created", _when(a.created_at)),
        ("updated", _when(a.updated_at)),
        ("notes", str(len(a.notes))),
    ]
    for name, value in fields:
        click.echo(f"{name + ':':<10}{value}")
    for n, note in enumerate(a.notes, 1):
        key = "" if note.key is None else f", key {note.key}"
        edited = "" if note.updated_at == note.created_at else f", edited {_when(note.updated_at)}"
        click.echo(
            f"\n{n}. note {note.id}{key}, by {note.author or 'an operator'} at "
            f"{_when(note.created_at)}{edited}"
        )
        for line in note.content.splitlines() or [""]:
            click.echo(f"   {line}")


@click.command(
    context_settings={"ignore_unknown_options": False},
    help="Priorities, by name, with their live instances and activities (of that priority "
    "itself, not those under it); or a priority made. Times are UTC.\n\n"
    "corral priorities · corral priorities create NAME\n\n"
    "An install makes its priority; create makes one ahead of it, with the priorities "
    "above it (work/acme makes work too), so that agents may file activities under it. "
    "Making one that exists changes nothing.",
)
@click.argument("words", nargs=-1, metavar="[create NAME]")
@json_option
@click.pass_obj
def priorities(obj: Context, words: tuple[str, ...], as_json: bool) -> None:
    plot = obj.services.plot
    if words and words[0] == "create":
        if len(words) != 2:
            raise click.UsageError(_CREATE_USAGE)
        try:
            name = priority_name(words[1])
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        plot.add_priority(name, now=now_ms())
        if as_json:
            print_json({"name": name})
        else:
            click.echo(name)
        return
    if words:
        raise click.UsageError(
            f"unexpected {words[0]!r}: corral priorities lists them, and "
            "corral priorities create NAME makes one"
        )
    found = plot.priorities()
    if as_json:
        print_json(
            [
                {
                    "name": p.name,
                    "instances": p.instances,
                    "activities": p.activities,
                    "created_at": iso(p.created_at),
                }
                for p in found
            ]
        )
        return
    shown = table("name", "instances", "activities", "created")
    for p in found:
        shown.add_row(p.name, str(p.instances), str(p.activities), when(p.created_at))
    print_table(shown)


def _done(activity: Activity) -> str:
    if activity.type is not ActivityType.ACTION:
        return "-"
    return "yes" if activity.done else "no"


def _when(at: dt.datetime | None) -> str:
    return "-" if at is None else at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _day_or_time(at: dt.datetime | dt.date | None) -> str:
    """A start or end: a date (all day) as it is, a time as the tables show times."""
    if at is None:
        return "-"
    if type(at) is dt.date:
        return f"{at.isoformat()} (all day)"
    assert isinstance(at, dt.datetime)
    return _when(at)


COMMANDS = [activities, priorities]
