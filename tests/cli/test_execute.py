"""``corral exec``: one execution of an agent file, and the record it prints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from examples.demo.paged_api import PagedApi

from tests.cli.invoke import corral

EXAMPLE = Path(__file__).parents[2] / "examples" / "greeter.py"


def test_exec_prints_the_execution_record(db: str, instance: str) -> None:
    args = ["--db", db, "exec", str(EXAMPLE), "greet", "--arg", '"ann"', "--instance", instance]
    code, out, _ = corral(*args, "--json")
    record = json.loads(out)
    assert code == 0
    assert record["outcome"] == "ok"
    assert record["result"] == {"message": "Hello, ann!", "visits": 1, "requests_left": 96}
    assert record["requests_used"] == 4
    assert record["trigger"] == "exec"
    assert record["instance"] == instance
    assert record["logs"] == [{"level": "info", "line": "greeting ann (visit 1)"}]
    assert record["cpu_ms"] > 0
    assert record["peak_rss_bytes"] > 0
    for field in ("id", "method", "error", "duration_ms", "started_at"):
        assert field in record

    code, out, _ = corral(*args, "--json")  # the store persisted in --db
    assert json.loads(out)["result"]["visits"] == 2
    assert json.loads(out)["result"]["message"] == "hi ann"  # within the TTL cooldown


def test_exec_with_an_instance_uses_the_database_of_the_environment(
    db: str, instance: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRAL_DATABASE_URL", db)
    args = ["exec", str(EXAMPLE), "greet", "--arg", '"ann"', "--instance", instance, "--json"]
    assert [json.loads(corral(*args)[1])["result"]["visits"] for _ in range(2)] == [1, 2]
    assert corral("state", "get", instance, "visits:ann") == (0, "2\n", "")


def test_exec_without_an_instance_uses_a_throwaway_store(db: str, instance: str) -> None:
    args = ["--db", db, "exec", str(EXAMPLE), "greet", "--arg", '"ann"', "--json"]
    assert [json.loads(corral(*args)[1])["result"]["visits"] for _ in range(2)] == [1, 1]
    code, _, err = corral("--db", db, "state", "get", instance, "visits:ann")
    assert (code, err) == (
        1,
        f"Error: no key 'visits:ann' in {instance} (never set, deleted, or expired)\n",
    )


def test_exec_failure_exits_1_and_shows_the_error(tmp_path: Path) -> None:
    agent = tmp_path / "broken.py"
    agent.write_text(
        "from corral.sdk import Agent\nclass A(Agent):\n    def f(self):\n        1/0\n"
    )
    code, out, _ = corral("exec", str(agent), "f")
    assert code == 1
    assert "ZeroDivisionError: division by zero" in out
    assert "1/0" in out  # the traceback quotes the agent's own line


def test_exec_without_an_agent_class_says_so(tmp_path: Path) -> None:
    agent = tmp_path / "empty.py"
    agent.write_text("x = 1\n")
    code, out, _ = corral("exec", str(agent), "f", "--json")
    assert code == 1
    assert json.loads(out)["error"]["message"] == (
        "the agent code must define exactly one Agent (or Twist) class; found none"
    )


def test_exec_holds_the_agent_to_the_quotas_of_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = tmp_path / "keys.py"
    agent.write_text(
        "from corral.sdk import Agent\nclass A(Agent):\n    async def f(self):\n"
        "        for key in 'abc':\n            await self.set(key, 1)\n"
    )
    monkeypatch.setenv("CORRAL_QUOTAS_STORE_KEYS", "2")
    code, out, _ = corral("exec", str(agent), "f", "--json")
    assert code == 1
    assert json.loads(out)["error"]["type"] == "QuotaExceeded"
    assert json.loads(out)["error"]["message"] == (
        "this instance's store would hold 3 keys, over its 2-key quota: delete keys or store "
        "less (nothing was written)"
    )


def test_exec_rejects_an_argument_that_is_not_json() -> None:
    code, _, err = corral("exec", str(EXAMPLE), "greet", "--arg", "ann")
    assert code == 2
    assert "argument 1 is not JSON" in err


def test_exec_rejects_bad_agent_limits(tmp_path: Path) -> None:
    agent = tmp_path / "limits.py"
    agent.write_text(
        "from corral.sdk import Agent\nclass A(Agent):\n    limits = {'ram': 5}\n"
        "    def f(self):\n        return 1\n"
    )
    code, out, _ = corral("exec", str(agent), "f", "--json")
    assert code == 1
    assert json.loads(out)["error"] == {
        "type": "LimitError",
        "message": "unknown limit(s) 'ram'; the limits are cpu_s, memory_mb, requests, timeout_s",
        "traceback": "",
    }


def test_exec_fetches_under_the_agents_allow_list(tmp_path: Path) -> None:
    api = PagedApi(port=0)
    agent = tmp_path / "pager.py"
    agent.write_text(
        "from corral import Agent\n"
        "class Pager(Agent):\n"
        f"    network = ['{api.url}/items']\n"
        "    async def first(self):\n"
        f"        page = (await self.fetch('{api.url}/items?page=1')).json()\n"
        "        try:\n"
        f"            await self.fetch('{api.url}/admin')\n"
        "        except PermissionError as exc:\n"
        "            return [len(page['items']), str(exc)]\n"
    )
    try:
        code, out, _ = corral("exec", str(agent), "first", "--json")
    finally:
        api.close()
    record = json.loads(out)
    assert code == 0
    assert record["requests_used"] == 2
    count, refusal = record["result"]
    assert count == 50
    assert refusal.startswith(f"fetching {api.url}/admin is not allowed: no pattern of this")


def test_exec_strict_reports_state_left_in_globals(tmp_path: Path) -> None:
    agent = tmp_path / "counter.py"
    agent.write_text(
        "from corral import Agent\n"
        "seen = []\n"
        "class Counter(Agent):\n"
        "    def bump(self):\n"
        "        seen.append(1)\n"
        "        return len(seen)\n"
    )
    code, out, _ = corral("exec", str(agent), "bump", "--strict", "--json")
    assert code == 0
    assert json.loads(out)["logs"] == [
        {
            "level": "warning",
            "line": "strict mode: this execution changed module global seen; the next "
            "execution may run in a fresh process without it: keep state in self.store",
        }
    ]
    code, out, _ = corral("exec", str(agent), "bump", "--json")
    assert json.loads(out)["logs"] == []  # only strict mode looks


def test_a_traceback_names_the_agents_file(tmp_path: Path) -> None:
    agent = tmp_path / "failing.py"
    agent.write_text(
        "from corral import Agent\n\nclass A(Agent):\n    def f(self):\n"
        "        raise ValueError('the upstream said no')\n"
    )
    code, out, _ = corral("exec", str(agent), "f", "--json")
    assert code == 1
    assert json.loads(out)["error"]["traceback"] == (
        "Traceback (most recent call last):\n"
        f'  File "{agent}", line 5, in f\n'
        "    raise ValueError('the upstream said no')\n"
        "ValueError: the upstream said no\n"
    )


@pytest.mark.parametrize("call", ['["id"]', '["id"], capture_output=True'])
def test_starting_a_program_says_agents_cannot(tmp_path: Path, call: str) -> None:
    agent = tmp_path / "shell.py"
    agent.write_text(
        "import subprocess\nfrom corral import Agent\n\nclass A(Agent):\n    def f(self):\n"
        f"        return subprocess.run({call}).returncode\n"
    )
    code, out, _ = corral("exec", str(agent), "f", "--json")
    assert code == 1
    error = json.loads(out)["error"]
    assert (error["type"], error["message"]) == (
        "PermissionError",
        "agents cannot start processes or threads of other programs: use self.run_task",
    )


def test_exec_of_a_file_that_is_not_text_says_so(tmp_path: Path) -> None:
    binary = tmp_path / "binary.py"
    binary.write_bytes(b"from corral import Agent\n\x7fELF\x02\x01\x01\xd0\n")
    code, out, err = corral("exec", str(binary), "f")
    assert (code, out) == (1, "")
    assert err == (
        f"Error: cannot run {binary}:2: not UTF-8 text (byte 32 is 0xd0): an agent is Python "
        "source, saved as UTF-8\n"
    )
