"""Agents, their versions and their instances: what exists and what code it runs.

A version's code lives in the database, content-hashed, so any worker on any
machine can run any instance. Deploying identical code makes no new version,
but still counts as a deploy: it lifts auto-suspension.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from corral import codec
from corral.activities import priority_name
from corral.db.raw import Database
from corral.db.registry import ACTIVE, REMOVED, SUSPENDED, UNINSTALLING, RegistryDatabase
from corral.errors import UnknownAgent, UnknownInstance
from corral.runtime.declared import tick_ms
from corral.tasks.queue import NO_ARGS, TaskQueue

if TYPE_CHECKING:
    from corral.plot.service import Plot
    from corral.runtime.webhooks import Webhooks

__all__ = [
    "ACTIVE",
    "REMOVED",
    "SUSPENDED",
    "UNINSTALLING",
    "AgentInfo",
    "Deployed",
    "Instance",
    "Registry",
    "UnknownAgent",
    "UnknownInstance",
    "Version",
]


@dataclass(frozen=True)
class Version:
    agent: str
    number: int
    digest: str
    code: str
    description: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.agent} v{self.number}"


@dataclass(frozen=True)
class Instance:
    id: str
    agent: str
    priority: str
    status: str
    status_reason: str | None
    config: dict[str, Any]
    created_at: int
    #: When a deploy last lifted a suspension: rate windows count from there.
    limits_reset_at: int | None = None


@dataclass(frozen=True)
class AgentInfo:
    """An agent as listings show it: its current version and what that declares."""

    name: str
    version: int
    created_at: int
    #: When the current version was deployed.
    deployed_at: int
    description: dict[str, Any]
    #: Its instances, removed ones aside.
    instances: int


@dataclass(frozen=True)
class Deployed:
    version: Version
    created: bool
    upgraded: list[str]


#: The longest agent name: it names its instances, which activities and events carry.
MAX_AGENT_NAME = 100

#: The method a plugin's ticks run, timed or posted.
TICK_METHOD = "on_tick"


class Registry:
    """Deploy, install and uninstall, each one transaction with the lifecycle tasks it
    queues: a crash anywhere leaves either all of it or none of it."""

    def __init__(
        self, database: Database, queue: TaskQueue, webhooks: Webhooks, plot: Plot
    ) -> None:
        self.database = database
        self.queue = queue
        self.webhooks = webhooks
        self.plot = plot
        self._db = RegistryDatabase(database)
        self._versions: dict[tuple[str, int], Version] = {}  # immutable once written

    def deploy(self, name: str, code: str, description: dict[str, Any], *, now: int) -> Deployed:
        """Store the code as the agent's current version; upgrade and unsuspend instances.

        A new version and the ``upgrade`` task of each active instance are one commit.
        """
        if (
            not name
            or len(name) > MAX_AGENT_NAME
            or not name.replace("-", "").replace("_", "").isalnum()
        ):
            raise ValueError(
                f"an agent name is letters, digits, '-' and '_', at most {MAX_AGENT_NAME} "
                f"characters, got {name[:120]!r}; use --name"
            )
        digest = hashlib.sha256(code.encode()).hexdigest()
        with self.database.transaction(write=True):
            current = self._db.current_version(name)
            created = current is None or current[1] != digest
            if created:
                number = self._db.add_version(
                    name, digest, code, json.dumps(description), first=current is None, now=now
                )
            else:
                assert current is not None
                number = current[0]
            live = self._db.lift_suspensions(name, now=now)
            upgraded = live if created and current is not None else []
            for instance in upgraded:
                self.queue.enqueue(instance, "upgrade", NO_ARGS, now=now, trigger="lifecycle")
        version = Version(name, number, digest, code, description)
        return Deployed(version, created, upgraded)

    def install(self, agent: str, *, priority: str, config: dict[str, Any], now: int) -> Instance:
        """A new instance of the agent's current version, its priority (made if it is new)
        and its ``activate`` task (and a plugin's tick schedule and tick endpoint): one
        commit. ``ValueError`` for a malformed priority name."""
        priority = priority_name(priority, "--priority")
        description = self.current_version(agent).description  # the agent must exist
        tick = tick_ms(description)
        instance = Instance(
            f"{agent}-{secrets.token_hex(4)}", agent, priority, ACTIVE, None, config, now
        )
        with self.database.transaction(write=True):
            self.plot.add_priority(priority, now=now)
            self._db.add_instance(
                instance.id, agent, priority=priority, config=json.dumps(config), now=now
            )
            self.queue.enqueue(
                instance.id, "activate", codec.encode([priority]), now=now, trigger="lifecycle"
            )
            if tick is not None:  # a plugin: the platform drives decide() on a timer
                self.queue.schedule_recurring(
                    instance.id,
                    "corral:tick",
                    TICK_METHOD,
                    NO_ARGS,
                    interval_ms=tick,
                    first_run_at=now + tick,
                    now=now,
                    trigger="tick",
                )
            methods = description.get("methods")
            if isinstance(methods, list) and TICK_METHOD in methods:
                # A plugin: ticks may also be posted to its endpoint (corral webhooks).
                self.webhooks.create(
                    instance.id,
                    TICK_METHOD,
                    NO_ARGS,
                    mode="async",
                    verify=None,
                    max_body_bytes=None,
                    now=now,
                    quotas=None,
                    kind="tick",
                )
        return instance

    def uninstall(self, instance_id: str, *, now: int) -> None:
        """Stop the instance's work, tombstone its webhooks (their URLs answer 410) and
        queue ``deactivate``, one commit; cleanup follows it (``Executor``)."""
        with self.database.transaction(write=True):
            instance = self.instance(instance_id)
            if instance.status in (UNINSTALLING, REMOVED):
                return
            self.set_status(instance_id, UNINSTALLING, "uninstall requested")
            self.webhooks.delete_all(instance_id, now=now)
            self.queue.enqueue(instance_id, "deactivate", NO_ARGS, now=now, trigger="lifecycle")

    def remove(self, instance_id: str) -> None:
        """After ``deactivate``: the instance's state, tasks and callbacks go."""
        self._db.remove_instance(instance_id)

    def set_status(self, instance_id: str, status: str, reason: str | None) -> None:
        self._db.set_status(instance_id, status, reason)

    def instance(self, instance_id: str) -> Instance:
        row = self._db.instance(instance_id)
        if row is None:
            raise UnknownInstance(f"there is no instance {instance_id!r} (see corral instances)")
        return instance_from_row(row)

    def instances(self, *, include_removed: bool = False) -> list[Instance]:
        return [
            instance_from_row(row) for row in self._db.instances(include_removed=include_removed)
        ]

    def instances_page(
        self,
        *,
        status: str | None = None,
        agent: str | None = None,
        priority: str | None = None,
        before: tuple[int, str] | None = None,
        limit: int,
    ) -> list[Instance]:
        """Instances newest first (removed ones only with ``status="removed"``), filtered;
        ``before`` (created_at, id): the page after that instance."""
        rows = self._db.instances_page(
            status=status, agent=agent, priority=priority, before=before, limit=limit
        )
        return [instance_from_row(row) for row in rows]

    def current_version(self, agent: str) -> Version:
        number = self._db.current_version_number(agent)
        if number is None:
            raise UnknownAgent(f"there is no agent {agent!r}: deploy it first (corral deploy)")
        return self.version(agent, number)

    def version(self, agent: str, number: int) -> Version:
        cached = self._versions.get((agent, number))
        if cached is not None:
            return cached
        found = self._db.version(agent, number)
        if found is None:
            raise UnknownAgent(f"agent {agent!r} has no version {number}")
        digest, code, description = found
        version = Version(agent, number, digest, code, json.loads(description))
        self._versions[(agent, number)] = version
        return version

    def for_execution_row(self, row: Sequence[Any]) -> tuple[str, tuple[Instance, Version]]:
        """An instance and its version from the values of ``EXECUTION_COLUMNS``, as every
        lease reads them with its task (``TaskQueue.claim``)."""
        instance = instance_from_row(row[:8])
        return instance.id, (instance, self.version(instance.agent, row[8]))

    def agents(self) -> list[tuple[str, int, int]]:
        """(name, current version, instances not removed) for each agent."""
        return self._db.agents()

    def agents_page(self, *, before: tuple[int, str] | None = None, limit: int) -> list[AgentInfo]:
        """Agents newest first; ``before`` (created_at, name): the page after that one."""
        return [
            AgentInfo(
                row[0], int(row[1]), int(row[2]), int(row[4]), json.loads(row[3]), int(row[5])
            )
            for row in self._db.agents_page(before=before, limit=limit)
        ]


def instance_from_row(row: Any) -> Instance:
    """An instance from the values of ``INSTANCE_COLUMNS``."""
    return Instance(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6], row[7])
