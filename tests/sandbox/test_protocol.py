"""The parent's decoding of what a program returns: plain data only, at a cost bounded by the pickle's size.

Programs write these pickles (tests/sandbox/test_adversarial.py sends them through the real sandbox); here
the decoder is checked on its own, at every pickle protocol the harness or a forged frame can use.
"""

from __future__ import annotations

import contextlib
import pickle
import random

import pytest

from planlift.sandbox.oracles import _text_longer
from planlift.sandbox.protocol import (
    KEY_COST,
    SAME_HASH,
    NotPlainData,
    key_cost,
    loads_plain,
    nodes,
    plain_set,
    within,
)

M = 2**61 - 1  # every k * M hashes to 0
PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)
HONEST = [
    {1, 2, -1, -2},  # -1 and -2 share a hash
    frozenset({"a", (1, 2.5), frozenset({3})}),
    {"k": [1, {2: b"x"}], (1, 2): None, 3.5: {4}},
    bytearray(b"\x00\xffab"),
    complex(1.5, -2),
    [slice(1, 9, 2), True, None, "text", 10**40],
    {k * M for k in range(1, SAME_HASH + 1)},  # a few colliding keys are still data
]


@pytest.mark.parametrize("protocol", range(3, pickle.HIGHEST_PROTOCOL + 1))  # bytes: 3 on (the harness: 4)
def test_plain_data_decodes_as_itself(protocol):
    for value in HONEST:
        decoded = loads_plain(pickle.dumps(value, protocol=protocol))
        assert decoded == value and type(decoded) is type(value)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", ["set", "frozenset", "dict_keys", "nested"])
def test_a_hash_flood_is_refused_at_every_protocol(protocol, kind):
    """SAME_HASH + 1 distinct keys with one hash, through each opcode that fills a set or a dict (EMPTY_SET +
    ADDITEMS, FROZENSET, SETITEMS, SETITEM, DICT, and REDUCE of set / frozenset at protocols 0-3)."""
    keys = [k * M for k in range(1, SAME_HASH + 2)]
    value = {
        "set": set(keys),
        "frozenset": frozenset(keys),
        "dict_keys": dict.fromkeys(keys, 0),
        "nested": [{"inner": frozenset(keys)}],
    }[kind]
    with pytest.raises(NotPlainData, match="hash flood"):
        loads_plain(pickle.dumps(value, protocol=protocol))


def test_equal_keys_are_not_a_flood():
    assert plain_set([5] * 10_000 + [5.0, True, 1]) == {5, 1}
    with pytest.raises(NotPlainData, match="hash flood"):
        plain_set([k * M for k in range(1, 100)])


def _shared_pairs(levels: int) -> tuple:
    """t = (t', t') `levels` deep: `levels` tuples, 2**levels nodes as a tree (its hash walks them all)."""
    pair: tuple = ()
    for _ in range(levels):
        pair = (pair, pair)
    return pair


class _SetOf:
    def __init__(self, key):
        self.key = key

    def __reduce__(self):  # the decoder builds the set: it hashes the key
        return (set, ([self.key],))


@pytest.mark.parametrize(
    "blob",
    [
        b"\x80\x02})" + b"2\x86" * 100 + b"K\x00s.",  # {t: 0}, t = (t', t') 100 deep: 2**100 steps to hash
        b"\x80\x02})"
        + b"\x85" * 300_000
        + b"K\x00s.",  # a key of 300,000 nested tuples: the C hash overflows
        b"\x80\x04(" + b")" + b"\x85" * 300_000 + b"\x91.",  # the same in a frozenset
        pickle.dumps(_SetOf(_shared_pairs(100)), protocol=4),  # set([t]) through REDUCE
        pickle.dumps(_SetOf(_shared_pairs(100)), protocol=0),
    ],
    ids=["dict_key_of_shared_pairs", "deep_dict_key", "deep_frozenset_item", "reduce_set", "reduce_set_p0"],
)
def test_a_key_that_would_cost_its_hash_more_than_the_pickle_is_refused(blob):
    """A tuple's hash is not cached and recurses in C: each of these hung the trainer (2**100 steps, holding
    the GIL) or crashed it (a segfault) from a pickle of a few hundred bytes or KB."""
    with pytest.raises(NotPlainData, match="costs more than"):
        loads_plain(blob)


def test_keys_are_costed_every_time_they_are_reached():
    key = _shared_pairs(12)  # 8,191 tuples as a tree: under KEY_COST
    assert key_cost(key) == 2**13 - 1 <= KEY_COST and key_cost(_shared_pairs(14)) == KEY_COST + 1
    assert loads_plain(pickle.dumps({key: 0}, protocol=4)) == {key: 0}
    with pytest.raises(NotPlainData, match="in all"):  # one key reached 2,000 times through the memo
        loads_plain(pickle.dumps([{key: i} for i in range(2_000)], protocol=4))
    assert key_cost(1 << 6400) == 101  # an int hashes its 64-bit words
    with pytest.raises(NotPlainData, match="costs more than"):
        plain_set([(_shared_pairs(20),)])  # the oracles' sets too


class _Sized:
    def __reduce__(self):
        return bytearray, (2**40,)  # a TiB: refused before anything is allocated


class _Stateful:
    def __reduce__(self):
        return set, ([1],), {"x": 1}  # BUILD: setattr on whatever the stack holds


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_constructors_take_only_what_pickle_gives_them(protocol):
    for value, reason in ((_Sized(), "from its bytes"), (_Stateful(), "no object state")):
        with pytest.raises(NotPlainData, match=reason):
            loads_plain(pickle.dumps(value, protocol=protocol))


def test_the_printed_length_bound_never_exceeds_the_printed_length():
    """`_text_longer(v, n)` (wrap="str" skips printing a value surely longer than the answer) is a lower
    bound: never True at n = len(str(v)); and True for a value that prints in gigabytes."""
    rng = random.Random(0)

    def value(depth):
        kind = rng.randrange(7 if depth else 3)
        return [
            lambda: rng.randrange(-(10**6), 10**6),
            lambda: "".join(rng.choice("ab'\"\\\n") for _ in range(rng.randrange(5))),
            lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(4))),
            lambda: [value(depth - 1) for _ in range(rng.randrange(4))],
            lambda: tuple(value(depth - 1) for _ in range(rng.randrange(4))),
            lambda: {rng.randrange(9): value(depth - 1) for _ in range(rng.randrange(4))},
            lambda: {rng.random() for _ in range(rng.randrange(4))},
        ][kind]()

    for _ in range(2000):
        sample = value(3)
        assert not _text_longer(sample, len(str(sample)))
    assert _text_longer(["x" * 2000] * 10**6, 100)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_large_and_framed_pickles_decode_as_themselves(protocol):
    """Protocols 4 and 5 cut a large pickle into FRAMEs, which the decoder reads through: the same value
    at every protocol, whatever the frames' boundaries split."""
    rng = random.Random(protocol)
    value = [
        [rng.random() for _ in range(50_000)],
        [(str(i), -i, None) for i in range(20_000)],
        {i: [i, float(i)] for i in range(5_000)},
    ]
    if protocol >= 3:  # bytes need protocol 3
        value += [[b"\x00" * (i % 7) for i in range(20_000)], bytearray(rng.randbytes(300_000))]
    decoded = loads_plain(pickle.dumps(value, protocol=protocol))
    assert decoded == value and [type(v) for v in decoded] == [type(v) for v in value]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_cut_or_garbled_pickle_is_not_plain_data(protocol):
    """A frame the program cuts short or garbles fails as NotPlainData, never as another exception."""
    blob = pickle.dumps(HONEST[2], protocol=protocol)
    rng = random.Random(protocol)
    short = [*(0.5 * i for i in range(7)), 3, 2.5, 2.5, 1, 2**20, 2**21, 2**22, 2**23]  # runs of 7, 1, 2, 4
    numbers = short + [0.5 * i for i in range(100)] + [*range(100), *range(300, 400), *range(-100, 0)]
    runs = pickle.dumps(numbers, protocol=protocol)  # runs of BINFLOAT, BININT1, BININT2, BININT
    for whole in (blob, runs):
        for cut in range(len(whole)):
            with pytest.raises(NotPlainData):
                loads_plain(whole[:cut])
    assert loads_plain(runs) == numbers
    for _ in range(300):
        garbled = bytearray(blob)
        garbled[rng.randrange(len(blob))] = rng.randrange(256)
        with contextlib.suppress(NotPlainData):  # some garbled pickles are still data; none may raise else
            loads_plain(bytes(garbled))


def test_values_are_counted_as_trees_and_shared_references_every_time():
    """`within` (the decoder's size bound) agrees with a node-by-node count on values with shared
    references, by either of its walks, and refuses a small pickle of 2**60 nodes, or a cycle, at once."""
    rng = random.Random(0)

    def value(depth):
        if depth == 0 or rng.random() < 0.2:
            return rng.choice(pool)  # leaves, and containers made earlier: shared references
        items = [value(depth - 1) for _ in range(rng.randrange(5))]
        kind = rng.randrange(5)
        made = [
            lambda: items,
            lambda: tuple(items),
            lambda: {i: v for i, v in enumerate(items)},
            lambda: frozenset(v for v in items if isinstance(v, (str, int))),
            lambda: slice(*[*items, None, None, None][:3]),
        ][kind]()
        pool.append(made)
        return made

    for _ in range(500):
        pool: list = [[], (), "s", 1]  # each sample shares its own containers
        sample = value(4)
        size = sum(1 for _ in nodes(sample))
        for distinct in (None, 0, 3):  # the plain walk; the sized-once count at once; after 3 containers
            assert within(sample, size, distinct), distinct
            assert size == 1 or not within(sample, size - 1, distinct), distinct
        assert loads_plain(pickle.dumps(sample, protocol=4), budget=size) == sample
    doubling: list = []
    for _ in range(60):
        doubling = [doubling, doubling]
    cyclic: list = [1]
    cyclic.append({"again": cyclic})  # an infinite tree
    for bomb in (doubling, cyclic):
        with pytest.raises(NotPlainData, match="values"):
            loads_plain(pickle.dumps(bomb, protocol=4))
