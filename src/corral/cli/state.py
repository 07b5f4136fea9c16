"""An instance's store, read from the shell: ``state ls`` and ``state get``.

Values print as tagged JSON (``corral.tagged_json``) in both commands: a tuple
is ``{"$tuple": [...]}``, a datetime ``{"$datetime": "..."}``, so what you read
is what a script reading ``--json`` gets.
"""

from __future__ import annotations

import asyncio
import json

import click

from corral.cli.context import Context
from corral.cli.output import console, json_option, print_json, print_table, table
from corral.tagged_json import JsonValue, to_tagged


def _one_line(value: JsonValue) -> str:
    return json.dumps(value, ensure_ascii=False)


@click.group()
def state() -> None:
    """Read an instance's store (its scope is the instance id)."""


@state.command("ls")
@click.argument("instance")
@click.option("--prefix", default="", help="Only keys starting with this.")
@json_option
@click.pass_obj
def state_ls(obj: Context, instance: str, prefix: str, as_json: bool) -> None:
    """List the live keys of INSTANCE, ascending, with their values."""
    obj.instance(instance)
    store = obj.store(instance)
    entries = asyncio.run(store.list_entries(prefix))
    if as_json:
        print_json([{"key": key, "value": to_tagged(value)} for key, value in entries])
        return
    title = f"state of {instance}" + (f" (keys starting {prefix!r})" if prefix else "")
    shown = table("key", "value", text="value", title=title)
    for key, value in entries:
        shown.add_row(key, _one_line(to_tagged(value)))
    print_table(shown)
    used_bytes, used_keys = asyncio.run(store.usage())
    # The quotas' measure of the whole store (expired keys count until swept).
    console.print(f"{len(entries)} key(s); the store holds {used_keys:,}, {used_bytes:,} bytes")


@state.command("get")
@click.argument("instance")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print the value as indented JSON.")
@click.pass_obj
def state_get(obj: Context, instance: str, key: str, as_json: bool) -> None:
    """Print the value of KEY in INSTANCE's store, as `state ls` does; exit 1 when it
    is missing."""
    obj.instance(instance)
    missing = object()  # a stored None is present; only this sentinel means absent
    try:
        value = asyncio.run(obj.store(instance).get_or_default(key, missing))
    except (TypeError, ValueError) as exc:  # a key the store refuses (too long, say)
        raise click.ClickException(str(exc)) from None
    if value is missing:
        raise click.ClickException(f"no key {key!r} in {instance} (never set, deleted, or expired)")
    if as_json:
        print_json(to_tagged(value))
    else:
        click.echo(_one_line(to_tagged(value)))


COMMANDS = [state]
