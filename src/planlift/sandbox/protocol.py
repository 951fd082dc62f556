"""The parent's side of the result channel: frames from an untrusted process, decoded as plain data only.

A frame is a 4-byte big-endian length and a pickle. Everything that arrives is decoded by an unpickler
that builds only plain data (None, bool, int, float, complex, str, bytes, bytearray, list, tuple, dict,
set, frozenset, slice) and never looks up a class, so a program's object cannot come back as itself: an
`__eq__` that always answers True, an `int` subclass or a proxy fails to decode and is not data. Decoded
values are also bounded in size counted as a tree (shared references count every time they are reached),
so a small pickle cannot become an exponential structure that hangs the comparison.

Decoding runs in the trainer, so nothing in a pickle may cost it more than the pickle's own size:
- `bytearray` is rebuilt only from its bytes (`bytearray(2**30)` from a 30-byte pickle would allocate a
  GiB here, where the program's memory limit does not apply);
- a set or dict (and `plain_set`, which the oracles use) refuses more than `SAME_HASH` distinct keys with one
  hash: ints are their own hash modulo 2**61 - 1, so `k * (2**61 - 1)` all collide, and building a set of N
  of them takes N**2 probes (40,000 took 12 s, holding the GIL). That check needs a hook at every opcode
  that fills a set or dict, which the C unpickler does not offer: the pure-Python one is used (about 20x
  slower: 0.7 s for a million ints, and a result that size is rare; the program pays for none of it).
"""

from __future__ import annotations

import io
import pickle
import struct
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

_HEADER = struct.Struct(">I")
_CONTAINERS = (list, tuple, set, frozenset)
SAME_HASH = 8  # distinct keys one set or dict may hold with the same hash (honest data: about never 2)


class NotPlainData(ValueError):
    """A value that is not plain data (or is too large to judge)."""


def admit(keys: Iterable[Any], seen: dict[int, list[Any]] | None = None) -> dict[int, list[Any]]:
    """Check `keys`, about to enter a set or dict whose keys so far are `seen` (their distinct keys per
    hash): more than SAME_HASH distinct keys with one hash is NotPlainData. Returns the updated `seen`."""
    seen = {} if seen is None else seen
    for key in keys:
        same = seen.setdefault(hash(key), [])
        if not any(key == other for other in same):
            same.append(key)
            if len(same) > SAME_HASH:
                raise NotPlainData(f"more than {SAME_HASH} distinct keys with one hash (a hash flood)")
    return seen


def plain_set(items: Iterable[Any] = ()) -> set:
    """`set(items)` after `admit`: building it costs at most SAME_HASH probes per item."""
    items = list(items)
    admit(items)
    return set(items)


def plain_frozenset(items: Iterable[Any] = ()) -> frozenset:
    return frozenset(plain_set(items))


def _bytearray(source: bytes | str = b"", encoding: str | None = None) -> bytearray:
    """A bytearray from the arguments pickle gives it (its bytes; protocol 2: text and "latin-1") only."""
    if isinstance(source, bytes) and encoding is None:
        return bytearray(source)
    if isinstance(source, str) and encoding == "latin-1":
        return bytearray(source, encoding)
    raise pickle.UnpicklingError("bytearray is plain data only when built from its bytes")


_ALLOWED = {
    ("builtins", "set"): plain_set,
    ("builtins", "frozenset"): plain_frozenset,
    ("builtins", "bytearray"): _bytearray,
    ("builtins", "complex"): complex,  # from two floats (NEWOBJ) or a string: linear in the pickle
    ("builtins", "slice"): slice,
}


class _PlainUnpickler(pickle._Unpickler):
    """The pure-Python unpickler with `admit` at every opcode that fills a set or a dict."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file)
        self._seen: dict[int, dict[int, list[Any]]] = {}  # id(set or dict) -> its keys per hash

    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":  # protocol 2 names builtins so
            module = "builtins"
        if (module, name) in _ALLOWED:
            return _ALLOWED[module, name]
        raise pickle.UnpicklingError(f"{module}.{name} is not plain data")

    def _admit(self, container: Any, keys: Iterable[Any]) -> None:
        self._seen[id(container)] = admit(keys, self._seen.get(id(container)))

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        self._admit(target, items)
        target.update(items)

    def load_frozenset(self) -> None:
        items = self.pop_mark()  # first: it rebinds self.append to the enclosing stack
        self.append(plain_frozenset(items))

    def load_setitems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        self._admit(target, items[::2])
        for index in range(0, len(items), 2):
            target[items[index]] = items[index + 1]

    def load_setitem(self) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        self._admit(self.stack[-1], [key])
        self.stack[-1][key] = value

    def load_dict(self) -> None:
        items = self.pop_mark()
        target: dict = {}
        self._admit(target, items[::2])
        target.update(zip(items[::2], items[1::2], strict=True))
        self.append(target)

    def load_build(self) -> None:  # plain data has no state to set; it would setattr on a class above
        raise pickle.UnpicklingError("BUILD: plain data has no object state")

    dispatch: ClassVar[dict] = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.ADDITEMS[0]] = load_additems
    dispatch[pickle.FROZENSET[0]] = load_frozenset
    dispatch[pickle.SETITEMS[0]] = load_setitems
    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.DICT[0]] = load_dict


def nodes(value: Any) -> Iterator[Any]:
    """Every node of `value` as a tree, depth first: a shared reference is reached (and yielded) each time."""
    stack = [value]
    while stack:
        item = stack.pop()
        yield item
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, _CONTAINERS):
            stack.extend(item)
        elif isinstance(item, slice):
            stack.extend((item.start, item.stop, item.step))


def within(value: Any, budget: int) -> bool:
    """Does `value`, as a tree, have at most `budget` nodes?"""
    if not isinstance(value, (dict, slice, *_CONTAINERS)):
        return True
    return all(seen <= budget for seen, _ in enumerate(nodes(value), 1))


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
