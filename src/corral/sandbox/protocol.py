"""The RPC wire format between the host and a sandboxed process.

A frame is a 4-byte big-endian length, then a msgpack array whose first item
names the message. Agent values inside a frame (arguments, results, tool
replies) are carried as bytes encoded by :mod:`corral.codec`, so they keep their
types and are validated where they are produced. The full message set is in
``docs/sandbox-rpc.md``.

This module is imported on both sides; it must not import host-side code.
"""

from __future__ import annotations

import struct
from typing import Any, Final

import msgpack

from corral.errors import ProtocolError

HEADER: Final = struct.Struct(">I")
#: Largest frame either side accepts: a 1 MiB value plus generous room for the rest.
MAX_FRAME: Final = 4 * 1024 * 1024
#: Longest log line kept; the child truncates, and the host enforces it again.
MAX_LOG_LINE: Final = 4096
#: Log lines kept per execution: the child sends no more and counts the rest (DROPPED),
#: and the host keeps no more, so a print loop costs neither side memory.
MAX_LOG_LINES: Final = 1000
#: Largest encoded return value: a result is kept in the execution's record, and a
#: larger one belongs in the store. Checked before it is sent, and again by the host.
MAX_RESULT: Final = 1024 * 1024
#: Longest error message or traceback a FAIL carries (each); the rest is cut.
MAX_ERROR_TEXT: Final = 16 * 1024
#: Lists and maps a frame may hold. A message holds two at most (its own list, and a
#: CALL's argument list or a FAIL's error); the agent values inside are bytes, decoded
#: apart (``corral.codec``). Uncounted, a frame of empty lists is a million per MiB.
MAX_FRAME_CONTAINERS: Final = 16
# Frames at most this long cannot hold many containers: they skip the count.
_UNCOUNTED: Final = 1024

# host -> child
INVOKE: Final = "invoke"  # [INVOKE, exec_id, spec: dict]
REPLY: Final = "reply"  # [REPLY, call_id, ok: bool, value bytes | error dict]
# child -> host
CALL: Final = "call"  # [CALL, call_id, op: str (a corral.sdk.operations.Op), [arg bytes, ...]]
LOG: Final = "log"  # [LOG, level: str, line: str]
DONE: Final = "done"  # [DONE, exec_id, result bytes, retire: bool]
FAIL: Final = "fail"  # [FAIL, exec_id, error dict, retire: bool]
READY: Final = "ready"  # [READY, pid]
DROPPED: Final = "dropped"  # [DROPPED, count: int], before DONE/FAIL: log lines not sent

_ARITY: Final = {INVOKE: 3, REPLY: 4, CALL: 4, LOG: 3, DONE: 4, FAIL: 4, READY: 2, DROPPED: 2}


def pack(message: list[Any]) -> bytes:
    # A Packer of its own, not msgpack.packb: that builds a keyword dict per call,
    # which cost more than packing a store call's frame. And a small buffer, grown as
    # needed: the default 256 KiB, allocated and freed per frame, made malloc
    # consolidate its free lists every time.
    body: bytes = msgpack.Packer(use_bin_type=True, buf_size=256).pack(message)
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"a {len(body)}-byte message exceeds the {MAX_FRAME}-byte frame limit")
    return HEADER.pack(len(body)) + body


def unpack(body: bytes | bytearray) -> list[Any]:
    """Decode and shape-check one frame body; anything malformed is a ProtocolError."""
    try:
        if len(body) <= _UNCOUNTED:
            message = msgpack.unpackb(body, raw=False, strict_map_key=True)
        else:
            count = _ContainerCount()
            message = msgpack.unpackb(
                body, raw=False, strict_map_key=True, list_hook=count, object_hook=count
            )
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ProtocolError(f"frame is not valid msgpack: {exc}") from None
    if (
        type(message) is not list
        or not message
        or type(message[0]) is not str
        or _ARITY.get(message[0]) != len(message)
    ):
        raise ProtocolError(f"unknown or malformed message: {str(message)[:200]}")
    return message


class _ContainerCount:
    """msgpack's hook for each list and map it builds: refuses the frame past the limit."""

    def __init__(self) -> None:
        self._left = MAX_FRAME_CONTAINERS

    def __call__(self, container: Any) -> Any:
        self._left -= 1
        if self._left < 0:
            raise ProtocolError(
                f"a frame holds more than {MAX_FRAME_CONTAINERS} lists and maps; "
                "agent values travel encoded, as bytes"
            )
        return container


class FrameReader:
    """Splits a byte stream into messages as bytes arrive.

    Both sides parse frames inside the transport's ``data_received`` rather than
    in a reader task: a reply then resolves its waiting call at once, without an
    extra turn of the event loop per frame, which is most of the cost of a tool call.
    """

    def __init__(self) -> None:
        self._partial = bytearray()  # the start of a frame whose end has not arrived

    def feed(self, data: bytes) -> list[list[Any]]:
        """Every complete message now buffered; a partial frame waits for more bytes.

        Most reads hold whole frames and nothing is pending: those are parsed from
        ``data`` itself, without copying it into the buffer and out again.
        """
        partial = self._partial
        chunk: bytes | bytearray = data
        if partial:
            partial += data
            chunk = partial
        messages = []
        start, length = 0, len(chunk)
        while length - start >= HEADER.size:
            (size,) = HEADER.unpack_from(chunk, start)
            if size > MAX_FRAME:
                raise ProtocolError(f"a {size}-byte frame exceeds the {MAX_FRAME}-byte limit")
            end = start + HEADER.size + size
            if end > length:
                break
            messages.append(unpack(chunk[start + HEADER.size : end]))
            start = end
        if partial:
            del partial[:start]
        elif start < length:
            partial += memoryview(data)[start:]
        return messages
