"""Metric snapshots (``corral.runtime.metrics``): sums that never go down or count twice.

Each ``Services`` is a process here, with a clock of its own: what each counts goes
to its own row, a scrape sums the rows, a row quiet for an hour is folded into the
retired sums, and a process whose row was folded while it lived on writes only what
came after. On SQLite and PostgreSQL. (tests/server/test_metrics.py scrapes real
processes.)
"""

from __future__ import annotations

import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from corral.config import RuntimeConfig
from corral.runtime.metrics import MAX_SERIES, OTHER, RETIRE_AFTER_MS, Metrics, Totals
from corral.runtime.records import ExecutionRecord
from corral.runtime.services import Services
from corral.sandbox.limits import ExecutionResult, Outcome
from tests.support import FakeClock


def record(outcome: Outcome = Outcome.OK, duration_ms: float = 3.0) -> ExecutionRecord:
    return ExecutionRecord(
        "an-instance", "m", "task", ExecutionResult(outcome, duration_ms=duration_ms)
    )


def process(url: str, clock: FakeClock) -> Services:
    return Services(RuntimeConfig(database_url=url), clock=clock)


def scraped(services: Services) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = services.metric_snapshots.scrape().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def executions(services: Services, agent: str = "echo", outcome: str = "ok") -> float:
    labels = (("agent", agent), ("outcome", outcome), ("trigger", "task"))
    return scraped(services).get(("corral_executions_total", labels), 0.0)


def rows(services: Services) -> dict[str, str]:
    return dict(services.database.fetch_all("SELECT process, samples FROM metric_snapshots"))


def test_a_scrape_sums_every_process_and_its_own_counts_as_of_now(db_url: str) -> None:
    clock = FakeClock()
    first, second = process(db_url, clock), process(db_url, clock)
    for _ in range(3):
        first.metrics.executed("echo", record(), fate="finished")
    second.metrics.executed("echo", record(Outcome.ERROR), fate="retried")
    first.metric_snapshots.write()
    second.metric_snapshots.write()
    assert set(rows(first)) == {first.metrics.process, second.metrics.process}

    first.metrics.executed("echo", record(), fate="finished")  # not written yet
    assert executions(first) == 4  # its own, as counted now
    assert executions(second) == 3  # the other's, as last written
    assert executions(second, outcome="error") == 1
    assert scraped(second)[("corral_task_retries_total", ())] == 1


def test_a_quiet_process_is_retired_and_the_sums_stay(db_url: str) -> None:
    early, late = FakeClock(), FakeClock()
    gone, alive, scraper = process(db_url, early), process(db_url, late), process(db_url, late)
    gone.metrics.executed("echo", record(), fate="dead")
    gone.metric_snapshots.write()
    alive.metrics.executed("echo", record(), fate="finished")
    alive.metric_snapshots.write()
    before = scraped(scraper)

    late.advance(RETIRE_AFTER_MS + 1)
    alive.metric_snapshots.write()  # an hour after ``gone`` last wrote: folds its row
    assert set(rows(alive)) == {"retired", alive.metrics.process}
    assert scraped(scraper) == before
    assert scraped(scraper)[("corral_dead_letters_total", ())] == 1

    # ``gone`` was only out of reach: it counts on, and writes only what is new.
    gone.metrics.executed("echo", record(), fate="finished")
    gone.metric_snapshots.write()
    assert executions(scraper) == 3
    assert executions(gone) == 3
    assert scraped(scraper)[("corral_dead_letters_total", ())] == 1


def test_histograms_of_other_bounds_land_in_a_bucket_no_smaller(db_url: str) -> None:
    services = process(db_url, FakeClock())
    other = {
        "counters": {},
        "histograms": {
            "corral_execution_duration_seconds": {
                "bounds": [0.003, 0.5],
                "counts": [1, 2, 3],
                "sum": 9.0,
            }
        },
    }
    services.database.write(
        "INSERT INTO metric_snapshots (process, samples, updated_at) VALUES ('old', :s, 0)",
        {"s": json.dumps(other)},
    )
    services.metrics.executed("echo", record(duration_ms=1.0), fate="finished")
    samples = scraped(services)

    def bucket(le: str) -> float:
        return samples[("corral_execution_duration_seconds_bucket", (("le", le),))]

    assert bucket("0.001") == 1  # this process's own 1 ms
    assert bucket("0.0025") == 1
    assert bucket("0.005") == 2  # the other's "at most 3 ms"
    assert bucket("0.5") == 4  # its "at most 0.5 s"
    assert bucket("900.0") == 4
    assert bucket("+Inf") == 7
    assert samples[("corral_execution_duration_seconds_sum", ())] == 9.001


def test_a_snapshot_that_cannot_be_read_is_left_out_and_said(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    services = process(db_url, FakeClock())
    services.database.write(
        "INSERT INTO metric_snapshots (process, samples, updated_at) VALUES ('bad', 'nope', 0)"
    )
    services.metrics.executed("echo", record(), fate="finished")
    with caplog.at_level(logging.WARNING, logger="corral.metrics"):
        assert executions(services) == 1
    assert "the metrics snapshot of bad cannot be read, and is left out" in caplog.text


def test_new_agents_past_the_series_cap_are_counted_as_other() -> None:
    metrics = Metrics()
    agents = MAX_SERIES + 10
    for n in range(agents):
        metrics.executed(f"agent-{n}", record(), fate="finished")
    metrics.executed("agent-0", record(), fate="finished")  # one it has: counted as ever
    series = metrics.executions.values
    assert len(series) == MAX_SERIES + 1
    assert series[("agent-0", "task", "ok")] == 2
    assert series[(OTHER, "task", "ok")] == 10
    assert sum(series.values()) == agents + 1

    totals = Totals()
    totals.add(metrics.samples())
    assert sum(totals.counters["corral_executions_total"].values()) == agents + 1
