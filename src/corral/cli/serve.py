"""``corral serve``: the HTTP server (webhooks, the admin API, the dashboard; docs/server.md)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import click

from corral.cli.context import Context
from corral.config import RuntimeConfig
from corral.errors import ListenError
from corral.runtime.services import Services
from corral.server.app import create_app, metrics_served, server_executor
from corral.server.serving import HttpServer, Listener, stop_grace_s


def metrics_options(command: Callable[..., None]) -> Callable[..., None]:
    """``--metrics-port`` and ``--metrics-host``: /metrics without a token, on a port of
    its own (docs/metrics.md)."""
    command = click.option(
        "--metrics-host",
        default="127.0.0.1",
        show_default=True,
        help="The address of --metrics-port. Anyone who reaches it reads the metrics "
        "without a token: keep it on a private network.",
    )(command)
    return click.option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        help="Also serve /metrics, without a token, on this port (0: any free one). "
        "Every process's /metrics shows the whole fleet's sums.",
    )(command)


@contextlib.asynccontextmanager
async def maybe_metrics(services: Services, listener: Listener | None) -> AsyncIterator[None]:
    """``/metrics`` on its own port while the block runs, if one was asked for."""
    if listener is None:
        yield
        return
    try:
        async with metrics_served(
            services, listener, on_ready=lambda: click.echo(f"metrics: {listener.url}/metrics")
        ):
            yield
    finally:
        listener.close()


@click.command()
@click.option("--host", help="The address to listen on; else [server] host (127.0.0.1).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help="The port to listen on (0: any free one); else [server] port (8000).",
)
@click.option("--access-log", is_flag=True, help="Print a line for each request.")
@click.option("--insecure-sandbox", is_flag=True, help="Run even where sandbox layers are missing.")
@metrics_options
@click.pass_obj
def serve(
    obj: Context,
    host: str | None,
    port: int | None,
    access_log: bool,
    insecure_sandbox: bool,
    metrics_host: str,
    metrics_port: int | None,
) -> None:
    """Serve webhooks (/hooks/TOKEN), the admin API (/api/v1), the dashboard (/),
    /metrics and /healthz until SIGTERM or Ctrl-C.

    The API and the dashboard take a token (corral tokens create); the dashboard
    signs a browser in with one. Async deliveries are stored and queued for
    workers (corral worker); sync ones run here, in sandboxes of this server's own.
    Stopping lets the requests in flight finish first, for up to the sync deadline
    and 5 s; a second Ctrl-C drops them. Any number of servers may share one
    PostgreSQL database.

    /metrics on this port takes a token of scope read; --metrics-port serves it
    without one on a port of its own (docs/metrics.md).
    """
    obj.usable_url()
    server = obj.config.server
    listener = Listener(host or server.host, server.port if port is None else port)
    try:
        metrics = (
            None
            if metrics_port is None
            else Listener(metrics_host, metrics_port, option="--metrics-port")
        )
    except ListenError:
        listener.close()
        raise
    asyncio.run(
        _serve(listened(obj.config, listener), listener, access_log, insecure_sandbox, metrics)
    )
    click.echo("stopped")


def listened(config: RuntimeConfig, listener: Listener) -> RuntimeConfig:
    """The configuration with the port actually bound: webhook URLs name it, unless a
    public URL is configured."""
    return replace(config, server=replace(config.server, port=listener.port))


async def _serve(
    config: RuntimeConfig,
    listener: Listener,
    access_log: bool,
    insecure: bool,
    metrics: Listener | None,
) -> None:
    services = Services(config)
    try:
        async with (
            server_executor(services, insecure=insecure) as executor,
            maybe_metrics(services, metrics),
        ):
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
