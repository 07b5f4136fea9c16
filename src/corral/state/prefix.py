"""Prefix ranges over keys ordered by code point."""

from __future__ import annotations

_MAX = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``.

    ``key >= prefix AND key < bound`` then selects exactly the keys with that prefix,
    using the primary-key index. None means "no upper bound" (empty prefix, or one
    made only of the highest code point). Keys never contain surrogates (they are not
    valid UTF-8), so the bound skips over that gap.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < _MAX:
            nxt = last + 1
            if nxt in _SURROGATES:
                nxt = _SURROGATES.stop
            return "".join(chars) + chr(nxt)
    return None
