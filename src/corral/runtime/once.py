"""One execution of one method, start to finish: what ``corral exec`` runs.

Its agent may fetch, under the same allow-list and rate limit as under a worker,
and make and run callbacks; it cannot queue tasks (``ExecTools`` says why).
"""

from __future__ import annotations

from typing import Any

from corral.config import RuntimeConfig
from corral.runtime.declared import declared
from corral.runtime.describe import describe_in
from corral.runtime.network.fetch import Fetcher
from corral.runtime.records import ExecutionRecord, loaded
from corral.runtime.tools import ExecTools
from corral.sandbox.limits import Outcome
from corral.sandbox.process import AGENT_FILENAME
from corral.sandbox.zygote import Zygote
from corral.state import Store


async def run_once(
    code: str,
    method: str,
    args: list[Any],
    store: Store,
    config: RuntimeConfig,
    *,
    insecure: bool = False,
    strict: bool = False,
    filename: str = AGENT_FILENAME,
) -> ExecutionRecord:
    """Load the agent in one sandboxed process to learn its limits, run it in another,
    under the configuration's limits, ceilings and fetch settings, as a worker would.

    Two processes because the memory limit is fixed when a process starts, and the
    agent's own ``limits`` are only known once its code has been loaded. The second
    process has never run the agent, as in strict mode; ``strict`` also reports what
    the execution left in module globals and class attributes. The configuration's
    quotas bound the callbacks it makes (the store was opened with its own).
    ``filename`` is what tracebacks call the code: the agent's file, for ``corral exec``.
    """
    base = config.limits
    zygote = await Zygote.start(insecure=insecure)
    try:
        description = await describe_in(zygote, code, base, filename=filename)
        if description.outcome is not Outcome.OK:
            return ExecutionRecord(store.scope, method, "exec", description)
        try:
            rules = declared(loaded(description), base, config.ceilings)
        except ValueError as exc:
            description.outcome = Outcome.ERROR
            description.error = {"type": type(exc).__name__, "message": str(exc), "traceback": ""}
            return ExecutionRecord(store.scope, method, "exec", description)
        process = await zygote.spawn(rules.limits)
        fetcher = Fetcher(config.fetch)
        try:
            fetch = fetcher.bind(store.scope, rules.network, time_left_s=rules.limits.timeout_s)
            tools = ExecTools(
                store,
                fetch,
                class_name=rules.class_name,
                methods=rules.methods,
                quotas=config.quotas,
            )
            result = await process.execute(
                code, method, args, rules.limits, tools, strict=strict, filename=filename
            )
        finally:
            await process.close()
            await fetcher.close()
        return ExecutionRecord(store.scope, method, "exec", result)
    finally:
        await zygote.close()
