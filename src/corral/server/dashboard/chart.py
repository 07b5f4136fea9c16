"""The overview's chart: executions per minute, stacked by outcome, as inline SVG.

Drawn on the server (``overview.html`` renders the shapes computed here), so it
needs no script and no library, reads the same with JavaScript off, and scales
with the page (a ``viewBox``). Outcomes are grouped into four colours: ``ok``,
``error``, the limits (``timeout``, ``cpu_limit``, ``memory_limit``,
``request_limit``) and ``killed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from corral.db.overview import MINUTE_MS

#: The groups stacked bottom to top, and the outcomes in each.
GROUPS: Final = (
    ("ok", ("ok",)),
    ("error", ("error",)),
    ("limit", ("timeout", "cpu_limit", "memory_limit", "request_limit")),
    ("killed", ("killed",)),
)
_GROUP_OF: Final = {outcome: group for group, outcomes in GROUPS for outcome in outcomes}

WIDTH: Final = 800
HEIGHT: Final = 200
LEFT: Final = 40  # room for the y labels
BOTTOM: Final = 22  # room for the x labels
TOP: Final = 8


@dataclass(frozen=True)
class Segment:
    group: str
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Bar:
    """One minute: its stacked segments and what hovering it says."""

    minute: int
    label: str
    counts: dict[str, int]
    segments: list[Segment]

    @property
    def title(self) -> str:
        counted = ", ".join(f"{n} {outcome}" for outcome, n in sorted(self.counts.items()) if n)
        return f"{self.label}: {counted or 'no executions'}"


@dataclass(frozen=True)
class Tick:
    position: float
    label: str
    anchor: str = "middle"


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    plot_left: float
    plot_bottom: float
    bars: list[Bar]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    totals: dict[str, int]
    minutes: int

    @property
    def empty(self) -> bool:
        return not any(self.totals.values())


def _clock(minute: int) -> str:
    return datetime.fromtimestamp(minute * MINUTE_MS / 1000, UTC).strftime("%H:%M")


def _nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50... at least ``value`` (so ticks are round)."""
    step = 1
    while True:
        for multiple in (1, 2, 5):
            if step * multiple >= value:
                return step * multiple
        step *= 10


def executions_chart(
    counts: Sequence[tuple[int, str, int]], *, now_ms: int, minutes: int = 60
) -> Chart:
    """The chart of the last ``minutes`` minutes, ending with the current one, from
    ``(minute, outcome, executions)`` rows (``OverviewDatabase.executions_by_minute``)."""
    last = now_ms // MINUTE_MS
    first = last - minutes + 1
    per_minute: dict[int, dict[str, int]] = {m: {} for m in range(first, last + 1)}
    totals = {outcome: 0 for _, outcomes in GROUPS for outcome in outcomes}
    for minute, outcome, n in counts:
        if first <= minute <= last:
            per_minute[minute][outcome] = per_minute[minute].get(outcome, 0) + n
            totals[outcome] = totals.get(outcome, 0) + n
    highest = max((sum(c.values()) for c in per_minute.values()), default=0)
    top = _nice_ceiling(max(highest, 1))
    plot_width = WIDTH - LEFT
    plot_height = HEIGHT - BOTTOM - TOP
    slot = plot_width / minutes
    bars = []
    for index, minute in enumerate(range(first, last + 1)):
        by_outcome = per_minute[minute]
        y = float(HEIGHT - BOTTOM)
        segments = []
        for group, outcomes in GROUPS:
            n = sum(by_outcome.get(outcome, 0) for outcome in outcomes)
            if not n:
                continue
            height = n / top * plot_height
            y -= height
            segments.append(Segment(group, LEFT + index * slot + 1, y, max(slot - 2, 1), height))
        for outcome in by_outcome:
            if outcome not in _GROUP_OF:  # an outcome this chart does not know: still shown
                n = by_outcome[outcome]
                height = n / top * plot_height
                y -= height
                segments.append(
                    Segment("other", LEFT + index * slot + 1, y, max(slot - 2, 1), height)
                )
        bars.append(Bar(minute, f"{_clock(minute)} UTC", dict(by_outcome), segments))
    y_ticks = [
        Tick(HEIGHT - BOTTOM - fraction * plot_height, f"{round(top * fraction):g}")
        for fraction in (0.0, 0.5, 1.0)
        if fraction == 0.0 or top * fraction == int(top * fraction)
    ]
    # Every quarter of an hour back from the current minute, which is labelled "now"
    # and anchored at its end (its label would run off the edge).
    x_ticks = [
        Tick(LEFT + index * slot + slot / 2, _clock(minute))
        for index, minute in enumerate(range(first, last))
        if (minutes - 1 - index) % 15 == 0
    ]
    x_ticks.append(Tick(float(WIDTH), "now", "end"))
    return Chart(WIDTH, HEIGHT, LEFT, HEIGHT - BOTTOM, bars, y_ticks, x_ticks, totals, minutes)
