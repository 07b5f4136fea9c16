"""Framing: messages come out whole and in order however the stream is cut into reads."""

from __future__ import annotations

import itertools
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.errors import ProtocolError
from corral.sandbox import protocol

MESSAGES: list[list[Any]] = [
    ["log", "info", "x"],
    ["call", 1, "store.set_encoded", [b"\xa1k", b"\xc4\x03abc"]],
    ["reply", 1, True, b"\xc0"],
    ["log", "info", "y" * 70_000],  # longer than one read of a socket, often
    ["done", 2, b"\x90", False],
]
STREAM = b"".join(protocol.pack(m) for m in MESSAGES)


@given(st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_messages_come_out_whole_wherever_the_reads_split_the_stream(cuts: list[int]) -> None:
    reader = protocol.FrameReader()
    bounds = [0, *sorted(cuts), len(STREAM)]
    received = []
    for start, end in itertools.pairwise(bounds):
        received += reader.feed(STREAM[start:end])
    assert received == MESSAGES


def test_a_frame_longer_than_the_limit_is_refused_from_its_header() -> None:
    reader = protocol.FrameReader()
    header = protocol.HEADER.pack(protocol.MAX_FRAME + 1)
    assert reader.feed(protocol.pack(MESSAGES[0]) + header[:2]) == [MESSAGES[0]]
    with pytest.raises(ProtocolError, match="exceeds the 4194304-byte limit"):
        reader.feed(header[2:])  # before waiting for a body it would never accept


def test_a_frame_holding_more_lists_and_maps_than_any_message_is_refused() -> None:
    # Agent values travel encoded, as bytes: a frame of nested lists would cost the
    # host a list per byte to decode, before it could look at the message.
    padding = "x" * 2000  # long enough to be counted
    # The message, the list in it and 14 empty lists: 16 in all.
    allowed = ["log", "info", [[] for _ in range(protocol.MAX_FRAME_CONTAINERS - 2)], padding]
    body = msgpack.packb(allowed)
    with pytest.raises(ProtocolError, match="unknown or malformed message"):
        protocol.unpack(body)  # decoded, then refused for its shape
    body = msgpack.packb([*allowed[:2], [[] for _ in range(1_000_000)], padding])
    with pytest.raises(
        ProtocolError,
        match=r"^a frame holds more than 16 lists and maps; agent values travel encoded, as bytes$",
    ):
        protocol.unpack(body)
