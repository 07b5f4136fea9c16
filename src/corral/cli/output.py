"""What the CLI prints: one console for people, one JSON printer for scripts."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console

#: Tables and messages for people. Soft wrap: an id or a path is never cut.
console = Console(soft_wrap=True, highlight=False)


def print_json(value: Any) -> None:
    """``value`` as indented JSON on stdout, non-ASCII kept as it is."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))
