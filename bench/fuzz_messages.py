"""Hostile messages for the twin server (and the device's reply path): a seeded generator, one category per draw.

Used by ``bench/fuzz_server.py`` (the full campaign) and ``tests/test_fuzz_server.py`` (its fast version). Each
draw is ``(category, frames)``; ``frames`` is what a DEALER sends (the ROUTER adds the identity). Categories cover
issue 10's list: malformed msgpack, wrong types, unknown kinds, deep nesting, oversize, duplicated / reordered /
replayed sequence numbers, NaN / inf / huge values, joint counts that change, and valid-looking traffic.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import msgpack

from twin.schema import MAX_MESSAGE_BYTES, Wire

WIRE = Wire()
NASTY_FLOATS = [float("nan"), float("inf"), float("-inf"), 1e300, -1e300, 1e5, 5e-324, 2.0**64]
NASTY_INTS = [-1, 0, 2**62, 2**63 - 1, -(2**63), 2**64 - 1, 10**12]


def _pack(obj: Any) -> list[bytes]:
    return [msgpack.packb(obj, use_bin_type=True)]


def _value(rng: random.Random, depth: int = 0) -> Any:
    """Any msgpack value, small."""
    pick = rng.randrange(9 if depth < 3 else 6)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.choice([*NASTY_INTS, rng.randrange(-1000, 1000)])
    if pick == 3:
        return rng.choice([*NASTY_FLOATS, rng.uniform(-10, 10)])
    if pick == 4:
        return "".join(rng.choice("abcé\u2603\x00") for _ in range(rng.randrange(8)))
    if pick == 5:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(8)))
    if pick in (6, 7):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {str(rng.randrange(5)): _value(rng, depth + 1) for _ in range(rng.randrange(4))}


def garbage(rng: random.Random) -> list[bytes]:
    return [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))]


def truncated(rng: random.Random) -> list[bytes]:
    body = WIRE.encode("sample", seq=1, t=1, q=[0.1, 0.2], h=0, ts=1)[0]
    return [body[: rng.randrange(1, len(body))]]


def not_a_map(rng: random.Random) -> list[bytes]:
    return _pack(rng.choice([[1, 2], "hello", 42, None, b"\x00" * 8]))


def bad_version(rng: random.Random) -> list[bytes]:
    return _pack({"v": rng.choice([0, 2, "1", None, True, 1.0]), "type": "hb", "ts": 1})


def unknown_kind(rng: random.Random) -> list[bytes]:
    return _pack({"v": 1, "type": rng.choice(["launch", "", "HELLO", 7, None, ["sample"], "x" * 300]), "ts": 1})


def wrong_types(rng: random.Random) -> list[bytes]:
    kind = rng.choice(["hello", "sample", "hb", "bye", "pred", "pong", "welcome", "error"])
    fields = {k: _value(rng) for k in rng.sample(["dev", "joints", "seq", "t", "q", "h", "ts", "d", "a", "k",
                                                 "rate_hz", "urdf", "policy", "stats", "preds"], 5)}
    return _pack({"v": 1, "type": kind, **fields})


def deep_nesting(rng: random.Random) -> list[bytes]:
    depth = rng.choice([200, 2000, 20000])
    return [b"\x91" * depth + b"\xc0"]  # fixarray(1) nested ``depth`` deep


def oversize(rng: random.Random) -> list[bytes]:
    # Above the wire limit (counted "oversize"); the transport limit (MAXMSGSIZE) is exercised separately.
    return [b"\xa1" + b"x" * (MAX_MESSAGE_BYTES + rng.randrange(1, 1000))]


def many_frames(rng: random.Random) -> list[bytes]:
    return [WIRE.encode("hb", ts=1)[0]] * rng.randrange(2, 6)


def hostile_sample(rng: random.Random) -> list[bytes]:
    joints = rng.randrange(1, 8)
    q: list[Any] = [rng.uniform(-1, 1) for _ in range(joints)]
    d: list[Any] | None = None
    what = rng.randrange(5)
    if what == 0:
        q[rng.randrange(joints)] = rng.choice(NASTY_FLOATS)
    elif what == 1:
        d = [rng.choice(NASTY_FLOATS) for _ in range(2 * joints)]
    elif what == 2:
        q = [rng.uniform(-1, 1) for _ in range(rng.choice([0, 33, 100]))]
    elif what == 3:
        q[0] = rng.choice(["1", None, True, [1.0], {"x": 1}])
    fields: dict[str, Any] = {"seq": rng.choice(NASTY_INTS), "t": rng.choice(NASTY_INTS), "q": q,
                              "h": rng.choice([*NASTY_INTS, 0, 20000]), "ts": rng.randrange(10**9)}
    if d is not None:
        fields["d"] = d
    if rng.random() < 0.3:
        fields["a"] = rng.choice([*NASTY_INTS, 1.5, "x"])
    return _pack({"v": 1, "type": "sample", **fields})


class SessionPlay:
    """Valid-looking traffic of one hostile identity: hello, then samples whose joint count changes, whose
    sequence numbers and times repeat, go backwards or are replayed; heartbeats with junk stats; byes."""

    def __init__(self) -> None:
        self.t = 1_000_000
        self.sent: list[list[bytes]] = []

    def __call__(self, rng: random.Random) -> list[bytes]:
        pick = rng.randrange(10)
        if pick == 0:
            return WIRE.encode("hello", dev=f"fuzz{rng.randrange(50)}", joints=[f"j{i}" for i in
                               range(rng.randrange(1, 8))], rate_hz=1000.0, urdf="u", policy="fuzz")
        if pick == 1:
            return WIRE.encode("hb", ts=rng.randrange(10**9), stats={str(i): _value(rng) for i in range(40)})
        if pick == 2:
            return WIRE.encode("bye")
        if pick == 3 and self.sent:
            return rng.choice(self.sent)  # replayed
        self.t += rng.choice([1000, 1000, 0, -5000])  # duplicated and reordered times
        frames = WIRE.encode("sample", seq=rng.randrange(100), t=self.t, q=[rng.uniform(-1, 1) for _ in
                             range(rng.choice([1, 2, 3, 7]))], h=20_000, ts=rng.randrange(10**9),
                             a=rng.randrange(100))
        if len(self.sent) < 64:
            self.sent.append(frames)
        return frames


def generator(seed: int) -> Callable[[], tuple[str, list[bytes]]]:
    """A seeded source of ``(category, frames)`` draws, hostile categories mixed with valid-looking sessions."""
    rng = random.Random(seed)
    play = SessionPlay()
    cats: list[tuple[str, Callable[[random.Random], list[bytes]]]] = [
        ("garbage", garbage), ("truncated", truncated), ("not-a-map", not_a_map), ("bad-version", bad_version),
        ("unknown-kind", unknown_kind), ("wrong-types", wrong_types), ("deep-nesting", deep_nesting),
        ("oversize", oversize), ("many-frames", many_frames), ("hostile-sample", hostile_sample),
        ("session-play", play), ("session-play", play), ("session-play", play)]

    def draw() -> tuple[str, list[bytes]]:
        name, make = rng.choice(cats)
        if name == "oversize" and rng.random() < 0.9:  # 64 KiB each: keep them a small share of the bytes
            name, make = "garbage", garbage
        return name, make(rng)

    return draw


def hostile_reply(rng: random.Random) -> list[bytes]:
    """What a broken or hostile server might send a device: odd predictions, wrong kinds, garbage."""
    pick = rng.randrange(6)
    if pick == 0:
        return garbage(rng)
    if pick == 1:
        return deep_nesting(rng)
    if pick == 2:
        return wrong_types(rng)
    item = [rng.choice([1, 2, 1.5, "x", None, 2**63]), rng.choice([0, 1000, "t", None]),
            rng.choice([0, 20_000, -1, 10**9]), rng.choice([1, 2, 0, 9, "p"]),
            [rng.choice([0.0, 0.1, *NASTY_FLOATS]) for _ in range(rng.choice([0, 1, 2, 4, 7]))]]
    if rng.random() < 0.5:
        item.append(rng.choice([0, 1.5, "rx", 2**63]))
    fields: dict[str, Any] = {"seq": rng.choice([1, "s", None]), "ts": rng.choice([1, 1.5, None]),
                              "rx": rng.choice([0, "r", 2**63]), "preds": rng.choice([[item], [item] * 70, [], item])}
    if rng.random() < 0.5:
        fields["epoch"] = rng.choice([1, -1, "e", 2**63 - 1])
    kind = rng.choice(["pred", "pred", "pong", "welcome", "error", "hello", "sample"])
    return _pack({"v": 1, "type": kind, **fields})
