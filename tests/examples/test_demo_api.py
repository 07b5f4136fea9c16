"""The fake paginated API that `make run` serves for the batched-sync example."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from examples.demo import paged_api
from examples.demo.paged_api import PagedApi, PortTaken


@pytest.fixture
def api() -> Iterator[PagedApi]:
    served = PagedApi(port=0)
    yield served
    served.close()


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_pages_chain_to_the_last_and_hold_every_item_once(api: PagedApi) -> None:
    seen: list[int] = []
    number: int | None = 1
    while number is not None:
        status, page = get(f"{api.url}/items?page={number}")
        assert status == 200
        assert page["page"] == number
        assert page["pages"] == paged_api.PAGES
        assert len(page["items"]) == paged_api.PER_PAGE
        seen += [item["id"] for item in page["items"]]
        number = page["next_page"]
    assert seen == list(range(paged_api.PAGES * paged_api.PER_PAGE))
    assert get(f"{api.url}/items?page=3")[1] == paged_api.page(3)  # the same every time


def test_bad_requests_say_what_the_api_serves(api: PagedApi) -> None:
    assert get(f"{api.url}/items?page=21") == (
        400,
        {"error": "page must be a number from 1 to 20, got '21'"},
    )
    assert get(f"{api.url}/users") == (
        404,
        {"error": "not found: the API serves GET /items?page=N"},
    )


def test_a_taken_port_says_how_to_move_the_api(
    api: PagedApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(paged_api.PORT_ENV, str(api.port))
    with pytest.raises(PortTaken) as taken:
        PagedApi()
    assert str(taken.value) == (
        f"cannot serve the demo API on 127.0.0.1:{api.port}: the port is taken (another "
        "`make run`?). Stop that, or set CORRAL_DEMO_API_PORT to a free port and change "
        "API in examples/batched_sync.py to match"
    )
    monkeypatch.setenv(paged_api.PORT_ENV, "http")
    with pytest.raises(ValueError, match="CORRAL_DEMO_API_PORT must be a port number"):
        PagedApi()
