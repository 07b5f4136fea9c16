"""Is this machine and this database ready: ``doctor`` (sandbox layers), ``migrate``."""

from __future__ import annotations

import sys
from dataclasses import asdict

import click
from rich.table import Table

from corral.cli.context import Context
from corral.cli.output import console, print_json
from corral.db import upgrade
from corral.errors import SandboxUnavailable
from corral.sandbox.support import probe_support


@click.command()
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


@click.command()
@click.pass_obj
def migrate(obj: Context) -> None:
    """Create the database schema, or upgrade it to this version of Corral."""
    before, after = upgrade(obj.engine())
    if before == after:
        click.echo(f"{obj.shown_url}: schema already at revision {after}")
    else:
        click.echo(f"{obj.shown_url}: schema upgraded from {before or 'empty'} to revision {after}")


COMMANDS = [doctor, migrate]
