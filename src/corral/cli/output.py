"""What the CLI prints: one console for people, one JSON printer for scripts.

Tables never cut a cell to fit the terminal: an id shortened to ``failing…`` can
be neither read nor copied. Each column keeps its longest cell whole, except one
column of free text (an error, a value), which wraps; a table wider than the
terminal is printed wider, and the terminal wraps its lines.

Times are ISO 8601 in UTC everywhere: in ``--json`` output as the full
timestamp, in tables to the second.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

#: Tables and messages for people. Soft wrap: a line of text is never cut either.
console = Console(soft_wrap=True, highlight=False)

#: The ``--json`` option every listing has.
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")

#: The narrowest a table's column of free text gets before the table grows wider.
TEXT_MIN_WIDTH = 30


def print_json(value: Any) -> None:
    """``value`` as indented JSON on stdout, non-ASCII kept as it is."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def table(*columns: str, text: str | None = None, title: str | None = None) -> Table:
    """A table whose cells are never cut; the column named ``text`` wraps."""
    made = Table(*columns, title=title)
    for column in made.columns:
        if column.header == text:
            column.overflow = "fold"  # a long word (a JSON value, a URL) breaks, not cut
        else:
            column.no_wrap = True
    return made


def print_table(shown: Table) -> None:
    """Print a table made by :func:`table`, as wide as its uncut cells need."""
    text = [column for column in shown.columns if not column.no_wrap]
    for column in text:  # measured at its floor: its text wraps into whatever is left
        longest = max(len(str(cell)) for cell in [column.header, *column.cells])
        column.min_width = column.max_width = min(TEXT_MIN_WIDTH, longest)
    # The other columns whole: their widest cell (a minimum would break at spaces).
    unbounded = console.options.update(max_width=sys.maxsize)
    needed = Measurement.get(console, unbounded, shown).maximum
    for column in text:
        column.max_width = None
    width = console.width
    console.width = max(width, needed)
    try:
        console.print(shown)
    finally:
        console.width = width


def iso(ms: int | None) -> str | None:
    """A time in milliseconds since the epoch as ``--json`` gives times: ISO 8601, UTC."""
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def when(ms: int | None) -> str:
    """A time in milliseconds since the epoch as a table shows it: UTC, to the second."""
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
