"""What the CLI prints: one console for people, one JSON printer for scripts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console

#: Tables and messages for people. Soft wrap: an id or a path is never cut.
console = Console(soft_wrap=True, highlight=False)

#: The ``--json`` option every listing has.
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def print_json(value: Any) -> None:
    """``value`` as indented JSON on stdout, non-ASCII kept as it is."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def when(ms: int | None) -> str:
    """A time in milliseconds since the epoch, as a table shows it (UTC)."""
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
