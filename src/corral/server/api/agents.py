"""``/agents``: deployed agents, and deploying code as ``corral deploy`` does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from corral.errors import AgentCodeError, SandboxUnavailable
from corral.runtime.registry import AgentInfo
from corral.sandbox.zygote import Zygote
from corral.server.api import pages
from corral.server.api.auth import OPERATE, READ, ApiError, authorized, now_ms, services_of
from corral.server.api.pages import Cursor, Limit, Page
from corral.server.api.params import Text

router = APIRouter(tags=["agents"])

#: The most characters of code one deploy takes.
MAX_CODE_CHARS: Final = 1_000_000
#: Deploys one server describes at once (each in a sandboxed process of its own), and
#: how many more may wait their turn; past that, 503 with ``Retry-After``.
DEPLOYS_AT_ONCE: Final = 2
DEPLOYS_WAITING: Final = 8

#: The zygote the server's sandboxes fork from, once it runs (``create_app`` gives it).
ZygoteOf = Callable[[], Zygote]


class Deploys:
    """The deploys of one server: ``DEPLOYS_AT_ONCE`` described at once, up to
    ``DEPLOYS_WAITING`` more waiting their turn, the rest refused."""

    def __init__(self) -> None:
        self._running = asyncio.Semaphore(DEPLOYS_AT_ONCE)
        self._waiting = 0

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        if self._waiting >= DEPLOYS_WAITING:
            raise ApiError(
                503,
                "busy",
                f"this server has {DEPLOYS_WAITING} deploys waiting already; try again shortly",
                {"retry-after": "1"},
            )
        self._waiting += 1
        try:
            await self._running.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._running.release()


class AgentOut(BaseModel):
    """An agent and what its current version declares (class, methods, limits, network,
    tick); times in milliseconds since the epoch."""

    name: str
    version: int
    created_at: int
    deployed_at: int = Field(description="When the current version was deployed.")
    description: dict[str, Any]
    instances: int = Field(description="Its instances, removed ones aside.")

    @classmethod
    def of(cls, agent: AgentInfo) -> AgentOut:
        return cls.model_validate(agent, from_attributes=True)


class Deploy(BaseModel):
    """An agent's code (the text of its file) and its name."""

    name: Text = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[\w-]+$",
        description="Letters, digits, '-' and '_'.",
    )
    code: Text = Field(min_length=1, max_length=MAX_CODE_CHARS)


class DeployedOut(BaseModel):
    agent: str
    version: int
    digest: str
    created: bool = Field(description="False: the code was the current version's already.")
    upgraded: list[str] = Field(description="Instances whose upgrade hook was queued.")
    description: dict[str, Any]


@router.get("/agents", dependencies=[Depends(authorized(READ))])
async def list_agents(request: Request, limit: Limit = 50, cursor: Cursor = None) -> Page[AgentOut]:
    """Agents, newest first (by first deploy)."""
    services = services_of(request)
    rows = await services.database.call(
        services.registry.agents_page, before=pages.decode(cursor), limit=limit + 1
    )
    return pages.page(rows, limit, lambda a: (a.created_at, a.name), AgentOut.of)


@router.post("/agents", status_code=201, dependencies=[Depends(authorized(OPERATE))])
async def deploy(request: Request, body: Deploy) -> DeployedOut:
    """Deploy code as the agent's new version, as ``corral deploy`` does: what it declares
    is learned in a sandbox and checked against the limits and ceilings first (400 with
    the line at fault if it does not load); its instances get ``upgrade``, and
    suspended ones are lifted. The same code again makes no new version."""
    services = services_of(request)
    deploys: Deploys = request.app.state.deploys
    zygote_of: ZygoteOf = request.app.state.zygote_of
    async with deploys.turn():
        try:
            description = await services.describe(
                body.code, zygote=zygote_of(), filename=f"{body.name}.py"
            )
        except AgentCodeError as exc:
            where = f" (line {exc.line})" if exc.line is not None else ""
            raise ApiError(
                400, "invalid_code", f"cannot deploy {body.name}{where}: {exc}"
            ) from None
        except SandboxUnavailable as exc:
            raise ApiError(503, "unavailable", f"this server cannot sandbox code: {exc}") from None
    deployed = await services.database.call(
        services.registry.deploy, body.name, body.code, description, now=now_ms(services)
    )
    version = deployed.version
    return DeployedOut(
        agent=version.agent,
        version=version.number,
        digest=version.digest,
        created=deployed.created,
        upgraded=deployed.upgraded,
        description=version.description,
    )
