"""The ``corral`` group, and the one place a user error becomes one line on stderr.

Every listing prints a table for people and, with ``--json``, JSON for scripts.
The database comes from ``--db``, else ``CORRAL_DATABASE_URL``, else the SQLite
file ``./.corral/corral.db``.

A command raises what went wrong and lets it rise: a :class:`CorralError` is
written for people already and is printed as it is; a database driver's error
(unreachable, no such database, a file that is no database) is said in one line
naming the database. Either way the exit status is 1. Anything else is a bug,
and keeps its traceback.
"""

from __future__ import annotations

from typing import Any

import click

from corral import __version__
from corral.cli import agents, dev, doctor, execute, history, state, tasks
from corral.cli.context import Context
from corral.db.engine import DEFAULT_URL, URL_ENV
from corral.errors import CorralError


class _Corral(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CorralError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(
    cls=_Corral,
    help=f"Run and operate sandboxed, event-driven Python agents.\n\n"
    f"The database is --db URL, else ${URL_ENV}, else {DEFAULT_URL}.",
)
@click.version_option(__version__, prog_name="corral")
@click.option("--db", metavar="URL", help="sqlite:///path or postgresql://user@host/db")
@click.pass_context
def main(ctx: click.Context, db: str | None) -> None:
    ctx.obj = Context(db)


for _module in (agents, history, tasks, state, execute, doctor, dev):
    for _command in _module.COMMANDS:
        main.add_command(_command)
