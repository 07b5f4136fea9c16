"""Run ``corral`` in this process as a user would, and keep what it printed."""

from __future__ import annotations

from click.testing import CliRunner

from corral.cli import main


def corral(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), prog_name="corral")
    return result.exit_code, result.stdout, result.stderr
