"""``corral dev PATH`` as an author uses it: a real process, files edited under it.

Each test starts ``corral dev`` on a folder in a temporary directory with its own
SQLite database and follows what it prints, line by line; an expectation that no
line meets within ``TIMEOUT`` fails with everything printed so far. Signals go to
the process group, as a terminal's Ctrl-C does.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from corral.cli import main
from corral.db.raw import close_databases
from corral.state import Store, close_backends, open_store

CORRAL = str(Path(sys.executable).with_name("corral"))
#: For any one expectation: generous, as the suite shares two cores.
TIMEOUT = 60.0

HELLO = """\
import os

from corral import Agent

VERSION = "v1"


class Hello(Agent):
    async def activate(self, priority):
        print(f"activated {VERSION}")
        await self.schedule_recurring("tick", self.tick, 1000)

    async def upgrade(self):
        print(f"upgraded to {VERSION}")

    async def tick(self):
        print(f"tick {VERSION} in process {os.getpid()}")
"""


class Dev:
    """A running ``corral dev`` and the lines it printed."""

    def __init__(self, cwd: Path, db: str, path: str) -> None:
        self.process = subprocess.Popen(
            [CORRAL, "--db", db, "dev", path],
            cwd=cwd,
            # Its server on a free port: tests run beside each other and `make run`.
            env={**os.environ, "CORRAL_SERVER_PORT": "0"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own group, to signal like a terminal does
        )
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.printed: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read_stdout, args=(self.process.stdout,)),
            threading.Thread(target=self._stderr.extend, args=(self.process.stderr,)),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self, stream: Iterator[str]) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def expect(self, pattern: str) -> re.Match[str]:
        """The next line that matches ``pattern`` (a regular expression, searched)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self._fail(f"no line matching {pattern!r} within {TIMEOUT:.0f} s")
            if line is None:
                self.process.wait()
                self._fail(f"corral dev exited ({self.process.returncode}) before {pattern!r}")
            self.printed.append(line)
            found = re.search(pattern, line)
            if found:
                return found

    def stop(self, signum: signal.Signals = signal.SIGINT) -> tuple[int, str]:
        """Signal the group; the exit code and everything on stderr."""
        os.killpg(self.process.pid, signum)
        return self.wait()

    def wait(self) -> tuple[int, str]:
        code = self.process.wait(timeout=TIMEOUT)
        for reader in self._readers:
            reader.join(TIMEOUT)
        while (line := self._lines.get_nowait()) is not None:
            self.printed.append(line)
        return code, "".join(self._stderr)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.wait()

    def _fail(self, problem: str) -> None:
        printed = "\n".join(self.printed)
        pytest.fail(f"{problem}; it printed:\n{printed}\nstderr:\n{''.join(self._stderr)}")


StartDev = Callable[..., Dev]


@pytest.fixture
def start_dev(tmp_path: Path) -> Iterator[StartDev]:
    """Starts ``corral dev PATH`` in tmp_path on tmp_path/dev.db; kills what is left.

    PATH is the folder ``agents`` unless given.
    """
    started: list[Dev] = []

    def start(path: str = "agents") -> Dev:
        started.append(Dev(tmp_path, f"sqlite:///{tmp_path}/dev.db", path))
        return started[-1]

    (tmp_path / "agents").mkdir()
    yield start
    for dev in started:
        dev.kill()
    close_backends()
    close_databases()


def instances(tmp_path: Path) -> list[dict[str, str]]:
    result = CliRunner().invoke(
        main, ["--db", f"sqlite:///{tmp_path}/dev.db", "instances", "--json"]
    )
    assert result.exit_code == 0, result.output
    found: list[dict[str, str]] = json.loads(result.stdout)
    return found


def line_of(code: str, text: str) -> int:
    return next(n for n, line in enumerate(code.splitlines(), 1) if text in line)


def test_an_edit_deploys_a_new_version_and_a_broken_edit_keeps_the_old_one(
    tmp_path: Path, start_dev: StartDev
) -> None:
    agent = tmp_path / "agents" / "hello.py"
    agent.write_text(HELLO)
    dev = start_dev("agents/hello.py")  # one file, where the other tests watch a folder
    dev.expect(
        r"^hello v1 deployed from agents/hello\.py; installed hello-\w+ for priority default "
        r"\(activate queued\)$"
    )
    dev.expect(r"^\d\d:\d\d:\d\d hello-\w+ activate \(lifecycle\) → ok, 1 requests")
    dev.expect(r"^    activated v1$")
    v1_process = int(dev.expect(r"^    tick v1 in process (\d+)$")[1])

    v2 = HELLO.replace('"v1"', '"v2"')
    agent.write_text(v2)
    dev.expect(r"^hello v2 deployed from agents/hello\.py \(upgrade queued for 1 instance\)$")
    dev.expect(r"^    upgraded to v2$")
    v2_process = int(dev.expect(r"^    tick v2 in process (\d+)$")[1])
    assert v2_process != v1_process
    with pytest.raises(ProcessLookupError):  # the pool retired v1's warm process
        os.kill(v1_process, 0)

    agent.write_text(v2.replace("async def tick(self):", "async def tick(self)"))
    n = line_of(v2, "async def tick")
    dev.expect(
        rf"^hello: agents/hello\.py:{n}: AgentDefinitionError: the agent code does not "
        rf"compile: expected ':' \(line {n}\)$"
    )
    dev.expect(r"^    not deployed: hello v2 keeps running; save a fix to deploy it$")
    dev.expect(r"^    tick v2 in process")  # the old version still runs

    raising = v2.replace("class Hello", "raise RuntimeError('boom at import')\n\n\nclass Hello")
    agent.write_text(raising)
    n = line_of(raising, "boom at import")
    dev.expect(rf"^hello: agents/hello\.py:{n}: RuntimeError: boom at import$")
    dev.expect(r"^    tick v2 in process")
    assert dev.process.poll() is None

    agent.write_text(v2.replace("(Agent):", "(Agent):\n    limits = {'memory_mb': 0.5}"))
    dev.expect(
        r"^hello: agents/hello\.py: limit memory_mb must be a whole number of MiB from 16 to "
        r"4096 \(the operator's ceiling\), got 0\.5$"
    )
    dev.expect(r"^    not deployed: hello v2 keeps running; save a fix to deploy it$")
    dev.expect(r"^    tick v2 in process")

    # Saved as many editors do: a new file renamed over the old one.
    saved = agent.with_name(".hello.py.tmp")
    saved.write_text(HELLO.replace('"v1"', '"v3"'))
    saved.replace(agent)
    dev.expect(r"^hello v3 deployed from agents/hello\.py \(upgrade queued for 1 instance\)$")
    dev.expect(r"^    upgraded to v3$")
    dev.expect(r"^    tick v3 in process")

    code, stderr = dev.stop(signal.SIGINT)
    assert code == 0
    assert "Traceback" not in stderr
    assert dev.printed[-1] == "stopped"
    assert [line for line in dev.printed if line.startswith("stopping")] in (
        ["stopping"],  # a tick may be in flight as the signal comes: it finishes first
        ["stopping: 1 execution(s) in flight finish first (Ctrl-C again to stop them)"],
    )


def test_a_restart_reuses_instances_and_files_come_and_go(
    tmp_path: Path, start_dev: StartDev
) -> None:
    first = tmp_path / "agents" / "first.py"
    first_code = HELLO.replace("Hello", "First").replace("1000)", "3_600_000)")
    first.write_text(first_code)
    dev = start_dev()
    first_id = dev.expect(r"^first v1 deployed from agents/first\.py; installed (first-\w+) ")[1]
    dev.expect(r"^    activated v1$")

    first.write_text(first_code)  # saved unchanged: no new version, nothing printed
    mark = len(dev.printed)
    (tmp_path / "agents" / "second.py").write_text(first_code.replace("First", "Second"))
    second = dev.expect(r"^second v1 deployed from agents/second\.py; installed (second-\w+) ")
    second_id = second[1]
    assert not [line for line in dev.printed[mark:] if "first" in line]
    dev.expect(rf"^\d\d:\d\d:\d\d {second_id} activate ")

    first.unlink()
    dev.expect(
        rf"^first: agents/first\.py deleted; instance {first_id} left installed on first v1 "
        rf"\(remove it with: corral uninstall {first_id}\)$"
    )
    code, stderr = dev.stop(signal.SIGTERM)
    assert (code, stderr) == (0, "")
    assert sorted(i["id"] for i in instances(tmp_path)) == [first_id, second_id]

    first.write_text(first_code)
    dev = start_dev()
    dev.expect(r"^first v1 unchanged from agents/first\.py$")
    dev.expect(r"^second v1 unchanged from agents/second\.py$")
    dev.expect(r"^Watching agents")
    assert dev.stop()[0] == 0
    assert sorted(i["id"] for i in instances(tmp_path)) == [first_id, second_id]


SLOW = """\
import asyncio
from corral import Agent


class Slow(Agent):
    async def activate(self, priority):
        await self.set("started", True)
        while not await self.get("go"):  # the test says when
            await asyncio.sleep(0.05)
        print("slow finished")
"""


def store_of(tmp_path: Path, instance: str) -> Store:
    return open_store(f"sqlite:///{tmp_path}/dev.db", instance)


def start_slow(tmp_path: Path, start_dev: StartDev) -> tuple[Dev, str]:
    """``corral dev`` with Slow's activate in flight."""
    (tmp_path / "agents" / "slow.py").write_text(SLOW)
    dev = start_dev()
    instance = dev.expect(r"installed (slow-\w+)")[1]
    deadline = time.monotonic() + TIMEOUT
    while not asyncio.run(store_of(tmp_path, instance).get("started")):
        assert time.monotonic() < deadline, "activate never started"
        time.sleep(0.05)
    return dev, instance


def test_ctrl_c_lets_an_execution_in_flight_finish(tmp_path: Path, start_dev: StartDev) -> None:
    dev, instance = start_slow(tmp_path, start_dev)
    os.killpg(dev.process.pid, signal.SIGINT)
    dev.expect(r"^stopping: 1 execution\(s\) in flight finish first \(Ctrl-C again to stop them\)$")
    asyncio.run(store_of(tmp_path, instance).set("go", True))
    dev.expect(r"^    slow finished$")
    assert dev.wait() == (0, "")
    assert dev.printed[-1] == "stopped"


def test_a_second_ctrl_c_stops_it_and_a_restart_runs_its_task_again(
    tmp_path: Path, start_dev: StartDev
) -> None:
    dev, instance = start_slow(tmp_path, start_dev)
    os.killpg(dev.process.pid, signal.SIGINT)
    dev.expect(r"^stopping: 1 execution\(s\) in flight")
    os.killpg(dev.process.pid, signal.SIGINT)
    dev.expect(
        r"^stopping now: 1 execution\(s\) stopped; their tasks run again when a worker next "
        r"starts$"
    )
    code, stderr = dev.wait()
    assert code == 0
    assert "Traceback" not in stderr
    result = CliRunner().invoke(main, ["--db", f"sqlite:///{tmp_path}/dev.db", "tasks", "--json"])
    assert [(t["method"], t["state"]) for t in json.loads(result.stdout)] == [
        ("activate", "running")  # still leased to the process that is gone
    ]

    asyncio.run(store_of(tmp_path, instance).set("go", True))
    dev = start_dev()
    dev.expect(r"^slow v1 unchanged from agents/slow\.py$")
    dev.expect(rf"^\d\d:\d\d:\d\d {instance} activate \(lifecycle\) → ok")
    dev.expect(r"^    slow finished$")
    assert dev.stop()[0] == 0


WEBHOOKED = """
from corral import Agent

class Hooked(Agent):
    async def activate(self, priority):
        print("sync at", await self.tools.network.create_webhook(self.answer, mode="sync"))
        print("async at", await self.tools.network.create_webhook(self.took))

    async def answer(self, request):
        return {"hello": request.body["name"]}

    async def took(self, request):
        print(f"took {request.body!r}")
"""


def test_it_serves_webhooks_beside_the_worker(tmp_path: Path, start_dev: StartDev) -> None:
    (tmp_path / "agents" / "hooked.py").write_text(WEBHOOKED)
    dev = start_dev()
    server = dev.expect(r"^server: (http://127\.0\.0\.1:\d+)$")[1]
    sync_url = dev.expect(rf"^    sync at ({re.escape(server)}/hooks/\S+)$")[1]
    async_url = dev.expect(rf"^    async at ({re.escape(server)}/hooks/\S+)$")[1]

    answer = httpx.post(sync_url, json={"name": "ann"}, timeout=TIMEOUT)
    assert (answer.status_code, answer.json()) == (200, {"hello": "ann"})
    dev.expect(r"^\d\d:\d\d:\d\d hooked-\w+ answer \(webhook\) → ok")
    assert httpx.post(async_url, content=b"parcel", timeout=TIMEOUT).status_code == 202
    dev.expect(r"^\d\d:\d\d:\d\d hooked-\w+ took \(webhook\) → ok")
    dev.expect(r"^    took 'parcel'$")

    code, stderr = dev.stop(signal.SIGTERM)
    assert code == 0
    assert "Traceback" not in stderr
    assert dev.printed[-1] == "stopped"


def test_it_prints_a_one_time_dashboard_link_whose_session_ends_with_the_run(
    tmp_path: Path, start_dev: StartDev
) -> None:
    dev = start_dev()
    server = dev.expect(r"^server: (http://127\.0\.0\.1:\d+)$")[1]
    link = dev.expect(
        rf"^dashboard: ({re.escape(server)}/signin/\S+) "
        r"\(a one-time sign-in link, valid 15 minutes\)$"
    )[1]
    with httpx.Client(timeout=TIMEOUT) as browser:
        signed_in = browser.get(link)
        assert signed_in.status_code == 200
        assert signed_in.headers["refresh"] == "0; url=/"
        assert browser.get(server + "/instances").status_code == 200  # its cookie signs it in
    again = httpx.get(link, timeout=TIMEOUT)
    assert again.status_code == 404
    assert "This one-time sign-in link was used already" in again.text

    code, stderr = dev.stop()
    assert code == 0, stderr
    result = CliRunner().invoke(
        main, ["--db", f"sqlite:///{tmp_path}/dev.db", "tokens", "ls", "--json"]
    )
    [token] = json.loads(result.stdout)
    assert token["name"] == f"corral dev (pid {dev.process.pid})"
    assert (token["scope"], token["revoked_at"] is not None) == ("operate", True)
