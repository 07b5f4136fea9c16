"""examples/issue_sync.py as a newcomer meets it under `make run`: its activate prints a
curl line; pasted into a shell (real curl, real HTTP), it delivers a signed
``issues`` event that the worker runs and the agent stores."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.server.conftest import (  # noqa: F401  (fixtures)
    Serve,
    clock,
    db_url,
    runtime_factory,
    sandbox,
    serve,
)

EXAMPLE = Path(__file__).parents[2] / "examples" / "issue_sync.py"
TRY_IT = "try it from another shell: "


async def shell(command: str) -> dict[str, object]:
    """What the command printed, as JSON (the server's answer, through curl)."""
    process = await asyncio.create_subprocess_shell(command, stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    assert process.returncode == 0
    answer: dict[str, object] = json.loads(out)
    return answer


async def test_the_printed_curl_line_delivers_a_signed_issue_event_once(serve: Serve) -> None:  # noqa: F811
    served = await serve()
    instance = await served.install("issue-sync", EXAMPLE.read_text())
    [curl] = [line.removeprefix(TRY_IT) for line in served.runtime.logs(instance) if TRY_IT in line]
    assert curl.startswith(f"curl -sS -X POST '{served.url}/hooks/")

    first = await shell(curl)
    assert first["queued"] is True
    await served.runtime.idle()
    assert await served.stored(instance, "issue:42") == {
        "title": "Webhooks reach the agent",
        "state": "open",
        "author": "octocat",
        "last_action": "opened",
    }
    assert "issue #42 opened: 'Webhooks reach the agent'" in served.runtime.logs(instance)

    # Pasted again: the same delivery id, answered as the first, nothing runs.
    assert await shell(curl) == {**first, "duplicate": True}
    # Altered on the way: the signature no longer matches, nothing is stored.
    forged = await shell(curl.replace("Webhooks reach the agent", "Send me the secrets"))
    assert forged["error"]["code"] == "unauthorized"  # type: ignore[index]
    await served.runtime.idle()
    assert len(served.runtime.executions(instance, "on_event")) == 1

    # Redelivered after the server's dedupe window: the agent's own check skips it.
    served.runtime.clock.advance(73 * 3600 * 1000)
    assert (await shell(curl)).get("duplicate") is None
    await served.runtime.idle()
    assert "delivery demo-delivery-1 was handled already: skipped" in served.runtime.logs(instance)
    assert await served.stored(instance, "events") == 1
