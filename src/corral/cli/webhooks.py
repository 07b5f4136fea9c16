"""Webhooks and their delivery log: ``webhooks`` (list, deliveries, replay)."""

from __future__ import annotations

import click

from corral.cli.context import Context, now_ms
from corral.cli.output import iso, json_option, print_json, print_table, table, when
from corral.runtime.webhooks import MAX_LISTED

_USAGE = {
    "deliveries": "usage: corral webhooks deliveries WEBHOOK (its id, token or URL)",
    "replay": "usage: corral webhooks replay DELIVERY (a delivery id, dl_...)",
}


@click.command(
    context_settings={"ignore_unknown_options": False},
    help="Live webhooks (a plugin's tick endpoint too), oldest first; the deliveries of one, "
    "newest first, with their status; or a delivery replayed. Times are UTC.\n\n"
    "corral webhooks [INSTANCE] · corral webhooks deliveries WEBHOOK · "
    "corral webhooks replay DELIVERY",
)
@click.argument("words", nargs=-1, metavar="[INSTANCE | deliveries WEBHOOK | replay DELIVERY]")
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(1, MAX_LISTED),
    help="Deliveries listed at most.",
)
@json_option
@click.pass_obj
def webhooks(obj: Context, words: tuple[str, ...], limit: int, as_json: bool) -> None:
    # One command rather than a group: a group's optional INSTANCE would swallow
    # the words "deliveries" and "replay" (as in corral tasks).
    if words and words[0] in _USAGE:
        if len(words) != 2:
            raise click.UsageError(_USAGE[words[0]])
        if words[0] == "deliveries":
            _deliveries(obj, words[1], limit, as_json)
        else:
            replayed = obj.services.webhooks.replay(words[1], now=now_ms())
            click.echo(f"delivery {words[1]} replayed as {replayed.id}, queued")
        return
    instance = obj.listed_instance(words)
    service = obj.services.webhooks
    found = service.webhooks(instance)
    if as_json:
        print_json(
            [
                {
                    "id": w.id,
                    "instance": w.instance,
                    "method": w.method,
                    "mode": w.mode,
                    "kind": w.kind,
                    "url": w.url(service.public_url),
                    # The scheme only: the verifier's secret is never printed.
                    "verify": None if w.verify is None else w.verify.get("scheme"),
                    "max_body_bytes": w.max_body_bytes,
                    "created_at": iso(w.created_at),
                }
                for w in found
            ]
        )
        return
    shown = table("id", "instance", "method", "mode", "url")
    for w in found:
        mode = w.mode if w.kind == "webhook" else f"{w.mode} ({w.kind})"
        shown.add_row(w.id, w.instance, w.method, mode, w.url(service.public_url))
    print_table(shown)


def _deliveries(obj: Context, webhook: str, limit: int, as_json: bool) -> None:
    views = obj.services.webhooks.deliveries(webhook, limit=limit)
    if as_json:
        print_json(
            [
                {
                    "id": v.delivery.id,
                    "webhook": v.delivery.webhook_id,
                    "instance": v.delivery.instance,
                    "received_at": iso(v.delivery.received_at),
                    "method": v.delivery.method,
                    "mode": v.delivery.mode,
                    "sender_delivery_id": v.delivery.dedupe_key,
                    "status": v.status,
                    "code": v.code,
                    "latency_ms": v.latency_ms,
                    "execution": v.execution,
                    "duplicates": v.delivery.duplicates,
                    "replay_of": v.delivery.replay_of,
                }
                for v in views
            ]
        )
        return
    shown = table("id", "received", "status", "code", "latency ms", "execution", "duplicates")
    for v in views:
        shown.add_row(
            v.delivery.id
            + (f" (replay of {v.delivery.replay_of})" if v.delivery.replay_of else ""),
            when(v.delivery.received_at),
            v.status,
            "-" if v.code is None else str(v.code),
            "-" if v.latency_ms is None else f"{v.latency_ms:.0f}",
            v.execution or "-",
            str(v.delivery.duplicates),
        )
    print_table(shown)


COMMANDS = [webhooks]
