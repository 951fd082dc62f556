"""The parent's side of the result channel: frames from an untrusted process, decoded as plain data only.

A frame is a 4-byte big-endian length and a pickle. Everything that arrives is decoded by an unpickler
that builds only plain data (None, bool, int, float, complex, str, bytes, bytearray, list, tuple, dict,
set, frozenset, slice) and never looks up a class, so a program's object cannot come back as itself: an
`__eq__` that always answers True, an `int` subclass or a proxy fails to decode and is not data. Decoded
values are also bounded in size counted as a tree (shared references count every time they are reached),
so a small pickle cannot become an exponential structure that hangs the comparison.
"""

from __future__ import annotations

import io
import pickle
import struct
from typing import Any

_ALLOWED = {("builtins", name) for name in ("set", "frozenset", "complex", "bytearray", "slice")}
_HEADER = struct.Struct(">I")
_CONTAINERS = (list, tuple, set, frozenset)


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not plain data")


class NotPlainData(ValueError):
    """A value that is not plain data (or is too large to judge)."""


def within(value: Any, budget: int) -> bool:
    """Does `value`, as a tree, have at most `budget` nodes?"""
    if not isinstance(value, (dict, slice, *_CONTAINERS)):
        return True
    stack, seen = [value], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > budget:
            return False
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, _CONTAINERS):
            stack.extend(item)
        elif isinstance(item, slice):
            stack.extend((item.start, item.stop, item.step))
    return True


def loads_plain(blob: bytes, budget: int = 10_000_000) -> Any:
    """Decode one pickle as plain data; raises NotPlainData."""
    try:
        value = _PlainUnpickler(io.BytesIO(blob)).load()
    except Exception as error:  # any malformed pickle: UnpicklingError, EOFError, ValueError, ...
        raise NotPlainData(f"{type(error).__name__}: {error}"[:200]) from None
    if not within(value, budget):
        raise NotPlainData(f"more than {budget} values")
    return value


class FrameReader:
    """Cuts a byte stream into frames and decodes each. `bad` is set at the first frame that is too
    large or not plain data; nothing after it is trusted (the runner stops the process)."""

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self.buffer = bytearray()
        self.bad: str | None = None

    def feed(self, chunk: bytes) -> list[dict]:
        self.buffer += chunk
        events, offset, end = [], 0, len(self.buffer)
        while self.bad is None and end - offset >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self.buffer, offset)
            if size > self.max_frame:
                self.bad = f"a result frame of {size} bytes (limit {self.max_frame})"
                break
            if end - offset < _HEADER.size + size:
                break
            start = offset + _HEADER.size
            offset = start + size
            try:
                event = loads_plain(bytes(self.buffer[start:offset]))
            except NotPlainData as error:
                self.bad = f"a result frame that is not plain data ({error})"
                break
            if not isinstance(event, dict):
                self.bad = "a result frame that is not an event"
                break
            events.append(event)
        del self.buffer[:offset]  # once per chunk: frames are cut by offset, not one by one
        return events
