"""Metrics: counted in memory by each process, summed from the database at a scrape.

Every worker, server and ``corral dev`` process counts what it does in a
:class:`Metrics` of its own (``Services.metrics``): plain dictionaries and lists,
so a count on the path of every task is an increment and nothing more. Every few
seconds, and as it stops, the process writes what it has counted since it started
to its row of ``metric_snapshots`` (:class:`Snapshots`); ``/metrics`` sums the rows
of every process, adds the gauges it counts from the database then and there
(tasks by state, instances by status) and renders the sums with prometheus_client.

Why this way (docs/metrics.md says more): workers have no HTTP server to scrape,
and may run on other machines than the servers, with no shared directory for
prometheus_client's multiprocess mode; the database is what they all share. A
process's row stays after it ends, so the sums never go down; rows quiet for an
hour are folded into one (``retired``), so the table stays as small as the fleet.

The labels hold no instance or execution id. Agent names are the operator's to
choose, so a process keeps at most ``MAX_SERIES`` series of a counter; past that a
new agent's counts go under the agent ``_other``, and the totals stay exact.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import math
import os
import platform
import secrets
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from corral import __version__
from corral.db.metrics import MetricDatabase
from corral.db.raw import Database
from corral.db.registry import ACTIVE, REMOVED, SUSPENDED, UNINSTALLING
from corral.runtime.records import ExecutionRecord
from corral.sandbox.limits import Outcome

log = logging.getLogger("corral.metrics")

#: What ``/metrics`` answers with: the Prometheus text format every scraper reads.
CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
#: Seconds between a process's snapshots: what a scrape may lag behind other processes.
SNAPSHOT_EVERY_S: Final = 5.0
#: A snapshot unchanged since the last is written again after this long (ms), so a
#: live process's row never looks quiet.
HEARTBEAT_MS: Final = 60_000
#: A row not written for this long (ms) belongs to a process that ended (or has not
#: reached the database for an hour): it is folded into the retired sums.
RETIRE_AFTER_MS: Final = 3_600_000
#: How often (ms) a process looks for rows to retire.
RETIRE_EVERY_MS: Final = 600_000
#: The most series of one counter a process keeps: past it, new label values fold
#: into ``OTHER`` (see ``Family.folds``).
MAX_SERIES: Final = 1000
OTHER: Final = "_other"

#: Execution time: a warm no-op runs in 1-2 ms, a cold one in 10-15; the default
#: timeout is 60 s and the ceiling 900 s.
DURATION_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
)  # fmt: skip
#: CPU time: a no-op takes well under a millisecond; the default limit is 30 s.
CPU_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
)  # fmt: skip
#: Requests of the budget used: the default budget is 1,000, the ceiling 100,000.
REQUEST_BUCKETS: Final = (
    0.0,
    1.0,
    2.0,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    10000.0,
    100000.0,
)
#: From due to started: an idle worker starts a task in a millisecond or two; due
#: tasks are to be picked up within 100 ms (p99); a backlog shows in the long tail.
QUEUE_WAIT_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip

_OUTCOME_TEXT: Final = {outcome: outcome.value for outcome in Outcome}

#: How a settled task ended: removed, queued for another attempt, or dead-lettered.
Fate = Literal["finished", "retried", "dead"]


@dataclass(frozen=True)
class Family:
    """A metric as ``/metrics`` shows it: its name (a counter's ends in ``_total``),
    help, label names and, for a histogram, its buckets' upper bounds (+Inf implied)."""

    name: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    #: The labels whose values fold into ``OTHER`` past ``MAX_SERIES`` (default all).
    folds: tuple[str, ...] | None = None

    @property
    def histogram(self) -> bool:
        return bool(self.buckets)


EXECUTIONS = Family(
    "corral_executions_total",
    "Executions recorded, by agent, trigger and outcome.",
    ("agent", "trigger", "outcome"),
    folds=("agent",),
)
DURATION = Family(
    "corral_execution_duration_seconds", "Wall time of each execution.", buckets=DURATION_BUCKETS
)
CPU = Family("corral_execution_cpu_seconds", "CPU time of each execution.", buckets=CPU_BUCKETS)
REQUESTS = Family(
    "corral_execution_requests",
    "Requests of its budget each execution used.",
    buckets=REQUEST_BUCKETS,
)
QUEUE_WAIT = Family(
    "corral_task_queue_wait_seconds",
    "Time from when a task was due to when its execution started.",
    buckets=QUEUE_WAIT_BUCKETS,
)
RETRIES = Family(
    "corral_task_retries_total",
    "Task attempts that failed (or whose worker stopped) and were queued again.",
)
DEAD_LETTERS = Family("corral_dead_letters_total", "Tasks dead-lettered.")
WEBHOOK_REQUESTS = Family(
    "corral_webhook_requests_total",
    "Requests to /hooks, by the webhook's mode (none: no such webhook) and status code.",
    ("mode", "code"),
)
WEBHOOK_DUPLICATES = Family(
    "corral_webhook_duplicates_total",
    "Webhook deliveries answered as repeats of one seen within the dedupe window.",
)
FETCH_REQUESTS = Family(
    "corral_fetch_requests_total",
    "Outbound fetches by agents, by outcome (blocked: refused by the allow-list).",
    ("outcome",),
)
SUSPENSIONS = Family(
    "corral_suspensions_total", "Instances suspended for going over their rate limits."
)
COUNTERS: Final = (
    EXECUTIONS,
    RETRIES,
    DEAD_LETTERS,
    WEBHOOK_REQUESTS,
    WEBHOOK_DUPLICATES,
    FETCH_REQUESTS,
    SUSPENSIONS,
)
HISTOGRAMS: Final = (DURATION, CPU, REQUESTS, QUEUE_WAIT)
FAMILIES: Final = {family.name: family for family in COUNTERS + HISTOGRAMS}
#: Every value the gauges' labels take, shown at 0 when nothing has it (an alert on a
#: series that is absent never fires).
TASK_STATES: Final = ("ready", "scheduled", "running", "dead")
INSTANCE_STATUSES: Final = (ACTIVE, SUSPENDED, UNINSTALLING, REMOVED)


class Counter:
    """One counter's series in this process, by their label values."""

    __slots__ = ("family", "values")

    def __init__(self, family: Family) -> None:
        self.family = family
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...] = (), amount: float = 1.0) -> None:
        try:
            self.values[labels] += amount
        except KeyError:
            self._add(labels, amount)

    def _add(self, labels: tuple[str, ...], amount: float) -> None:
        if len(self.values) >= MAX_SERIES:
            family = self.family
            folds = family.labels if family.folds is None else family.folds
            labels = tuple(
                OTHER if name in folds else value
                for name, value in zip(family.labels, labels, strict=True)
            )
        self.values[labels] = self.values.get(labels, 0.0) + amount


class Histogram:
    """One histogram (no labels) in this process: a count per bucket, and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, family: Family) -> None:
        self.bounds = family.buckets
        self.counts = [0] * (len(family.buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # The first bucket whose bound is at least the value: Prometheus's "le".
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value


class Metrics:
    """What this process has counted since it started; one per ``Services``.

    Each method is an increment or two in memory, for the paths of every task,
    delivery and fetch. ``samples`` is what a snapshot writes.
    """

    def __init__(self) -> None:
        #: This process's row: host and pid for people, and random bits, since two
        #: ``Services`` in one process (tests) count apart.
        self.process = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.executions = Counter(EXECUTIONS)
        self.retries = Counter(RETRIES)
        self.dead_letters = Counter(DEAD_LETTERS)
        self.webhook_requests = Counter(WEBHOOK_REQUESTS)
        self.webhook_duplicates = Counter(WEBHOOK_DUPLICATES)
        self.fetch_requests = Counter(FETCH_REQUESTS)
        self.suspensions = Counter(SUSPENSIONS)
        self.duration = Histogram(DURATION)
        self.cpu = Histogram(CPU)
        self.requests = Histogram(REQUESTS)
        self.queue_wait = Histogram(QUEUE_WAIT)

    def executed(
        self, agent: str, record: ExecutionRecord, *, due_at: int | None = None, fate: Fate | None
    ) -> None:
        """An execution's record was written: of a task due at ``due_at`` (ms) that
        was then finished, retried or dead-lettered (``fate``), or of a sync webhook."""
        # On the path of every task: the histograms' observe written out, and the
        # outcome's text looked up (an enum's .value costs as much as an increment).
        result = record.result
        self.executions.inc((agent, record.trigger, _OUTCOME_TEXT[result.outcome]))
        for histogram, observed in (
            (self.duration, result.duration_ms / 1000),
            (self.cpu, result.cpu_ms / 1000),
            (self.requests, result.requests_used),
        ):
            histogram.counts[bisect.bisect_left(histogram.bounds, observed)] += 1
            histogram.sum += observed
        if due_at is not None:
            # Another machine's clock may have set due_at: a wait is never negative.
            self.queue_wait.observe(max(0.0, record.started_at.timestamp() - due_at / 1000))
        if fate == "retried":
            self.retries.inc()
        elif fate == "dead":
            self.dead_letters.inc()

    def webhook_request(self, mode: str, code: int) -> None:
        self.webhook_requests.inc((mode, str(code)))

    def fetched(self, outcome: str) -> None:
        self.fetch_requests.inc((outcome,))

    def samples(self) -> dict[str, Any]:
        """Everything counted, as a snapshot's JSON holds it: each counter's series as
        ``[labels, value]``, each histogram's bucket counts (not cumulative) and sum."""
        counters = (
            self.executions,
            self.retries,
            self.dead_letters,
            self.webhook_requests,
            self.webhook_duplicates,
            self.fetch_requests,
            self.suspensions,
        )
        histograms = (self.duration, self.cpu, self.requests, self.queue_wait)
        return {
            "counters": {
                c.family.name: [
                    [dict(zip(c.family.labels, labels, strict=True)), value]
                    for labels, value in c.values.items()
                ]
                for c in counters
            },
            "histograms": {
                family.name: {"bounds": list(h.bounds), "counts": list(h.counts), "sum": h.sum}
                for family, h in zip(HISTOGRAMS, histograms, strict=True)
            },
        }


Labels = tuple[tuple[str, str], ...]


@dataclass
class _Buckets:
    bounds: list[float]
    counts: list[float]
    sum: float = 0.0


class Totals:
    """Snapshots summed: series with the same name and labels add up.

    A histogram written with other bounds (another Corral version's) is added bucket by
    bucket into the first bucket here whose bound is at least its own: exact when the
    bounds are the same, and never a smaller bucket than the observation's.
    """

    def __init__(self) -> None:
        self.counters: dict[str, dict[Labels, float]] = {}
        self.histograms: dict[str, _Buckets] = {}

    @classmethod
    def parse(cls, text: str) -> Totals:
        """A snapshot's JSON as totals; ``ValueError`` (or ``TypeError``, ``KeyError``)
        if it is not one."""
        totals = cls()
        totals.add(json.loads(text))
        return totals

    def add(self, samples: Mapping[str, Any], sign: float = 1.0) -> None:
        """Add (``sign`` -1: take away) a snapshot as ``Metrics.samples`` makes it."""
        for name, series in samples["counters"].items():
            into = self.counters.setdefault(str(name), {})
            for labels, value in series:
                key = tuple(sorted((str(k), str(v)) for k, v in labels.items()))
                into[key] = into.get(key, 0.0) + sign * float(value)
        for name, histogram in samples["histograms"].items():
            bounds = [float(b) for b in histogram["bounds"]]
            counts = [float(c) for c in histogram["counts"]]
            if len(counts) != len(bounds) + 1:
                raise ValueError(f"histogram {name} has {len(counts)} counts for {len(bounds)}")
            into_buckets = self.histograms.get(name)
            if into_buckets is None:
                family = FAMILIES.get(name)
                own = list(family.buckets) if family is not None else bounds
                into_buckets = self.histograms[name] = _Buckets(own, [0.0] * (len(own) + 1))
            for bound, count in zip([*bounds, math.inf], counts, strict=True):
                into_buckets.counts[bisect.bisect_left(into_buckets.bounds, bound)] += sign * count
            into_buckets.sum += sign * float(histogram["sum"])

    def merge(self, other: Totals) -> None:
        self.add(other.to_json())

    def to_json(self) -> dict[str, Any]:
        return {
            "counters": {
                name: [[dict(labels), value] for labels, value in series.items()]
                for name, series in self.counters.items()
            },
            "histograms": {
                name: {"bounds": h.bounds, "counts": h.counts, "sum": h.sum}
                for name, h in self.histograms.items()
            },
        }


def merged(texts: Sequence[str]) -> str:
    """Snapshots' JSON summed into one (the retired row): one that cannot be read is
    kept out, and said so."""
    totals = Totals()
    for text in texts:
        _merge_text(totals, text, "a retired metrics snapshot")
    return _dumps(totals.to_json())


def _merge_text(totals: Totals, text: str, what: str) -> None:
    try:
        parsed = Totals.parse(text)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("%s cannot be read, and is left out: %s", what, exc)
        return
    totals.merge(parsed)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class Snapshots:
    """This process's snapshot in the database, and the scrape that sums everyone's."""

    def __init__(self, database: Database, metrics: Metrics, clock: Callable[[], float]) -> None:
        self.database = database
        self.metrics = metrics
        self.clock = clock
        self._db = MetricDatabase(database)
        #: What the row says now (None: never written), and when (ms) it was written.
        self._written: str | None = None
        self._written_at = 0
        #: What of this process's counts the retired row holds already, if its row
        #: was retired while it lived on (an hour without reaching the database).
        self._baseline: Totals | None = None
        self._retire_checked = -math.inf
        self._writing = False

    def now(self) -> int:
        return math.floor(self.clock() * 1000)

    def own(self) -> Totals:
        """This process's counts that are not in the retired row."""
        totals = Totals()
        totals.add(self.metrics.samples())
        if self._baseline is not None:
            totals.add(self._baseline.to_json(), -1.0)
        return totals

    def write(self) -> None:
        """Write this process's snapshot (unless unchanged and recent), and now and then
        fold the rows of processes gone quiet into the retired row."""
        if self._writing:  # the worker's and the server's, in one process (corral dev)
            return
        self._writing = True
        try:
            self._write(self.now())
        finally:
            self._writing = False

    def _write(self, now: int) -> None:
        if now - self._retire_checked >= RETIRE_EVERY_MS:
            self._retire_checked = now
            retired = self._db.retire(now - RETIRE_AFTER_MS, merged, now=now)
            if retired:
                log.info(
                    "folded the metrics of %d quiet process(es) into the retired sums", retired
                )
        text = _dumps(self.own().to_json())
        if text == self._written and now - self._written_at < HEARTBEAT_MS:
            return
        process = self.metrics.process
        if self._written is None:
            self._db.put(process, text, now=now)
        elif not self._db.update(process, text, now=now):
            # Retired meanwhile: the retired row holds what it said last. From now on
            # this row holds only what came after.
            baseline = self._baseline or Totals()
            baseline.merge(Totals.parse(self._written))
            self._baseline = baseline
            text = _dumps(self.own().to_json())
            self._db.put(process, text, now=now)
        self._written, self._written_at = text, now

    async def save(self) -> None:
        """``write``, from async code, never raising: metrics must not stop a worker or
        a server. A failure is logged, and the next snapshot carries the counts."""
        try:
            await self.database.call(self.write)
        except Exception as exc:
            log.warning("could not write this process's metrics snapshot: %s", exc)

    async def keep(self, every_s: float = SNAPSHOT_EVERY_S) -> None:
        """``save`` every ``every_s`` until cancelled (a server's chore)."""
        while True:
            await asyncio.sleep(every_s)
            await self.save()

    def scrape(self) -> bytes:
        """``/metrics``: every process's counts summed (this one's as counted now), the
        gauges counted from the database, and the build, in the Prometheus text format."""
        now = self.now()
        totals = self.own()
        for process, text in self._db.snapshots():
            if process != self.metrics.process:
                _merge_text(totals, text, f"the metrics snapshot of {process}")
        tasks = dict(self._db.task_states(now))
        instances = dict(self._db.instance_statuses())
        return generate_latest(_Exposition(totals, tasks, instances))


@dataclass(frozen=True)
class _Exposition:
    """The collector ``generate_latest`` renders: built per scrape from the sums."""

    totals: Totals
    tasks: Mapping[str, int]
    instances: Mapping[str, int]

    def collect(self) -> Iterator[Metric]:
        for family in COUNTERS:
            yield self._counter(family)
        for family in HISTOGRAMS:
            yield self._histogram(family)
        yield _gauge(
            "corral_tasks", "Tasks by state, counted now.", "state", self.tasks, TASK_STATES
        )
        yield _gauge(
            "corral_instances",
            "Instances by status, counted now.",
            "status",
            self.instances,
            INSTANCE_STATUSES,
        )
        info = GaugeMetricFamily(
            "corral_build_info",
            "The Corral version serving this scrape.",
            labels=["version", "python"],
        )
        info.add_metric([__version__, platform.python_version()], 1)
        yield info

    def _counter(self, family: Family) -> Metric:
        # prometheus_client adds "_total" to a counter's name itself.
        counter = CounterMetricFamily(
            family.name.removesuffix("_total"), family.help, labels=family.labels
        )
        series = self.totals.counters.get(family.name, {})
        if not family.labels and not series:
            counter.add_metric([], 0.0)
        for labels, value in sorted(series.items()):
            found = dict(labels)
            counter.add_metric([found.get(name, "") for name in family.labels], value)
        return counter

    def _histogram(self, family: Family) -> Metric:
        histogram = HistogramMetricFamily(family.name, family.help)
        summed = self.totals.histograms.get(family.name)
        counts = summed.counts if summed is not None else [0.0] * (len(family.buckets) + 1)
        cumulative = 0.0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip([*family.buckets, math.inf], counts, strict=True):
            cumulative += count
            buckets.append((_bound(bound), cumulative))
        histogram.add_metric([], buckets, summed.sum if summed is not None else 0.0)
        return histogram


def _gauge(
    name: str, help: str, label: str, counts: Mapping[str, int], known: Iterable[str]
) -> Metric:
    gauge = GaugeMetricFamily(name, help, labels=[label])
    for value in sorted({*known, *counts}):
        gauge.add_metric([value], counts.get(value, 0))
    return gauge


def _bound(bound: float) -> str:
    """A bucket's ``le`` as Prometheus writes it: ``+Inf``, ``0.005``, ``1.0``."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))
