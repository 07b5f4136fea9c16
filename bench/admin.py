"""The admin API's lists and the dashboard's pages over a large database, over HTTP.

DESIGN §5 sets the bar: with 10,000 instances and 1,000,000 executions in the
database, every list page and API list renders in ≤ 200 ms p95. This script
fills a fresh database to that size (a SQLite file in a temporary directory, or a
throwaway PostgreSQL database, dropped after), serves it with a real ``corral
serve`` process (uvicorn on a free port, its sandbox pool and all) and times, over
real HTTP, every list of ``/api/v1`` (with a ``Bearer`` token) and every list page
of the dashboard (signed in: the session cookie holds the token, as a browser's
does), each the way an operator asks for it: the first page, a page deep in the
history (a cursor at a random row of it, encoded as the API encodes its cursors),
each filter alone, the filters that narrow most combined, and ``q`` searches.

What the database holds, and how it is filled (in bulk, with every index in place;
the report says how long it took): ``bench/admin_data.py``.

Each run requests every endpoint ``--requests`` times, the endpoints taking turns in
a shuffled order (so background load hits them alike), one request at a time on one
keep-alive connection, and records each p50 and p95 (wall time to the last byte of
the answer, which must be a 200, and for a list that should have rows, a page with
rows). An endpoint whose requests take long stops after ``SLOW_BUDGET_S`` seconds a
run (3 requests at least; the table says how many). The table gives, per backend,
the median over ``--runs`` runs of each figure, and marks each p95 over 200 ms.

The machine has 2 noisy cores shared with other work: the report gives the load
average as each run starts. Requests go one at a time: these are the latencies an
operator sees, not what a server sustains under many clients.

Run: ``.venv/bin/python bench/admin.py [--quick] [--runs N] [--requests N]
[--backends sqlite,postgres] [--postgres-url URL] [--db URL]`` (3 runs; filling
takes a minute or two per backend, the measuring a few minutes more; ``--quick``:
500 instances and 20,000 executions, one run of 5 requests, under a minute).
``--db URL`` fills that database instead of a fresh one, or, if it holds
executions already, measures it as it is (to measure again after a change without
filling again; its schema is migrated first). Progress goes to stderr, the report
to stdout.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import workers
from admin_data import (
    DAY_MS,
    MINUTE_MS,
    SEARCH_ABSENT,
    SEARCH_COMMON,
    SEARCH_ERRORS,
    SEARCH_RARE,
    SEED,
    Filler,
    Sizes,
)
from corral.config import RuntimeConfig
from corral.db.raw import close_databases, open_database
from corral.runtime.services import Services
from corral.server.api.pages import encode as cursor
from databases import BACKEND_NAMES
from databases import fresh_database as fresh
from tables import DASH, Figures, percentile, progress, render
from workers import add_database_arguments, choose_backends, now_ms

CORRAL = str(Path(sys.executable).with_name("corral"))
BAR_MS = 200.0
#: Seconds an endpoint's requests may take in one run before it stops (after 3).
SLOW_BUDGET_S = 15.0
MIN_REQUESTS = 3
#: Deep cursors drawn per list: each deep request takes one at random.
DEEP_KEYS = 64

# -- what is asked for ------------------------------------------------------------------------


@dataclass(frozen=True)
class Targets:
    """The rows the endpoints name, found in the database after it is filled."""

    busy: str  # the instance with the most executions
    quiet: str  # one with a few
    backlog: str  # the one with the most tasks
    hot_webhook: str  # the webhook with the most deliveries
    failed: str  # an execution that failed, with log lines
    method: str  # a task method
    window: tuple[int, int]  # an hour a week ago
    day_ago: int
    deep: dict[str, list[str]]  # cursors deep in each list


def find_targets(url: str, now: int) -> Targets:
    database = open_database(url)
    try:
        counts = database.fetch_all(
            "SELECT instance, count(*) AS n FROM executions GROUP BY instance ORDER BY n DESC"
        )
        backlog = database.fetch_one(
            "SELECT instance, count(*) AS n FROM tasks GROUP BY instance ORDER BY n DESC LIMIT 1"
        )[0]
        hot = database.fetch_one(
            "SELECT webhook_id, count(*) AS n FROM deliveries GROUP BY webhook_id "
            "ORDER BY n DESC LIMIT 1"
        )[0]
        (newest,) = database.fetch_one("SELECT max(started_at) FROM executions")
        failed = database.fetch_one(
            "SELECT e.id FROM executions e WHERE e.outcome = 'error' AND e.outcome <> 'ok' "
            "AND e.started_at <= :at ORDER BY e.started_at DESC, e.id DESC LIMIT 1",
            {"at": newest - DAY_MS},
        )[0]
        (oldest,) = database.fetch_one("SELECT min(started_at) FROM executions")
        rng = random.Random(SEED)

        def keys(sql: str, low: int, high: int) -> list[str]:
            found = []
            for _ in range(DEEP_KEYS):
                row = database.fetch_one(sql, {"at": rng.randrange(low, high)})
                if row is not None:
                    found.append(cursor(list(row)))
            return found

        span = (oldest + (newest - oldest) // 10, newest - (newest - oldest) // 10)
        deep = {
            "executions": keys(
                "SELECT started_at, id FROM executions WHERE started_at <= :at "
                "ORDER BY started_at DESC, id DESC LIMIT 1",
                *span,
            ),
            "logs": keys(
                "SELECT at, id FROM logs WHERE at <= :at ORDER BY at DESC, id DESC LIMIT 1", *span
            ),
            "deliveries": keys(
                "SELECT received_at, id FROM deliveries WHERE received_at <= :at "
                "ORDER BY received_at DESC, id DESC LIMIT 1",
                *span,
            ),
            "activities": keys(
                "SELECT updated_at, id FROM activities WHERE updated_at <= :at "
                "ORDER BY updated_at DESC, id DESC LIMIT 1",
                now - 25 * DAY_MS,
                now - 5 * DAY_MS,
            ),
            "instances": keys(
                "SELECT created_at, id FROM instances WHERE created_at <= :at "
                "ORDER BY created_at DESC, id DESC LIMIT 1",
                now - 50 * DAY_MS,
                now - 10 * DAY_MS,
            ),
        }
        (tasks,) = database.fetch_one("SELECT max(id) FROM tasks")
        deep["tasks"] = [cursor([rng.randrange(tasks // 10, tasks)]) for _ in range(DEEP_KEYS)]
        method = database.fetch_one(
            "SELECT method FROM executions WHERE instance = :busy AND trigger = 'task' LIMIT 1",
            {"busy": counts[0][0]},
        )[0]
    finally:
        close_databases()
    week_ago = newest - 7 * DAY_MS
    return Targets(
        busy=counts[0][0],
        quiet=counts[len(counts) * 3 // 4][0],
        backlog=backlog,
        hot_webhook=hot,
        failed=failed,
        method=method,
        window=(week_ago, week_ago + 60 * MINUTE_MS),
        day_ago=newest - DAY_MS,
        deep=deep,
    )


@dataclass(frozen=True)
class Endpoint:
    """One thing to time: ``page`` for the dashboard, ``api`` for ``/api/v1``; ``deep``:
    the list whose deep cursors it takes; ``rows``: whether its answer must list rows."""

    kind: str
    name: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    deep: str | None = None
    rows: bool = True

    @property
    def label(self) -> str:
        return f"{'API' if self.kind == 'api' else 'page'} {self.name}"


def endpoints(t: Targets) -> list[Endpoint]:
    def api(
        name: str, path: str, rows: bool = True, deep: str | None = None, **params: Any
    ) -> Endpoint:
        return Endpoint("api", name, path, params, deep, rows)

    def page(
        name: str, path: str, rows: bool = True, deep: str | None = None, **params: Any
    ) -> Endpoint:
        return Endpoint("page", name, path, params, deep, rows)

    since, until = t.window
    ex = "/executions"
    return [
        api("agents", "/agents"),
        api("instances", "/instances"),
        api("instances, deep", "/instances", deep="instances"),
        api("instances status=suspended", "/instances", status="suspended"),
        api("instances status=removed", "/instances", status="removed"),
        api("instances agent=shop", "/instances", agent="shop"),
        api("instances agent=archiver", "/instances", agent="archiver"),
        api("instances priority=sales/us", "/instances", priority="sales/us"),
        api("instance's state", f"/instances/{t.busy}/state"),
        api("instance's state prefix=seen:01", f"/instances/{t.busy}/state", prefix="seen:01"),
        api("executions", ex),
        api("executions, deep", ex, deep="executions"),
        api("executions instance=busiest", ex, instance=t.busy),
        api("executions instance=busiest, deep", ex, instance=t.busy, deep="executions"),
        api("executions instance=quiet", ex, instance=t.quiet),
        api("executions agent=shop", ex, agent="shop"),
        api("executions agent=archiver", ex, agent="archiver"),
        api("executions method=<task method>", ex, method=t.method),
        api("executions method=deactivate", ex, method="deactivate"),
        api("executions trigger=webhook", ex, trigger="webhook"),
        api("executions trigger=lifecycle", ex, trigger="lifecycle"),
        api("executions outcome=ok", ex, outcome="ok"),
        api("executions outcome=error", ex, outcome="error"),
        api("executions outcome=error, deep", ex, outcome="error", deep="executions"),
        api("executions outcome=timeout", ex, outcome="timeout"),
        api("executions outcome=killed", ex, outcome="killed"),
        api("executions since..until (an hour)", ex, since=since, until=until),
        api("executions instance=busiest outcome=error", ex, instance=t.busy, outcome="error"),
        api("executions agent=shop outcome=timeout", ex, agent="shop", outcome="timeout"),
        api("executions q=<common>", ex, q=SEARCH_COMMON),
        api("executions q=<in errors>", ex, q=SEARCH_ERRORS, rows=False),
        api("executions q=<rare>", ex, q=SEARCH_RARE, rows=False),
        api("executions q=<rare> since=a day", ex, q=SEARCH_RARE, since=t.day_ago, rows=False),
        api("executions q=<absent>", ex, q=SEARCH_ABSENT, rows=False),
        api("executions q=<common>, deep", ex, q=SEARCH_COMMON, deep="executions"),
        api("execution (one)", f"{ex}/{t.failed}", rows=False),
        api("tasks", "/tasks"),
        api("tasks, deep", "/tasks", deep="tasks"),
        api("tasks state=dead", "/tasks", state="dead"),
        api("tasks state=ready", "/tasks", state="ready"),
        api("tasks state=scheduled", "/tasks", state="scheduled"),
        api("tasks state=running", "/tasks", state="running"),
        api("tasks instance=<backlog>", "/tasks", instance=t.backlog),
        api("tasks method=<task method>", "/tasks", method=t.method),
        api("tasks trigger=tick", "/tasks", trigger="tick"),
        api("logs", "/logs"),
        api("logs, deep", "/logs", deep="logs"),
        api("logs instance=busiest", "/logs", instance=t.busy),
        api("logs level=error", "/logs", level="error"),
        api("logs level=warning", "/logs", level="warning"),
        api("logs level=debug, deep", "/logs", level="debug", deep="logs"),
        api("logs execution=<failed>", "/logs", execution=t.failed),
        api("logs since=a day", "/logs", since=t.day_ago),
        api("priorities", "/priorities"),
        api("activities", "/activities"),
        api("activities, deep", "/activities", deep="activities"),
        api("activities priority=sales", "/activities", priority="sales"),
        api("webhooks", "/webhooks"),
        api("webhooks instance=busiest", "/webhooks", instance=t.busy),
        api("deliveries (busiest webhook)", f"/webhooks/{t.hot_webhook}/deliveries"),
        api("deliveries, deep", f"/webhooks/{t.hot_webhook}/deliveries", deep="deliveries"),
        api("tokens", "/tokens"),
        page("overview", "/", rows=False),
        page("instances", "/instances", rows=False),
        page("instances, deep", "/instances", rows=False, deep="instances"),
        page("instances status=suspended", "/instances", rows=False, status="suspended"),
        page("instances agent=archiver", "/instances", rows=False, agent="archiver"),
        page("instance (busiest)", f"/instances/{t.busy}", rows=False),
        page("instance (quiet)", f"/instances/{t.quiet}", rows=False),
        page("executions", ex, rows=False),
        page("executions, deep", ex, rows=False, deep="executions"),
        page("executions outcome=error", ex, rows=False, outcome="error"),
        page("executions agent=archiver", ex, rows=False, agent="archiver"),
        page("executions instance=busiest", ex, rows=False, instance=t.busy),
        page("executions trigger=lifecycle", ex, rows=False, trigger="lifecycle"),
        page("executions q=<common>", ex, rows=False, q=SEARCH_COMMON),
        page("executions q=<rare>", ex, rows=False, q=SEARCH_RARE),
        page("execution (one)", f"{ex}/{t.failed}", rows=False),
        page("tasks", "/tasks", rows=False),
        page("dead letters", "/tasks", rows=False, state="dead"),
        page("tasks instance=<backlog>", "/tasks", rows=False, instance=t.backlog),
        page("webhooks", "/webhooks", rows=False),
        page("deliveries (busiest webhook)", f"/webhooks/{t.hot_webhook}", rows=False),
        page("deliveries, deep", f"/webhooks/{t.hot_webhook}", rows=False, deep="deliveries"),
        page("activities", "/activities", rows=False),
        page("activities priority=sales", "/activities", rows=False, priority="sales"),
        page("logs", "/logs", rows=False),
        page("logs level=error", "/logs", rows=False, level="error"),
        page("logs instance=busiest", "/logs", rows=False, instance=t.busy),
    ]


# -- serving and asking ----------------------------------------------------------------------


@contextmanager
def serving(url: str) -> Iterator[str]:
    """``corral serve --port 0`` on the database: its URL, while it serves."""
    with tempfile.TemporaryFile(mode="w+") as errors:
        process = subprocess.Popen(
            [CORRAL, "--db", url, "serve", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        try:
            assert process.stdout is not None
            for line in process.stdout:
                if line.startswith("server: "):
                    yield line.split(" ", 1)[1].strip()
                    return
            process.wait()
            errors.seek(0)
            raise RuntimeError(f"corral serve exited before it served:\n{errors.read()}")
        finally:
            process.terminate()
            try:
                process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


def token(url: str) -> str:
    """An admin token (what ``corral tokens create --scope admin`` prints)."""
    services = Services(RuntimeConfig(database_url=url))
    try:
        _, text = services.tokens.create("admin", "bench/admin.py", now=now_ms())
    finally:
        close_databases()
    return text


class Client:
    """One keep-alive connection for the API (a bearer token) and one for the
    dashboard (the session cookie a browser gets when it signs in with the token)."""

    def __init__(self, base: str, secret: str, deep: dict[str, list[str]]) -> None:
        self.api = httpx.Client(
            base_url=f"{base}/api/v1", headers={"authorization": f"Bearer {secret}"}, timeout=120
        )
        self.page = httpx.Client(base_url=base, cookies={"corral_session": secret}, timeout=120)
        self.deep = deep
        self.rng = random.Random(SEED)

    def time(self, endpoint: Endpoint) -> float:
        """One request's wall time in ms, after checking its answer."""
        params = dict(endpoint.params)
        if endpoint.deep is not None:
            params["cursor"] = self.rng.choice(self.deep[endpoint.deep])
        client = self.api if endpoint.kind == "api" else self.page
        started = time.perf_counter()
        response = client.get(endpoint.path, params=params)
        took = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise RuntimeError(
                f"{endpoint.label}: {response.status_code} {response.text[:300]} ({params})"
            )
        if endpoint.kind == "api" and endpoint.rows and not response.json()["data"]:
            raise RuntimeError(f"{endpoint.label}: an empty page ({params})")
        return took

    def close(self) -> None:
        self.api.close()
        self.page.close()


def measure(
    client: Client,
    listed: Sequence[Endpoint],
    requests: int,
    run: int,
    figures: Figures,
    prefix: str,
) -> None:
    """``requests`` of each endpoint, taking turns in a shuffled order; each p50 and p95."""
    rng = random.Random(run)
    taken: dict[str, list[float]] = {e.label: [] for e in listed}
    spent: Counter[str] = Counter()
    for _ in range(requests):
        order = list(listed)
        rng.shuffle(order)
        for endpoint in order:
            done = taken[endpoint.label]
            if len(done) >= MIN_REQUESTS and spent[endpoint.label] > SLOW_BUDGET_S * 1000:
                continue
            took = client.time(endpoint)
            done.append(took)
            spent[endpoint.label] += took
    for label, values in taken.items():
        figures.add(f"{prefix}.{label}.p50", statistics.median(values))
        figures.add(f"{prefix}.{label}.p95", percentile(values, 0.95))
        figures.add(f"{prefix}.{label}.n", len(values))


# -- one backend ------------------------------------------------------------------------------


@dataclass
class Context(workers.Context):
    """The run's conditions, and what this bench adds: each fill's time and rows, the load
    at each run's start, and the endpoints measured."""

    filled: dict[str, dict[str, float]] = field(default_factory=dict)
    rows: dict[str, Counter[str]] = field(default_factory=dict)
    load: list[tuple[float, float, float]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)


@contextmanager
def bench_database(backend: str, args: argparse.Namespace) -> Iterator[str]:
    if args.db is not None:
        yield args.db
        return
    with fresh(backend, args.postgres_url) as url:
        yield url


def holds_executions(url: str) -> bool:
    database = open_database(url)  # migrates
    try:
        return database.fetch_one("SELECT 1 FROM executions LIMIT 1") is not None
    finally:
        close_databases()


def run_backend(
    backend: str, args: argparse.Namespace, sizes: Sizes, figures: Figures, context: Context
) -> None:
    with bench_database(backend, args) as url:
        now = now_ms()
        if holds_executions(url):
            progress(f"[{backend}] measuring {url} as it is (it holds executions already)")
        else:
            progress(f"[{backend}] filling {url}:")
            filler = Filler(url, sizes, now)
            filler.fill()
            context.filled[backend] = filler.seconds
            context.rows[backend] = filler.writer.rows
        targets = find_targets(url, now)
        listed = endpoints(targets)
        context.labels = [e.label for e in listed]
        with serving(url) as served:
            client = Client(served, token(url), targets.deep)
            try:
                for endpoint in listed:  # warm up, and check every answer once
                    client.time(endpoint)
                for run in range(args.runs):
                    context.load.append(os.getloadavg())
                    started = time.perf_counter()
                    measure(client, listed, args.requests, run, figures, backend)
                    took = time.perf_counter() - started
                    over = [
                        e.label
                        for e in listed
                        if figures[f"{backend}.{e.label}.p95"].values[-1] > BAR_MS
                    ]
                    progress(
                        f"[{backend}] run {run + 1}/{args.runs}: {took:.0f} s, "
                        f"load {os.getloadavg()[0]:.2f}; p95 over {BAR_MS:.0f} ms: "
                        + (", ".join(over) or "none")
                    )
            finally:
                client.close()


def bench(args: argparse.Namespace, sizes: Sizes) -> tuple[Figures, Context]:
    figures = Figures()
    context = Context()
    backends = context.usable(args.backends, args.db or args.postgres_url)
    for backend in backends:
        run_backend(backend, args, sizes, figures, context)
    context.finish()
    args.backends = backends
    return figures, context


# -- the report -------------------------------------------------------------------------------


def fmt(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def report(figures: Figures, context: Context, args: argparse.Namespace, sizes: Sizes) -> str:
    backends = list(args.backends)
    header = [""]
    for b in backends:
        header += [f"{BACKEND_NAMES[b]} p50", "p95 (min-max)", "n"]
    rows: list[list[str]] = []
    over: list[str] = []
    for label in context.labels:
        row = [label]
        for b in backends:
            p95 = figures[f"{b}.{label}.p95"]
            mark = " OVER" if p95.median > BAR_MS else ""
            if mark:
                over.append(f"{BACKEND_NAMES[b]}: {label} ({fmt(p95.median)} ms)")
            row += [
                fmt(figures[f"{b}.{label}.p50"].median),
                f"{fmt(p95.median)} ({fmt(p95.low)}{DASH}{fmt(p95.high)}){mark}",
                f"{figures[f'{b}.{label}.n'].median:.0f}",
            ]
        rows.append(row)
    loads = ", ".join(f"{load[0]:.2f}" for load in context.load)
    lines = [
        f"Corral admin API and dashboard lists over HTTP: {sizes.instances:,} instances, "
        f"{sizes.executions:,} executions (bench/admin.py)",
        f"ms per request, one at a time on a keep-alive connection, to `corral serve`; "
        f"p50 and p95 of {args.requests} requests an endpoint a run, the median of "
        f"{args.runs} run{'s' * (args.runs > 1)} (p95's min-max beside it); n: requests a run",
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        + "".join(f"{v}, " for v in context.versions)
        + f"{platform.machine()}, {os.cpu_count()} CPUs; load average at each run's start: "
        f"{loads}; {context.seconds:.0f} s in all",
    ]
    for b in backends:
        if b in context.filled:
            filled = context.filled[b]
            counted = ", ".join(f"{n:,} {table}" for table, n in context.rows[b].items())
            lines.append(
                f"{BACKEND_NAMES[b]} filled in {sum(filled.values()):.0f} s ("
                + ", ".join(f"{name} {s:.0f} s" for name, s in filled.items())
                + f"): {counted}"
            )
    lines += ["", render(header, rows)]
    lines += [
        "",
        f"p95 over {BAR_MS:.0f} ms: " + ("; ".join(over) if over else "none"),
    ]
    lines += [f"{name} skipped: {why}" for name, why in context.skipped.items()]
    return "\n".join(lines)


# -- command line -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 20,000 executions, 1 run of 5"
    )
    parser.add_argument("--runs", type=int, help="measuring passes (default 3; 1 quick)")
    parser.add_argument(
        "--requests", type=int, help="requests per endpoint a run (default 20; 5 quick)"
    )
    add_database_arguments(
        parser,
        "fill this database instead of a fresh one, or measure it as it is if it holds "
        "executions already",
    )
    args = parser.parse_args(argv)
    choose_backends(parser, args)
    args.requests = args.requests or (5 if args.quick else 20)
    if args.requests < MIN_REQUESTS:
        parser.error(f"--requests must be at least {MIN_REQUESTS}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = Sizes.for_run(args.quick)
    progress(
        f"{sizes.instances:,} instances, {sizes.executions:,} executions; {args.runs} run(s) "
        f"of {args.requests} requests an endpoint on {', '.join(args.backends)} ..."
    )
    figures, context = bench(args, sizes)
    print(report(figures, context, args, sizes))
    progress(f"done in {context.seconds:.0f} s")


if __name__ == "__main__":
    main()
