"""Agents, their versions and their instances: what exists and what code it runs.

A version's code lives in the database, content-hashed, so any worker on any
machine can run any instance. Deploying identical code makes no new version,
but still counts as a deploy: it lifts auto-suspension.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from corral import codec
from corral.db.raw import Database
from corral.errors import UnknownAgent, UnknownInstance
from corral.runtime.declared import tick_ms
from corral.tasks.queue import NO_ARGS, TaskQueue

ACTIVE, SUSPENDED, UNINSTALLING, REMOVED = "active", "suspended", "uninstalling", "removed"


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
class Deployed:
    version: Version
    created: bool
    upgraded: list[str]


_INSTANCE_COLUMNS = (
    "id, agent, priority, status, status_reason, config, created_at, limits_reset_at"
)


class Registry:
    def __init__(self, database: Database, queue: TaskQueue) -> None:
        self.database = database
        self.queue = queue
        self._versions: dict[tuple[str, int], Version] = {}  # immutable once written

    def deploy(self, name: str, code: str, description: dict[str, Any], *, now: int) -> Deployed:
        """Store the code as the agent's current version; upgrade and unsuspend instances."""
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(
                f"an agent name is letters, digits, '-' and '_', got {name!r}; use --name"
            )
        digest = hashlib.sha256(code.encode()).hexdigest()
        db = self.database
        with db.transaction(write=True) as cur:
            row = db.execute(
                cur,
                "SELECT v.number, v.digest FROM agents a JOIN versions v "
                "ON v.agent = a.name AND v.number = a.current_version WHERE a.name = :name",
                {"name": name},
            ).fetchone()
            created = row is None or row[1] != digest
            number = row[0] if row is not None else 0
            if created:
                number = (
                    1
                    + (
                        db.execute(
                            cur,
                            "SELECT coalesce(max(number), 0) FROM versions WHERE agent = :name",
                            {"name": name},
                        ).fetchone()[0]
                    )
                )
                db.execute(
                    cur,
                    "INSERT INTO versions (agent, number, digest, code, description, created_at) "
                    "VALUES (:agent, :number, :digest, :code, :description, :now)",
                    {
                        "agent": name,
                        "number": number,
                        "digest": digest,
                        "code": code,
                        "description": json.dumps(description),
                        "now": now,
                    },
                )
                if row is None:
                    db.execute(
                        cur,
                        "INSERT INTO agents (name, current_version, created_at) "
                        "VALUES (:name, :number, :now)",
                        {"name": name, "number": number, "now": now},
                    )
                else:
                    db.execute(
                        cur,
                        "UPDATE agents SET current_version = :number WHERE name = :name",
                        {"name": name, "number": number},
                    )
            db.execute(
                cur,
                "UPDATE instances SET status = 'active', status_reason = NULL, "
                "limits_reset_at = :now WHERE agent = :name AND status = 'suspended'",
                {"name": name, "now": now},
            )
            live = [
                r[0]
                for r in db.execute(
                    cur,
                    "SELECT id FROM instances WHERE agent = :name AND status = 'active' "
                    "ORDER BY id",
                    {"name": name},
                ).fetchall()
            ]
        upgraded = live if created and row is not None else []
        for instance in upgraded:
            self.queue.enqueue(instance, "upgrade", NO_ARGS, now=now, trigger="lifecycle")
        version = Version(name, number, digest, code, description)
        return Deployed(version, created, upgraded)

    def install(self, agent: str, *, priority: str, config: dict[str, Any], now: int) -> Instance:
        """A new instance of the agent's current version; its ``activate`` is queued."""
        tick = tick_ms(self.current_version(agent).description)  # the agent must exist
        instance = Instance(
            f"{agent}-{secrets.token_hex(4)}", agent, priority, ACTIVE, None, config, now
        )
        self.database.write(
            "INSERT INTO instances (id, agent, priority, status, status_reason, config, "
            "created_at) VALUES (:id, :agent, :priority, 'active', NULL, :config, :now)",
            {
                "id": instance.id,
                "agent": agent,
                "priority": priority,
                "config": json.dumps(config),
                "now": now,
            },
        )

        self.queue.enqueue(
            instance.id, "activate", codec.encode([priority]), now=now, trigger="lifecycle"
        )
        if tick is not None:  # a plugin: the platform drives decide() on a timer
            self.queue.schedule_recurring(
                instance.id,
                "corral:tick",
                "on_tick",
                NO_ARGS,
                interval_ms=tick,
                first_run_at=now + tick,
                now=now,
                trigger="tick",
            )
        return instance

    def uninstall(self, instance_id: str, *, now: int) -> None:
        """Stop the instance's work, queue ``deactivate``; cleanup follows it."""
        instance = self.instance(instance_id)
        if instance.status in (UNINSTALLING, REMOVED):
            return
        self.set_status(instance_id, UNINSTALLING, "uninstall requested")
        self.queue.enqueue(instance_id, "deactivate", NO_ARGS, now=now, trigger="lifecycle")

    def remove(self, instance_id: str) -> None:
        """After ``deactivate``: the instance's state, tasks and callbacks go."""
        with self.database.transaction(write=True) as cur:
            for sql in (
                "DELETE FROM state WHERE scope = :id",
                "DELETE FROM state_usage WHERE scope = :id",  # emptied by the line above
                "DELETE FROM state_locks WHERE scope = :id",
                "DELETE FROM tasks WHERE instance = :id",
                "DELETE FROM callbacks WHERE instance = :id",
                "UPDATE instances SET status = 'removed', status_reason = NULL WHERE id = :id",
            ):
                self.database.execute(cur, sql, {"id": instance_id})

    def set_status(self, instance_id: str, status: str, reason: str | None) -> None:
        self.database.write(
            "UPDATE instances SET status = :status, status_reason = :reason WHERE id = :id",
            {"id": instance_id, "status": status, "reason": reason},
        )

    def instance(self, instance_id: str) -> Instance:
        row = self.database.fetch_one(
            f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE id = :id",
            {"id": instance_id},
        )
        if row is None:
            raise UnknownInstance(f"there is no instance {instance_id!r} (see corral instances)")
        return _instance(row)

    def instances(self, *, include_removed: bool = False) -> list[Instance]:
        where = "" if include_removed else "WHERE status <> 'removed'"
        rows = self.database.fetch_all(
            f"SELECT {_INSTANCE_COLUMNS} FROM instances {where} ORDER BY created_at, id"
        )
        return [_instance(row) for row in rows]

    def current_version(self, agent: str) -> Version:
        row = self.database.fetch_one(
            "SELECT current_version FROM agents WHERE name = :name", {"name": agent}
        )
        if row is None:
            raise UnknownAgent(f"there is no agent {agent!r}: deploy it first (corral deploy)")
        return self.version(agent, row[0])

    def version(self, agent: str, number: int) -> Version:
        cached = self._versions.get((agent, number))
        if cached is not None:
            return cached
        row = self.database.fetch_one(
            "SELECT digest, code, description FROM versions "
            "WHERE agent = :agent AND number = :number",
            {"agent": agent, "number": number},
        )
        if row is None:
            raise UnknownAgent(f"agent {agent!r} has no version {number}")
        version = Version(agent, number, row[0], row[1], json.loads(row[2]))
        self._versions[(agent, number)] = version
        return version

    def for_execution(self, instance_id: str) -> tuple[Instance, Version]:
        """The instance and the version it runs now."""
        found = self.for_executions([instance_id])
        if instance_id not in found:
            raise UnknownInstance(f"there is no instance {instance_id!r}")
        return found[instance_id]

    #: What ``for_executions`` reads of an instance ``i`` and its agent ``a``.
    EXECUTION_COLUMNS = (
        ", ".join("i." + column for column in _INSTANCE_COLUMNS.split(", ")) + ", a.current_version"
    )

    def for_executions(self, instance_ids: Iterable[str]) -> dict[str, tuple[Instance, Version]]:
        """Each instance and the version it runs now: one read for a claimed batch."""
        ids = sorted(set(instance_ids))
        placeholders = ", ".join(f":i{n}" for n in range(len(ids)))
        rows = self.database.fetch_all(
            f"SELECT {self.EXECUTION_COLUMNS} FROM instances i JOIN agents a ON a.name = i.agent "
            f"WHERE i.id IN ({placeholders})",
            {f"i{n}": instance_id for n, instance_id in enumerate(ids)},
        )
        return dict(self.for_execution_row(row) for row in rows)

    def for_execution_row(self, row: Sequence[Any]) -> tuple[str, tuple[Instance, Version]]:
        """An instance and its version from the values of ``EXECUTION_COLUMNS``."""
        instance = _instance(row[:8])
        return instance.id, (instance, self.version(instance.agent, row[8]))

    def agents(self) -> list[tuple[str, int, int]]:
        """(name, current version, instances not removed) for each agent."""
        return [
            (r[0], r[1], r[2])
            for r in self.database.fetch_all(
                "SELECT a.name, a.current_version, count(i.id) FROM agents a LEFT JOIN "
                "instances i ON i.agent = a.name AND i.status <> 'removed' "
                "GROUP BY a.name, a.current_version ORDER BY a.name"
            )
        ]


def _instance(row: Any) -> Instance:
    return Instance(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6], row[7])
