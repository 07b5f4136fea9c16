"""What happened: ``executions`` (one record per execution) and ``logs``."""

from __future__ import annotations

import json
import time

import click

from corral.cli.context import Context
from corral.cli.output import json_option, print_json, print_table, table
from corral.sandbox.limits import failure_line


@click.command()
@click.argument("instance", required=False)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@json_option
@click.pass_obj
def executions(obj: Context, instance: str | None, limit: int, as_json: bool) -> None:
    """Execution records, newest first; an execution that failed says why."""
    if instance is not None:
        obj.instance(instance)
    records = obj.services.history.executions(instance, limit=limit)
    if as_json:
        print_json(records)
        return
    shown = table(
        "started",
        "instance",
        "method",
        "trigger",
        "outcome",
        "requests",
        "cpu ms",
        "ms",
        "error",
        text="error",
    )
    for r in records:
        shown.add_row(
            r["started_at"][:19].replace("T", " "),
            r["instance"],
            r["method"],
            r["trigger"],
            r["outcome"],
            str(r["requests_used"]),
            f"{r['cpu_ms']:.1f}",
            f"{r['duration_ms']:.1f}",
            failure_line(r["outcome"], r["error"]) or "",
        )
    print_table(shown)


@click.command()
@click.argument("instance", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@json_option
@click.pass_obj
def logs(obj: Context, instance: str | None, follow: bool, as_json: bool) -> None:
    """Log lines of executions and of the platform, oldest first.

    A failed execution's last line is its error (level "error").
    """
    if instance is not None:
        obj.instance(instance)
    history = obj.services.history
    after = 0
    while True:
        lines = history.logs(instance, after=after)
        for line in lines:
            if as_json:
                click.echo(json.dumps(line, ensure_ascii=False))
            else:
                at = line["at"][:19].replace("T", " ")
                click.echo(f"{at} {line['instance']} {line['level']}: {line['line']}")
            after = line["id"]
        if not follow:
            return
        time.sleep(0.5)


COMMANDS = [executions, logs]
