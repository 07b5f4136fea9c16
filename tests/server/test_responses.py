"""Whatever a sync handler returns becomes a sendable response or a clear refusal.

The return value is the agent's choice, so any value must end as one of the two:
an ``Answer`` Starlette can send (the HTTP tests in test_intake.py check the
shapes over the wire), or ``HandlerReturnError`` with the reason the instance's
log shows. Never another exception: that would be a 500 ``internal_error``, a
Corral bug, instead of the handler's own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from corral.errors import HandlerReturnError
from corral.server.responses import Answer, handler_answer

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(),
    st.binary(max_size=50),
    st.just(datetime(2026, 1, 1, tzinfo=UTC)),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(), st.integers()), inner, max_size=4),
        st.tuples(inner, inner),
        st.tuples(inner, inner, inner),
    ),
    max_leaves=12,
)
_HEADERS = st.one_of(
    st.dictionaries(st.text(max_size=12), st.text(max_size=20), max_size=3),
    st.lists(st.tuples(st.text(max_size=12), st.text(max_size=20)), max_size=3),
    _VALUES,
)
_RETURNS = st.one_of(
    _VALUES,
    st.tuples(st.integers(0, 700), _VALUES),
    st.tuples(st.integers(0, 700), _VALUES, _HEADERS),
)


@given(_RETURNS)
def test_every_return_value_is_a_response_or_a_reason(value: Any) -> None:
    answer: Answer | None = None
    try:
        answer = handler_answer(value)
    except HandlerReturnError as exc:
        reason = str(exc)
    if answer is None:
        assert reason  # what the instance's log will say
        return
    assert 200 <= answer.status <= 599
    response = answer.response()  # Starlette encodes the headers: Latin-1, no line breaks
    names = [name.lower() for name, _ in response.headers.items()]
    assert names.count("content-length") <= 1
    if answer.status in (204, 304):
        assert answer.body == b""
