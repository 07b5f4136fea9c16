"""The quotas' one home: their defaults, and what an agent over one is told (their
settings are the configuration's: tests/test_config.py)."""

from __future__ import annotations

import pytest

from corral.errors import CorralError, QuotaConfigError, QuotaExceeded
from corral.quotas import Quotas, store_exceeded
from corral.sdk.errors import from_wire, wire_name


def test_the_defaults() -> None:
    assert Quotas() == Quotas(
        store_bytes=64 * 1024 * 1024, store_keys=100_000, pending_tasks=1_000, callbacks=1_000
    )


def test_a_quota_given_in_code_must_be_a_positive_whole_number() -> None:
    with pytest.raises(QuotaConfigError, match=r"the callbacks quota must be a whole number"):
        Quotas(callbacks=0)
    with pytest.raises(QuotaConfigError, match=r"store_bytes quota .* got 1.5"):
        Quotas(store_bytes=1.5)  # type: ignore[arg-type]


def test_an_agent_over_the_default_store_quota_reads_what_why_and_what_to_do() -> None:
    error = store_exceeded(Quotas(), bytes_after=67_108_900, keys_after=12)
    assert str(error) == (
        "this instance's store would hold 67,108,900 bytes, over its 67,108,864-byte quota "
        "(64 MiB): delete keys or store less (nothing was written)"
    )


def test_quota_exceeded_crosses_the_sandbox_boundary_as_itself() -> None:
    error = QuotaExceeded("over")
    assert isinstance(error, CorralError)
    crossed = from_wire(wire_name(error), str(error))
    assert type(crossed) is QuotaExceeded
    assert str(crossed) == "over"
