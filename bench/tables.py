"""Plain-text figures and tables shared by the benchmarks (no dependency, pipe-friendly)."""

from __future__ import annotations

import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

DASH = "\N{EN DASH}"  # between the min and max of a spread


def progress(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the report."""
    print(message, file=sys.stderr, flush=True)


def compact(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e4:
        return f"{x / 1e3:.0f}k"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def ms(x: float) -> str:
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def render(header: list[str], rows: list[list[str]], left: Sequence[int] = (0,)) -> str:
    """Aligned columns: those in ``left`` aligned left, the others right.

    A row of one cell is a heading, printed as it is.
    """
    table = [r for r in rows if len(r) > 1]
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        if len(row) == 1:
            return row[0]
        parts = [
            text.ljust(w) if i in left else text.rjust(w)
            for i, (text, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


@dataclass(frozen=True)
class Spread:
    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)


def fmt_ms(s: Spread) -> str:
    """A duration's median in milliseconds, its spread beside it."""
    return f"{ms(s.median)} ms ({ms(s.low)}{DASH}{ms(s.high)})"


def fmt_rate(s: Spread, bound: Callable[[float], str] = compact) -> str:
    """A rate's median per second, its spread beside it (``compact`` by default)."""
    return f"{s.median:,.0f}/s ({bound(s.low)}{DASH}{bound(s.high)})"


@dataclass
class Figures:
    """Every figure, one value per run, by name."""

    runs: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, name: str, value: float) -> None:
        self.runs[name].append(value)

    def __getitem__(self, name: str) -> Spread:
        return Spread(self.runs[name])

    def __contains__(self, name: str) -> bool:
        return bool(self.runs.get(name))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``q`` of them at or below."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
