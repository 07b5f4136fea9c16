"""``corral serve`` as a process: a 202 survives kill -9, SIGTERM lets a request in
flight finish, several servers share one database, a taken port is one line.

On SQLite and PostgreSQL. The agent is deployed and installed with the CLI and
its webhooks made on the database (tests/server/conftest.py ``prepare_hooks``);
the servers and workers are real ``corral`` processes.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.cli.invoke import corral
from tests.server.conftest import TIMEOUT_S, Process, prepare_hooks, start_server, state

DELIVERIES = 20


def test_every_delivery_answered_202_runs_once_after_the_server_is_killed(
    db_url: str, processes: Callable[..., Process], tmp_path: Path
) -> None:
    hooks = prepare_hooks(db_url, tmp_path, "async")
    server, url = start_server(processes, db_url)
    with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
        for n in range(DELIVERIES):
            response = client.post(hooks["async"], content=f"{n}", headers={"webhook-id": f"k{n}"})
            assert response.status_code == 202
    server.process.kill()  # SIGKILL, right after the last 202: nothing flushed on the way out
    server.wait()
    worker = processes("--db", db_url, "worker", "--until-idle")
    assert worker.wait() == 0, "".join(worker.stderr)
    instance = hooks["instance"]
    assert [state(db_url, instance, f"runs:k{n}") for n in range(DELIVERIES)] == [1] * DELIVERIES
    code, out, _ = corral("--db", db_url, "executions", instance, "--json")
    assert code == 0
    runs = [e for e in json.loads(out) if e["method"] == "count"]
    assert len(runs) == DELIVERIES
    assert {(e["trigger"], e["outcome"]) for e in runs} == {("webhook", "ok")}


def test_sigterm_lets_a_sync_request_in_flight_finish(
    db_url: str, processes: Callable[..., Process], tmp_path: Path
) -> None:
    hooks = prepare_hooks(db_url, tmp_path, "sync")
    server, url = start_server(processes, db_url)
    answers: list[httpx.Response] = []

    def post() -> None:
        with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
            answers.append(client.post(f"{hooks['sync']}?shape=slow&s=1"))

    sender = threading.Thread(target=post)
    sender.start()
    deadline = time.monotonic() + TIMEOUT_S
    while not _stored(db_url, hooks["instance"], "slow_started"):  # the handler is running
        assert time.monotonic() < deadline, "the sync handler never started"
        time.sleep(0.02)
    server.signal(signal.SIGTERM)
    sender.join(TIMEOUT_S)
    [answer] = answers
    assert (answer.status_code, answer.text) == (200, "slept")
    assert server.wait() == 0
    assert server.printed[-1] == "stopped"
    assert "Traceback" not in "".join(server.stderr)


def _stored(db_url: str, instance: str, key: str) -> bool:
    code, _, _ = corral("--db", db_url, "state", "get", instance, key)
    return code == 0


def test_servers_on_one_database_share_deliveries_and_duplicates(
    db_url: str, processes: Callable[..., Process], tmp_path: Path
) -> None:
    hooks = prepare_hooks(db_url, tmp_path, "async")
    _, first_url = start_server(processes, db_url)
    _, second_url = start_server(processes, db_url)
    assert first_url != second_url
    with httpx.Client(timeout=TIMEOUT_S) as client:
        sent = client.post(first_url + hooks["async"], headers={"webhook-id": "shared"})
        again = client.post(second_url + hooks["async"], headers={"webhook-id": "shared"})
        other = client.post(second_url + hooks["async"], headers={"webhook-id": "other"})
    assert sent.status_code == again.status_code == other.status_code == 202
    assert again.json() == {**sent.json(), "duplicate": True}
    worker = processes("--db", db_url, "worker", "--until-idle")
    assert worker.wait() == 0
    assert state(db_url, hooks["instance"], "runs:shared") == 1
    assert state(db_url, hooks["instance"], "runs:other") == 1


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = corral("--db", f"sqlite:///{tmp_path}/x.db", "serve", "--port", str(port))
    assert code == 1
    assert err == (
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use; "
        "choose another with --port\n"
    )
