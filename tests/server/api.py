"""What the admin API's suites share: a served runtime with tokens of each scope, an
agent that logs, fails and keeps typed values, and requests that name their scope."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from corral import codec
from corral.config import Retries, RuntimeConfig
from corral.db.history import EXECUTION_FIELDS, HistoryDatabase
from corral.tasks.queue import TaskInfo
from tests.server.conftest import Serve, Served

PROBE = r"""
import datetime as dt

from corral import Agent


class Probe(Agent):
    async def activate(self, priority):
        await self.store.set_many({
            "kind:tuple": (1, "two"),
            "kind:when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
            "kind:bytes": b"\x00\xff",
            "kind:set": {3, 1, 2},
            "big": "x" * 70_000,
            "plain": {"a": [1, 2]},
        })
        await self.store.set_with_ttl("fleeting", "soon gone", 3_600_000)

    async def say(self, text):
        print(text)
        return {"said": text}

    async def fail(self, text):
        print("about to fail")
        raise ValueError(text)
"""


@dataclass
class Api:
    """A server, its runtime, an installed ``Probe`` and a token of each scope."""

    served: Served
    instance: str
    tokens: dict[str, str]

    @property
    def services(self) -> Any:
        return self.served.runtime.services

    @property
    def now(self) -> int:
        return int(self.served.runtime.clock.now_ms)

    async def request(
        self,
        method: str,
        path: str,
        *,
        scope: str | None = "admin",
        params: dict[str, Any] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        headers = {} if scope is None else {"authorization": f"Bearer {self.tokens[scope]}"}
        return await self.served.client.request(
            method, f"/api/v1{path}", params=params, json=json, headers=headers
        )

    async def get(self, path: str, scope: str = "read", **params: Any) -> httpx.Response:
        return await self.request("GET", path, scope=scope, params=params)

    async def ok(self, path: str, scope: str = "read", **params: Any) -> Any:
        response = await self.get(path, scope, **params)
        assert response.status_code == 200, response.text
        return response.json()

    async def all_pages(self, path: str, *, limit: int = 100, **params: Any) -> list[Any]:
        """Every item of a list, following its cursors."""
        items: list[Any] = []
        cursor = None
        while True:
            page = await self.ok(
                path, limit=limit, **({"cursor": cursor} if cursor else {}), **params
            )
            items.extend(page["data"])
            cursor = page["next_cursor"]
            if cursor is None:
                return items

    async def run(self, method: str, *args: Any, instance: str | None = None) -> None:
        """Queue the method as a task and let the worker run what is due."""
        self.services.queue.enqueue(
            instance or self.instance, method, codec.encode(list(args)), now=self.now
        )
        await self.served.runtime.idle()

    def tasks(self, instance: str | None = None) -> list[TaskInfo]:
        return [
            *self.services.queue.list(instance or self.instance),
            *self.services.queue.list(instance or self.instance, dead=True),
        ]


async def start_api(serve: Serve, config: RuntimeConfig | None = None) -> Api:
    """The served runtime, ``Probe`` installed (its activate run), a token per scope.
    A failed task is dead-lettered at once (one attempt)."""
    served = await serve(config or RuntimeConfig(retries=Retries(attempts=1)))
    instance = await served.install("probe", PROBE)
    tokens = {
        scope: served.runtime.services.tokens.create(scope, f"test {scope}", now=1)[1]
        for scope in ("read", "operate", "admin")
    }
    return Api(served, instance, tokens)


def execution_row(execution: str, instance: str, started_at: int, **values: Any) -> dict[str, Any]:
    """A row of the executions table, as ``History.record`` writes one."""
    row: dict[str, Any] = dict.fromkeys(EXECUTION_FIELDS)
    row.update(
        id=execution,
        instance=instance,
        method="say",
        trigger="task",
        outcome="ok",
        requests_used=0,
        cpu_ms=0.0,
        peak_rss_bytes=0,
        duration_ms=1.0,
        started_at=started_at,
    )
    row.update(values)
    return row


def insert_executions(api: Api, rows: list[dict[str, Any]], lines: list[dict[str, Any]]) -> None:
    HistoryDatabase(api.services.database).insert(rows, lines)
