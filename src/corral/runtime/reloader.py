"""Agent files kept deployed as they are edited: the reloading half of ``corral dev``.

PATH is one agent file or a folder of them (the ``*.py`` files directly inside
it, less names starting with a dot, which editors use for swap and lock files).
Each file deploys as the agent named after it: ``batched_sync.py`` is
``batched-sync``. An agent without an instance gets one, so a saved file is
running a moment later; an agent that has one keeps it, so a restart installs
no duplicates.

A file that does not load deploys nothing: the agent's instances keep running
the version they had until a save fixes it. A deleted file undeploys nothing
either: removing an instance, and its state with it, is for ``corral uninstall``
to do on purpose, not for an editor to do by accident.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from watchfiles import Change, awatch

from corral.errors import AgentCodeError, UnknownAgent
from corral.runtime.describe import agent_source
from corral.runtime.registry import Deployed, Instance, Version
from corral.runtime.services import Services
from corral.sandbox.zygote import Zygote


def agent_name(path: Path) -> str:
    """The agent a file deploys as, unless told otherwise: its stem, ``_`` as ``-``."""
    return path.stem.replace("_", "-")


def _is_agent_file(path: Path) -> bool:
    return path.suffix == ".py" and not path.name.startswith(".")


@dataclass(frozen=True)
class Deployment:
    """The file's code is the agent's current version: a new one, or the same as before."""

    path: Path
    deployed: Deployed
    #: The agent's first instance, installed because it had none.
    installed: Instance | None = None


@dataclass(frozen=True)
class Refused:
    """The file cannot be deployed; nothing changed."""

    path: Path
    agent: str
    error: ValueError
    #: The version the agent's instances keep running; None if it was never deployed.
    running: Version | None

    @property
    def where(self) -> str:
        """``path:line`` when the error points at a line of the file."""
        if isinstance(self.error, AgentCodeError):
            return self.error.where(self.path)
        return str(self.path)


@dataclass(frozen=True)
class Deleted:
    """The file is gone; the agent's instances stay installed on their version."""

    path: Path
    version: Version
    instances: list[str]


Reload = Deployment | Refused | Deleted


class Reloader:
    def __init__(
        self,
        services: Services,
        path: Path,
        *,
        zygote: Zygote,
        priority: str = "default",
    ) -> None:
        self.services = services
        self.registry = services.registry
        #: As the user gave it: reported paths are built on it, so they read the same way.
        self.path = path
        self.priority = priority
        self._zygote = zygote  # loads code to describe it, as `corral deploy` does
        self._folder = path.is_dir()
        resolved = path.resolve()
        # A file is watched through its folder: editors that save by writing a new
        # file and renaming it over the old one would end a watch on the file itself.
        self._watched = resolved if self._folder else resolved.parent
        # Files whose last reload was no deployment: their next one is news even when
        # the code is unchanged (a fix back to the running version, a file restored).
        self._unsettled: set[Path] = set()

    def files(self) -> list[Path]:
        if not self._folder:
            return [self.path]
        return sorted(p for p in self.path.iterdir() if _is_agent_file(p) and p.is_file())

    async def deploy_all(self) -> list[Reload]:
        """Deploy every agent file and install the agents that have no instance."""
        reloads = [await self._reload(path) for path in self.files()]
        return [self._settle(r) for r in reloads if r is not None]

    async def watch(self, stop: asyncio.Event) -> AsyncIterator[Reload]:
        """Reload each file that changes until ``stop`` is set; yield what is news.

        News is a new version, a new instance, a refusal, a deletion, or the first
        deployment after one of those two. Saving identical code changes nothing and
        yields nothing.
        """
        changes = awatch(
            self._watched, watch_filter=self._watches, stop_event=stop, recursive=False
        )
        async for batch in changes:
            for path in sorted({self._shown(Path(changed)) for _, changed in batch}):
                reload = await self._reload(path)
                if reload is not None and self._is_news(reload):
                    yield self._settle(reload)

    def _watches(self, _: Change, changed: str) -> bool:
        path = Path(changed)
        if self._folder:
            return path.parent == self._watched and _is_agent_file(path)
        return path == self._watched / self.path.name

    def _shown(self, changed: Path) -> Path:
        return self.path / changed.name if self._folder else self.path

    def _is_news(self, reload: Reload) -> bool:
        if not isinstance(reload, Deployment):
            return True
        created = reload.deployed.created or reload.installed is not None
        return created or reload.path in self._unsettled

    def _settle(self, reload: Reload) -> Reload:
        if isinstance(reload, Deployment):
            self._unsettled.discard(reload.path)
        else:
            self._unsettled.add(reload.path)
        return reload

    async def _reload(self, path: Path) -> Reload | None:
        """Bring the agent in step with its file; None for a file that is gone and
        was never deployed (an editor's short-lived file, say)."""
        agent = agent_name(path)
        try:
            source = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return self._deleted(path, agent)
        # The registry's calls block the loop; on PostgreSQL that is a few round trips
        # per save, which a development process can afford.
        try:
            code = agent_source(source)
            description = await self.services.describe(
                code, zygote=self._zygote, filename=str(path)
            )
            deployed = self.registry.deploy(agent, code, description, now=self._now())
        except ValueError as exc:  # not UTF-8, code that does not load, a name that cannot be
            return Refused(path, agent, exc, self._current(agent))
        installed = None
        if not any(i.agent == agent for i in self.registry.instances()):
            installed = self.registry.install(
                agent, priority=self.priority, config={}, now=self._now()
            )
        return Deployment(path, deployed, installed)

    def _deleted(self, path: Path, agent: str) -> Deleted | None:
        version = self._current(agent)
        if version is None:
            return None
        instances = [i.id for i in self.registry.instances() if i.agent == agent]
        return Deleted(path, version, instances)

    def _current(self, agent: str) -> Version | None:
        try:
            return self.registry.current_version(agent)
        except UnknownAgent:
            return None

    def _now(self) -> int:
        return int(self.services.clock() * 1000)
