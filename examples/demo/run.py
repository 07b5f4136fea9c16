"""``make run``: the example agents at work, beside the fake API batched_sync.py pages.

Serves the demo API (``paged_api.py``) on threads of this process, then runs
``corral dev`` on ``examples/`` in it: each example agent is deployed and
installed once (priority "examples"), a worker prints each execution, the HTTP
server takes webhooks and serves the dashboard (it prints its URL and a one-time
sign-in link), and saving an example deploys its new
version. Ctrl-C stops all of it. The database is the usual one:
``CORRAL_DATABASE_URL``, else the SQLite file ``./.corral/corral.db``.

``batched_sync.py`` and ``triage.py`` work together through activities: the
sync mirrors items as activities, each an ``on_activity`` event for triage, whose
note on it is an event back to the sync.

``issue_sync.py`` prints a ``curl`` line that posts a signed event to its webhook
when it is first installed; on later runs this prints it again.

Run it from the repository's root: ``python -m examples.demo.run``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from examples.batched_sync import WATCH_SCORE
from examples.demo.paged_api import PAGES, PER_PAGE, PagedApi, PortTaken
from examples.issue_sync import curl_line

from corral.cli import main
from corral.config import RuntimeConfig
from corral.runtime.services import Services

EXAMPLES = Path(__file__).parents[1]


def run() -> None:
    try:
        api = PagedApi()
    except (PortTaken, ValueError) as exc:
        sys.exit(f"Error: {exc}")
    print(
        f"  demo paginated API up: {api.url}/items?page=1..{PAGES}, {PER_PAGE} items a page "
        "(batched-sync pages through it)",
        flush=True,
    )
    print(
        f"  batched-sync mirrors the items rated {WATCH_SCORE} or more as activities; triage "
        "notes a verdict on each\n  (triage's on_activity lines), which batched-sync keeps "
        "(its own on_activity lines).\n  From another shell: .venv/bin/corral activities; "
        "one with its notes: .venv/bin/corral activities show ID",
        flush=True,
    )
    for curl in installed_curl_lines():
        print(f"  issue-sync's webhook, from another shell: {curl}", flush=True)
    main(["dev", os.path.relpath(EXAMPLES), "--priority", "examples"], prog_name="corral")


def installed_curl_lines() -> list[str]:
    """The curl line of each issue-sync instance an earlier run installed (a new one
    prints its own as it activates)."""
    services = Services(RuntimeConfig.load())
    webhooks = services.webhooks
    return [
        curl_line(webhook.url(webhooks.public_url))
        for instance in services.registry.instances()
        if instance.agent == "issue-sync"
        for webhook in webhooks.webhooks(instance.id)
        if webhook.kind == "webhook"
    ]


if __name__ == "__main__":
    run()
