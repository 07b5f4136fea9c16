"""``corral dev PATH``: agents deployed from their files, run here, redeployed on save.

One process, one event loop, and side by side in it until Ctrl-C or SIGTERM: a
worker that prints each execution with its log lines, a watcher that redeploys
an agent file when it is saved (:mod:`corral.runtime.reloader`), and the HTTP
server of ``corral serve`` (webhooks), whose sync webhooks run in the worker's
sandbox pool and whose async deliveries wake the worker at once. ``make run`` is
this on the examples folder (``examples/demo/run.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import time
from pathlib import Path

import click

from corral.cli.context import Context, priority_option
from corral.cli.output import console
from corral.cli.serve import listened
from corral.config import RuntimeConfig
from corral.errors import DatabaseError
from corral.runtime.records import ExecutionRecord
from corral.runtime.reloader import Deleted, Deployment, Reload, Reloader
from corral.runtime.services import Services
from corral.runtime.worker import Worker, WorkerOptions
from corral.server.app import create_app
from corral.server.dashboard import SignInCodes
from corral.server.serving import HttpServer, Listener, stop_grace_s


def print_execution(record: ExecutionRecord) -> None:
    r = record.result
    console.print(
        f"[dim]{record.started_at:%H:%M:%S}[/dim] {record.instance} "
        f"[bold]{record.method}[/bold] ({record.trigger}) → {r.outcome.value}, "
        f"{r.requests_used} requests, {r.duration_ms:.1f} ms"
    )
    for _, line in r.logs:
        console.print(f"    {line}", markup=False)
    if r.failure_line is not None:
        console.print(f"    {r.failure_line}", style="red", markup=False)


def print_reload(reload: Reload) -> None:
    if isinstance(reload, Deployment):
        deployed = reload.deployed
        line = (
            f"{deployed.version.label} {'deployed' if deployed.created else 'unchanged'} "
            f"from {reload.path}"
        )
        if reload.installed is not None:
            line += (
                f"; installed {reload.installed.id} for priority {reload.installed.priority} "
                "(activate queued)"
            )
        elif deployed.upgraded:
            n = len(deployed.upgraded)
            line += f" (upgrade queued for {n} instance{'s' if n != 1 else ''})"
        console.print(line, style="green" if deployed.created else None, markup=False)
    elif isinstance(reload, Deleted):
        version, instances = reload.version, reload.instances
        if not instances:
            left = f"{version.label} stays deployed, with no instance"
        elif len(instances) == 1:
            left = (
                f"instance {instances[0]} left installed on {version.label} "
                f"(remove it with: corral uninstall {instances[0]})"
            )
        else:
            left = (
                f"instances {', '.join(instances)} left installed on {version.label} "
                "(remove one with: corral uninstall INSTANCE)"
            )
        console.print(
            f"{version.agent}: {reload.path} deleted; {left}", style="yellow", markup=False
        )
    else:
        running = (
            f"{reload.running.label} keeps running"
            if reload.running is not None
            else f"{reload.agent} has no version yet"
        )
        console.print(
            f"{reload.agent}: {reload.where}: {reload.error}\n"
            f"    not deployed: {running}; save a fix to deploy it",
            style="red",
            markup=False,
        )


@click.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@priority_option("The priority an agent's first instance is installed for.")
@click.option("--insecure-sandbox", is_flag=True, help="Run even where sandbox layers are missing.")
@click.pass_obj
def dev(obj: Context, path: Path, priority: str, insecure_sandbox: bool) -> None:
    """Deploy the agents in PATH, run them here, and redeploy each file you save.

    PATH is an agent file or a folder of them (its *.py files; names starting with
    a dot are skipped). Each file deploys as the agent named after it (batched_sync.py
    as batched-sync) into the database, migrated first. An agent without an instance
    gets one; one that has an instance keeps it, so a restart installs no duplicates.
    A worker in this process runs their tasks and prints each execution with its log
    lines.

    On save, a new version is deployed and upgrade() queued for the agent's instances;
    identical code changes nothing. Code that does not load (a syntax error, no Agent
    class, an exception at import) is reported with file:line and the previous version
    keeps running. A deleted file is reported and its instances stay installed
    (corral uninstall removes one).

    The HTTP server of corral serve runs here too, at [server] host and port
    (CORRAL_SERVER_PORT=0: any free port); it prints its URL, and a one-time link
    that signs a browser in to the dashboard (valid once, for 15 minutes, with a
    token of scope operate made for this run and revoked when it stops).

    Ctrl-C or SIGTERM stops: requests and executions in flight finish first. A second
    Ctrl-C stops them too; their tasks run again when a worker next starts.
    """
    obj.usable_url()  # a SQLite file in a missing folder is refused, not made
    develop(obj.config, path, priority=priority, insecure=insecure_sandbox)


def develop(
    config: RuntimeConfig, path: Path, *, priority: str = "default", insecure: bool = False
) -> None:
    """Run ``corral dev`` on PATH until Ctrl-C or SIGTERM."""
    console.print(f"Corral: database {config.database_url}", markup=False)
    listener = Listener(config.server.host, config.server.port)
    try:
        session = _Session(path, listened(config, listener), listener, priority, insecure)
        # Ctrl-C before the session took the signal over: nothing had started.
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(session.run())
    finally:
        listener.close()
    console.print("stopped")


class _Session:
    def __init__(
        self, path: Path, config: RuntimeConfig, listener: Listener, priority: str, insecure: bool
    ) -> None:
        self.path = path
        self.config = config
        self.listener = listener
        self.priority = priority
        self.insecure = insecure
        self._signals = 0
        self._worker: Worker | None = None
        self._http: HttpServer | None = None
        self._work: asyncio.Task[None] | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal)
        services = Services(self.config)
        worker = self._worker = Worker(
            services, options=WorkerOptions(insecure=self.insecure), on_record=print_execution
        )
        # Signals cancel this task, never run() itself: closing the worker below
        # (its sandbox processes, its zygote) is never interrupted.
        work = self._work = asyncio.create_task(self._start_and_serve(worker))
        try:
            await asyncio.wait([work])
        finally:
            await worker.close()
            await services.close()
        if not work.cancelled():
            work.result()  # what stopped it, if it was not a signal

    async def _start_and_serve(self, worker: Worker) -> None:
        await worker.start()
        reloader = Reloader(
            worker.services, self.path, zygote=worker.zygote, priority=self.priority
        )
        for reload in await reloader.deploy_all():
            print_reload(reload)
        console.print(
            f"Watching {self.path}: saving an agent file deploys it. Each line below is one "
            "sandboxed execution. Ctrl-C stops.\n"
            f"In another shell: corral --db {self.config.database_url} instances | executions "
            "| logs -f | tasks | state ls INSTANCE",
            markup=False,
        )
        await self._serve(worker, reloader)

    async def _serve(self, worker: Worker, reloader: Reloader) -> None:
        stop = asyncio.Event()  # the watcher's thread checks it; cancelling cannot reach it
        services = worker.services
        codes = SignInCodes()
        token, text = await services.database.call(
            services.tokens.create, "operate", f"corral dev (pid {os.getpid()})", now=_now_ms()
        )
        code = codes.issue(text)
        app = create_app(
            services,
            executor=worker.executor,
            on_accept=worker.wake,
            on_record=print_execution,
            sign_in=codes,
        )

        def ready() -> None:
            console.print(f"server: {self.listener.url}", markup=False)
            console.print(
                f"dashboard: {self.listener.url}/signin/{code} (a one-time sign-in link, "
                f"valid {codes.ttl_s / 60:.0f} minutes)",
                markup=False,
            )

        http = self._http = HttpServer(
            app,
            self.listener,
            own_signals=False,
            grace_s=stop_grace_s(services.config.webhooks),
            on_ready=ready,
            on_stop=app.state.streams.stop,
        )
        # The server is stopped, never cancelled: its requests in flight finish.
        server = asyncio.create_task(http.run_until_stopped(), name="server")
        runs = [
            asyncio.create_task(worker.run(), name="worker"),
            asyncio.create_task(self._redeploy(reloader, worker, stop), name="watcher"),
        ]
        try:
            done, _ = await asyncio.wait([*runs, server], return_when=asyncio.FIRST_COMPLETED)
            for service in done:
                service.result()  # a service only ends by itself when it fails
        finally:
            stop.set()
            http.stop()
            for running in runs:
                running.cancel()
            # A cancelled worker lets its executions in flight finish; a second
            # signal abandons them (see _on_signal).
            await asyncio.gather(*runs, server, return_exceptions=True)
            # The dashboard's sessions were this run's: they end with it.
            try:
                await services.database.call(services.tokens.revoke, token.id, now=_now_ms())
            except DatabaseError as exc:
                console.print(
                    f"could not revoke this run's dashboard token ({exc}); "
                    f"revoke it with: corral tokens revoke {token.id}",
                    style="yellow",
                    markup=False,
                )

    @staticmethod
    async def _redeploy(reloader: Reloader, worker: Worker, stop: asyncio.Event) -> None:
        async for reload in reloader.watch(stop):
            print_reload(reload)
            worker.wake()  # an upgrade or activate may be queued: run it now

    def _on_signal(self) -> None:
        self._signals += 1
        worker = self._worker
        if self._http is not None and self._signals > 1:
            self._http.stop_now()  # requests in flight are dropped
        elif self._http is not None:
            self._http.stop()
        if self._signals > 1:
            if worker is not None and (abandoned := worker.abandon()):
                console.print(
                    f"stopping now: {abandoned} execution(s) stopped; their tasks run again "
                    "when a worker next starts",
                    markup=False,
                )
            return
        in_flight = worker.in_flight if worker is not None else 0
        console.print(
            f"stopping: {in_flight} execution(s) in flight finish first (Ctrl-C again to stop them)"
            if in_flight
            else "stopping",
            markup=False,
        )
        if self._work is not None:
            self._work.cancel()


def _now_ms() -> int:
    return math.floor(time.time() * 1000)


COMMANDS = [dev]
