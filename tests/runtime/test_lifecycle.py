"""Install, deploy and uninstall each commit with their lifecycle tasks, or not at all.

Each of them writes a change (an instance, a version, a status) and queues the
task that tells the agent of it (``activate``, ``upgrade``, ``deactivate``). A
process killed between the two must leave neither: an instance that never hears
``activate``, a version whose instances never hear ``upgrade``, or an instance
stuck ``uninstalling`` with no ``deactivate`` to finish it would be an event lost
for good (running the command again would not bring it back). Here a separate
process runs the command and dies at the point between, where it queues the task;
then the test looks at what the database kept, and runs the command again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.runtime.conftest import Runtime, describe

AGENT = """
from corral.sdk import Agent

VERSION = 1

class Hooks(Agent):
    def activate(self, priority):
        return None

    def upgrade(self):
        return VERSION

    def deactivate(self):
        return None
"""

#: How the process that runs the command ends: it dies as the command queues its task.
CRASHED = 17

COMMAND = textwrap.dedent(
    f"""
    import json
    import os
    import sys

    from corral.config import RuntimeConfig
    from corral.runtime.services import Services

    url, command = sys.argv[1], sys.argv[2]
    argument, now = json.loads(sys.argv[3]), int(sys.argv[4])
    services = Services(RuntimeConfig(database_url=url))
    queue, registry = services.queue, services.registry


    def die(*args, **kwargs):
        os._exit({CRASHED})  # no commit, no rollback, no goodbye to the database


    queue.enqueue = die
    if command == "install":
        registry.install(argument, priority="default", config={{}}, now=now)
    elif command == "deploy":
        registry.deploy(*argument, now=now)
    else:
        registry.uninstall(argument, now=now)
    """
)


def crash_during(runtime: Runtime, command: str, argument: object) -> None:
    """Run ``command`` in another process that is killed as it queues its task."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            COMMAND,
            runtime.url,
            command,
            json.dumps(argument),
            str(runtime.executor.now()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == CRASHED, done.stderr


async def test_an_install_killed_before_its_activate_is_queued_leaves_no_instance(
    runtime: Runtime,
) -> None:
    await runtime.deploy("hooks", AGENT)
    crash_during(runtime, "install", "hooks")
    assert runtime.executor.registry.instances() == []
    assert runtime.executor.queue.list() == []

    instance = runtime.install("hooks")  # again: all of it
    assert [task.method for task in runtime.tasks(instance.id)] == ["activate"]
    await runtime.idle()
    assert [r["outcome"] for r in runtime.executions(instance.id, "activate")] == ["ok"]


async def test_a_deploy_killed_before_its_upgrades_are_queued_leaves_the_old_version(
    runtime: Runtime,
) -> None:
    await runtime.deploy("hooks", AGENT)
    instance = runtime.install("hooks")
    await runtime.idle()  # activate
    newer = AGENT.replace("VERSION = 1", "VERSION = 2")
    crash_during(runtime, "deploy", ["hooks", newer, await describe(newer)])
    assert runtime.executor.registry.current_version("hooks").number == 1
    assert runtime.tasks(instance.id) == []

    deployed = await runtime.deploy("hooks", newer)  # again: the upgrade is not lost
    assert (deployed.version.number, deployed.upgraded) == (2, [instance.id])
    await runtime.idle()
    [upgrade] = runtime.executions(instance.id, "upgrade")
    assert (upgrade["outcome"], upgrade["result"], upgrade["version"]) == ("ok", 2, 2)


async def test_an_uninstall_killed_before_its_deactivate_is_queued_leaves_the_instance_active(
    runtime: Runtime,
) -> None:
    await runtime.deploy("hooks", AGENT)
    instance = runtime.install("hooks")
    await runtime.idle()  # activate
    crash_during(runtime, "uninstall", instance.id)
    assert runtime.status(instance.id) == ("active", None)
    assert runtime.tasks(instance.id) == []

    runtime.executor.registry.uninstall(instance.id, now=runtime.executor.now())  # again
    await runtime.idle()
    assert [r["outcome"] for r in runtime.executions(instance.id, "deactivate")] == ["ok"]
    assert runtime.status(instance.id) == ("removed", None)
