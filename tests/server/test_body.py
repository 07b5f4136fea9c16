"""Request bodies outside /hooks/ are bounded before they are held (``server/body.py``):
a token of any scope, or anyone at the sign-in form, cannot make a server read more."""

from __future__ import annotations

from collections.abc import AsyncIterator

from corral.server.body import MAX_BODY_BYTES
from tests.server.api import start_api
from tests.server.conftest import Serve

TOO_LARGE = {
    "error": {
        "code": "too_large",
        "message": f"a request body here is at most {MAX_BODY_BYTES:,} bytes",
    }
}


async def test_a_body_declared_over_the_bound_is_refused_unread(serve: Serve) -> None:
    api = await start_api(serve)
    client = api.served.client
    oversized = b"x" * (MAX_BODY_BYTES + 1)
    # A read token posting to an operate route, and anyone posting to the sign-in form.
    read = {"authorization": f"Bearer {api.tokens['read']}", "content-type": "application/json"}
    answer = await client.post("/api/v1/agents", content=oversized, headers=read)
    assert (answer.status_code, answer.json()) == (413, TOO_LARGE)
    form = {"content-type": "application/x-www-form-urlencoded"}
    answer = await client.post("/signin", content=oversized, headers=form)
    assert (answer.status_code, answer.json()) == (413, TOO_LARGE)
    # Without a token the API says only that: the bound does not tell it more.
    answer = await client.post("/api/v1/agents", content=oversized)
    assert answer.status_code == 401


async def test_a_body_sent_past_the_bound_without_a_length_is_cut_off(serve: Serve) -> None:
    api = await start_api(serve)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b"x" * 65536

    headers = {"authorization": f"Bearer {api.tokens['admin']}", "content-type": "application/json"}
    answer = await api.served.client.post("/api/v1/agents", content=chunks(), headers=headers)
    assert (answer.status_code, answer.json()) == (413, TOO_LARGE)
    # Within the bound, the same route reads its body as usual (here: not JSON, a 4xx).
    answer = await api.served.client.post("/api/v1/agents", content=b"x", headers=headers)
    assert 400 <= answer.status_code < 500
