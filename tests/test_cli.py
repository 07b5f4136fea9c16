"""The `corral` command as an operator uses it: migrate, then read state."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from corral.cli import main
from corral.demo.paged_api import PagedApi
from corral.state import close_backends, open_store


@pytest.fixture
def db(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path}/cli.db"
    close_backends()


def corral(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_migrate_creates_then_reports_current(db: str) -> None:
    code, out, _ = corral("--db", db, "migrate")
    assert code == 0
    assert "upgraded from empty to revision" in out
    code, out, _ = corral("--db", db, "migrate")
    assert code == 0
    assert "already at revision" in out


def test_migrate_rejects_unsupported_database() -> None:
    code, _, err = corral("--db", "mysql://root@localhost/test", "migrate")
    assert code == 1
    assert "unsupported database 'mysql'" in err


def test_state_ls_and_get_show_values_with_their_types(db: str) -> None:
    store = open_store(db, "inst-1")
    asyncio.run(store.set_many({"cfg:a": (1, 2), "cfg:b": Decimal("1.10"), "other": None}))

    code, out, _ = corral("--db", db, "state", "ls", "inst-1", "--prefix", "cfg:", "--json")
    assert code == 0
    assert json.loads(out) == [
        {"key": "cfg:a", "value": {"$tuple": [1, 2]}},
        {"key": "cfg:b", "value": {"$decimal": "1.10"}},
    ]

    code, out, _ = corral("--db", db, "state", "get", "inst-1", "other", "--json")
    assert (code, json.loads(out)) == (0, None)  # a stored None is present, not missing

    code, out, _ = corral("--db", db, "state", "ls", "inst-1", "--prefix", "cfg:")
    assert code == 0
    used = asyncio.run(store.usage())
    assert used[1] == 3
    assert f"2 key(s); the store holds 3, {used[0]:,} bytes" in out


def test_state_get_missing_key_exits_1_with_a_message(db: str) -> None:
    code, out, err = corral("--db", db, "state", "get", "inst-1", "nope")
    assert code == 1
    assert out == ""
    assert "no key 'nope' in inst-1" in err


def test_state_get_bad_key_is_a_clear_error(db: str) -> None:
    code, _, err = corral("--db", db, "state", "get", "inst-1", "x" * 600)
    assert code == 1
    assert "the limit is 512" in err


EXAMPLE = Path(__file__).parents[1] / "examples" / "greeter.py"


def test_doctor_reports_every_layer() -> None:
    code, out, _ = corral("doctor", "--json")
    layers = {layer["name"]: layer for layer in json.loads(out)}
    assert {"seccomp", "landlock", "network-namespace", "rlimits"} <= set(layers)
    assert code == (0 if all(layer["available"] for layer in layers.values()) else 1)


def test_exec_prints_the_execution_record(db: str) -> None:
    args = ["--db", db, "exec", str(EXAMPLE), "greet", "--arg", '"ann"', "--instance", "demo"]
    code, out, _ = corral(*args, "--json")
    record = json.loads(out)
    assert code == 0
    assert record["outcome"] == "ok"
    assert record["result"] == {"message": "Hello, ann!", "visits": 1, "requests_left": 96}
    assert record["requests_used"] == 4
    assert record["trigger"] == "exec"
    assert record["instance"] == "demo"
    assert record["logs"] == [{"level": "info", "line": "greeting ann (visit 1)"}]
    assert record["cpu_ms"] > 0
    assert record["peak_rss_bytes"] > 0
    for field in ("id", "method", "error", "duration_ms", "started_at"):
        assert field in record

    code, out, _ = corral(*args, "--json")  # the store persisted in --db
    assert json.loads(out)["result"]["visits"] == 2
    assert json.loads(out)["result"]["message"] == "hi ann"  # within the TTL cooldown


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


@pytest.mark.parametrize("command", [["worker", "--until-idle"], ["dev", "."], ["exec", "x", "f"]])
def test_a_bad_quota_in_the_environment_is_one_clear_line(
    db: str, command: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "x").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CORRAL_QUOTAS_STORE_BYTES", "lots")
    code, out, err = corral("--db", db, *command)
    assert (code, out) == (1, "")
    assert err == (
        "Error: CORRAL_QUOTAS_STORE_BYTES must be a whole number of bytes, or of KiB, MiB or "
        "GiB (64MiB), got 'lots'\n"
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
    assert "unknown limit(s) ram" in json.loads(out)["error"]["message"]


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


def test_deploy_refuses_a_bad_network_pattern(db: str, tmp_path: Path) -> None:
    agent = tmp_path / "net.py"
    agent.write_text(
        "from corral import Agent\nclass A(Agent):\n    network = ['api.example.com']\n"
        "    def f(self):\n        pass\n"
    )
    code, _, err = corral("--db", db, "deploy", str(agent))
    assert code == 1
    assert (
        f"cannot deploy {agent}: network pattern 'api.example.com' is not valid: it does not "
        "start with http:// or https://"
    ) in err


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


def test_deploy_install_and_a_worker_run_a_chain_of_tasks(db: str, tmp_path: Path) -> None:
    agent = tmp_path / "pager.py"
    agent.write_text(
        "from corral import Agent\n"
        "class Pager(Agent):\n"
        "    async def activate(self, priority):\n"
        "        print(f'activated for {priority}')\n"
        "        await self.run_task(await self.callback(self.page, 1))\n"
        "    async def page(self, n):\n"
        "        await self.set('pages', n)\n"
        "        if n < 5:\n"
        "            await self.run_task(await self.callback(self.page, n + 1))\n"
    )
    code, out, _ = corral("--db", db, "deploy", str(agent), "--json")
    assert code == 0
    assert json.loads(out)["version"] == 1
    code, out, _ = corral("--db", db, "install", "pager", "--priority", "work", "--json")
    instance = json.loads(out)["id"]
    code, _, err = corral("--db", db, "worker", "--until-idle")
    assert code == 0
    assert "6 execution(s) run" in err
    assert corral("--db", db, "state", "get", instance, "pages")[1].strip() == "5"
    code, out, _ = corral("--db", db, "executions", instance, "--json")
    records = json.loads(out)
    assert [r["method"] for r in records].count("page") == 5
    assert {r["outcome"] for r in records} == {"ok"}
    _, out, _ = corral("--db", db, "logs", instance)
    assert "info: activated for work" in out
    _, out, _ = corral("--db", db, "deploy", str(agent), "--json")
    assert json.loads(out)["created"] is False  # same code: same version


def test_install_of_an_unknown_agent_says_deploy_first(db: str) -> None:
    code, _, err = corral("--db", db, "install", "nobody")
    assert code == 1
    assert "there is no agent 'nobody': deploy it first (corral deploy)" in err


def test_deploy_refuses_code_without_an_agent_and_a_bad_name(db: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    code, _, err = corral("--db", db, "deploy", str(empty))
    assert code == 1
    assert (
        f"cannot deploy {empty}: AgentDefinitionError: the agent code must define exactly one "
        "Agent (or Twist) class; found none"
    ) in err
    agent = tmp_path / "ok.py"
    agent.write_text("from corral import Agent\nclass A(Agent):\n    def f(self):\n        pass\n")
    code, _, err = corral("--db", db, "deploy", str(agent), "--name", "a b")
    assert code == 1
    assert "an agent name is letters, digits, '-' and '_', got 'a b'; use --name" in err


def test_deploy_of_code_that_does_not_load_names_the_line(db: str, tmp_path: Path) -> None:
    agent = tmp_path / "broken.py"
    agent.write_text("from corral import Agent\nclass A(Agent):\n    def f(self)\n        pass\n")
    code, _, err = corral("--db", db, "deploy", str(agent))
    assert code == 1
    assert (
        f"cannot deploy {agent}:3: AgentDefinitionError: the agent code does not compile: "
        "expected ':' (line 3)"
    ) in err
    agent.write_text("from corral import Agent\n\n{}['nope']\n")
    code, _, err = corral("--db", db, "deploy", str(agent))
    assert code == 1
    assert f"cannot deploy {agent}:3: KeyError: 'nope'" in err


def test_install_refuses_config_that_is_not_a_json_object(db: str, tmp_path: Path) -> None:
    code, _, err = corral("--db", db, "install", "x", "--config", "{nope")
    assert code == 2
    assert "--config is not JSON" in err
    code, _, err = corral("--db", db, "install", "x", "--config", "[1]")
    assert code == 2
    assert "--config must be a JSON object" in err


def test_task_commands_name_what_is_wrong(db: str) -> None:
    code, _, err = corral("--db", db, "tasks", "retry", "99")
    assert code == 1
    assert "there is no dead-lettered task 99 (see corral tasks --dead)" in err
    code, _, err = corral("--db", db, "tasks", "cancel", "x")
    assert code == 2
    assert "usage: corral tasks cancel ID (a task id, a number)" in err
    code, _, err = corral("--db", db, "tasks", "cancel", "7")
    assert code == 1
    assert "there is no pending task 7 (it may have run, or be running now)" in err
    code, _, err = corral("--db", db, "uninstall", "nobody-1")
    assert code == 1
    assert "there is no instance 'nobody-1' (see corral instances)" in err
