"""The database bench/admin.py measures: 10,000 instances, 1,000,000 executions, and
what goes with them, written in bulk.

Everything comes from one seeded random source, so every fill is the same:

- 6 agents (one deployed twice), 10,000 instances over 17 priorities: 2% removed,
  1% suspended; one agent (``archiver``) with 20 quiet instances, the rare filter.
- 1,000,000 executions over 14 days, in time order (a steady ~50 a minute, so the
  overview's chart has an hour of them), spread over the instances by a Zipf law
  (the busiest has ~10% of them): outcomes 95% ``ok``, 3.5% ``error``, 1%
  ``timeout``, the rest the limits and ``killed``; triggers ``task``, ``webhook``
  (each with its delivery), ``tick``, ``activity`` and ``lifecycle``; every failure
  with its error (type, message, traceback) and its error line in the log, as the
  runtime writes them; 30% with 1-3 log lines of their own (~650,000 lines in all).
- Tasks: recurring ticks, scheduled and ready ones, a few running (leased), 3,000
  dead letters, and one instance with a backlog of 10,000 (~20,000 in all).
- ~4,300 webhooks (a few deleted) and a delivery for each webhook execution
  (~46,000); 50,000 activities (40% with a note); 10,000 keys of store state.

Rows go in as bulk inserts in big transactions (``executemany`` on SQLite; ``COPY``
on PostgreSQL), with every index of the schema in place, as a database that grew
would have them; agents are deployed through the registry (their code described in
a sandbox), every other row is written as the runtime writes it. SQLite gets no
``ANALYZE`` (Corral never runs one, so its planner has no statistics in production
either); PostgreSQL gets ``VACUUM ANALYZE``, as autovacuum would after such a load.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from corral import codec
from corral.config import RuntimeConfig
from corral.db.activities import ACTIVITY_COLUMNS, NOTE_COLUMNS
from corral.db.history import EXECUTION_FIELDS, LINE_FIELDS
from corral.db.raw import close_databases
from corral.db.webhooks import DELIVERY_COLUMNS, WEBHOOK_COLUMNS
from corral.runtime.describe import describe_code
from corral.runtime.services import Services
from tables import progress

MINUTE_MS = 60_000
DAY_MS = 86_400_000
#: Rows a bulk insert sends per transaction.
CHUNK = 50_000
SEED = 1

# -- what the database holds --------------------------------------------------------------


@dataclass(frozen=True)
class AgentSpec:
    name: str
    share: float  # of the instances
    methods: tuple[str, ...]  # what its tasks run
    quiet: bool = False  # its instances run 1% of what others do
    lines: tuple[str, ...] = ()  # what its executions log ({n}: a number)


AGENTS = (
    AgentSpec(
        "shop",
        0.35,
        ("sync_orders", "send_receipt", "refund"),
        lines=("fetched {n} orders from the shop API", "sent receipt {n} to the customer"),
    ),
    AgentSpec(
        "digest",
        0.25,
        ("build_digest", "send_digest"),
        lines=("digest has {n} items", "skipped {n} duplicates"),
    ),
    AgentSpec(
        "crm-sync",
        0.2,
        ("pull_contacts", "push_updates"),
        lines=("synced {n} contacts", "fetched {n} changes since the last sync"),
    ),
    AgentSpec(
        "notifier",
        0.15,
        ("notify", "retry_notify"),
        lines=("notification {n} delivered", "retrying notification {n}"),
    ),
    AgentSpec(
        "scraper",
        0.048,
        ("fetch_page", "parse_page"),
        lines=("fetched https://example.com/page/{n}", "parsed {n} links"),
    ),
    AgentSpec("archiver", 0.002, ("archive",), quiet=True, lines=("archived {n} records",)),
)
PRIORITIES = (
    "default",
    "sales",
    "sales/emea",
    "sales/us",
    "sales/us/west",
    "support",
    "support/tier1",
    "support/tier2",
    "ops",
    "ops/oncall",
    "ops/billing",
    "marketing",
    "marketing/campaigns",
    "research",
    "research/papers",
    "finance",
    "finance/invoices",
)
TRIGGERS = {"task": 62, "webhook": 12, "tick": 14, "activity": 10, "lifecycle": 2}
OUTCOMES = {
    "ok": 9500,
    "error": 350,
    "timeout": 100,
    "cpu_limit": 20,
    "memory_limit": 15,
    "request_limit": 10,
    "killed": 5,
}
ERRORS = {
    "error": [
        ("ValueError", "invalid order id {n}"),
        ("KeyError", "'customer'"),
        ("HTTPError", "503 Service Unavailable from api.example.com"),
        ("ConnectionError", "connection reset by peer"),
    ],
    "timeout": [("timeout", "the execution ran past its wall-clock timeout and was stopped")],
    "cpu_limit": [("cpu_limit", "the execution used its whole CPU budget and was stopped")],
    "memory_limit": [("MemoryError", "the execution ran out of memory (limit 256 MiB)")],
    "request_limit": [("RequestLimitExceeded", "this execution made its 50 requests")],
    "killed": [("killed", "the sandboxed process died (wait status 9)")],
}
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "agent.py", line {line}, in {method}\n'
    "    result = await self.http.get(url)\n"
    '  File "agent.py", line 12, in _check\n'
    "    raise {kind}({message!r})\n"
    "{kind}: {message}\n"
)
#: Searched text: in ~10% of executions' lines; in ~1% of errors; in ~60 lines in
#: all, over the whole history; and nowhere.
SEARCH_COMMON = "fetched"
SEARCH_ERRORS = "invalid order"
SEARCH_RARE = "quota exceeded for tenant"
SEARCH_ABSENT = "no such text anywhere"
RARE_EVERY = 10_000  # lines: one in so many says SEARCH_RARE


@dataclass(frozen=True)
class Sizes:
    instances: int
    executions: int
    days: int
    tasks_backlog: int
    dead: int
    activities: int

    @classmethod
    def for_run(cls, quick: bool) -> Sizes:
        if quick:
            return cls(500, 20_000, 14, 500, 150, 2_500)
        return cls(10_000, 1_000_000, 14, 10_000, 3_000, 50_000)


def agent_code(spec: AgentSpec) -> str:
    methods = "".join(
        f"\n    async def {method}(self):\n        return None\n"
        for method in (*spec.methods, "tick")
    )
    return (
        "from corral import Agent\n\n\n"
        f"class {spec.name.title().replace('-', '')}(Agent):{methods}"
        "\n    async def on_webhook(self, request):\n        return None\n"
        "\n    def on_activity(self, activity, changes):\n        return None\n"
    )


# -- writing rows in bulk ---------------------------------------------------------------------


class Writer:
    """Rows into tables, ``CHUNK`` to a transaction: ``executemany`` on SQLite (its own
    connection, unsynchronised while it fills), ``COPY`` on PostgreSQL."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.sqlite = parsed.get_backend_name() == "sqlite"
        self.rows: Counter[str] = Counter()
        if self.sqlite:
            assert parsed.database is not None
            self._lite = sqlite3.connect(parsed.database, isolation_level=None)
            self._lite.execute("PRAGMA synchronous=OFF")
            self._lite.execute("PRAGMA cache_size=-262144")  # 256 MiB while filling
        else:
            libpq = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
            self._pg = psycopg.connect(libpq, autocommit=True)

    def write(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        for chunk in _chunks(rows, CHUNK):
            if self.sqlite:
                marks = ", ".join("?" for _ in columns)
                self._lite.execute("BEGIN")
                self._lite.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", chunk
                )
                self._lite.execute("COMMIT")
            else:
                with (
                    self._pg.transaction(),
                    self._pg.cursor() as cur,
                    cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
                ):
                    for row in chunk:
                        copy.write_row(row)
            self.rows[table] += len(chunk)

    def finish(self) -> None:
        if self.sqlite:
            self._lite.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._lite.close()
        else:
            self._pg.execute("VACUUM ANALYZE")
            self._pg.close()


def _chunks(rows: Iterable[Sequence[Any]], size: int) -> Iterator[list[Sequence[Any]]]:
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


# -- filling ------------------------------------------------------------------------------------


@dataclass
class Instance:
    id: str
    agent: AgentSpec
    priority: str
    status: str
    created_at: int
    version: int
    webhooks: list[tuple[str, str]] = field(default_factory=list)  # (id, mode)


#: The columns come from the modules that write the rows, so a fill stays the shape the
#: runtime writes; an execution's row also holds its instance's agent (migration 0012).
EXECUTION_COLUMNS = (*EXECUTION_FIELDS, "agent")
LINE_COLUMNS = LINE_FIELDS
TASK_COLUMNS = (
    "instance",
    "trigger",
    "method",
    "args",
    "token",
    "key",
    "interval_ms",
    "state",
    "run_at",
    "attempts",
    "max_attempts",
    "lease_until",
    "leased_by",
    "last_error",
    "created_at",
)


class Filler:
    """Everything the database holds, made from one seeded random source."""

    def __init__(self, url: str, sizes: Sizes, now: int) -> None:
        self.url = url
        self.sizes = sizes
        self.now = now
        self.rng = random.Random(SEED)
        self.writer = Writer(url)
        self.instances: list[Instance] = []
        self.busiest: Instance | None = None
        self.seconds: dict[str, float] = {}

    def hex(self, bits: int) -> str:
        return f"{self.rng.getrandbits(bits):0{bits // 4}x}"

    def timed(self, name: str, fill: Callable[[], None]) -> None:
        started = time.perf_counter()
        fill()
        self.seconds[name] = time.perf_counter() - started
        progress(f"  {name}: {self.seconds[name]:.1f} s")

    def fill(self) -> None:
        self.timed("agents", self.agents)
        self.timed("instances", self.fill_instances)
        self.timed("executions, logs, deliveries", self.executions)
        self.timed("tasks", self.tasks)
        self.timed("activities", self.activities)
        self.timed("state", self.state)
        self.timed("vacuum/checkpoint", self.writer.finish)

    def agents(self) -> None:
        """Deployed as ``corral deploy`` does (their code described in a sandbox)."""
        registry = Services(RuntimeConfig(database_url=self.url)).registry
        for spec in AGENTS:
            code = agent_code(spec)
            registry.deploy(spec.name, code, asyncio.run(describe_code(code)), now=self.now)
        code = agent_code(AGENTS[0]) + "\n# version 2\n"
        registry.deploy(AGENTS[0].name, code, asyncio.run(describe_code(code)), now=self.now)
        close_databases()

    def fill_instances(self) -> None:
        rng, n = self.rng, self.sizes.instances
        specs = rng.choices(AGENTS, weights=[a.share for a in AGENTS], k=n)
        archivers = max(1, round(n * AGENTS[-1].share))
        specs = [s for s in specs if s.name != "archiver"][: n - archivers]
        specs += [AGENTS[-1]] * (n - len(specs))
        rng.shuffle(specs)
        weights = [40, 10, 4, 4, 2, 10, 4, 4, 6, 3, 3, 5, 2, 3, 1, 3, 2]
        for spec in specs:
            status = rng.choices(("active", "removed", "suspended"), (97, 2, 1))[0]
            instance = Instance(
                id=f"{spec.name}-{self.hex(32)}",
                agent=spec,
                priority=rng.choices(PRIORITIES, weights)[0],
                status=status,
                created_at=self.now - rng.randrange(DAY_MS, 60 * DAY_MS),
                version=2 if spec is AGENTS[0] else 1,
            )
            hooks = rng.choices((0, 1, 2), (62, 33, 5))[0]
            for _ in range(hooks):
                mode = rng.choices(("async", "sync"), (80, 20))[0]
                instance.webhooks.append((f"wh_{self.hex(48)}", mode))
            self.instances.append(instance)
        reasons = {"suspended": "ran 200 executions in 5 minutes", "removed": None}
        self.writer.write(
            "instances",
            ("id", "agent", "priority", "status", "status_reason", "config", "created_at"),
            (
                (
                    i.id,
                    i.agent.name,
                    i.priority,
                    i.status,
                    reasons.get(i.status),
                    json.dumps({"region": "eu"}) if k % 3 else "{}",
                    i.created_at,
                )
                for k, i in enumerate(self.instances)
            ),
        )
        self.writer.write(
            "priorities", ("name", "created_at"), ((name, self.now) for name in PRIORITIES)
        )
        args = codec.encode([])
        self.writer.write(
            "webhooks",
            WEBHOOK_COLUMNS,
            (
                (
                    hook,
                    self.hex(192),
                    i.id,
                    "on_webhook",
                    args,
                    mode,
                    "webhook",
                    None,
                    None,
                    i.created_at + n,
                    self.now - DAY_MS if rng.random() < 0.03 else None,
                )
                for i in self.instances
                for n, (hook, mode) in enumerate(i.webhooks)
            ),
        )

    def executions(self) -> None:
        """Executions in time order, with their log lines and (webhook ones) deliveries."""
        rng, count = self.rng, self.sizes.executions
        start = self.now - self.sizes.days * DAY_MS
        times = sorted(rng.randrange(start, self.now) for _ in range(count))
        order = list(self.instances)
        rng.shuffle(order)
        first = next(
            k
            for k, i in enumerate(order)
            if i.status == "active" and not i.agent.quiet and i.webhooks
        )
        order[0], order[first] = order[first], order[0]
        self.busiest = order[0]  # the first in the Zipf law's order: ~10% of all
        weights = []
        for rank, instance in enumerate(order, 1):
            weight = 1 / rank
            weight *= 0.01 if instance.agent.quiet else 0.3 if instance.status != "active" else 1
            weights.append(weight)
        cumulative = list(itertools.accumulate(weights))
        who = rng.choices(order, cum_weights=cumulative, k=count)
        triggers = rng.choices(list(TRIGGERS), list(TRIGGERS.values()), k=count)
        outcomes = rng.choices(list(OUTCOMES), list(OUTCOMES.values()), k=count)
        results = [None, None, codec.encode({"ok": True}), codec.encode({"items": 12})]
        headers = [
            codec.encode([["content-type", "application/json"], ["user-agent", agent]])
            for agent in ("Stripe/1.0", "GitHub-Hookshot/abc", "Shopify")
        ]
        bodies = [json.dumps({"event": "order.paid", "id": n}).encode() for n in range(20)]
        answer = codec.encode([["content-type", "application/json"]])
        executions: list[tuple[Any, ...]] = []
        lines: list[tuple[Any, ...]] = []
        deliveries: list[tuple[Any, ...]] = []
        line_count = 0

        def flush() -> None:
            if not executions:
                return
            self.writer.write("executions", EXECUTION_COLUMNS, executions)
            self.writer.write("logs", LINE_COLUMNS, lines)
            self.writer.write("deliveries", DELIVERY_COLUMNS, deliveries)
            executions.clear()
            lines.clear()
            deliveries.clear()
            progress(f"    {self.writer.rows['executions']:,} executions")

        for n in range(count):
            instance, trigger, outcome, at = who[n], triggers[n], outcomes[n], times[n]
            spec = instance.agent
            if trigger == "webhook" and not instance.webhooks:
                trigger = "task"
            method = {
                "task": rng.choice(spec.methods),
                "webhook": "on_webhook",
                "tick": "tick",
                "activity": "on_activity",
                "lifecycle": rng.choices(("activate", "upgrade", "deactivate"), (6, 3, 1))[0],
            }[trigger]
            execution = self.hex(128)
            error = None
            if outcome != "ok":
                kind, message = rng.choice(ERRORS[outcome])
                message = message.format(n=rng.randrange(10_000, 99_999))
                traceback = (
                    TRACEBACK.format(
                        line=rng.randrange(20, 90), method=method, kind=kind, message=message
                    )
                    if outcome == "error"
                    else ""
                )
                error = {"type": kind, "message": message, "traceback": traceback}
            delivery = None
            if trigger == "webhook":
                hook, mode = instance.webhooks[0]
                delivery = f"dl_{self.hex(64)}"
                sync = mode == "sync"
                deliveries.append(
                    (
                        delivery,
                        hook,
                        instance.id,
                        None,
                        at - rng.randrange(1, 40),
                        "POST",
                        "",
                        rng.choice(headers),
                        rng.choice(bodies),
                        mode,
                        None,
                        None if sync else self.hex(96),
                        execution,
                        200 if sync else None,
                        answer if sync else None,
                        b"{}" if sync else None,
                        at + 5 if sync else None,
                        0,
                    )
                )
            duration = rng.expovariate(1 / 40)
            executions.append(
                (
                    execution,
                    instance.id,
                    instance.version,
                    method,
                    trigger,
                    None if trigger == "webhook" else 1_000_000 + n,
                    outcome,
                    rng.choice(results) if outcome == "ok" else None,
                    json.dumps(error) if error else None,
                    rng.randrange(0, 4),
                    duration * 0.3,
                    rng.randrange(20, 80) << 20,
                    duration,
                    at,
                    delivery,
                    spec.name,
                )
            )
            if rng.random() < 0.3:
                for _ in range(rng.randrange(1, 4)):
                    line_count += 1
                    if line_count % RARE_EVERY == 0:
                        text = f"{SEARCH_RARE} acme-{rng.randrange(100)}"
                    else:
                        text = rng.choice(spec.lines).format(n=rng.randrange(1, 500))
                    level = rng.choices(("info", "debug", "warning"), (85, 5, 10))[0]
                    lines.append((instance.id, execution, at, level, text))
            if error is not None:
                said = [outcome] if outcome != "error" else []
                said += [error["type"]] if error["type"] != outcome else []
                lines.append((instance.id, execution, at, "error", ": ".join([*said, message])))
            if len(executions) >= CHUNK:
                flush()
        flush()
        self.writer.write(
            "logs",
            LINE_COLUMNS,
            (
                (
                    i.id,
                    None,
                    self.now - rng.randrange(DAY_MS),
                    "warning",
                    f"suspended: {i.id} ran 200 executions in 5 minutes",
                )
                for i in self.instances
                if i.status == "suspended"
            ),
        )

    def tasks(self) -> None:
        rng, now = self.rng, self.now
        live = [i for i in self.instances if i.status == "active"]
        no_args = codec.encode([])
        rows: list[tuple[Any, ...]] = []

        def task(i: Instance, **values: Any) -> None:
            row = {
                "instance": i.id,
                "trigger": "task",
                "method": rng.choice(i.agent.methods),
                "args": no_args,
                "token": None,
                "key": None,
                "interval_ms": None,
                "state": "queued",
                "run_at": now,
                "attempts": 0,
                "max_attempts": 3,
                "lease_until": None,
                "leased_by": None,
                "last_error": None,
                "created_at": now - rng.randrange(DAY_MS),
            }
            row.update(values)
            rows.append(tuple(row[column] for column in TASK_COLUMNS))

        for i in rng.sample(live, len(live) // 5):  # ticking instances
            task(
                i,
                trigger="tick",
                method="tick",
                state="recurring",
                interval_ms=MINUTE_MS,
                run_at=now + rng.randrange(MINUTE_MS),
                created_at=i.created_at,
            )
        for i in rng.choices(live, k=len(live) // 2):  # scheduled for later
            task(i, run_at=now + rng.randrange(MINUTE_MS, 7 * DAY_MS))
        for i in rng.choices(live, k=max(10, len(live) // 30)):  # due: ready
            task(i, run_at=now - rng.randrange(5_000))
        for i in rng.choices(live, k=20):  # leased by a worker (which this bench has not)
            task(i, state="running", attempts=1, lease_until=now + DAY_MS, leased_by="worker-1")
        for i in rng.choices(live, k=self.sizes.dead):
            kind, message = rng.choice(ERRORS["error"])
            task(
                i,
                state="dead",
                attempts=3,
                last_error=f"{kind}: {message.format(n=404)}",
                run_at=now - rng.randrange(7 * DAY_MS),
            )
        backlog = live[0]
        for _ in range(self.sizes.tasks_backlog):
            task(backlog, run_at=now + rng.randrange(MINUTE_MS, DAY_MS))
        rows.sort(key=lambda row: row[-1])  # ids grow with creation, as they do
        self.writer.write("tasks", TASK_COLUMNS, rows)

    def activities(self) -> None:
        rng, now = self.rng, self.now
        activities: list[tuple[Any, ...]] = []
        notes: list[tuple[Any, ...]] = []
        authors = [i.id for i in self.instances[:500]]
        for n in range(self.sizes.activities):
            priority = rng.choice(PRIORITIES)
            updated = now - rng.randrange(30 * DAY_MS)
            title = f"Follow up on order {n}"
            meta = codec.encode({"n": n, "score": n % 101})
            source = f"crm:{n}" if n % 2 else None
            activity = _uuid7(updated, rng)
            author = rng.choice(authors) if n % 3 else None
            activities.append(
                (
                    activity,
                    priority.split("/")[0],
                    priority,
                    "action" if n % 4 else "event",
                    title,
                    source,
                    codec.encode(datetime.fromtimestamp(updated / 1000, UTC))
                    if n % 5 == 0
                    else None,
                    None,
                    None if n % 4 == 0 else bool(n % 7 == 0),
                    meta,
                    author,
                    len(title) + len(source or "") + len(meta),
                    updated - DAY_MS,
                    updated,
                )
            )
            if n % 5 < 2:
                notes.append(
                    (
                        _uuid7(updated, rng),
                        activity,
                        None,
                        f"Called the customer about order {n}.",
                        author,
                        updated,
                        updated,
                    )
                )
        self.writer.write("activities", ACTIVITY_COLUMNS, activities)
        self.writer.write("notes", NOTE_COLUMNS, notes)

    def state(self) -> None:
        rng = self.rng
        values = [
            codec.encode(value)
            for value in (
                {"cursor": "2026-12-01", "seen": 1200},
                "a plain string",
                12345,
                [1, 2, 3],
                (4, 5),
                datetime(2026, 12, 1, tzinfo=UTC),
            )
        ]
        live = [i for i in self.instances if i.status == "active"]
        rows: list[tuple[Any, ...]] = []
        busiest = self.busiest
        assert busiest is not None
        for k in range(2_000):
            expires = self.now + DAY_MS if k % 10 == 0 else None
            rows.append((busiest.id, f"seen:{k:05d}", rng.choice(values), expires))
        for i in rng.sample(live, min(len(live), 2_000)):
            if i is busiest:
                continue
            rows += [(i.id, key, rng.choice(values), None) for key in ("cursor", "a", "b", "c")]
        self.writer.write("state", ("scope", "key", "value", "expires_at"), rows)


def _uuid7(ms: int, rng: random.Random) -> str:
    """An activity id as ``Uuid.generate`` makes one (time-ordered), from ``rng``."""
    value = (ms & (2**48 - 1)) << 80 | rng.getrandbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    hexed = f"{value:032x}"
    return f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"
