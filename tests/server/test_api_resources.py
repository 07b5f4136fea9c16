"""The admin API's other resources over real HTTP: an instance's state, logs and their
live stream, activities and priorities, webhooks and deliveries with replay, tokens,
agents and deploys. SQLite and PostgreSQL, a worker beside the server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx

from corral.config import RuntimeConfig, ServerSettings
from corral.plot.service import NO_CAUSE
from corral.server.api.streams import MAX_STREAMS
from corral.server.app import create_app
from corral.server.serving import HttpServer, Listener
from corral.webhooks import GitHubSignature
from tests.server.agents import GITHUB_SECRET, HOOKS, spec_webhook
from tests.server.api import PROBE, Api, start_api
from tests.server.conftest import TIMEOUT_S, Serve, path_of

# -- state -------------------------------------------------------------------------------


async def test_an_instance_state_with_typed_values_ttl_and_pages(serve: Serve) -> None:
    api = await start_api(serve)
    path = f"/instances/{api.instance}/state"
    entries = await api.all_pages(path, limit=2)
    assert [e["key"] for e in entries] == [
        "big", "fleeting", "kind:bytes", "kind:set", "kind:tuple", "kind:when", "plain",
    ]  # fmt: skip
    by_key = {e["key"]: e for e in entries}
    assert by_key["kind:tuple"]["value"] == {"$tuple": [1, "two"]}
    assert by_key["kind:when"]["value"] == {"$datetime": "2026-01-02T03:04:05+00:00"}
    assert by_key["kind:bytes"]["value"] == {"$bytes": "AP8="}
    assert by_key["kind:set"]["value"] == {"$set": [1, 2, 3]}
    assert by_key["plain"]["value"] == {"a": [1, 2]}
    assert by_key["plain"]["expires_at"] is None
    assert by_key["plain"]["ttl_ms"] is None
    fleeting = by_key["fleeting"]
    assert fleeting["value"] == "soon gone"
    assert 0 < fleeting["ttl_ms"] <= 3_600_000
    assert fleeting["expires_at"] > api.now
    # A value over 64 KiB is left out of a page, and read by its key.
    assert by_key["big"]["omitted"] is True
    assert by_key["big"]["value"] is None
    assert by_key["big"]["size"] > 70_000
    big = await api.ok(f"{path}/big")
    assert big["value"] == "x" * 70_000
    assert big["omitted"] is False
    # A prefix, and keys with slashes and spaces.
    kinds = await api.all_pages(path, prefix="kind:")
    assert [e["key"] for e in kinds] == ["kind:bytes", "kind:set", "kind:tuple", "kind:when"]
    assert (await api.ok(f"{path}/kind:when"))["value"] == by_key["kind:when"]["value"]
    missing = await api.get(f"{path}/no such/key")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == (
        f"no key 'no such/key' in {api.instance} (never set, deleted or expired)"
    )
    refused = await api.get(path, prefix="a\x00")
    assert refused.status_code == 400
    unknown = await api.get("/instances/nobody-1234/state")
    assert unknown.status_code == 404
    assert "there is no instance 'nobody-1234'" in unknown.json()["error"]["message"]


# -- logs --------------------------------------------------------------------------------


async def test_log_lines_by_instance_level_execution_and_time(serve: Serve) -> None:
    api = await start_api(serve)
    other = await api.served.install("other", PROBE)
    await api.run("say", "first words")
    api.served.runtime.clock.advance(50)
    since = api.now
    await api.run("fail", "gone wrong")
    await api.run("say", "other words", instance=other)

    async def lines(**params: Any) -> list[str]:
        return [line["line"] for line in await api.all_pages("/logs", **params)]

    # The platform's own line (the dead letter) is written after the execution's lines.
    (task,) = api.services.queue.list(api.instance, dead=True)
    dead = f"task {task.id} (fail) dead-lettered after 1 attempt(s): ValueError: gone wrong"
    assert await lines(instance=api.instance) == [
        dead, "ValueError: gone wrong", "about to fail", "first words",
    ]  # fmt: skip
    assert await lines(instance=other) == ["other words"]
    assert await lines(level="error") == ["ValueError: gone wrong"]
    assert await lines(level="warning") == [dead]
    assert await lines(level="info", instance=api.instance) == ["about to fail", "first words"]
    assert await lines(since=since, instance=api.instance) == [
        dead, "ValueError: gone wrong", "about to fail",
    ]  # fmt: skip
    (failed,) = await api.all_pages("/executions", outcome="error")
    assert await lines(execution=failed["id"]) == ["ValueError: gone wrong", "about to fail"]
    (line,) = await api.all_pages("/logs", level="warning")
    assert line["execution"] is None


async def events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The events of a Server-Sent Events response, each {"id", "event", "data"}."""
    current: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in current:
                yield current
            current = {}
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(": ")
            current[field] = json.loads(value) if field == "data" else value


async def next_event(stream: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    return await asyncio.wait_for(anext(stream), TIMEOUT_S)


async def test_the_live_stream_sends_new_lines_of_its_instance(serve: Serve) -> None:
    api = await start_api(serve)
    other = await api.served.install("other", PROBE)
    headers = {"authorization": f"Bearer {api.tokens['read']}"}
    async with api.served.client.stream(
        "GET", "/api/v1/logs/stream", params={"instance": api.instance}, headers=headers
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = events(response)
        await api.run("say", "not for this stream", instance=other)
        await api.run("say", "live line")
        event = await next_event(stream)
        assert event["data"]["line"] == "live line"
        assert event["data"]["instance"] == api.instance
        assert int(event["id"]) == event["data"]["id"]
        last_id = event["id"]
    # A client that comes back with Last-Event-ID gets what it missed, and only that.
    await api.run("say", "while away")
    async with api.served.client.stream(
        "GET",
        "/api/v1/logs/stream",
        params={"instance": api.instance},
        headers={**headers, "last-event-id": last_id},
    ) as response:
        event = await next_event(events(response))
        assert event["data"]["line"] == "while away"
    unknown = await api.get("/logs/stream", instance="nobody-1234")
    assert unknown.status_code == 404


async def opened_now(api: Api) -> httpx.Response:
    """Open a stream and close it at once: its status (and, refused, its body)."""
    headers = {"authorization": f"Bearer {api.tokens['read']}"}
    async with api.served.client.stream("GET", "/api/v1/logs/stream", headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
        return response


async def test_streams_are_bounded_and_a_client_that_leaves_gives_its_place_back(
    serve: Serve,
) -> None:
    api = await start_api(serve)
    headers = {"authorization": f"Bearer {api.tokens['read']}"}
    async with contextlib.AsyncExitStack() as stack:
        opened = []
        for _ in range(MAX_STREAMS):
            response = await stack.enter_async_context(
                api.served.client.stream("GET", "/api/v1/logs/stream", headers=headers)
            )
            assert response.status_code == 200
            opened.append(response)
        refused = await opened_now(api)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        assert refused.json()["error"] == {
            "code": "too_many_streams",
            "message": f"this server has {MAX_STREAMS} streams open, its most; try again "
            "later or another server",
        }
        await opened[0].aclose()  # the client goes away
        # The server notices at its next poll of that stream: ask until it has.
        deadline = asyncio.get_running_loop().time() + TIMEOUT_S
        while (await opened_now(api)).status_code == 503:
            assert asyncio.get_running_loop().time() < deadline, "the place was never given back"
            await asyncio.sleep(0.1)


async def test_a_stop_ends_open_streams_at_once(runtime_factory: Any) -> None:
    listener = Listener("127.0.0.1", 0)
    runtime = await runtime_factory(
        replace(RuntimeConfig(), server=ServerSettings(port=listener.port))
    )
    text = runtime.services.tokens.create("read", "", now=1)[1]
    app = create_app(runtime.services, executor=runtime.executor)
    ready = asyncio.Event()
    # Requests in flight get ten minutes to finish: a stream that ran on would hold the
    # stop that long, where the test gives up after a minute.
    http = HttpServer(
        app, listener, on_ready=ready.set, own_signals=False, grace_s=600,
        on_stop=app.state.streams.stop,
    )  # fmt: skip
    serving = asyncio.create_task(http.run_until_stopped())
    await asyncio.wait_for(ready.wait(), TIMEOUT_S)
    try:
        async with (
            httpx.AsyncClient(base_url=listener.url, timeout=TIMEOUT_S) as client,
            client.stream(
                "GET", "/api/v1/logs/stream", headers={"authorization": f"Bearer {text}"}
            ) as response,
        ):
            assert response.status_code == 200
            stream = events(response)
            http.stop()
            end = await next_event(stream)
            assert end == {"event": "end", "data": {"reason": "the server is stopping"}}
            await asyncio.wait_for(serving, TIMEOUT_S)
    finally:
        http.stop_now()
        await asyncio.wait({serving}, timeout=TIMEOUT_S)
        listener.close()


# -- activities and priorities ----------------------------------------------------------


async def test_priorities_and_activities_by_priority(serve: Serve) -> None:
    api = await start_api(serve)
    services = api.services
    other = await api.served.install("other", PROBE)
    services.registry.install("probe", priority="team/backend", config={}, now=api.now)
    plot = services.plot.bound(api.instance, "probe", "default", NO_CAUSE, api.served.runtime.clock)
    made = [plot.create_activity({"type": "action", "title": f"job {n}"}) for n in range(3)]
    team = services.plot.bound(other, "other", "team", NO_CAUSE, api.served.runtime.clock)
    services.plot.add_priority("team", now=api.now)
    backend = team.create_activity(
        {"type": "note", "title": "backend", "priority": "team/backend", "meta": {"n": (1, 2)}}
    )
    priorities = await api.all_pages("/priorities", limit=1)
    assert [p["name"] for p in priorities] == ["default", "team", "team/backend"]
    assert priorities[0]["activities"] == 3
    assert priorities[2]["activities"] == 1
    everything = await api.all_pages("/activities", limit=2)
    assert {a["id"] for a in everything} == {a.id for a in [*made, backend]}
    stamps = [(a["updated_ms"], a["id"]) for a in everything]
    assert stamps == sorted(stamps, reverse=True)
    team_only = await api.all_pages("/activities", priority="team")
    assert [a["id"] for a in team_only] == [backend.id]  # team/backend is under team
    detail = await api.ok(f"/activities/{backend.id}")
    assert detail["title"] == "backend"
    assert detail["meta"] == {"n": {"$tuple": [1, 2]}}
    assert detail["priority"] == "team/backend"
    unknown = await api.get("/activities", priority="nowhere")
    assert unknown.status_code == 404
    assert "there is no priority 'nowhere'" in unknown.json()["error"]["message"]
    assert (await api.get("/activities/nope")).status_code == 404


# -- webhooks and deliveries -------------------------------------------------------------


async def test_webhooks_their_deliveries_and_a_replay(serve: Serve) -> None:
    api = await start_api(serve)
    hooks = await api.served.install("hooks", HOOKS)
    made = spec_webhook(api.services.webhooks, hooks, "async", now=api.now)
    spec_webhook(api.services.webhooks, hooks, "github", now=api.now + 1)
    path = path_of(made.url(api.services.webhooks.public_url))
    for n in range(3):
        response = await api.served.client.post(path, json={"n": n})
        assert response.status_code == 202
    await api.served.runtime.idle()
    listed = await api.all_pages("/webhooks", instance=hooks, limit=1)
    assert [w["verify"] for w in listed] == ["github", None]  # newest first; no secret
    assert listed[1]["url"].endswith(path)
    assert GitHubSignature(GITHUB_SECRET).spec()["key"] not in json.dumps(listed)
    deliveries = await api.all_pages(f"/webhooks/{made.id}/deliveries", limit=2)
    bodies = [json.loads(base64.b64decode(d["body_base64"])) for d in deliveries]
    assert sorted(body["n"] for body in bodies) == [0, 1, 2]
    received = [(d["received_at"], d["id"]) for d in deliveries]
    assert received == sorted(received, reverse=True)  # newest first
    assert all(d["status"] == "ok" and d["code"] == 202 for d in deliveries)
    first = deliveries[-1]
    replayed = await api.request("POST", f"/deliveries/{first['id']}/replay", scope="operate")
    assert replayed.status_code == 202, replayed.text
    assert replayed.json()["replay_of"] == first["id"]
    await api.served.runtime.idle()
    every = await api.all_pages(f"/webhooks/{made.id}/deliveries")
    assert len(every) == 4
    (newest,) = [d for d in every if d["id"] == replayed.json()["id"]]
    assert newest["replay_of"] == first["id"]
    assert newest["code"] is None  # nobody sent it
    assert newest["status"] == "ok"
    detail = await api.ok(f"/executions/{newest['execution']}")
    assert detail["delivery"]["id"] == newest["id"]
    assert detail["delivery"]["replay_of"] == first["id"]
    assert detail["trigger"] == "webhook"
    missing = await api.request("POST", "/deliveries/dl_nope/replay", scope="operate")
    assert missing.status_code == 404
    assert "there is no delivery 'dl_nope'" in missing.json()["error"]["message"]
    assert (await api.get("/webhooks/wh_nope/deliveries")).status_code == 404


# -- tokens and agents -------------------------------------------------------------------


async def test_tokens_made_listed_and_revoked_through_the_api(serve: Serve) -> None:
    api = await start_api(serve)
    made = await api.request("POST", "/tokens", json={"scope": "read", "name": "dashboard"})
    assert made.status_code == 201
    token = made.json()
    assert token["token"].startswith(f"corral_{token['id']}_")
    listed = await api.all_pages("/tokens", limit=2, scope="admin")
    assert token["id"] in {t["id"] for t in listed}
    assert token["token"] not in json.dumps(listed)
    assert all("token" not in t for t in listed)
    reader = {"authorization": f"Bearer {token['token']}"}
    assert (await api.served.client.get("/api/v1/agents", headers=reader)).status_code == 200
    revoked = await api.request("POST", f"/tokens/{token['id']}/revoke")
    assert revoked.json()["revoked_at"] is not None
    assert (await api.served.client.get("/api/v1/agents", headers=reader)).status_code == 401


async def test_agents_deployed_through_the_api(serve: Serve) -> None:
    api = await start_api(serve)
    code = PROBE.replace("class Probe", "class Shown")
    deployed = await api.request(
        "POST", "/agents", scope="operate", json={"name": "shown", "code": code}
    )
    assert deployed.status_code == 201, deployed.text
    body = deployed.json()
    assert (body["agent"], body["version"], body["created"]) == ("shown", 1, True)
    assert body["description"]["class"] == "Shown"
    again = await api.request(
        "POST", "/agents", scope="operate", json={"name": "shown", "code": code}
    )
    assert (again.json()["version"], again.json()["created"]) == (1, False)
    broken = await api.request(
        "POST",
        "/agents",
        scope="operate",
        json={"name": "broken", "code": "from corral import Agent\n\nclass B(Agent:\n    pass\n"},
    )
    assert broken.status_code == 400
    error = broken.json()["error"]
    assert error["code"] == "invalid_code"
    assert error["message"].startswith("cannot deploy broken (line 3): ")
    bad_name = await api.request(
        "POST", "/agents", scope="operate", json={"name": "a b", "code": code}
    )
    assert bad_name.status_code == 422
    assert "body.name: String should match pattern" in bad_name.json()["error"]["message"]
    agents = await api.all_pages("/agents", limit=1)
    assert [(a["name"], a["version"], a["instances"]) for a in agents] == [
        ("shown", 1, 0), ("probe", 1, 1),
    ]  # fmt: skip
    assert {"say", "fail"} <= set(agents[0]["description"]["methods"])
    assert (await api.all_pages("/agents")) == agents
    assert "broken" not in {a["name"] for a in agents}


# -- instances ---------------------------------------------------------------------------


async def test_instances_filtered_installed_and_uninstalled(serve: Serve) -> None:
    api = await start_api(serve)
    made = await api.request(
        "POST",
        "/instances",
        scope="operate",
        json={"agent": "probe", "priority": "team/ops", "config": {"region": "eu"}},
    )
    assert made.status_code == 201, made.text
    second = made.json()
    assert (second["priority"], second["config"], second["status"]) == (
        "team/ops", {"region": "eu"}, "active",
    )  # fmt: skip
    await api.served.runtime.idle()  # its activate
    ids = [i["id"] for i in await api.all_pages("/instances", limit=1)]
    assert set(ids) == {api.instance, second["id"]}
    assert [i["id"] for i in await api.all_pages("/instances", priority="team/ops")] == [
        second["id"]
    ]
    assert [i["id"] for i in await api.all_pages("/instances", agent="probe")] == ids
    assert await api.all_pages("/instances", agent="nobody") == []
    gone = await api.request("DELETE", f"/instances/{second['id']}", scope="operate")
    assert gone.status_code == 202
    assert gone.json()["status"] == "uninstalling"
    await api.served.runtime.idle()  # its deactivate, then its data goes
    assert [i["id"] for i in await api.all_pages("/instances")] == [api.instance]
    removed = await api.all_pages("/instances", status="removed")
    assert [i["id"] for i in removed] == [second["id"]]
    assert await api.all_pages(f"/instances/{second['id']}/state") == []
