"""``/metrics`` (SPEC §2): the fleet's counts, summed over every process on one database.

A known workload runs through real ``corral`` processes (a server and two workers,
on SQLite and PostgreSQL): tasks that succeed, fail and are retried, then dead-
lettered; webhooks answered 200, 202, 404 and 500, and a duplicate; a fetch made
and a fetch the allow-list blocks. A scrape of the server then shows exactly those
counts, though most of them were counted by the workers, which have exited. The
text parses with prometheus_client's own parser, and no label holds an id.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from corral.config import RateLimits, RuntimeConfig
from corral.runtime.metrics import CONTENT_TYPE
from corral.runtime.services import Services
from tests.cli.invoke import corral
from tests.server.conftest import TIMEOUT_S, Process, Serve, prepare_hooks

OK, FAIL = 6, 3
EXECUTIONS = "corral_executions_total"

WORK = """
from corral import Agent


class Work(Agent):
    network = [{healthz!r}]

    async def activate(self, priority):
        for _ in range({ok}):
            await self.run_task(self.ok)
        for _ in range({fail}):
            await self.run_task(self.fail)
        await self.run_task(self.fetch_two)

    async def ok(self):
        return None

    async def fail(self):
        raise ValueError("this one always fails")

    async def fetch_two(self):
        try:
            await self.fetch("http://example.invalid/off-the-list")
        except PermissionError:
            pass
        return (await self.fetch({healthz!r})).status
"""

#: Every label name /metrics may use: none of them holds an id.
LABELS = {"agent", "trigger", "outcome", "mode", "code", "state", "status", "version", "python"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parsed(text: str) -> Samples:
    """Every sample of the exposition by name and labels (``le`` among them)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def labelled(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """The series of ``name`` by their labels."""
    return {labels: v for (n, labels), v in samples.items() if n == name}


def token(db: str, scope: str = "read") -> str:
    code, out, err = corral("--db", db, "tokens", "create", "--scope", scope, "--json")
    assert code == 0, err
    text: str = json.loads(out)["token"]
    return text


def deploy_work(db: str, folder: Path, healthz: str) -> str:
    """The workload's agent deployed and installed through the CLI; its instance id."""
    agent = folder / "work.py"
    agent.write_text(WORK.format(healthz=healthz, ok=OK, fail=FAIL))
    code, _, err = corral("--db", db, "deploy", str(agent))
    assert code == 0, err
    code, out, err = corral("--db", db, "install", "work", "--json")
    assert code == 0, err
    instance: str = json.loads(out)["id"]
    return instance


def executions(db: str, instance: str) -> list[dict[str, Any]]:
    code, out, err = corral("--db", db, "executions", instance, "--limit", "1000", "--json")
    assert code == 0, err
    found: list[dict[str, Any]] = json.loads(out)
    return found


def test_a_scrape_sums_what_a_server_and_two_worker_processes_counted(
    db_url: str, processes: Callable[..., Process], tmp_path: Path
) -> None:
    hooks = prepare_hooks(db_url, tmp_path, "async", "sync")
    server = processes("--db", db_url, "serve", "--port", "0", "--metrics-port", "0")
    printed = [server.expect(r"^(server|metrics): (http://\S+)$") for _ in range(2)]
    urls = {found[1]: found[2] for found in printed}
    work = deploy_work(db_url, tmp_path, f"{urls['server']}/healthz")

    with httpx.Client(base_url=urls["server"], timeout=TIMEOUT_S) as client:
        answers = [
            client.post(f"{hooks['sync']}?shape=str").status_code,
            client.post(f"{hooks['sync']}?shape=str").status_code,
            client.post(f"{hooks['sync']}?shape=raise").status_code,
            *(
                client.post(hooks["async"], headers={"webhook-id": delivery}).status_code
                for delivery in ("a1", "a2", "a3", "a1")  # the last one a duplicate
            ),
            client.post("/hooks/no-such-token").status_code,
        ]
    assert answers == [200, 200, 500, 202, 202, 202, 202, 404]

    # Two workers share the tasks; a failed task runs twice, then is dead-lettered.
    env = {"CORRAL_RETRIES_ATTEMPTS": "2", "CORRAL_RETRIES_BACKOFF_S": "0"}
    workers = [processes("--db", db_url, "worker", "--until-idle", env=env) for _ in range(2)]
    for worker in workers:
        assert worker.wait() == 0, "".join(worker.stderr)

    with httpx.Client(timeout=TIMEOUT_S) as client:
        scraped = client.get(
            f"{urls['server']}/metrics", headers={"authorization": f"Bearer {token(db_url)}"}
        )
        open_port = client.get(urls["metrics"])
    assert scraped.status_code == 200, scraped.text
    assert scraped.headers["content-type"] == CONTENT_TYPE
    samples = parsed(scraped.text)
    assert open_port.status_code == 200
    assert parsed(open_port.text) == samples  # the same sums, whichever port

    assert labelled(samples, "corral_executions_total") == {
        frozenset({"agent": "work", "trigger": "lifecycle", "outcome": "ok"}.items()): 1,
        frozenset({"agent": "work", "trigger": "task", "outcome": "ok"}.items()): OK + 1,
        frozenset({"agent": "work", "trigger": "task", "outcome": "error"}.items()): 2 * FAIL,
        frozenset({"agent": "hooks", "trigger": "webhook", "outcome": "ok"}.items()): 2 + 3,
        frozenset({"agent": "hooks", "trigger": "webhook", "outcome": "error"}.items()): 1,
    }
    assert value(samples, "corral_task_retries_total") == FAIL
    assert value(samples, "corral_dead_letters_total") == FAIL
    assert labelled(samples, "corral_webhook_requests_total") == {
        frozenset({"mode": "sync", "code": "200"}.items()): 2,
        frozenset({"mode": "sync", "code": "500"}.items()): 1,
        frozenset({"mode": "async", "code": "202"}.items()): 4,
        frozenset({"mode": "none", "code": "404"}.items()): 1,
    }
    assert value(samples, "corral_webhook_duplicates_total") == 1
    assert labelled(samples, "corral_fetch_requests_total") == {
        frozenset({"outcome": "ok"}.items()): 1,
        frozenset({"outcome": "blocked"}.items()): 1,
    }
    # Every execution recorded is in the histograms; those of tasks, not of sync
    # webhooks, waited in the queue.
    records = executions(db_url, work) + executions(db_url, hooks["instance"])
    ran = len(records)
    assert ran == 1 + OK + 1 + 2 * FAIL + 5 + 1
    for histogram in (
        "corral_execution_duration_seconds",
        "corral_execution_cpu_seconds",
        "corral_execution_requests",
    ):
        assert value(samples, f"{histogram}_count") == ran
        assert value(samples, f"{histogram}_bucket", le="+Inf") == ran
    assert value(samples, "corral_execution_requests_sum") == sum(
        r["requests_used"] for r in records
    )
    assert value(samples, "corral_execution_requests_bucket", le="0.0") == OK + 2 * FAIL
    assert value(samples, "corral_execution_duration_seconds_sum") == pytest.approx(
        sum(r["duration_ms"] for r in records) / 1000, abs=0.001 * ran
    )
    assert value(samples, "corral_task_queue_wait_seconds_count") == ran - 3
    # The gauges, counted from the database at the scrape.
    assert labelled(samples, "corral_tasks") == {
        frozenset({"state": "ready"}.items()): 0,
        frozenset({"state": "scheduled"}.items()): 0,
        frozenset({"state": "running"}.items()): 0,
        frozenset({"state": "dead"}.items()): FAIL,
    }
    assert value(samples, "corral_instances", status="active") == 2
    assert value(samples, "corral_suspensions_total") == 0
    [build] = labelled(samples, "corral_build_info")
    assert dict(build)["version"]

    # No instance or execution id in any label.
    assert {name for _, labels in samples for name, _ in labels} <= LABELS | {"le"}
    for found in [work, hooks["instance"], *(r["id"] for r in records)]:
        assert found not in scraped.text


def test_a_worker_serves_metrics_on_its_port_and_writes_them_as_sigterm_stops_it(
    db_url: str, processes: Callable[..., Process], tmp_path: Path
) -> None:
    work = deploy_work(db_url, tmp_path, "http://127.0.0.1:9/healthz")  # nothing listens
    worker = processes(
        "--db", db_url, "worker", "--metrics-port", "0", env={"CORRAL_RETRIES_ATTEMPTS": "1"}
    )
    url = worker.expect(r"^metrics: (http://\S+)$")[1]
    ran = 1 + OK + FAIL + 1
    deadline = time.monotonic() + TIMEOUT_S
    with httpx.Client(timeout=TIMEOUT_S) as client:
        while sum(labelled(samples := parsed(client.get(url).text), EXECUTIONS).values()) < ran:
            assert time.monotonic() < deadline, f"not all {ran} executions ran"
            time.sleep(0.05)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, "".join(worker.stderr)
    # fetch_two fails too, where its second fetch finds no server; one attempt each.
    assert value(samples, "corral_dead_letters_total") == FAIL + 1
    assert labelled(samples, "corral_fetch_requests_total") == {
        frozenset({"outcome": "blocked"}.items()): 1,
        frozenset({"outcome": "error"}.items()): 1,
    }

    # Gone, it is in the sums all the same: what it counted was written as it stopped.
    services = Services(RuntimeConfig(database_url=db_url))
    assert parsed(services.metric_snapshots.scrape().decode()) == samples
    assert len(executions(db_url, work)) == ran


async def test_metrics_on_the_main_port_take_a_read_token(serve: Serve) -> None:
    served = await serve()
    db = served.runtime.url
    missing = await served.client.get("/metrics")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json() == {
        "error": {
            "code": "unauthorized",
            "message": "send a token: 'Authorization: Bearer <token>' (corral tokens create)",
        }
    }
    wrong = await served.client.get("/metrics", headers={"authorization": f"Bearer {token(db)}x"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["message"] == (
        "the token is not valid: it is malformed, unknown or revoked"
    )
    read = token(db)
    allowed = await served.client.get("/metrics", headers={"authorization": f"Bearer {read}"})
    assert allowed.status_code == 200
    assert value(parsed(allowed.text), "corral_dead_letters_total") == 0

    code, out, err = corral("--db", db, "tokens", "ls", "--json")
    assert code == 0, err
    [read_id] = [t["id"] for t in json.loads(out) if read.startswith(f"corral_{t['id']}_")]
    code, _, err = corral("--db", db, "tokens", "revoke", read_id)
    assert code == 0, err
    revoked = await served.client.get("/metrics", headers={"authorization": f"Bearer {read}"})
    assert revoked.status_code == 401


SUSPENDED = """
from corral.sdk import Agent

class Busy(Agent):
    async def activate(self, priority):
        for i in range(8):
            await self.run_task(self.work)

    async def work(self):
        return None
"""


async def test_an_instance_suspended_for_its_rate_is_counted_once(serve: Serve) -> None:
    served = await serve(RuntimeConfig(rate_limits=RateLimits(per_5min=5)), concurrency=1)
    await served.runtime.deploy("busy", SUSPENDED)
    instance = served.runtime.install("busy").id
    await served.runtime.settle()
    assert served.runtime.status(instance)[0] == "suspended"

    read = token(served.runtime.url)
    scraped = await served.client.get("/metrics", headers={"authorization": f"Bearer {read}"})
    samples = parsed(scraped.text)
    assert value(samples, "corral_suspensions_total") == 1
    assert value(samples, "corral_instances", status="suspended") == 1
    assert value(samples, "corral_tasks", state="ready") == 4  # left for after the suspension
    assert (
        value(samples, "corral_executions_total", agent="busy", trigger="task", outcome="ok") == 4
    )


def test_a_metrics_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        used = taken.getsockname()[1]
        code, _, err = corral(
            "--db",
            f"sqlite:///{tmp_path}/x.db",
            "serve",
            "--port",
            "0",
            "--metrics-port",
            str(used),
        )
    assert code == 1
    assert err == (
        f"Error: cannot listen on 127.0.0.1:{used}: Address already in use; "
        "choose another with --metrics-port\n"
    )
