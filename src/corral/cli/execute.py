"""``corral exec``: one execution of one method of an agent file, here and now."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from corral.cli.context import Context
from corral.cli.output import console, print_json, print_table, table
from corral.errors import AgentCodeError
from corral.runtime.describe import agent_source
from corral.runtime.once import run_once
from corral.runtime.records import ExecutionRecord
from corral.sandbox.limits import Outcome
from corral.state import open_store

#: The scope of the throwaway in-memory store an execution without --instance gets.
THROWAWAY_SCOPE = "exec"


@click.command("exec")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("method")
@click.option(
    "--arg", "raw_args", multiple=True, metavar="JSON", help="A positional argument (repeatable)."
)
@click.option(
    "--instance",
    metavar="ID",
    help="Use this installed instance's store in the database (see corral instances) "
    "instead of a throwaway in-memory one.",
)
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
    instance: str | None,
    as_json: bool,
    strict: bool,
    insecure_sandbox: bool,
) -> None:
    """Run METHOD of the agent in PATH once, in a real sandbox, and print the record.

    The execution always gets a process that has never run the agent. Its store is a
    throwaway in-memory one, or with --instance that instance's store in the database
    (--db, else $CORRAL_DATABASE_URL, else the default). Exits 1 unless the
    execution's outcome is ok.
    """
    args: list[Any] = []
    for i, raw in enumerate(raw_args, 1):
        try:
            args.append(json.loads(raw))
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"argument {i} is not JSON ({exc}): {raw!r}") from None
    try:
        code = agent_source(path.read_bytes())
    except AgentCodeError as exc:
        raise click.ClickException(f"cannot run {exc.where(path)}: {exc}") from None
    # The agent's writes are held to the quotas a worker would hold them to.
    quotas = obj.config.quotas
    if instance is None:
        store = open_store(None, THROWAWAY_SCOPE, quotas=quotas)
    else:
        obj.instance(instance)
        store = obj.store(instance, quotas)
    record = asyncio.run(
        run_once(
            code,
            method,
            args,
            store,
            obj.config,
            insecure=insecure_sandbox,
            strict=strict,
            filename=str(path),
        )
    )
    if as_json:
        print_json(record.to_json())
    else:
        _print_record(record)
    if record.result.outcome is not Outcome.OK:
        sys.exit(1)


def _print_record(record: ExecutionRecord) -> None:
    data = record.to_json()
    shown = table("field", "value", text="value", title=f"execution {data['id']}")
    shown.show_header = False
    for name in ("method", "outcome", "requests_used", "cpu_ms", "peak_rss_bytes", "duration_ms"):
        shown.add_row(name, str(data[name]))
    shown.add_row("result", json.dumps(data["result"], ensure_ascii=False))
    if record.result.failure_line is not None:
        shown.add_row("error", record.result.failure_line)
    print_table(shown)
    for level, line in record.result.logs:
        console.print(f"[dim]log[/dim] {escape(level)}: {escape(line)}")  # the agent's text
    error = record.result.error
    if error and error.get("traceback"):
        console.print(error["traceback"], markup=False)


COMMANDS = [exec_]
