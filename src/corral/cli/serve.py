"""``corral serve``: the HTTP server (webhooks, the admin API; docs/server.md)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import click

from corral.cli.context import Context
from corral.config import RuntimeConfig
from corral.runtime.services import Services
from corral.server.app import create_app, server_executor
from corral.server.serving import HttpServer, Listener, stop_grace_s


@click.command()
@click.option("--host", help="The address to listen on; else [server] host (127.0.0.1).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help="The port to listen on (0: any free one); else [server] port (8000).",
)
@click.option("--access-log", is_flag=True, help="Print a line for each request.")
@click.option("--insecure-sandbox", is_flag=True, help="Run even where sandbox layers are missing.")
@click.pass_obj
def serve(
    obj: Context, host: str | None, port: int | None, access_log: bool, insecure_sandbox: bool
) -> None:
    """Serve webhooks (/hooks/TOKEN), the admin API (/api/v1, with a token from
    corral tokens create) and /healthz until SIGTERM or Ctrl-C.

    Async deliveries are stored and queued for workers (corral worker); sync ones
    run here, in sandboxes of this server's own. Stopping lets the requests in
    flight finish first, for up to the sync deadline and 5 s; a second Ctrl-C drops
    them. Any number of servers may
    share one PostgreSQL database.
    """
    obj.usable_url()
    server = obj.config.server
    listener = Listener(host or server.host, server.port if port is None else port)
    asyncio.run(_serve(listened(obj.config, listener), listener, access_log, insecure_sandbox))
    click.echo("stopped")


def listened(config: RuntimeConfig, listener: Listener) -> RuntimeConfig:
    """The configuration with the port actually bound: webhook URLs name it, unless a
    public URL is configured."""
    return replace(config, server=replace(config.server, port=listener.port))


async def _serve(
    config: RuntimeConfig, listener: Listener, access_log: bool, insecure: bool
) -> None:
    services = Services(config)
    try:
        async with server_executor(services, insecure=insecure) as executor:
            app = create_app(services, executor=executor)
            http = HttpServer(
                app,
                listener,
                access_log=access_log,
                grace_s=stop_grace_s(config.webhooks),
                on_ready=lambda: click.echo(f"server: {listener.url}"),
                on_stop=app.state.streams.stop,
            )
            await http.run_until_stopped()
    finally:
        listener.close()
        await services.close()


COMMANDS = [serve]
