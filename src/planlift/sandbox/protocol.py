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
  of them takes N**2 probes (40,000 took 12 s, holding the GIL);
- a key that costs more than `KEY_COST` to hash is refused, and so are keys whose costs add up past the
  pickle's budget: a tuple's hash is not cached and recurses in C, so (t, t) pairs 100 deep (208 bytes)
  hung the trainer and a key of 300,000 nested tuples crashed it (a segfault).
These checks need a hook at every opcode that fills a set or dict, which the C unpickler does not offer:
pickle's pure-Python opcode loop is used, made faster where that is safe: it reads the in-memory pickle directly (no `_Unframer`), decodes
runs of numbers with one `struct` call, and bounds the tree at C speed (`within`). A million floats take
0.11 s (1.3 s with the plain pure-Python unpickler, 0.04 s with C); a million ints 0.28 s; many small
tuples about 13-18x C's time. The program pays for none of it (the runner moves its deadline).
"""

from __future__ import annotations

import functools
import io
import pickle
import struct
from collections.abc import Callable, Iterable, Iterator
from itertools import compress
from typing import Any, ClassVar

_HEADER = struct.Struct(">I")
_CONTAINERS = (list, tuple, set, frozenset)
SAME_HASH = 8  # distinct keys one set or dict may hold with the same hash (honest data: about never 2)
# What hashing one set or dict key may cost, in `key_cost` units: a tuple's hash is not cached and recurses
# in C without a depth guard, so a key of (t, t) pairs 100 deep takes 2**100 steps and a chain of 200,000
# nested tuples overflows the trainer's C stack (a segfault), both from pickles of a few hundred bytes.
KEY_COST = 10_000


class NotPlainData(ValueError):
    """A value that is not plain data (or is too large to judge)."""


def key_cost(key: Any, limit: int = KEY_COST) -> int:
    """What hashing `key` costs: its nodes as a tree (a shared reference each time: tuples do not cache
    their hash), an int also by its 64-bit words (its hash reads them all, every time). The count stops past
    `limit` (the result is then limit + 1). Walked with a stack: no recursion, however deep."""
    if type(key) is not tuple and type(key) is not slice:  # a leaf: str and bytes cache their hash
        return 1 + (key.bit_length() >> 6 if type(key) is int else 0)
    cost, stack = 0, [key]
    while stack:
        item = stack.pop()
        cost += 1 + (item.bit_length() >> 6 if type(item) is int else 0)
        if cost > limit:
            return limit + 1
        if type(item) is tuple:
            stack.extend(item)
        elif type(item) is slice:  # hashable from Python 3.12: by its start, stop and step
            stack.extend((item.start, item.stop, item.step))
    return cost


def admit(
    keys: Iterable[Any], seen: dict[int, list[Any]] | None = None, cost: list[int] | None = None
) -> dict[int, list[Any]]:
    """Check `keys`, about to enter a set or dict whose keys so far are `seen` (their distinct keys per
    hash): a key that costs more than KEY_COST to hash (`key_cost`), or more than SAME_HASH distinct keys
    with one hash, is NotPlainData. `cost` ([spent, allowed]), when given, adds up every key's hashing
    cost: a key reached a million times through the pickle's memo costs a million times. Returns the
    updated `seen`."""
    seen = {} if seen is None else seen
    for key in keys:
        spent = key_cost(key)
        if spent > KEY_COST:
            raise NotPlainData(
                f"a set or dict key that costs more than {KEY_COST} to hash (a deep or huge key)"
            )
        if cost is not None:
            cost[0] += spent
            if cost[0] > cost[1]:
                raise NotPlainData(f"set and dict keys that cost more than {cost[1]} to hash in all")
        same = seen.setdefault(hash(key), [])
        if not any(key == other for other in same):
            same.append(key)
            if len(same) > SAME_HASH:
                raise NotPlainData(f"more than {SAME_HASH} distinct keys with one hash (a hash flood)")
    return seen


def plain_set(items: Iterable[Any] = (), cost: list[int] | None = None) -> set:
    """`set(items)` after `admit` (with `cost`, as there): building it costs at most SAME_HASH probes per
    item."""
    items = list(items)
    admit(items, None, cost)
    return set(items)


def plain_frozenset(items: Iterable[Any] = (), cost: list[int] | None = None) -> frozenset:
    return frozenset(plain_set(items, cost))


def _bytearray(source: bytes | str = b"", encoding: str | None = None) -> bytearray:
    """A bytearray from the arguments pickle gives it (its bytes; protocol 2: text and "latin-1") only."""
    if isinstance(source, bytes) and encoding is None:
        return bytearray(source)
    if isinstance(source, str) and encoding == "latin-1":
        return bytearray(source, encoding)
    raise pickle.UnpicklingError("bytearray is plain data only when built from its bytes")


# besides set and frozenset, which the unpickler builds itself (`_PlainUnpickler.find_class`)
_ALLOWED = {
    ("builtins", "bytearray"): _bytearray,
    ("builtins", "complex"): complex,  # from two floats (NEWOBJ) or a string: linear in the pickle
    ("builtins", "slice"): slice,
}


# number opcodes decoded in runs: record size (opcode + argument), byte order, struct code
_RUNS = {
    pickle.BINFLOAT[0]: (9, ">", "d"),
    pickle.BININT[0]: (5, "<", "i"),
    pickle.BININT1[0]: (2, "<", "B"),
    pickle.BININT2[0]: (3, "<", "H"),
}
_RUN_WINDOWS = (16, 4096)  # records looked at for a run, then (when all 16 are) the most one call decodes


def _number_loader(opcode: int) -> Callable[[Any], None]:
    """The unpickler's handler of one number opcode: the number alone, as pickle reads it, unless the
    next three records are the same opcode (a run: `_load_run`). A pair of floats costs a 3-byte slice."""
    size, order, code = _RUNS[opcode]
    single, ahead = struct.Struct(order + code).unpack, bytes((opcode,)) * 3

    def load(self: _PlainUnpickler) -> None:
        start = self._file.tell() - 1  # the opcode just read
        if self._blob[start + size : start + 4 * size : size] == ahead:
            self._load_run(opcode, start)
        else:
            self.append(single(self.read(size - 1))[0])

    return load


class _PlainUnpickler(pickle._Unpickler):
    """The pure-Python unpickler with `admit` at every opcode that fills a set or a dict."""

    def __init__(self, blob: bytes, budget: int) -> None:
        self._blob, self._file = blob, io.BytesIO(blob)
        super().__init__(self._file)
        self._seen: dict[int, dict[int, list[Any]]] = {}  # id(set or dict) -> its keys per hash
        self._key_cost = [0, budget]  # every key's hashing cost so far, and the most allowed

    def load(self) -> Any:
        """pickle's opcode loop, reading the in-memory pickle directly. The base class reads each opcode
        through its `_Unframer` (Python calls around every read); a FRAME opcode is only a hint for
        streaming readers, so here it is skipped (`load_frame`) and every read is BytesIO's own."""
        self.read, self.readinto, self.readline = self._file.read, self._file.readinto, self._file.readline
        self.metastack, self.stack, self.proto = [], [], 0
        self.append = self.stack.append
        read, dispatch = self.read, self.dispatch
        try:
            while True:
                opcode = read(1)
                if not opcode:
                    raise EOFError("the pickle ends before its STOP")
                dispatch[opcode[0]](self)
        except pickle._Stop as stop:
            return stop.value

    def load_frame(self) -> None:
        self.read(8)  # the frame's length: the bytes follow in place

    def _load_run(self, opcode: int, start: int) -> None:
        """A run of number opcodes (BINFLOAT, BININT, BININT1, BININT2) from `start`, where at least four
        begin, decoded at once: a list of a million floats is a run of a million 9-byte records. The
        run's opcodes are found by slicing every record's first byte; `struct` skips them as pad bytes.
        Numbers are leaves, so nothing is lost to the checks: sets and dicts still admit them one by one."""
        size, order, code = _RUNS[opcode]
        run = 0
        for window in _RUN_WINDOWS:
            records = self._blob[start : start + size * window : size]
            run = len(records) - len(records.lstrip(bytes((opcode,))))
            if run < window:
                break
        if start + run * size > len(self._blob):
            run -= 1  # the last record is cut short: it is read the usual way (an EOF error)
        self.stack.extend(struct.unpack_from(order + ("x" + code) * run, self._blob, start))
        self._file.seek(start + run * size)

    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":  # protocol 2 names builtins so
            module = "builtins"
        if (module, name) == ("builtins", "set"):  # REDUCE builds it here: its keys count towards the cost
            return functools.partial(plain_set, cost=self._key_cost)
        if (module, name) == ("builtins", "frozenset"):
            return functools.partial(plain_frozenset, cost=self._key_cost)
        if (module, name) in _ALLOWED:
            return _ALLOWED[module, name]
        raise pickle.UnpicklingError(f"{module}.{name} is not plain data")

    def _admit(self, container: Any, keys: Iterable[Any]) -> None:
        self._seen[id(container)] = admit(keys, self._seen.get(id(container)), self._key_cost)

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        self._admit(target, items)
        target.update(items)

    def load_frozenset(self) -> None:
        items = self.pop_mark()  # first: it rebinds self.append to the enclosing stack
        self.append(plain_frozenset(items, self._key_cost))

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
    dispatch[pickle.FRAME[0]] = load_frame
    for _opcode in _RUNS:
        dispatch[_opcode] = _number_loader(_opcode)
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


# the containers of plain data: decoded values are of these exact types, never subclasses
_BRANCHES = frozenset((dict, slice, *_CONTAINERS))


def within(value: Any, budget: int, distinct: int | None = None) -> bool:
    """Does `value`, as a tree, have at most `budget` nodes (as `nodes` counts them: a shared reference
    each time it is reached; a cycle is an infinite tree)? Leaves are counted by their container's length,
    never visited one by one (`compress` keeps the branches, at C speed). `distinct` bounds the number of
    containers the value holds (a pickle's length: each needs an opcode): a walk that reaches more has
    met shared references, and the count goes on by `_within_shared`, which sizes each container once."""
    if type(value) not in _BRANCHES:
        return True
    seen, reached, stack, is_branch = 1, 0, [value], _BRANCHES.__contains__
    while stack:
        children = _children(stack.pop())
        seen += len(children)
        reached += 1
        if seen > budget:
            return False
        if distinct is not None and reached > distinct:
            return _within_shared(value, budget)
        stack.extend(compress(children, map(is_branch, map(type, children))))
    return True


def _within_shared(value: Any, budget: int) -> bool:
    """`within` for values with shared references: each container's tree size is computed once (by id,
    depth first), so 2**60 nodes made of 60 shared lists cost 60 steps."""
    size: dict[int, int] = {}  # id -> tree size (at most budget + 1), once a container's subtree is done
    open_: set[int] = set()  # ids whose subtree is being counted: reaching one again is a cycle
    # (container, None) to expand; (container, (its leaves, its branches)) once expanded
    stack: list[tuple[Any, tuple[int, list] | None]] = [(value, None)]
    is_branch = _BRANCHES.__contains__
    while stack:
        item, expanded = stack.pop()
        key = id(item)
        if expanded is not None:  # every branch below it is counted
            leaves, branches = expanded
            size[key] = min(1 + leaves + sum(size[id(branch)] for branch in branches), budget + 1)
            open_.discard(key)
        elif key in open_:
            return False  # a cycle
        elif key not in size:
            children = _children(item)
            branches = list(compress(children, map(is_branch, map(type, children))))
            open_.add(key)
            stack.append((item, (len(children) - len(branches), branches)))
            stack.extend((branch, None) for branch in branches if id(branch) not in size)
    return size[id(value)] <= budget


def _children(item: Any) -> Any:
    if type(item) is dict:
        return (*item.keys(), *item.values())
    if type(item) is slice:
        return (item.start, item.stop, item.step)
    return item


def loads_plain(blob: bytes, budget: int = 10_000_000) -> Any:
    """Decode one pickle as plain data; raises NotPlainData."""
    try:
        value = _PlainUnpickler(blob, budget).load()
    except Exception as error:  # any malformed pickle: UnpicklingError, EOFError, ValueError, ...
        raise NotPlainData(f"{type(error).__name__}: {error}"[:200]) from None
    if not within(value, budget, distinct=len(blob)):
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
