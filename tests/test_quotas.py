"""The quotas' one home: their defaults, their settings from the environment, and
what an agent over one is told."""

from __future__ import annotations

import pytest

from corral.errors import CorralError, QuotaConfigError, QuotaExceeded
from corral.quotas import MAX_QUOTA, Quotas, store_exceeded
from corral.sdk.errors import from_wire, wire_name


def test_the_defaults() -> None:
    assert Quotas() == Quotas(
        store_bytes=64 * 1024 * 1024, store_keys=100_000, pending_tasks=1_000, callbacks=1_000
    )
    assert Quotas.from_environment({}) == Quotas()


def test_each_quota_is_set_from_its_variable() -> None:
    environ = {
        "CORRAL_QUOTAS_STORE_BYTES": "16MiB",
        "CORRAL_QUOTAS_STORE_KEYS": "5_000",
        "CORRAL_QUOTAS_PENDING_TASKS": " 20 ",
        "CORRAL_QUOTAS_CALLBACKS": "",  # set but empty: the default
    }
    assert Quotas.from_environment(environ) == Quotas(
        store_bytes=16 * 1024 * 1024, store_keys=5_000, pending_tasks=20, callbacks=1_000
    )
    assert Quotas.from_environment({"CORRAL_QUOTAS_STORE_BYTES": "2gib"}).store_bytes == 2**31
    assert Quotas.from_environment({"CORRAL_QUOTAS_STORE_BYTES": "512"}).store_bytes == 512


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "CORRAL_QUOTAS_STORE_BYTES",
            "64 MB",
            "CORRAL_QUOTAS_STORE_BYTES must be a whole number of bytes, or of KiB, MiB or GiB "
            "(64MiB), got '64 MB'",
        ),
        (
            "CORRAL_QUOTAS_PENDING_TASKS",
            "1KiB",
            "CORRAL_QUOTAS_PENDING_TASKS must be a whole number, got '1KiB'",
        ),
        (
            "CORRAL_QUOTAS_CALLBACKS",
            "-1",
            "CORRAL_QUOTAS_CALLBACKS must be a whole number, got '-1'",
        ),
        (
            "CORRAL_QUOTAS_STORE_KEYS",
            "0",
            f"CORRAL_QUOTAS_STORE_KEYS must be from 1 to {MAX_QUOTA:,}, got '0'",
        ),
        (
            "CORRAL_QUOTAS_STORE_BYTES",
            "9" * 30,
            f"CORRAL_QUOTAS_STORE_BYTES must be from 1 to {MAX_QUOTA:,}, got '{'9' * 30}'",
        ),
    ],
)
def test_a_bad_setting_names_its_variable_and_what_it_takes(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(QuotaConfigError) as raised:
        Quotas.from_environment({variable: value})
    assert str(raised.value) == message


def test_a_misspelt_quota_variable_is_not_ignored() -> None:
    with pytest.raises(QuotaConfigError) as raised:
        Quotas.from_environment({"CORRAL_QUOTAS_STORE_BYTE": "1MiB", "CORRAL_QUOTAS_X": "1"})
    assert str(raised.value) == (
        "CORRAL_QUOTAS_STORE_BYTE, CORRAL_QUOTAS_X: no such quota; the quotas are "
        "CORRAL_QUOTAS_STORE_BYTES, CORRAL_QUOTAS_STORE_KEYS, CORRAL_QUOTAS_PENDING_TASKS, "
        "CORRAL_QUOTAS_CALLBACKS"
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
