"""The ``corral`` group, and the one place a user error becomes one line on stderr.

Every listing prints a table for people and, with ``--json``, JSON for scripts.
The database and every other setting come from the configuration
(:mod:`corral.config`): ``--db``, else ``CORRAL_DATABASE_URL``, else
``database_url`` in the ``--config`` file, else the SQLite file
``./.corral/corral.db``.

A command raises what went wrong and lets it rise; here it becomes one line on
stderr and a non-zero exit, never a traceback. A :class:`CorralError` is written
for people already and is printed as it is. A database driver's error (no
server on that port, no such database, a file that is no database) is said in
one line naming the database. A malformed argument or option is click's
message, on one line with where to read the command's help (exit status 2).
Anything else is a bug, and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa

from corral import __version__
from corral.cli import (
    activities,
    agents,
    config,
    dev,
    doctor,
    execute,
    history,
    serve,
    state,
    tasks,
    tokens,
    webhooks,
)
from corral.cli.context import Context
from corral.config import CONFIG_ENV
from corral.db.engine import DEFAULT_URL, URL_ENV
from corral.db.errors import DATABASE_ERRORS, gist, unavailable
from corral.errors import CorralError, DatabaseUnavailable


class _UsageLine(click.ClickException):
    """A usage error said in one line; exit status 2, as click gives usage errors."""

    exit_code = 2


def _usage_line(exc: click.UsageError) -> _UsageLine:
    command = exc.ctx.command_path if exc.ctx is not None else "corral"
    return _UsageLine(f"{exc.format_message().rstrip('.')} (see {command} --help)")


class _Corral(click.Group):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:  # an option of the group's own: --db
            raise _usage_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # the command, its arguments and options
            raise _usage_line(exc) from None
        except DatabaseUnavailable as exc:
            raise click.ClickException(_database_trouble(ctx.obj, exc)) from None
        except CorralError as exc:
            raise click.ClickException(str(exc)) from None
        except DATABASE_ERRORS as exc:
            raise click.ClickException(_database_trouble(ctx.obj, exc)) from None


def _database_trouble(obj: Context | None, exc: BaseException) -> str:
    """A database error in one line: which database, and what its driver said."""
    where = "the database" if obj is None else f"the database {obj.shown_url}"
    cause = exc.__cause__ if isinstance(exc, DatabaseUnavailable) and exc.__cause__ else exc
    if isinstance(cause, sa.exc.DBAPIError) and cause.orig is not None:
        cause = cause.orig  # SQLAlchemy's wrapper: its text adds a link and the statement
    said = gist(cause)
    # libpq prefixes the server's refusal with where it tried to connect; the URL says that.
    said = said.partition("FATAL:")[2].strip() or said
    if isinstance(exc, DatabaseUnavailable) or unavailable(exc) is not None:
        return f"cannot reach {where}: {said}"
    return f"cannot use {where}: {said}"


@click.group(
    cls=_Corral,
    help=f"Run and operate sandboxed, event-driven Python agents.\n\n"
    f"The database is --db URL, else ${URL_ENV}, else database_url in the configuration "
    f"file, else {DEFAULT_URL}. Every other setting is a CORRAL_* variable or a key of "
    f"the configuration file: corral config lists them, their values and where each "
    "came from (docs/configuration.md).",
)
@click.version_option(__version__, prog_name="corral")
@click.option("--db", metavar="URL", help="sqlite:///path or postgresql://user@host/db")
@click.option(
    "--config",
    "config_file",
    metavar="PATH",
    type=click.Path(path_type=Path),
    help=f"The configuration file (TOML); else ${CONFIG_ENV}, else none.",
)
@click.pass_context
def main(ctx: click.Context, db: str | None, config_file: Path | None) -> None:
    ctx.obj = Context(db, config_file)


for _module in (
    agents,
    config,
    history,
    tasks,
    state,
    execute,
    doctor,
    dev,
    serve,
    webhooks,
    tokens,
    activities,
):
    for _command in _module.COMMANDS:
        main.add_command(_command)
