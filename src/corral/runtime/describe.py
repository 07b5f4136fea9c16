"""What a piece of agent code declares, learned in a sandbox: deploy and reload read it.

The host never runs agent code, not even to read its class: the code is loaded in a
throttled sandboxed process, and what comes out (``loaded``) is checked
(``declared``) before anything is stored.
"""

from __future__ import annotations

import re
from typing import Any

from corral.errors import AgentCodeError
from corral.runtime.declared import declared
from corral.runtime.records import loaded
from corral.sandbox.limits import CEILINGS, ExecutionResult, Limits, Outcome
from corral.sandbox.process import AGENT_FILENAME
from corral.sandbox.zygote import Zygote


async def describe_in(
    zygote: Zygote, code: str, limits: Limits, *, filename: str = AGENT_FILENAME
) -> ExecutionResult:
    """Load the code in a throwaway sandboxed process: the host never runs agent code."""
    probe = await zygote.spawn(limits)
    try:
        return await probe.describe(code, limits, filename=filename)
    finally:
        await probe.close()


def agent_source(data: bytes) -> str:
    """The text of an agent file, or ``AgentCodeError`` at the line of its first byte
    that is not UTF-8 (a binary file, a file in another encoding)."""
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise AgentCodeError(
            f"not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x}): an agent is "
            "Python source, saved as UTF-8",
            line=line,
        ) from None


async def describe_code(
    code: str,
    *,
    limits: Limits | None = None,
    ceilings: Limits = CEILINGS,
    insecure: bool = False,
    zygote: Zygote | None = None,
    filename: str = AGENT_FILENAME,
) -> dict[str, Any]:
    """The agent's class, methods, limits, network list and tick, learned in a sandbox
    under ``limits`` (default: the default limits); an ``AgentCodeError`` when the
    code does not load, or declares limits above ``ceilings``.

    Pass a running ``zygote`` to save starting one (about 0.2 s) for each call, and
    the code's ``filename`` for its tracebacks and for the line an error points at.
    """
    limits = limits or Limits()
    if zygote is None:
        own = await Zygote.start(insecure=insecure)
        try:
            return await describe_code(
                code, limits=limits, ceilings=ceilings, zygote=own, filename=filename
            )
        finally:
            await own.close()
    result = await describe_in(zygote, code, limits, filename=filename)
    if result.outcome is not Outcome.OK:
        error = result.error or {}
        # The traceback from the sandbox is the only place an error's line travels.
        frames = re.findall(
            rf'File "{re.escape(filename)}", line (\d+)', error.get("traceback", "")
        )
        raise AgentCodeError(
            result.failure_line or result.outcome.value,
            line=int(frames[-1]) if frames else None,  # the innermost of the agent's frames
        )
    description = loaded(result)
    try:
        declared(description, limits, ceilings)
    except ValueError as exc:
        raise AgentCodeError(str(exc)) from None
    return description
