"""The queue and who works it: ``tasks`` (list, retry, cancel) and ``worker``."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import asdict

import click

from corral import codec
from corral.cli.context import Context, now_ms
from corral.cli.output import iso, json_option, print_json, print_table, table, when
from corral.cli.serve import maybe_metrics, metrics_options
from corral.db.errors import DATABASE_ERRORS, gist, unavailable
from corral.errors import DatabaseUnavailable
from corral.runtime.affinity import pin_to_cpu
from corral.runtime.worker import Worker, WorkerOptions
from corral.server.serving import Listener
from corral.tagged_json import to_tagged


@click.command(
    context_settings={"ignore_unknown_options": False},
    help="Pending tasks, or dead-lettered ones with --dead; times are UTC.\n\n"
    "corral tasks [INSTANCE] [--dead] · corral tasks retry ID · corral tasks cancel ID",
)
@click.argument("words", nargs=-1, metavar="[INSTANCE | retry ID | cancel ID]")
@click.option("--dead", is_flag=True, help="Dead-lettered tasks instead of pending ones.")
@json_option
@click.pass_obj
def tasks(obj: Context, words: tuple[str, ...], dead: bool, as_json: bool) -> None:
    # One command rather than a group: a group's optional INSTANCE would swallow
    # the words "retry" and "cancel".
    queue = obj.services.queue
    if words and words[0] in ("retry", "cancel"):
        if len(words) != 2 or not words[1].isdigit():
            raise click.UsageError(f"usage: corral tasks {words[0]} ID (a task id, a number)")
        task_id = int(words[1])
        if words[0] == "retry":
            queue.retry_dead(task_id, now=now_ms())
        else:
            queue.cancel(task_id)
        click.echo(f"task {task_id} {'queued again' if words[0] == 'retry' else 'cancelled'}")
        return
    instance = obj.listed_instance(words)
    found = queue.list(instance, dead=dead)
    if as_json:
        print_json(
            [
                {
                    **asdict(t),
                    "args": to_tagged(codec.decode(t.args)),
                    "token": None,  # a callback's secret: never printed
                    "run_at": iso(t.run_at),
                    "lease_until": iso(t.lease_until),
                    "created_at": iso(t.created_at),
                }
                for t in found
            ]
        )
        return
    shown = table(
        "id", "instance", "method", "trigger", "state", "run at", "attempts", "error", text="error"
    )
    for t in found:
        shown.add_row(
            str(t.id),
            t.instance,
            t.method,
            t.trigger,
            t.state + (f" every {t.interval_ms} ms" if t.interval_ms else ""),
            when(t.run_at),
            f"{t.attempts}/{t.max_attempts}",
            t.last_error or "",
        )
    print_table(shown)


@click.command()
@click.option(
    "--concurrency",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="Executions at once.",
)
@click.option("--until-idle", is_flag=True, help="Exit once no task is due or running.")
@click.option(
    "--cpu",
    type=click.IntRange(min=0),
    help="Pin this worker and its sandboxes to the N-th CPU (counting from 0, wrapping round).",
)
@click.option("--insecure-sandbox", is_flag=True, help="Run even where sandbox layers are missing.")
@metrics_options
@click.pass_obj
def worker(
    obj: Context,
    concurrency: int,
    until_idle: bool,
    cpu: int | None,
    insecure_sandbox: bool,
    metrics_host: str,
    metrics_port: int | None,
) -> None:
    """Claim due tasks and run them in sandboxes until stopped (Ctrl-C or SIGTERM:
    the executions in flight finish first).

    A database outage pauses it (it says so, and again when the database is back);
    a database error that waiting would not fix stops it, with that error.

    Limits, ceilings, rate limits, retries and quotas are those of the
    configuration: corral config prints them.

    The worker counts what it runs for /metrics, which a server serves (docs/metrics.md);
    --metrics-port serves it here too, without a token.
    """
    metrics = None
    if metrics_port is not None:
        metrics = Listener(metrics_host, metrics_port, option="--metrics-port")
    if cpu is not None:
        click.echo(f"pinned to CPU {pin_to_cpu(cpu)}", err=True)
    options = WorkerOptions(concurrency=concurrency, insecure=insecure_sandbox)

    async def serve() -> int:
        services = obj.services
        runner = Worker(services, options=options)
        # SIGTERM stops it as Ctrl-C does: what it counted is written as it closes.
        main = asyncio.current_task()
        assert main is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
        try:
            async with maybe_metrics(services, metrics):
                await runner.run(until_idle=until_idle)
        finally:
            await runner.close()
            await services.close()
        return runner.executed

    try:
        executed = asyncio.run(serve())
    except DATABASE_ERRORS as exc:
        raise click.ClickException(_stopped(exc)) from None
    except (KeyboardInterrupt, asyncio.CancelledError):
        return
    click.echo(f"idle: {executed} execution(s) run", err=True)


def _stopped(exc: Exception) -> str:
    """Why the worker stopped on a database error: unreachable as it started (once
    running, it waits an outage out), or an error that waiting would not fix."""
    cause = exc.__cause__ if isinstance(exc, DatabaseUnavailable) else exc
    if isinstance(exc, DatabaseUnavailable) or unavailable(exc) is not None:
        return (
            f"cannot start the worker: the database is unreachable ({gist(cause or exc)}); "
            "start it again once the database is up"
        )
    return (
        f"the worker stopped on a database error that waiting would not fix: "
        f"{type(exc).__name__}: {gist(exc)}; check the database URL, its user's rights and "
        "the schema (corral migrate), then start the worker again"
    )


COMMANDS = [tasks, worker]
