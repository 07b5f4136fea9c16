"""``corral exec`` of methods that use webhooks: no server would receive them.

Making one is refused with a message saying where to run the agent; there are
none to list, and deleting one finds nothing, which is no error.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.sdk.operations import Op
from tests.cli.invoke import corral

AGENT = """
from corral import Agent, codec
from corral.sdk.operations import Op

class Hooks(Agent):
    async def on_event(self, request):
        return None

    async def make(self):
        await self._channel.call(
            Op.WEBHOOK_CREATE, ["method", "on_event"], codec.encode([]), "async", None, None
        )

    async def tidy(self):
        await self._channel.call(Op.WEBHOOK_DELETE, "http://127.0.0.1:8000/hooks/gone")
        return await self._channel.call(Op.WEBHOOK_LIST)
"""


@pytest.fixture
def agent(tmp_path: Path) -> str:
    path = tmp_path / "hooks.py"
    path.write_text(AGENT)
    return str(path)


@pytest.mark.exercises(Op.WEBHOOK_CREATE)
def test_exec_refuses_a_webhook_saying_to_run_the_agent_with_a_server(agent: str) -> None:
    code, out, _ = corral("exec", agent, "make", "--json")
    assert code == 1
    record = json.loads(out)
    assert record["error"]["type"] == "RuntimeError"
    assert record["error"]["message"] == (
        "create_webhook needs a server: corral exec runs one method and no server, so no "
        "webhook was made; to receive webhooks, run the agent with corral dev AGENT.py"
    )


@pytest.mark.exercises(Op.WEBHOOK_DELETE, Op.WEBHOOK_LIST)
def test_exec_lists_no_webhooks_and_deletes_none_without_an_error(agent: str) -> None:
    code, out, _ = corral("exec", agent, "tidy", "--json")
    record = json.loads(out)
    assert (code, record["outcome"], record["result"]) == (0, "ok", [])
