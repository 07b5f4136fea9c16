"""The ``corral`` command: operate a Corral database from the shell.

Every listing prints a table for people and, with ``--json``, JSON for scripts.
The database comes from ``--db``, else ``CORRAL_DATABASE_URL``, else the SQLite
file ``./.corral/corral.db``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from corral import __version__
from corral.cli.dev import dev, runtime_config
from corral.cli.operate import COMMANDS
from corral.cli.output import console, print_json
from corral.db import create_engine, resolve_url, upgrade
from corral.db.engine import DEFAULT_URL, URL_ENV
from corral.errors import DatabaseURLError, SandboxUnavailable, SchemaOutOfDate
from corral.quotas import Quotas
from corral.runtime.once import run_once
from corral.runtime.records import ExecutionRecord
from corral.sandbox.limits import Outcome
from corral.sandbox.support import probe_support
from corral.state import Store, open_store
from corral.tagged_json import to_tagged


class Context:
    def __init__(self, db: str | None) -> None:
        self.explicit_url = db
        self.url = resolve_url(db)

    def store(self, scope: str, quotas: Quotas | None = None) -> Store:
        try:
            return open_store(self.url, scope, quotas=quotas)
        except (DatabaseURLError, SchemaOutOfDate) as exc:
            raise click.ClickException(str(exc)) from None


@click.group(
    help=f"Run and operate sandboxed, event-driven Python agents.\n\n"
    f"The database is --db URL, else ${URL_ENV}, else {DEFAULT_URL}."
)
@click.version_option(__version__, prog_name="corral")
@click.option("--db", metavar="URL", help="sqlite:///path or postgresql://user@host/db")
@click.pass_context
def main(ctx: click.Context, db: str | None) -> None:
    ctx.obj = Context(db)


@main.command()
@click.pass_obj
def migrate(obj: Context) -> None:
    """Create the database schema, or upgrade it to this version of Corral."""
    try:
        engine = create_engine(obj.url)
        before, after = upgrade(engine)
    except (DatabaseURLError, SchemaOutOfDate) as exc:
        raise click.ClickException(str(exc)) from None
    if before == after:
        click.echo(f"{obj.url}: schema already at revision {after}")
    else:
        click.echo(f"{obj.url}: schema upgraded from {before or 'empty'} to revision {after}")


@main.group()
def state() -> None:
    """Read an instance's store (its scope is the instance id)."""


@state.command("ls")
@click.argument("instance")
@click.option("--prefix", default="", help="Only keys starting with this.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def state_ls(obj: Context, instance: str, prefix: str, as_json: bool) -> None:
    """List the live keys of INSTANCE, ascending, with their values."""
    store = obj.store(instance)
    entries = asyncio.run(store.list_entries(prefix))
    if as_json:
        print_json([{"key": key, "value": to_tagged(value)} for key, value in entries])
        return
    title = f"state of {instance}" + (f" (keys starting {prefix!r})" if prefix else "")
    table = Table("key", "value", title=title)
    for key, value in entries:
        table.add_row(key, json.dumps(to_tagged(value), ensure_ascii=False))
    console.print(table)
    used_bytes, used_keys = asyncio.run(store.usage())
    # The quotas' measure of the whole store (expired keys count until swept).
    console.print(f"{len(entries)} key(s); the store holds {used_keys:,}, {used_bytes:,} bytes")


@state.command("get")
@click.argument("instance")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print the value as tagged JSON.")
@click.pass_obj
def state_get(obj: Context, instance: str, key: str, as_json: bool) -> None:
    """Print the value of KEY in INSTANCE's store; exit 1 when it is missing."""
    missing = object()  # a stored None is present; only this sentinel means absent
    try:
        value = asyncio.run(obj.store(instance).get_or_default(key, missing))
    except (TypeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if value is missing:
        click.echo(f"no key {key!r} in {instance} (never set, deleted, or expired)", err=True)
        sys.exit(1)
    if as_json:
        print_json(to_tagged(value))
    else:
        console.print(repr(value))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(as_json: bool) -> None:
    """Check which sandbox layers this machine supports; exit 1 if any is missing.

    Each layer is tried in a throwaway child process; this process is not changed.
    Corral refuses to run agent code while a layer is missing, unless started with
    --insecure-sandbox.
    """
    report = probe_support()
    if as_json:
        print_json([asdict(layer) for layer in report])
    else:
        table = Table("layer", "status", "detail", title="sandbox layers on this machine")
        for layer in report:
            status = "[green]ok[/green]" if layer.available else "[red]MISSING[/red]"
            detail = layer.detail + (f"\nfix: {layer.remedy}" if not layer.available else "")
            table.add_row(layer.name, status, detail)
        console.print(table)
        if report.complete:
            console.print("Every layer works: agents run fully sandboxed.")
    if not report.complete:
        try:
            report.require()
        except SandboxUnavailable as exc:
            click.echo(str(exc), err=True)
        sys.exit(1)


@main.command("exec")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("method")
@click.option(
    "--arg", "raw_args", multiple=True, metavar="JSON", help="A positional argument (repeatable)."
)
@click.option("--instance", default="exec", show_default=True, help="The store scope to use.")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@click.option(
    "--strict",
    is_flag=True,
    help="Warn about module globals and class attributes the execution changed: state "
    "a fresh process would not have.",
)
@click.option(
    "--insecure-sandbox", is_flag=True, help="Run even where kernel sandbox layers are missing."
)
@click.pass_obj
def exec_(
    obj: Context,
    path: Path,
    method: str,
    raw_args: tuple[str, ...],
    instance: str,
    as_json: bool,
    strict: bool,
    insecure_sandbox: bool,
) -> None:
    """Run METHOD of the agent in PATH once, in a real sandbox, and print the record.

    The execution always gets a process that has never run the agent. The store is
    a throwaway in-memory one unless --db is given. Exits 1 unless the execution's
    outcome is ok.
    """
    args: list[Any] = []
    for i, raw in enumerate(raw_args, 1):
        try:
            args.append(json.loads(raw))
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"argument {i} is not JSON ({exc}): {raw!r}") from None
    # The agent's writes are held to the quotas a worker would hold them to.
    quotas = runtime_config().quotas
    if obj.explicit_url:
        store = obj.store(instance, quotas)
    else:
        store = open_store(None, instance, quotas=quotas)
    code = path.read_text()
    try:
        record = asyncio.run(
            run_once(code, method, args, store, insecure=insecure_sandbox, strict=strict)
        )
    except SandboxUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    record.instance = instance
    if as_json:
        print_json(record.to_json())
    else:
        _print_record(record)
    if record.result.outcome is not Outcome.OK:
        sys.exit(1)


def _print_record(record: ExecutionRecord) -> None:
    data = record.to_json()
    table = Table(show_header=False, title=f"execution {data['id']}")
    for name in ("method", "outcome", "requests_used", "cpu_ms", "peak_rss_bytes", "duration_ms"):
        table.add_row(name, str(data[name]))
    table.add_row("result", json.dumps(data["result"], ensure_ascii=False))
    error = record.result.error
    if error:
        table.add_row("error", f"{error['type']}: {error['message']}")
    console.print(table)
    for line in data["logs"]:  # type: ignore[union-attr]
        console.print(f"[dim]log[/dim] {line['level']}: {line['line']}")  # type: ignore[index,call-overload]
    if error and error.get("traceback"):
        console.print(error["traceback"], markup=False)


for _command in [*COMMANDS, dev]:
    main.add_command(_command)
