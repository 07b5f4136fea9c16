"""Every ``Limits`` holds finite numbers in range, whoever makes it (SPEC §1.6).

An agent's overrides are checked against the operator's ceilings (what deploy
says about each bad value is in tests/test_cli.py); the operator's own defaults
and ceilings against the most Corral allows, so no value can reach a lease, an
rlimit or a timer that would overflow it.
"""

from __future__ import annotations

import math

import pytest

from corral.errors import LimitError
from corral.sandbox.limits import CEILINGS, Limits


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "timeout_s",
            math.inf,
            "limit timeout_s must be a number of seconds from 0.001 to 86400 (the most Corral "
            "allows), got inf",
        ),
        (
            "cpu_s",
            math.nan,
            "limit cpu_s must be a number of seconds from 0.001 to 86400 (the most Corral "
            "allows), got nan",
        ),
        (
            "memory_mb",
            2**40,
            "limit memory_mb must be a whole number of MiB from 16 to 1048576 (the most Corral "
            "allows), got 1099511627776",
        ),
        (
            "requests",
            False,
            "limit requests must be a whole number from 1 to 1000000 (the most Corral allows), "
            "got False",
        ),
    ],
)
def test_an_operator_cannot_set_a_limit_past_what_corral_allows(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(LimitError) as raised:
        Limits(**{field: value})  # type: ignore[arg-type]
    assert str(raised.value) == message


def test_an_override_applies_up_to_the_ceiling_and_keeps_the_rest() -> None:
    defaults = Limits(requests=500)
    ceilings = Limits(requests=2000, timeout_s=120, cpu_s=60, memory_mb=512)
    assert defaults.override({"timeout_s": 120, "memory_mb": 512}, ceilings) == Limits(
        requests=500, timeout_s=120, cpu_s=30.0, memory_mb=512
    )
    for memory_mb in (513, 512.0):  # an int is meant, even where a float would be whole
        with pytest.raises(LimitError) as raised:
            defaults.override({"memory_mb": memory_mb}, ceilings)
        assert str(raised.value) == (
            "limit memory_mb must be a whole number of MiB from 16 to 512 (the operator's "
            f"ceiling), got {memory_mb}"
        )


def test_what_an_override_echoes_is_bounded_and_any_key_is_named() -> None:
    """The values come from agent code: the message quotes them, shortened."""
    with pytest.raises(LimitError) as raised:
        Limits().override({"timeout_s": "9" * 100_000}, CEILINGS)
    assert str(raised.value) == (
        "limit timeout_s must be a number of seconds from 0.001 to 900 (the operator's "
        "ceiling), got '999999999999...9999999999999'"
    )
    with pytest.raises(LimitError) as raised:
        Limits().override({"requests": [10**5000]}, CEILINGS)
    assert str(raised.value) == (
        "limit requests must be a whole number from 1 to 100000 (the operator's ceiling), "
        "got [<an integer of 16610 bits>]"
    )
    with pytest.raises(LimitError) as raised:
        Limits().override({5: 1, "ram": 2}, CEILINGS)
    assert str(raised.value) == (
        "unknown limit(s) 'ram', 5; the limits are cpu_s, memory_mb, requests, timeout_s"
    )
    with pytest.raises(LimitError) as raised:
        Limits().override({f"x{n:05}" + "y" * 100: n for n in range(10_000)}, CEILINGS)
    assert str(raised.value) == (
        "unknown limit(s) 'x00000yyyyyy...yyyyyyyyyyyyy', 'x00001yyyyyy...yyyyyyyyyyyyy', "
        "'x00002yyyyyy...yyyyyyyyyyyyy', 'x00003yyyyyy...yyyyyyyyyyyyy', "
        "'x00004yyyyyy...yyyyyyyyyyyyy' and 9995 more; the limits are cpu_s, memory_mb, "
        "requests, timeout_s"
    )
