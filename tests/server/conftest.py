"""Fixtures of the server's suites: the app served by uvicorn on a free port, over real
HTTP, beside a worker on the same database (SQLite and PostgreSQL), and ``corral``
processes for what needs a process of its own (kill -9, signals, the fuzz).

Agents make their webhooks themselves, in ``activate``, through
``self.tools.network.create_webhook``, and keep the URLs in their store; the tests
read them from there and post to them, as a sender would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.config import RuntimeConfig, ServerSettings
from corral.runtime.services import Services
from corral.server.app import create_app
from corral.server.serving import HttpServer, Listener, stop_grace_s
from tests.cli.invoke import corral
from tests.runtime.conftest import (  # noqa: F401  (fixtures)
    Runtime,
    RuntimeFactory,
    clock,
    db_url,
    runtime_factory,
    sandbox,
)
from tests.server.agents import HOOKS, spec_webhook
from tests.server.browser import browser, chromium, dashboard, open_page  # noqa: F401  (fixtures)

CORRAL = str(Path(sys.executable).with_name("corral"))
#: For any one wait on a process: generous, as the suite shares two cores.
TIMEOUT_S = 60.0


@dataclass
class Served:
    """A server on a free port and the runtime (worker, services) beside it."""

    url: str
    runtime: Runtime
    client: httpx.AsyncClient

    async def install(self, name: str, code: str) -> str:
        """Deploy and install the agent, run its ``activate`` (if it has one); its id."""
        await self.runtime.deploy(name, code)
        instance = self.runtime.install(name).id
        await self.runtime.idle()
        records = self.runtime.executions(instance, "activate")
        assert all(r["outcome"] == "ok" for r in records), records
        return instance

    async def stored(self, instance: str, key: str) -> Any:
        return await self.runtime.store(instance).get(key)


Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(runtime_factory: RuntimeFactory) -> AsyncIterator[Serve]:  # noqa: F811
    """Starts the app under uvicorn on a free port, beside a started runtime made with
    ``config`` (webhook URLs name the port); all stopped at the end."""
    stops: list[Callable[[], Awaitable[None]]] = []

    async def start(config: RuntimeConfig | None = None, **options: Any) -> Served:
        listener = Listener("127.0.0.1", 0)
        config = config or RuntimeConfig()
        config = replace(config, server=ServerSettings(port=listener.port))
        runtime = await runtime_factory(config, **options)
        ready = asyncio.Event()
        # The worker's executor, as in ``corral dev``: one sandbox pool for both (a
        # zygote started once a test, not twice); ``corral serve``'s own pool is what
        # the process tests (test_serve.py) run.
        app = create_app(runtime.services, executor=runtime.executor, on_accept=runtime.worker.wake)
        http = HttpServer(
            app,
            listener,
            on_ready=ready.set,
            own_signals=False,
            grace_s=stop_grace_s(config.webhooks),
            on_stop=app.state.streams.stop,
        )
        task = asyncio.create_task(http.run_until_stopped())
        client = httpx.AsyncClient(base_url=listener.url, timeout=TIMEOUT_S)

        async def stop() -> None:
            await client.aclose()
            http.stop()
            await asyncio.wait({task}, timeout=TIMEOUT_S)
            listener.close()

        stops.append(stop)
        started = asyncio.create_task(ready.wait())
        await asyncio.wait({task, started}, timeout=TIMEOUT_S, return_when="FIRST_COMPLETED")
        if not ready.is_set():
            started.cancel()
            raise RuntimeError(f"the server did not start: {task}")
        return Served(listener.url, runtime, client)

    yield start
    for stop in reversed(stops):
        await stop()


def path_of(url: str) -> str:
    """``/hooks/<token>`` of a webhook URL."""
    found = re.search(r"/hooks/[^/?#]+$", url)
    assert found is not None, url
    return found[0]


class Process:
    """A ``corral`` command in a process of its own (its own session, so signals go to
    it alone), and the lines it printed."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [CORRAL, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.printed: list[str] = []
        self.stderr: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True),
            threading.Thread(target=self.stderr.extend, args=(self.process.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Iterator[str]) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def expect(self, pattern: str) -> re.Match[str]:
        """The next line printed that matches ``pattern`` (searched)."""
        while True:
            try:
                line = self._lines.get(timeout=TIMEOUT_S)
            except queue.Empty:
                self._fail(f"no line matching {pattern!r} within {TIMEOUT_S:.0f} s")
            if line is None:
                self.process.wait()
                self._fail(f"it exited ({self.process.returncode}) before {pattern!r}")
            self.printed.append(line)
            if found := re.search(pattern, line):
                return found

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait(self) -> int:
        code = self.process.wait(timeout=TIMEOUT_S)
        for reader in self._readers:
            reader.join(TIMEOUT_S)
        while (line := self._lines.get_nowait()) is not None:
            self.printed.append(line)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=TIMEOUT_S)

    def _fail(self, problem: str) -> None:
        printed = "\n".join(self.printed)
        pytest.fail(f"{problem}; it printed:\n{printed}\nstderr:\n{''.join(self.stderr)}")


@pytest.fixture
def processes() -> Iterator[Callable[..., Process]]:
    """Starts ``corral`` processes; kills what is left at the end."""
    started: list[Process] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Process:
        started.append(Process(*args, env=env))
        return started[-1]

    yield start
    for process in started:
        with contextlib.suppress(ProcessLookupError):
            process.kill()


def start_server(start: Callable[..., Process], db: str) -> tuple[Process, str]:
    """``corral serve --port 0`` on ``db``; the process and its URL, once it serves."""
    server = start("--db", db, "serve", "--port", "0")
    return server, server.expect(r"^server: (http://\S+)$")[1]


def prepare_hooks(url: str, folder: Path, *names: str) -> dict[str, str]:
    """The test agent (tests/server/agents.py) deployed and installed through the CLI, as
    an operator would, and the named webhooks made for it: their paths by name (and
    the instance's id under ``"instance"``)."""
    agent = folder / "hooks.py"
    agent.write_text(HOOKS)
    code, _, err = corral("--db", url, "deploy", str(agent))
    assert code == 0, err
    code, out, err = corral("--db", url, "install", "hooks", "--json")
    assert code == 0, err
    instance = json.loads(out)["id"]
    webhooks = Services(RuntimeConfig(database_url=url)).webhooks
    made = {"instance": instance}
    for name in names:
        webhook = spec_webhook(webhooks, instance, name, now=int(time.time() * 1000))
        made[name] = f"/hooks/{webhook.token}"
    return made


def state(url: str, instance: str, key: str) -> Any:
    """A value of the instance's store, read with ``corral state get --json``."""
    code, out, err = corral("--db", url, "state", "get", instance, key, "--json")
    assert code == 0, err
    return json.loads(out)
