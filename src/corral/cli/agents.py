"""Agents and their instances: ``deploy``, ``install``, ``uninstall``, ``instances``."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path

import click

from corral.cli.context import Context, now_ms, priority_option
from corral.cli.output import iso, json_option, print_json, print_table, table, when
from corral.errors import AgentCodeError, DeclarationError, SandboxUnavailable
from corral.runtime.describe import agent_source
from corral.runtime.reloader import agent_name


@click.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="The agent's name (default: the file's name).")
@click.option("--insecure-sandbox", is_flag=True, help="Load the code even without a sandbox.")
@json_option
@click.pass_obj
def deploy(
    obj: Context, path: Path, name: str | None, insecure_sandbox: bool, as_json: bool
) -> None:
    """Store PATH as the agent's new version; upgrade its instances, lift suspensions."""
    agent = name or agent_name(path)
    try:
        code = agent_source(path.read_bytes())
        description = asyncio.run(
            obj.services.describe(code, insecure=insecure_sandbox, filename=str(path))
        )
        deployed = obj.services.registry.deploy(agent, code, description, now=now_ms())
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
@priority_option(
    "The priority it works in: letters, digits, '_', '.' and '-', nested with '/' "
    "(work/acme); made if new, with those above it."
)
@click.option("--config", "raw_config", default="{}", metavar="JSON", help="Instance config.")
@json_option
@click.pass_obj
def install(obj: Context, agent: str, priority: str, raw_config: str, as_json: bool) -> None:
    """Install AGENT for a priority; its activate(priority) runs as a task."""
    try:
        config = json.loads(raw_config)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"--config is not JSON ({exc})") from None
    if not isinstance(config, dict):
        raise click.BadParameter("--config must be a JSON object")
    try:
        instance = obj.services.registry.install(
            agent, priority=priority, config=config, now=now_ms()
        )
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
def uninstall(obj: Context, instance: str) -> None:
    """Run INSTANCE's deactivate, then remove its state, tasks and callbacks."""
    obj.services.registry.uninstall(instance, now=now_ms())
    click.echo(f"{instance}: uninstalling (deactivate queued; a worker finishes it)")


@click.command()
@json_option
@click.pass_obj
def instances(obj: Context, as_json: bool) -> None:
    """Installed instances and their status."""
    found = obj.services.registry.instances()
    if as_json:
        print_json(
            [
                {
                    **asdict(i),
                    "created_at": iso(i.created_at),
                    "limits_reset_at": iso(i.limits_reset_at),
                }
                for i in found
            ]
        )
        return
    shown = table("instance", "agent", "priority", "status", "reason", "installed", text="reason")
    for i in found:
        shown.add_row(
            i.id, i.agent, i.priority, i.status, i.status_reason or "", when(i.created_at)
        )
    print_table(shown)


COMMANDS = [deploy, install, uninstall, instances]
