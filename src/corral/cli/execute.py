"""``corral exec``: one execution of one method of an agent file, here and now."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from corral.cli.context import Context, runtime_config
from corral.cli.output import console, print_json
from corral.runtime.once import run_once
from corral.runtime.records import ExecutionRecord
from corral.sandbox.limits import Outcome
from corral.state import open_store


@click.command("exec")
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
    record = asyncio.run(
        run_once(code, method, args, store, insecure=insecure_sandbox, strict=strict)
    )
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


COMMANDS = [exec_]
