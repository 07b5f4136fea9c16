"""The webhooks' statements: webhooks, their deliveries, and what the log derives.

Both backends run the same SQL here. Rows come back in the order of
``WEBHOOK_COLUMNS`` and ``DELIVERY_COLUMNS``; ``corral.runtime.webhooks`` makes
them into ``Webhook`` and ``Delivery``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from corral.db.quota import count_before_insert
from corral.db.raw import Database
from corral.db.registry import INSTANCE_COLUMNS

WEBHOOK_COLUMNS = (
    "id",
    "token",
    "instance",
    "method",
    "args",
    "mode",
    "kind",
    "verify",
    "max_body_bytes",
    "created_at",
    "deleted_at",
)
DELIVERY_COLUMNS = (
    "id",
    "webhook_id",
    "instance",
    "dedupe_key",
    "received_at",
    "method",
    "query",
    "headers",
    "body",
    "mode",
    "replay_of",
    "task_token",
    "execution_id",
    "response_status",
    "response_headers",
    "response_body",
    "answered_at",
    "duplicates",
)
#: What a delivery is inserted with: the rest is NULL (or 0) until it is answered.
INSERTED_COLUMNS = DELIVERY_COLUMNS[:12]

#: The webhooks an agent made itself: what its quota counts and its tools see.
_AGENTS_LIVE = "instance = :instance AND kind = 'webhook' AND deleted_at IS NULL"

_SELECT_WEBHOOK = f"SELECT {', '.join(WEBHOOK_COLUMNS)} FROM webhooks"
_SELECT_DELIVERY = f"SELECT {', '.join(DELIVERY_COLUMNS)} FROM deliveries"

Row = Sequence[Any]

# Any fixed number shared by every Corral process, "ddup": "the turn of a delivery id".
_DEDUPE_LOCK_CLASS = 0x64647570


class WebhookDatabase:
    """Named operations on the webhooks and deliveries tables."""

    def __init__(self, database: Database) -> None:
        self.database = database

    # -- webhooks ---------------------------------------------------------------------

    def count_live(self, instance: str, limit: int) -> int:
        """The instance's own live webhooks, inside the caller's write transaction before
        it adds one (``count_before_insert``)."""
        with self.database.transaction(write=True) as cur:
            return count_before_insert(
                self.database, cur, "webhooks", _AGENTS_LIVE, {"instance": instance}, limit
            )

    def insert(self, row: dict[str, Any]) -> None:
        with self.database.transaction(write=True) as cur:
            self.database.execute(
                cur,
                f"INSERT INTO webhooks ({', '.join(WEBHOOK_COLUMNS)}) "
                f"VALUES ({', '.join(':' + column for column in WEBHOOK_COLUMNS)})",
                row,
            )

    def tombstone(self, instance: str, token: str, *, now: int) -> None:
        """One of the instance's own webhooks answers 410 from now on."""
        self.database.write(
            f"UPDATE webhooks SET deleted_at = :now WHERE {_AGENTS_LIVE} AND token = :token",
            {"instance": instance, "token": token, "now": now},
        )

    def tombstone_all(self, instance: str, *, now: int) -> None:
        """Every webhook of the instance, its tick endpoint too (an uninstall)."""
        self.database.write(
            "UPDATE webhooks SET deleted_at = :now WHERE instance = :instance "
            "AND deleted_at IS NULL",
            {"instance": instance, "now": now},
        )

    def agents_live(self, instance: str) -> list[Row]:
        """The instance's own live webhooks, oldest first."""
        return self.database.fetch_all(
            f"{_SELECT_WEBHOOK} WHERE {_AGENTS_LIVE} ORDER BY created_at, id",
            {"instance": instance},
        )

    def live(self, instance: str | None) -> list[Row]:
        """Every live webhook (tick endpoints too), of one instance or all, oldest first."""
        where = "deleted_at IS NULL" + ("" if instance is None else " AND instance = :instance")
        return self.database.fetch_all(
            f"{_SELECT_WEBHOOK} WHERE {where} ORDER BY created_at, id", {"instance": instance}
        )

    def live_page(
        self, instance: str | None, *, before: tuple[int, str] | None, limit: int
    ) -> list[Row]:
        """Live webhooks (tick endpoints too), of one instance or all, newest first;
        ``before`` (created_at, id): the page after that one."""
        where = ["deleted_at IS NULL"]
        params: dict[str, Any] = {"instance": instance, "limit": limit}
        if instance is not None:
            where.append("instance = :instance")
        if before is not None:
            where.append("(created_at, id) < (:b_at, :b_id)")
            params.update(b_at=before[0], b_id=before[1])
        return self.database.fetch_all(
            f"{_SELECT_WEBHOOK} WHERE {' AND '.join(where)} "
            "ORDER BY created_at DESC, id DESC LIMIT :limit",
            params,
        )

    def with_instance(
        self, *, token: str | None = None, webhook_id: str | None = None
    ) -> tuple[Row, Row] | None:
        """The webhook with this token (or id) and its instance's ``INSTANCE_COLUMNS``,
        or None."""
        row = self.database.fetch_one(
            f"SELECT {', '.join('w.' + c for c in WEBHOOK_COLUMNS)}, "
            f"{', '.join('i.' + c for c in INSTANCE_COLUMNS)} "
            "FROM webhooks w JOIN instances i ON i.id = w.instance "
            f"WHERE w.{'token' if token is not None else 'id'} = :value",
            {"value": token if token is not None else webhook_id},
        )
        if row is None:
            return None
        split = len(WEBHOOK_COLUMNS)
        return row[:split], row[split:]

    def by_id_or_token(self, ref: str) -> Row | None:
        row: Row | None = self.database.fetch_one(
            f"{_SELECT_WEBHOOK} WHERE id = :ref OR token = :ref", {"ref": ref}
        )
        return row

    # -- deliveries -------------------------------------------------------------------

    def find_duplicate(self, webhook_id: str, dedupe_key: str, since: int) -> Row | None:
        """The first delivery to the webhook with this key received at ``since`` or
        later, counted as repeated once more; None if there is none. Its
        ``duplicates`` is read before the count: the caller adds the one.

        The key's turn is taken first and held to the end of the caller's transaction,
        so a caller that stores a new delivery in it when there is none
        (``Webhooks.receive``) is the only one to: two copies sent at once are one."""
        with self.database.transaction(write=True) as cur:
            self.database.take_turn(cur, _DEDUPE_LOCK_CLASS, f"{webhook_id}\n{dedupe_key}")
            row: Row | None = self.database.execute(
                cur,
                f"{_SELECT_DELIVERY} WHERE webhook_id = :webhook AND dedupe_key = :key "
                "AND received_at >= :since ORDER BY received_at, id LIMIT 1",
                {"webhook": webhook_id, "key": dedupe_key, "since": since},
            ).fetchone()
            if row is not None:
                self.database.execute(
                    cur,
                    "UPDATE deliveries SET duplicates = duplicates + 1 WHERE id = :id",
                    {"id": row[0]},
                )
        return row

    def insert_delivery(self, row: dict[str, Any]) -> None:
        """A delivery as received; an async one names the task queued for it by the
        task's token (``task_token``), which is unique and never reused, where a
        task's id may be on SQLite once the task is done."""
        columns = ", ".join(INSERTED_COLUMNS)
        values = ", ".join(":" + column for column in INSERTED_COLUMNS)
        self.database.write(f"INSERT INTO deliveries ({columns}) VALUES ({values})", row)

    def delivery(self, delivery_id: str) -> tuple[Row, bytes] | None:
        """The delivery's ``DELIVERY_COLUMNS`` and its webhook's extra arguments, or None
        (either gone)."""
        row = self.database.fetch_one(
            f"SELECT {', '.join('d.' + c for c in DELIVERY_COLUMNS)}, w.args FROM deliveries d "
            "JOIN webhooks w ON w.id = d.webhook_id WHERE d.id = :id",
            {"id": delivery_id},
        )
        return None if row is None else (row[:-1], bytes(row[-1]))

    def answer(
        self,
        delivery_id: str,
        *,
        execution_id: str | None,
        status: int,
        headers: bytes,
        body: bytes,
        now: int,
    ) -> None:
        with self.database.transaction(write=True) as cur:
            self.database.execute(
                cur,
                "UPDATE deliveries SET execution_id = :execution, response_status = :status, "
                "response_headers = :headers, response_body = :body, answered_at = :now "
                "WHERE id = :id",
                {
                    "id": delivery_id,
                    "execution": execution_id,
                    "status": status,
                    "headers": headers,
                    "body": body,
                    "now": now,
                },
            )

    def deliveries_page(
        self, webhook_id: str, *, before: tuple[int, str] | None, limit: int
    ) -> list[Row]:
        """The webhook's deliveries, newest first: ``DELIVERY_COLUMNS`` and the state of
        the task queued for each (None once it is gone, or for a sync one); ``before``
        (received_at, id): the page after that delivery."""
        keyed = " AND (d.received_at, d.id) < (:b_at, :b_id)" if before is not None else ""
        b_at, b_id = before if before is not None else (None, None)
        return self.database.fetch_all(
            f"SELECT {', '.join('d.' + c for c in DELIVERY_COLUMNS)}, t.state "
            "FROM deliveries d LEFT JOIN tasks t ON t.token = d.task_token "
            f"WHERE d.webhook_id = :webhook{keyed} "
            "ORDER BY d.received_at DESC, d.id DESC LIMIT :limit",
            {"webhook": webhook_id, "b_at": b_at, "b_id": b_id, "limit": limit},
        )

    def executions(self, delivery_ids: Sequence[str]) -> list[Row]:
        """(delivery id, execution id, outcome, started_at, duration_ms) of every
        execution these deliveries caused, oldest first."""
        if not delivery_ids:
            return []
        placeholders = ", ".join(f":d{n}" for n in range(len(delivery_ids)))
        return self.database.fetch_all(
            "SELECT delivery_id, id, outcome, started_at, duration_ms FROM executions "
            f"WHERE delivery_id IN ({placeholders}) ORDER BY started_at, id",
            {f"d{n}": delivery for n, delivery in enumerate(delivery_ids)},
        )

    def purge(self, before: int) -> int:
        """Deliveries received, and tombstones made, before ``before``: gone. Running
        it twice at once deletes nothing twice. Returns how many deliveries went."""
        with self.database.transaction(write=True) as cur:
            self.database.execute(
                cur, "DELETE FROM deliveries WHERE received_at < :before", {"before": before}
            )
            purged = self.database.rows_touched(cur)
            self.database.execute(
                cur, "DELETE FROM webhooks WHERE deleted_at < :before", {"before": before}
            )
        return purged
