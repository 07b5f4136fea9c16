"""The ``corral`` commands that operate the runtime: deploy, install, run workers, inspect.

Registered on the main group by :mod:`corral.cli.main`; kept apart so each module
stays one screenful of one concern.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from corral import codec
from corral.cli.dev import runtime_config
from corral.cli.output import console, print_json
from corral.db.errors import DATABASE_ERRORS, gist, unavailable
from corral.db.raw import Database, open_database
from corral.errors import (
    AgentCodeError,
    DatabaseUnavailable,
    DatabaseURLError,
    DeclarationError,
    SandboxUnavailable,
    SchemaOutOfDate,
    UnknownAgent,
    UnknownInstance,
    UnknownTask,
)
from corral.runtime.affinity import pin_to_cpu
from corral.runtime.describe import describe_code
from corral.runtime.history import History
from corral.runtime.registry import Registry
from corral.runtime.reloader import agent_name
from corral.runtime.worker import Worker, WorkerOptions
from corral.tagged_json import to_tagged
from corral.tasks.queue import TaskQueue


def _database(url: str) -> Database:
    try:
        return open_database(url)
    except (DatabaseURLError, SchemaOutOfDate) as exc:
        raise click.ClickException(str(exc)) from None


def _registry(url: str) -> Registry:
    database = _database(url)
    return Registry(database, TaskQueue(database))


def _now() -> int:
    return int(time.time() * 1000)


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@click.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="The agent's name (default: the file's name).")
@click.option("--insecure-sandbox", is_flag=True, help="Load the code even without a sandbox.")
@json_option
@click.pass_obj
def deploy(obj: Any, path: Path, name: str | None, insecure_sandbox: bool, as_json: bool) -> None:
    """Store PATH as the agent's new version; upgrade its instances, lift suspensions."""
    code = path.read_text()
    agent = name or agent_name(path)
    try:
        description = asyncio.run(describe_code(code, insecure=insecure_sandbox))
        deployed = _registry(obj.url).deploy(agent, code, description, now=_now())
    except AgentCodeError as exc:
        raise click.ClickException(f"cannot deploy {exc.where(path)}: {exc}") from None
    except (ValueError, SandboxUnavailable) as exc:
        raise click.ClickException(f"cannot deploy {path}: {exc}") from None
    version = deployed.version
    if as_json:
        print_json(
            {
                "agent": agent,
                "version": version.number,
                "digest": version.digest,
                "created": deployed.created,
                "upgraded": deployed.upgraded,
            }
        )
        return
    state = "new version" if deployed.created else "unchanged code, same version"
    click.echo(f"{agent} v{version.number} ({state}; class {version.description['class']})")
    for instance in deployed.upgraded:
        click.echo(f"  upgrade queued for {instance}")


@click.command()
@click.argument("agent")
@click.option("--priority", default="default", show_default=True)
@click.option("--config", "raw_config", default="{}", metavar="JSON", help="Instance config.")
@json_option
@click.pass_obj
def install(obj: Any, agent: str, priority: str, raw_config: str, as_json: bool) -> None:
    """Install AGENT for a priority; its activate(priority) runs as a task."""
    try:
        config = json.loads(raw_config)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"--config is not JSON ({exc})") from None
    if not isinstance(config, dict):
        raise click.BadParameter("--config must be a JSON object")
    try:
        instance = _registry(obj.url).install(agent, priority=priority, config=config, now=_now())
    except UnknownAgent as exc:
        raise click.ClickException(str(exc)) from None
    except DeclarationError as exc:  # a version stored before deploy checked its tick
        raise click.ClickException(
            f"cannot install {agent}: {exc}; deploy a version that fixes it"
        ) from None
    if as_json:
        print_json({"id": instance.id, "agent": agent, "priority": priority})
    else:
        click.echo(instance.id)
        click.echo("activate queued; a worker runs it (corral worker)", err=True)


@click.command()
@click.argument("instance")
@click.pass_obj
def uninstall(obj: Any, instance: str) -> None:
    """Run INSTANCE's deactivate, then remove its state, tasks and callbacks."""
    try:
        _registry(obj.url).uninstall(instance, now=_now())
    except UnknownInstance as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{instance}: uninstalling (deactivate queued; a worker finishes it)")


@click.command()
@json_option
@click.pass_obj
def instances(obj: Any, as_json: bool) -> None:
    """Installed instances and their status."""
    found = _registry(obj.url).instances()
    if as_json:
        print_json([asdict(i) for i in found])
        return
    table = Table("instance", "agent", "priority", "status", "reason", "installed")
    for i in found:
        table.add_row(
            i.id, i.agent, i.priority, i.status, i.status_reason or "", _when(i.created_at)
        )
    console.print(table)


@click.command()
@click.argument("instance", required=False)
@click.option("--limit", default=20, show_default=True)
@json_option
@click.pass_obj
def executions(obj: Any, instance: str | None, limit: int, as_json: bool) -> None:
    """Execution records, newest first."""
    records = History(_database(obj.url)).executions(instance, limit=limit)
    if as_json:
        print_json(records)
        return
    table = Table("started", "instance", "method", "trigger", "outcome", "requests", "cpu ms", "ms")
    for r in records:
        table.add_row(
            r["started_at"][:19],
            r["instance"],
            r["method"],
            r["trigger"],
            r["outcome"],
            str(r["requests_used"]),
            f"{r['cpu_ms']:.1f}",
            f"{r['duration_ms']:.1f}",
        )
    console.print(table)


@click.command()
@click.argument("instance", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@json_option
@click.pass_obj
def logs(obj: Any, instance: str | None, follow: bool, as_json: bool) -> None:
    """Log lines of executions and of the platform, oldest first."""
    history = History(_database(obj.url))
    after = 0
    while True:
        lines = history.logs(instance, after=after)
        for line in lines:
            if as_json:
                click.echo(json.dumps(line, ensure_ascii=False))
            else:
                click.echo(f"{line['at'][:19]} {line['instance']} {line['level']}: {line['line']}")
            after = line["id"]
        if not follow:
            return
        time.sleep(0.5)


@click.command(
    context_settings={"ignore_unknown_options": False},
    help="Pending tasks, or dead-lettered ones with --dead.\n\n"
    "corral tasks [INSTANCE] [--dead] · corral tasks retry ID · corral tasks cancel ID",
)
@click.argument("words", nargs=-1, metavar="[INSTANCE | retry ID | cancel ID]")
@click.option("--dead", is_flag=True, help="Dead-lettered tasks instead of pending ones.")
@json_option
@click.pass_obj
def tasks(obj: Any, words: tuple[str, ...], dead: bool, as_json: bool) -> None:
    # One command rather than a group: a group's optional INSTANCE would swallow
    # the words "retry" and "cancel".
    queue = TaskQueue(_database(obj.url))
    if words and words[0] in ("retry", "cancel"):
        if len(words) != 2 or not words[1].isdigit():
            raise click.UsageError(f"usage: corral tasks {words[0]} ID (a task id, a number)")
        task_id = int(words[1])
        try:
            if words[0] == "retry":
                queue.retry_dead(task_id, now=_now())
            else:
                queue.cancel(task_id)
        except UnknownTask as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"task {task_id} {'queued again' if words[0] == 'retry' else 'cancelled'}")
        return
    if len(words) > 1:
        raise click.UsageError("give at most one INSTANCE")
    found = queue.list(words[0] if words else None, dead=dead)
    if as_json:
        print_json(
            [{**asdict(t), "args": to_tagged(codec.decode(t.args)), "token": None} for t in found]
        )
        return
    table = Table("id", "instance", "method", "trigger", "state", "run at", "attempts", "error")
    for t in found:
        table.add_row(
            str(t.id),
            t.instance,
            t.method,
            t.trigger,
            t.state + (f" every {t.interval_ms} ms" if t.interval_ms else ""),
            _when(t.run_at),
            f"{t.attempts}/{t.max_attempts}",
            (t.last_error or "")[:80],
        )
    console.print(table)


@click.command()
@click.option("--concurrency", default=4, show_default=True, help="Executions at once.")
@click.option("--until-idle", is_flag=True, help="Exit once no task is due or running.")
@click.option("--cpu", type=int, help="Pin this worker and its sandboxes to the N-th CPU.")
@click.option("--insecure-sandbox", is_flag=True, help="Run even where sandbox layers are missing.")
@click.pass_obj
def worker(
    obj: Any, concurrency: int, until_idle: bool, cpu: int | None, insecure_sandbox: bool
) -> None:
    """Claim due tasks and run them in sandboxes until stopped (Ctrl-C).

    A database outage pauses it (it says so, and again when the database is back);
    a database error that waiting would not fix stops it, with that error.

    Each instance's quotas come from CORRAL_QUOTAS_STORE_BYTES, _STORE_KEYS,
    _PENDING_TASKS and _CALLBACKS (docs/store.md, Quotas).
    """
    if cpu is not None:
        click.echo(f"pinned to CPU {pin_to_cpu(cpu)}", err=True)
    options = WorkerOptions(concurrency=concurrency, insecure=insecure_sandbox)
    config = runtime_config()

    async def serve() -> int:
        runner = Worker(_database(obj.url), options=options, config=config)
        try:
            await runner.run(until_idle=until_idle)
        finally:
            await runner.close()
        return runner.executed

    try:
        executed = asyncio.run(serve())
    except SandboxUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    except DATABASE_ERRORS as exc:
        raise click.ClickException(_stopped(exc)) from None
    except KeyboardInterrupt:
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


COMMANDS = [deploy, install, uninstall, instances, executions, logs, tasks, worker]
