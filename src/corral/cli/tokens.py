"""Admin API tokens: ``tokens create``, ``tokens ls``, ``tokens revoke``."""

from __future__ import annotations

import click

from corral.cli.context import Context, now_ms
from corral.cli.output import iso, json_option, print_json, print_table, table, when
from corral.runtime.tokens import SCOPES, Token


@click.group(help="Tokens for the admin API (/api/v1) and the dashboard.")
def tokens() -> None:
    pass


@tokens.command(
    help="Make a token and print it, once: only its hash is stored. Scopes: read (GET), "
    "operate (also retry, cancel, replay, install, uninstall, deploy), admin (also tokens)."
)
@click.option("--scope", required=True, type=click.Choice(SCOPES), help="What it may do.")
@click.option("--name", default="", help="Who or what it is for, as listings show it.")
@json_option
@click.pass_obj
def create(obj: Context, scope: str, name: str, as_json: bool) -> None:
    token, text = obj.services.tokens.create(scope, name, now=now_ms())
    if as_json:
        print_json({**_json(token), "token": text})
        return
    click.echo(text)
    click.echo(
        f"token {token.id} ({scope}): shown this once; send it as 'Authorization: Bearer <token>'",
        err=True,
    )


@tokens.command(name="ls", help="Every token, newest first, revoked ones too; never a secret.")
@json_option
@click.pass_obj
def list_tokens(obj: Context, as_json: bool) -> None:
    found = obj.services.tokens.tokens()
    if as_json:
        print_json([_json(token) for token in found])
        return
    shown = table("id", "name", "scope", "created", "last used", "revoked")
    for token in found:
        shown.add_row(
            token.id,
            token.name,
            token.scope,
            when(token.created_at),
            when(token.last_used_at) if token.last_used_at else "",
            when(token.revoked_at) if token.revoked_at else "",
        )
    print_table(shown)


@tokens.command(help="Revoke a token by its id: it is refused from now on.")
@click.argument("token_id", metavar="ID")
@click.pass_obj
def revoke(obj: Context, token_id: str) -> None:
    token = obj.services.tokens.revoke(token_id, now=now_ms())
    click.echo(f"token {token.id} ({token.scope}) revoked")


def _json(token: Token) -> dict[str, object]:
    return {
        "id": token.id,
        "name": token.name,
        "scope": token.scope,
        "created_at": iso(token.created_at),
        "last_used_at": iso(token.last_used_at),
        "revoked_at": iso(token.revoked_at),
    }


COMMANDS = [tokens]
