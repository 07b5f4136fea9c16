"""``corral webhooks``: the live webhooks, a webhook's delivery log, and replays."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from corral.cli.context import now_ms
from corral.config import RuntimeConfig
from corral.runtime.services import Services
from corral.runtime.webhooks import Webhook
from tests.cli.invoke import corral

TICKER = """
from corral import Plugin

class Ticker(Plugin):
    async def decide(self, ctx):
        await ctx.state.set("tick", ctx.tick)
"""


@pytest.fixture
def ticker(db: str, tmp_path: Path) -> str:
    """The id of an installed plugin, whose tick endpoint is a webhook."""
    agent = tmp_path / "ticker.py"
    agent.write_text(TICKER)
    assert corral("--db", db, "deploy", str(agent))[0] == 0
    code, out, err = corral("--db", db, "install", "ticker", "--json")
    assert code == 0, err
    return str(json.loads(out)["id"])


def endpoint(db: str, instance: str) -> tuple[Services, Webhook]:
    services = Services(replace(RuntimeConfig(), database_url=db))
    (webhook,) = services.webhooks.webhooks(instance)
    return services, webhook


def post(services: Services, webhook: Webhook, body: bytes) -> str:
    """What intake stores for a POST to the webhook; the delivery's id."""
    found = services.webhooks.lookup(webhook.token)
    assert found is not None
    delivery = services.webhooks.accept(
        webhook,
        found[1],
        method="POST",
        headers=[("content-type", "application/json")],
        query="",
        body=body,
        dedupe_key=None,
        now=now_ms(),
    )
    return delivery.id


def test_webhooks_lists_a_plugins_tick_endpoint(db: str, ticker: str) -> None:
    _, webhook = endpoint(db, ticker)
    code, out, _ = corral("--db", db, "webhooks", "--json")
    assert code == 0
    (listed,) = json.loads(out)
    assert listed["id"] == webhook.id
    assert listed["url"] == f"http://127.0.0.1:8000/hooks/{webhook.token}"
    assert (listed["instance"], listed["method"], listed["mode"], listed["kind"]) == (
        ticker,
        "on_tick",
        "async",
        "tick",
    )
    code, out, _ = corral("--db", db, "webhooks", ticker)
    assert code == 0
    assert webhook.id in out
    assert "on_tick" in out
    assert "async (tick)" in out


def test_deliveries_show_their_status_and_replay_queues_one_again(db: str, ticker: str) -> None:
    services, webhook = endpoint(db, ticker)
    first = post(services, webhook, b'{"price": 1}')
    code, out, _ = corral("--db", db, "webhooks", "deliveries", webhook.id, "--json")
    assert code == 0
    (listed,) = json.loads(out)
    assert (listed["id"], listed["status"], listed["code"], listed["execution"]) == (
        first,
        "queued",
        202,
        None,
    )

    assert corral("--db", db, "worker", "--until-idle")[0] == 0
    url = webhook.url(services.webhooks.public_url)
    code, out, _ = corral("--db", db, "webhooks", "deliveries", url, "--json")
    (listed,) = json.loads(out)
    assert listed["status"] == "ok"
    assert listed["execution"] is not None
    assert listed["latency_ms"] is not None

    code, out, _ = corral("--db", db, "webhooks", "replay", first)
    assert code == 0
    replayed = out.split()[-2].rstrip(",")
    assert out.strip() == f"delivery {first} replayed as {replayed}, queued"
    code, out, _ = corral("--db", db, "webhooks", "deliveries", webhook.token)
    assert code == 0
    assert f"{replayed} (replay of {first})" in out
    assert "queued" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["deliveries", "wh_nope"], "there is no webhook 'wh_nope': give its id (wh_...)"),
        (["replay", "dl_nope"], "there is no delivery 'dl_nope'"),
        (["nobody"], "there is no instance 'nobody'"),
        (["deliveries"], "usage: corral webhooks deliveries WEBHOOK (its id, token or URL)"),
        (["replay", "a", "b"], "usage: corral webhooks replay DELIVERY"),
        (["a", "b"], "give at most one INSTANCE"),
        (["deliveries", "x", "--limit", "0"], "Invalid value for '--limit'"),
    ],
)
def test_webhooks_errors_are_one_line(db: str, args: list[str], message: str) -> None:
    code, out, err = corral("--db", db, "webhooks", *args)
    assert code != 0
    assert out == ""
    assert message in err
    assert len(err.strip().splitlines()) == 1
