"""The registry's statements: agents, their versions and their instances.

Both backends run the same SQL here. The status strings of an instance are
defined here, once: the task queue's claims read them too (an instance's tasks
run only while it is active, and its ``deactivate`` hook while it is being
uninstalled).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from corral.db.raw import Database

ACTIVE, SUSPENDED, UNINSTALLING, REMOVED = "active", "suspended", "uninstalling", "removed"

#: An instance's columns, in the order of ``corral.runtime.registry.Instance``'s fields.
INSTANCE_COLUMNS = (
    "id",
    "agent",
    "priority",
    "status",
    "status_reason",
    "config",
    "created_at",
    "limits_reset_at",
)
#: What an execution needs of its instance ``i`` and the instance's agent ``a``: the
#: instance's columns, then the number of the version it runs now. Every lease
#: (claim, settlement with claim, hand-off) reads these with its tasks.
EXECUTION_COLUMNS = ", ".join(f"i.{column}" for column in INSTANCE_COLUMNS) + ", a.current_version"
#: The join that ``EXECUTION_COLUMNS`` reads over, from a row ``{task}`` of tasks.
EXECUTION_JOIN = "JOIN instances i ON i.id = {task}.instance JOIN agents a ON a.name = i.agent"

_SELECT_INSTANCE = f"SELECT {', '.join(INSTANCE_COLUMNS)} FROM instances"


class RegistryDatabase:
    """Named operations on the agents, versions and instances tables."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def current_version(self, agent: str) -> tuple[int, str] | None:
        """(number, digest) of the agent's current version; None for no such agent."""
        row = self.database.fetch_one(
            "SELECT v.number, v.digest FROM agents a JOIN versions v "
            "ON v.agent = a.name AND v.number = a.current_version WHERE a.name = :name",
            {"name": agent},
        )
        return None if row is None else (int(row[0]), str(row[1]))

    def add_version(
        self, agent: str, digest: str, code: str, description: str, *, first: bool, now: int
    ) -> int:
        """Store a new version and make it the agent's current one (``first``: the agent
        is new too); returns its number."""
        with self.database.transaction(write=True) as cur:
            (highest,) = self.database.execute(
                cur,
                "SELECT coalesce(max(number), 0) FROM versions WHERE agent = :name",
                {"name": agent},
            ).fetchone()
            number = int(highest) + 1
            self.database.execute(
                cur,
                "INSERT INTO versions (agent, number, digest, code, description, created_at) "
                "VALUES (:agent, :number, :digest, :code, :description, :now)",
                {
                    "agent": agent,
                    "number": number,
                    "digest": digest,
                    "code": code,
                    "description": description,
                    "now": now,
                },
            )
            self.database.execute(
                cur,
                "INSERT INTO agents (name, current_version, created_at) "
                "VALUES (:name, :number, :now)"
                if first
                else "UPDATE agents SET current_version = :number WHERE name = :name",
                {"name": agent, "number": number, "now": now},
            )
        return number

    def lift_suspensions(self, agent: str, *, now: int) -> list[str]:
        """Make the agent's suspended instances active again (their rate windows count
        from ``now``); returns the ids of its active instances, all of them."""
        with self.database.transaction(write=True) as cur:
            self.database.execute(
                cur,
                f"UPDATE instances SET status = '{ACTIVE}', status_reason = NULL, "
                f"limits_reset_at = :now WHERE agent = :name AND status = '{SUSPENDED}'",
                {"name": agent, "now": now},
            )
            rows = self.database.execute(
                cur,
                f"SELECT id FROM instances WHERE agent = :name AND status = '{ACTIVE}' ORDER BY id",
                {"name": agent},
            ).fetchall()
        return [row[0] for row in rows]

    def add_instance(
        self, instance: str, agent: str, *, priority: str, config: str, now: int
    ) -> None:
        self.database.write(
            "INSERT INTO instances (id, agent, priority, status, status_reason, config, "
            f"created_at) VALUES (:id, :agent, :priority, '{ACTIVE}', NULL, :config, :now)",
            {"id": instance, "agent": agent, "priority": priority, "config": config, "now": now},
        )

    def remove_instance(self, instance: str) -> None:
        """The instance's state, tasks and callbacks go; its row stays, ``removed``."""
        with self.database.transaction(write=True) as cur:
            for sql in (
                "DELETE FROM state WHERE scope = :id",
                "DELETE FROM state_usage WHERE scope = :id",  # emptied by the line above
                "DELETE FROM state_locks WHERE scope = :id",
                "DELETE FROM tasks WHERE instance = :id",
                "DELETE FROM callbacks WHERE instance = :id",
                f"UPDATE instances SET status = '{REMOVED}', status_reason = NULL WHERE id = :id",
            ):
                self.database.execute(cur, sql, {"id": instance})

    def set_status(self, instance: str, status: str, reason: str | None) -> None:
        self.database.write(
            "UPDATE instances SET status = :status, status_reason = :reason WHERE id = :id",
            {"id": instance, "status": status, "reason": reason},
        )

    def instance(self, instance: str) -> Sequence[Any] | None:
        """The instance's ``INSTANCE_COLUMNS``, or None."""
        row: Sequence[Any] | None = self.database.fetch_one(
            f"{_SELECT_INSTANCE} WHERE id = :id", {"id": instance}
        )
        return row

    def instances(self, *, include_removed: bool) -> list[Sequence[Any]]:
        where = "" if include_removed else f" WHERE status <> '{REMOVED}'"
        return self.database.fetch_all(f"{_SELECT_INSTANCE}{where} ORDER BY created_at, id")

    def instances_page(
        self,
        *,
        status: str | None,
        agent: str | None,
        priority: str | None,
        before: tuple[int, str] | None,
        limit: int,
    ) -> list[Sequence[Any]]:
        """Instances newest first, filtered; ``before`` (created_at, id): the page after it.
        Removed ones only when asked for by ``status``."""
        where = [f"status <> '{REMOVED}'"] if status is None else ["status = :status"]
        if agent is not None:
            where.append("agent = :agent")
        if priority is not None:
            where.append("priority = :priority")
        if before is not None:
            # ``created_at <= :b_at`` on its own too: PostgreSQL starts the index scan
            # there, where the OR alone made it walk every newer row first.
            where.append(
                "created_at <= :b_at "
                "AND (created_at < :b_at OR (created_at = :b_at AND id < :b_id))"
            )
        b_at, b_id = before if before is not None else (None, None)
        return self.database.fetch_all(
            f"{_SELECT_INSTANCE} WHERE {' AND '.join(where)} "
            "ORDER BY created_at DESC, id DESC LIMIT :limit",
            {
                "status": status,
                "agent": agent,
                "priority": priority,
                "b_at": b_at,
                "b_id": b_id,
                "limit": limit,
            },
        )

    def current_version_number(self, agent: str) -> int | None:
        row = self.database.fetch_one(
            "SELECT current_version FROM agents WHERE name = :name", {"name": agent}
        )
        return None if row is None else int(row[0])

    def version(self, agent: str, number: int) -> tuple[str, str, str] | None:
        """(digest, code, description as JSON) of one version, or None."""
        row = self.database.fetch_one(
            "SELECT digest, code, description FROM versions "
            "WHERE agent = :agent AND number = :number",
            {"agent": agent, "number": number},
        )
        return None if row is None else (row[0], row[1], row[2])

    def for_executions(self, instances: Sequence[str]) -> list[Sequence[Any]]:
        """The ``EXECUTION_COLUMNS`` of each of these instances."""
        placeholders = ", ".join(f":i{n}" for n in range(len(instances)))
        return self.database.fetch_all(
            f"SELECT {EXECUTION_COLUMNS} FROM instances i JOIN agents a ON a.name = i.agent "
            f"WHERE i.id IN ({placeholders})",
            {f"i{n}": instance for n, instance in enumerate(instances)},
        )

    def agents_page(self, *, before: tuple[int, str] | None, limit: int) -> list[Sequence[Any]]:
        """(name, current version, created_at, the current version's description as
        JSON and when it was made, instances not removed) of each agent, newest first;
        ``before`` (created_at, name): the page after that agent."""
        keyed = "WHERE (a.created_at, a.name) < (:b_at, :b_name) " if before is not None else ""
        b_at, b_name = before if before is not None else (None, None)
        return self.database.fetch_all(
            "SELECT a.name, a.current_version, a.created_at, v.description, v.created_at, "
            "(SELECT count(*) FROM instances i WHERE i.agent = a.name "
            f"AND i.status <> '{REMOVED}') "
            "FROM agents a JOIN versions v ON v.agent = a.name AND v.number = a.current_version "
            f"{keyed}ORDER BY a.created_at DESC, a.name DESC LIMIT :limit",
            {"b_at": b_at, "b_name": b_name, "limit": limit},
        )

    def agents(self) -> list[tuple[str, int, int]]:
        """(name, current version, instances not removed) for each agent."""
        return [
            (row[0], row[1], row[2])
            for row in self.database.fetch_all(
                "SELECT a.name, a.current_version, count(i.id) FROM agents a LEFT JOIN "
                f"instances i ON i.agent = a.name AND i.status <> '{REMOVED}' "
                "GROUP BY a.name, a.current_version ORDER BY a.name"
            )
        ]
