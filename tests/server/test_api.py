"""The admin API over real HTTP (SPEC §2): who may call what, the error shape, the
executions list (each filter, the search) and detail, pagination while rows are
added, and the task queue (states, retry, cancel, bulk).

Each test serves the app on a free port beside a worker, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute

from corral import codec
from corral.runtime.services import Services
from corral.server import api as api_package
from corral.server.api import create_api
from corral.server.api.streams import Streams
from corral.server.dashboard.web import utc_time
from tests.server.api import PROBE, execution_row, insert_executions, start_api
from tests.server.conftest import Serve


def routes(services: Services) -> list[tuple[str, str]]:
    """(method, path) of every route of the API app, path parameters filled in."""
    app = create_api(services, zygote_of=lambda: None, streams=Streams())  # type: ignore[arg-type,return-value]
    found = []
    for route in app.routes:
        assert isinstance(route, APIRoute), route  # no docs pages, nothing but the API
        path = re.sub(r"\{(\w+)(:\w+)?\}", "1", route.path)
        found.extend((method, path) for method in sorted(route.methods))
    return found


# -- who may call what -------------------------------------------------------------------


async def test_every_route_answers_401_without_a_valid_token(serve: Serve) -> None:
    api = await start_api(serve)
    token, revoked = api.services.tokens.create("admin", "revoked", now=1)
    api.services.tokens.revoke(token.id, now=2)
    every = routes(api.services)
    # Every resource SPEC §2 lists is there (and so enumerated below).
    paths = {path for _, path in every}
    for resource in [
        "/agents", "/instances", "/instances/1/state", "/instances/1/state/1", "/executions",
        "/executions/1", "/tasks", "/tasks/1/retry", "/tasks/1/cancel", "/tasks/bulk", "/logs",
        "/logs/stream", "/activities", "/activities/1", "/priorities", "/webhooks",
        "/webhooks/1/deliveries", "/deliveries/1/replay", "/tokens", "/openapi.json",
    ]:  # fmt: skip
        assert resource in paths, resource
    # An unknown path and method too: the API says nothing to a caller without a token.
    every += [("GET", "/no/such/route"), ("PATCH", "/agents")]
    for header in [
        None,
        "Bearer",
        "Bearer corral_000000000000_" + "A" * 43,
        "Basic abc",
        f"Bearer {revoked}",
    ]:
        headers = {} if header is None else {"authorization": header}
        for method, path in every:
            response = await api.served.client.request(
                method, f"/api/v1{path}", headers=headers, json={"malformed": True}
            )
            assert response.status_code == 401, (method, path, header, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["code"] == "unauthorized"
    response = await api.served.client.get("/api/v1/agents")
    assert response.json()["error"]["message"] == (
        "send a token: 'Authorization: Bearer <token>' (corral tokens create)"
    )
    response = await api.request("GET", "/agents", scope=None)
    assert response.status_code == 401
    response = await api.served.client.get(
        "/api/v1/agents", headers={"authorization": f"Bearer {revoked}"}
    )
    assert response.json()["error"]["message"] == (
        "the token is not valid: it is malformed, unknown or revoked"
    )


def test_an_api_with_a_route_that_names_no_scope_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from corral.config import RuntimeConfig

    services = Services(RuntimeConfig(database_url=f"sqlite:///{tmp_path}/x.db"))
    router = APIRouter()

    @router.get("/open")
    async def open_route() -> dict[str, str]:
        return {}

    class Open:
        pass

    resource = Open()
    resource.router = router  # type: ignore[attr-defined]
    monkeypatch.setattr(api_package, "RESOURCES", (*api_package.RESOURCES, resource))
    with pytest.raises(RuntimeError, match=r"route /open names no scope: add authorized"):
        create_api(services, zygote_of=lambda: None, streams=Streams())  # type: ignore[arg-type,return-value]


async def test_each_scope_allows_what_it_names_and_no_more(serve: Serve) -> None:
    api = await start_api(serve)
    bulk = {"action": "cancel", "filter": {"instance": "nobody"}, "dry_run": True}
    # read: GET only.
    assert (await api.get("/executions", "read")).status_code == 200
    refused = await api.request("POST", "/tasks/bulk", scope="read", json=bulk)
    assert refused.status_code == 403
    assert refused.json() == {
        "error": {
            "code": "forbidden",
            "message": "this needs a token of scope 'operate' or above; this one is 'read'",
        }
    }
    # operate: changes work, but not tokens.
    assert (await api.request("POST", "/tasks/bulk", scope="operate", json=bulk)).status_code == 200
    for method, path in [("GET", "/tokens"), ("POST", "/tokens"), ("DELETE", "/tokens/x")]:
        refused = await api.request(method, path, scope="operate", json={"scope": "read"})
        assert refused.status_code == 403, path
        assert "scope 'admin'" in refused.json()["error"]["message"]
    # admin: everything.
    assert (await api.get("/tokens", "admin")).status_code == 200
    assert (await api.get("/openapi.json", "read")).json()["components"]["securitySchemes"]
    # A token revoked now is refused at its next request.
    token_id = api.tokens["admin"].split("_")[1]
    assert (await api.request("DELETE", f"/tokens/{token_id}", scope="admin")).status_code == 200
    assert (await api.get("/tokens", "admin")).status_code == 401


async def test_bad_input_is_a_4xx_in_the_error_shape_saying_what_is_wrong(serve: Serve) -> None:
    api = await start_api(serve)
    cases: list[tuple[str, str, dict[str, Any] | None, Any, int, str, str]] = [
        ("GET", "/executions", {"limit": 0}, None, 422, "invalid_request",
         "query.limit: Input should be greater than or equal to 1"),
        ("GET", "/executions", {"limit": 101}, None, 422, "invalid_request",
         "query.limit: Input should be less than or equal to 100"),
        ("GET", "/executions", {"cursor": "not-a-cursor"}, None, 400, "bad_cursor",
         "cursor is not one this list gave: start again without one"),
        ("GET", "/tasks", {"cursor": "WyJ4Il0"}, None, 400, "bad_cursor",  # ["x"]: a state's
         "cursor is not one this list gave"),
        ("GET", "/executions", {"since": "yesterday"}, None, 400, "invalid_request",
         "since is not a time: give milliseconds since the epoch or ISO 8601"),
        ("GET", "/executions", {"instance": "a\x00b"}, None, 400, "invalid_request",
         "query parameter 'instance' contains a NUL character"),
        ("GET", "/executions", {"q": "x" * 201}, None, 422, "invalid_request",
         "query.q: String should have at most 200 characters"),
        ("GET", "/tasks", {"state": "pending"}, None, 422, "invalid_request",
         "query.state: Input should be 'ready', 'scheduled', 'running' or 'dead'"),
        ("GET", "/tasks/99999999999999999999", None, None, 422, "invalid_request",
         "path.task_id: Input should be less than or equal to 9223372036854775807"),
        ("GET", "/executions/nope", None, None, 404, "not_found",
         "there is no execution 'nope' (see corral executions)"),
        ("GET", "/instances/nope/state", None, None, 404, "not_found",
         "there is no instance 'nope'"),
        ("GET", "/activities", {"priority": "a//b"}, None, 400, "bad_request", "priority"),
        ("POST", "/tasks/bulk", None, {"action": "cancel", "filter": {}}, 400, "bad_request",
         "a bulk action needs a filter (instance, state, method or trigger): it will not act "
         "on every task by default"),
        ("POST", "/tasks/bulk", None, {"action": "retry", "filter": {"state": "ready"}}, 400,
         "bad_request", "only dead-lettered tasks are retried, not ready ones"),
        ("POST", "/tasks/bulk", None, {"action": "cancel", "filter": {"state": "running"}}, 400,
         "bad_request", "a running task cannot be cancelled: it finishes first"),
        ("POST", "/tasks/bulk", None, {"action": "delete", "filter": {"state": "dead"}}, 422,
         "invalid_request", "body.action: Input should be 'retry' or 'cancel'"),
        ("POST", "/tasks/1/retry", None, None, 404, "not_found",
         "there is no dead-lettered task 1 (see corral tasks --dead)"),
        ("POST", "/instances", None, {"agent": "ghost"}, 404, "not_found",
         "there is no agent 'ghost': deploy it first"),
        ("POST", "/instances", None, {"agent": "pro\x00be"}, 422, "invalid_request",
         "body.agent: Value error, contains a NUL character"),
        ("POST", "/tokens", None, {"scope": "root"}, 422, "invalid_request",
         "body.scope: Input should be 'read', 'operate' or 'admin'"),
        ("DELETE", "/tokens/nope", None, None, 404, "not_found",
         "there is no token 'nope' (see corral tokens ls)"),
        ("PUT", "/agents", None, None, 405, "method_not_allowed", "Method Not Allowed"),
    ]  # fmt: skip
    for method, path, params, body, status, code, message in cases:
        response = await api.request(method, path, params=params, json=body)
        assert response.status_code == status, (path, params, body, response.text)
        error = response.json()["error"]
        assert error["code"] == code, (path, error)
        assert message in error["message"], (path, error)
    # Malformed JSON is refused the same way, once the token is checked.
    response = await api.served.client.post(
        "/api/v1/tasks/bulk",
        content=b"{not json",
        headers={
            "authorization": f"Bearer {api.tokens['admin']}",
            "content-type": "application/json",
        },
    )
    assert response.status_code == 422
    assert "JSON decode error" in response.json()["error"]["message"]


# -- executions --------------------------------------------------------------------------


async def test_each_execution_filter_and_the_search(serve: Serve) -> None:
    api = await start_api(serve)
    api.served.runtime.clock.advance(5)
    other = await api.served.install("other", PROBE)
    api.served.runtime.clock.advance(5)
    await api.run("say", "hello world")
    api.served.runtime.clock.advance(10)
    middle = api.now
    await api.run("say", "fifty% off_now")
    await api.run("say", "fifty percent offXnow")
    api.served.runtime.clock.advance(10)
    await api.run("fail", "a broken Thing")
    await api.run("say", "elsewhere", instance=other)

    async def ids(**params: Any) -> list[str]:
        return [
            e["method"] + ":" + e["instance"] for e in await api.all_pages("/executions", **params)
        ]

    every = await api.all_pages("/executions")
    assert len(every) == 7  # two activates, five tasks
    starts = [(e["started_at"], e["id"]) for e in every]
    assert starts == sorted(starts, reverse=True)  # newest first
    i, o = api.instance, other
    assert await ids(instance=i) == [
        f"fail:{i}",
        f"say:{i}",
        f"say:{i}",
        f"say:{i}",
        f"activate:{i}",
    ]
    assert await ids(agent="other") == [f"say:{o}", f"activate:{o}"]
    assert await ids(method="activate") == [f"activate:{o}", f"activate:{i}"]
    assert await ids(trigger="lifecycle") == [f"activate:{o}", f"activate:{i}"]
    assert await ids(trigger="task", instance=o) == [f"say:{o}"]
    (failed,) = await api.all_pages("/executions", outcome="error")
    assert failed["error"] == "ValueError: a broken Thing"
    assert len(await api.all_pages("/executions", outcome="ok")) == 6
    assert await api.all_pages("/executions", outcome="timeout") == []
    since = await api.all_pages("/executions", since=middle, instance=i)
    assert [e["method"] for e in since] == ["fail", "say", "say"]
    until = await api.all_pages("/executions", until=middle, instance=i)
    assert [e["method"] for e in until] == ["say", "activate"]
    iso = await api.all_pages("/executions", since="2000-01-01T00:00:00Z", until="2001-01-01")
    assert iso == []
    # The search: log lines and errors, case-insensitive, % and _ meaning themselves.

    async def found(q: str) -> list[str]:
        return sorted(e["id"] for e in await api.all_pages("/executions", q=q))

    by_text = {e["id"]: e for e in every}
    assert [by_text[e]["method"] for e in await found("HELLO")] == ["say"]
    assert len(await found("fifty% off_now")) == 1
    assert len(await found("fifty%")) == 1  # not "fifty percent": % is no wildcard
    assert len(await found("off_now")) == 1  # nor _ : "offXnow" is not found
    assert len(await found("FIFTY")) == 2
    assert await found("broken thing") == [failed["id"]]  # the error's message
    assert await found("about to fail") == [failed["id"]]  # a log line
    assert await found("Traceback") == [failed["id"]]  # the error's traceback
    assert await found("nowhere to be found") == []


async def test_a_search_answers_after_its_share_of_the_history_and_goes_on_from_there(
    serve: Serve,
) -> None:
    """A search reads so many executions a request (``History.search_step``, for
    ``search_budget_s``): a page holds what that share held, even nothing, and its
    cursor goes on from where it stopped, so every match comes once, newest first."""
    api = await start_api(serve)
    base = api.now + 1_000
    rows, lines = [], []
    for n in range(20):  # one a millisecond: ex-019 is the newest
        failed = n == 10
        error = {"type": "ValueError", "message": "a NEEDLE in the error", "traceback": ""}
        rows.append(
            execution_row(
                f"ex-{n:03}",
                api.instance,
                base + n,
                outcome="error" if failed else "ok",
                error=json.dumps(error) if failed else None,
            )
        )
        if n % 3 == 0:
            lines.append(
                {"instance": api.instance, "execution_id": f"ex-{n:03}", "at": base + n,
                 "level": "info", "line": f"found the needle, {n}"}
            )  # fmt: skip
    insert_executions(api, rows, lines)
    history = api.services.history
    # A whole page at once when the share is large enough (the default).
    everything = await api.ok("/executions", limit=10, q="needle")
    found = ["ex-018", "ex-015", "ex-012", "ex-010", "ex-009", "ex-006", "ex-003", "ex-000"]
    assert [e["id"] for e in everything["data"]] == found
    assert everything["next_cursor"] is None
    # Four executions a request: each page holds that share's matches, the last none.
    history.search_step, history.search_budget_s = 4, 0.0
    pages: list[list[str]] = []
    cursor = None
    while True:
        page = await api.ok(
            "/executions", limit=10, q="needle", **({"cursor": cursor} if cursor else {})
        )
        pages.append([e["id"] for e in page["data"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [
        ["ex-018"],  # read ex-019 to ex-016
        ["ex-015", "ex-012"],
        ["ex-010", "ex-009"],
        ["ex-006"],
        ["ex-003", "ex-000"],
        [],  # the activate before them: the history read to its start
    ]
    # A page filled before its share is read ends at its last match, as any list's.
    full = await api.ok("/executions", limit=1, q="needle")
    assert [e["id"] for e in full["data"]] == ["ex-018"]
    after = await api.ok("/executions", limit=1, q="needle", cursor=full["next_cursor"])
    assert [e["id"] for e in after["data"]] == ["ex-015"]
    # The dashboard says how far back a page that stopped short has searched.
    response = await api.served.client.get(
        "/executions",
        params={"q": "needle"},
        headers={"cookie": f"corral_session={api.tokens['read']}"},
    )
    assert response.status_code == 200, response.text[-500:]
    said = " ".join(response.text.split())
    assert f"Searched back to {utc_time(base + 16)}: 1 found there." in said  # ex-019 to 016
    assert "search older executions →" in said
    assert "No execution matches these filters." not in said


async def test_an_execution_in_full_with_its_logs_error_and_dead_task(serve: Serve) -> None:
    api = await start_api(serve)
    await api.run("fail", "no luck")
    (listed,) = await api.all_pages("/executions", method="fail")
    detail = await api.ok(f"/executions/{listed['id']}")
    assert {k: detail[k] for k in listed} == listed
    assert detail["outcome"] == "error"
    assert detail["error_detail"]["type"] == "ValueError"
    assert detail["error_detail"]["message"] == "no luck"
    assert "raise ValueError(text)" in detail["error_detail"]["traceback"]
    assert [(line["level"], line["line"]) for line in detail["logs"]] == [
        ("info", "about to fail"),
        ("error", "ValueError: no luck"),
    ]
    assert all(line["execution"] == listed["id"] for line in detail["logs"])
    # Out of attempts, its task is kept as a dead letter: the record shows it.
    assert detail["task"]["state"] == "dead"
    assert detail["task"]["id"] == listed["task_id"]
    assert detail["task"]["last_error"] == "ValueError: no luck"
    assert detail["delivery"] is None
    await api.run("say", "fine")
    (said,) = await api.all_pages("/executions", method="say")
    detail = await api.ok(f"/executions/{said['id']}")
    assert detail["result"] == {"said": "fine"}
    assert detail["task"] is None  # done: gone from the queue
    assert detail["error"] is None
    assert detail["error_detail"] is None


# -- pagination --------------------------------------------------------------------------


async def test_pages_lose_and_repeat_nothing_while_newer_rows_are_added(serve: Serve) -> None:
    api = await start_api(serve)
    base = api.now
    # Many rows in a few milliseconds: ties of time are broken by id.
    rows = [execution_row(f"ex-{n:03}", api.instance, base + n // 4) for n in range(23)]
    lines = [
        {"instance": api.instance, "execution_id": None, "at": base + n // 3, "level": "info",
         "line": f"line {n}"}
        for n in range(23)
    ]  # fmt: skip
    insert_executions(api, rows, lines)
    for n in range(23):
        api.services.queue.enqueue(api.instance, "say", codec.encode([n]), now=base + 3_600_000)
    added: dict[str, list[Any]] = {"/executions": [], "/logs": [], "/tasks": []}

    async def add_newer() -> None:
        n = len(added["/executions"]) + 1
        insert_executions(
            api,
            [execution_row(f"new-{n:03}", api.instance, base + 1000 + n)],
            [{"instance": api.instance, "execution_id": None, "at": base + 1000 + n,
              "level": "info", "line": f"new {n}"}],
        )  # fmt: skip
        queue = api.services.queue
        queue.enqueue(api.instance, "say", codec.encode([f"new {n}"]), now=base + 3_600_000)
        added["/executions"].append(f"new-{n:03}")
        added["/logs"].append(f"new {n}")
        added["/tasks"].append(f"new {n}")

    for path, params, key, listed in [
        ("/executions", {"instance": api.instance, "method": "say", "trigger": "task"},
         lambda e: e["id"], {row["id"] for row in rows}),
        ("/logs", {"instance": api.instance, "since": base}, lambda line: line["line"],
         {line["line"] for line in lines}),
        ("/tasks", {"instance": api.instance, "state": "scheduled"}, lambda t: t["args"][0],
         set(range(23))),
    ]:  # fmt: skip
        expected = listed | set(added[path])  # what is there as the first page is read
        seen: list[Any] = []
        cursor = None
        pages = 0
        while True:
            page = await api.ok(path, limit=5, **params, **({"cursor": cursor} if cursor else {}))
            assert len(page["data"]) <= 5
            seen.extend(key(item) for item in page["data"])
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
            await add_newer()  # between pages: newer than every row listed so far
        assert len(seen) == len(set(seen)), f"{path}: a row came twice: {seen}"
        assert set(seen) == expected, f"{path}: lost {expected - set(seen)}, or found more"
        assert pages == -(-len(expected) // 5)
    # The first page now starts with what was added meanwhile.
    newest = await api.ok("/executions", limit=1, instance=api.instance, method="say")
    assert newest["data"][0]["id"] == added["/executions"][-1]


# -- tasks -------------------------------------------------------------------------------


async def test_tasks_by_state_retry_cancel_and_bulk(serve: Serve) -> None:
    api = await start_api(serve)
    queue = api.services.queue
    now = api.now
    queue.enqueue(api.instance, "say", codec.encode(["ready"]), now=now)
    queue.enqueue(api.instance, "say", codec.encode(["later"]), now=now, run_at=now + 3_600_000)
    queue.schedule_recurring(
        api.instance, "beat", "say", codec.encode(["beat"]), interval_ms=60_000,
        first_run_at=now + 60_000, now=now,
    )  # fmt: skip
    queue.hand_off(api.instance, "say", codec.encode(["running"]), now=now, lease_ms=3_600_000)
    queue.enqueue(api.instance, "fail", codec.encode(["dead"]), now=now)
    (dead,) = [t for t in api.tasks() if t.method == "fail"]
    queue.dead_letter(dead.id, "ValueError: dead")

    async def listed(**params: Any) -> list[tuple[str, Any]]:
        return [(t["state"], t["args"][0]) for t in await api.all_pages("/tasks", **params)]

    assert await listed(state="ready") == [("ready", "ready")]
    assert sorted(await listed(state="scheduled")) == [
        ("scheduled", "beat"),
        ("scheduled", "later"),
    ]
    assert await listed(state="running") == [("running", "running")]
    assert await listed(state="dead") == [("dead", "dead")]
    assert len(await listed(instance=api.instance)) == 5
    assert await listed(instance="nobody") == []
    assert await listed(method="fail") == [("dead", "dead")]
    (beat,) = [t for t in await api.all_pages("/tasks", state="scheduled") if t["key"] == "beat"]
    assert beat["interval_ms"] == 60_000
    assert (await api.ok(f"/tasks/{dead.id}"))["last_error"] == "ValueError: dead"
    # One at a time.
    response = await api.request("POST", f"/tasks/{dead.id}/retry", scope="operate")
    assert response.json() == {"id": dead.id, "done": "retried"}
    assert (await api.ok(f"/tasks/{dead.id}"))["state"] == "ready"
    response = await api.request("POST", f"/tasks/{dead.id}/retry", scope="operate")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == (
        f"there is no dead-lettered task {dead.id} (see corral tasks --dead)"
    )
    (running,) = [t for t in api.tasks() if t.state == "running"]
    response = await api.request("POST", f"/tasks/{running.id}/cancel", scope="operate")
    assert response.status_code == 404
    assert "it may have run, or be running now" in response.json()["error"]["message"]
    response = await api.request("POST", f"/tasks/{dead.id}/cancel", scope="operate")
    assert response.json() == {"id": dead.id, "done": "cancelled"}
    assert (await api.get(f"/tasks/{dead.id}")).status_code == 404
    # By filter: counted first, then done; what runs is never cancelled.
    for n in range(3):
        queue.enqueue(api.instance, "fail", codec.encode([n]), now=now)
    for task in [t for t in api.tasks() if t.method == "fail"]:
        queue.dead_letter(task.id, "ValueError")

    async def bulk(**body: Any) -> Any:
        response = await api.request("POST", "/tasks/bulk", scope="operate", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    dead_ones = {"state": "dead", "instance": api.instance}
    assert await bulk(action="retry", filter=dead_ones, dry_run=True) == {
        "action": "retry", "dry_run": True, "count": 3,
    }  # fmt: skip
    assert len(await listed(state="dead")) == 3  # a dry run changes nothing
    assert (await bulk(action="retry", filter=dead_ones))["count"] == 3
    assert await listed(state="dead") == []
    assert len(await listed(state="ready")) == 4
    everything = {"instance": api.instance}
    assert (await bulk(action="cancel", filter=everything, dry_run=True))["count"] == 6
    assert (await bulk(action="cancel", filter=everything))["count"] == 6
    assert await listed(instance=api.instance) == [("running", "running")]
