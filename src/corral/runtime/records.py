"""The execution record: what every execution leaves behind for people and scripts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from corral.sandbox.limits import ExecutionResult
from corral.tagged_json import JsonValue, to_tagged

Trigger = Literal["task", "webhook", "lifecycle", "activity", "tick", "exec"]


@dataclass
class ExecutionRecord:
    instance: str
    method: str
    trigger: Trigger
    result: ExecutionResult
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: The webhook delivery that caused it, if one did.
    delivery_id: str | None = None

    def to_json(self) -> dict[str, JsonValue]:
        r = self.result
        error: JsonValue = dict(r.error) if r.error is not None else None
        return {
            "id": self.id,
            "instance": self.instance,
            "method": self.method,
            "trigger": self.trigger,
            "outcome": r.outcome.value,
            "result": to_tagged(r.result),
            "error": error,
            "requests_used": r.requests_used,
            "cpu_ms": round(r.cpu_ms, 3),
            "peak_rss_bytes": r.peak_rss_bytes,
            "duration_ms": round(r.duration_ms, 3),
            "started_at": self.started_at.isoformat(),
            "logs": [{"level": level, "line": line} for level, line in r.logs],
            "delivery_id": self.delivery_id,
        }


def loaded(result: ExecutionResult) -> dict[str, Any]:
    """The description a successful ``describe`` returned."""
    assert isinstance(result.result, dict)
    return result.result
