"""What happened: ``executions`` (one record per execution) and ``logs``."""

from __future__ import annotations

import json
import time

import click
from rich.table import Table

from corral.cli.context import Context
from corral.cli.output import console, json_option, print_json
from corral.runtime.history import History


@click.command()
@click.argument("instance", required=False)
@click.option("--limit", default=20, show_default=True)
@json_option
@click.pass_obj
def executions(obj: Context, instance: str | None, limit: int, as_json: bool) -> None:
    """Execution records, newest first."""
    records = History(obj.database()).executions(instance, limit=limit)
    if as_json:
        print_json(records)
        return
    table = Table("started", "instance", "method", "trigger", "outcome", "requests", "cpu ms", "ms")
    for r in records:
        table.add_row(
            r["started_at"][:19],
            r["instance"],
            r["method"],
            r["trigger"],
            r["outcome"],
            str(r["requests_used"]),
            f"{r['cpu_ms']:.1f}",
            f"{r['duration_ms']:.1f}",
        )
    console.print(table)


@click.command()
@click.argument("instance", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@json_option
@click.pass_obj
def logs(obj: Context, instance: str | None, follow: bool, as_json: bool) -> None:
    """Log lines of executions and of the platform, oldest first."""
    history = History(obj.database())
    after = 0
    while True:
        lines = history.logs(instance, after=after)
        for line in lines:
            if as_json:
                click.echo(json.dumps(line, ensure_ascii=False))
            else:
                click.echo(f"{line['at'][:19]} {line['instance']} {line['level']}: {line['line']}")
            after = line["id"]
        if not follow:
            return
        time.sleep(0.5)


COMMANDS = [executions, logs]
