"""A flood cannot push a well-behaved device's samples back: the server serves trusted sessions first."""

from __future__ import annotations

from server.sessions import SessionCore
from twin.schema import Wire


def _hello(wire: Wire, dev: str) -> list[bytes]:
    return wire.encode("hello", dev=dev, joints=["j0", "j1"], rate_hz=1000.0, urdf="u.urdf", policy="none")


def _sample(wire: Wire, seq: int) -> list[bytes]:
    return wire.encode("sample", seq=seq, t=seq * 1000, q=[0.1, 0.2], h=10_000, ts=seq)


def test_trusted_sessions_are_served_first_and_each_device_keeps_its_order() -> None:
    wire = Wire(None)
    replies: list[tuple[bytes, str, int]] = []

    def reply(ident: bytes, frames: list[bytes]) -> bool:
        msg = wire.decode(frames)
        replies.append((ident, msg["type"], int(msg.get("seq", -1))))
        return True

    core = SessionCore(reply)
    good, junk = b"good", b"junk"
    core.receive_batch([([good, *_hello(wire, "good")], 1), ([junk, *_hello(wire, "junk")], 2)])
    for i in range(5):  # the junk sender's record: most of what it sends is dropped
        core.receive([junk, b"\xc1not msgpack"], 10 + i)
    assert core.sessions[good].trusted and not core.sessions[junk].trusted
    assert core.stats.dropped and sum(core.stats.dropped.values()) == 5

    replies.clear()
    batch = [([junk, *_sample(wire, 1)], 100), ([junk, *_sample(wire, 2)], 101),
             ([good, *_sample(wire, 1)], 102), ([good, *_sample(wire, 2)], 103)]
    core.receive_batch(batch)
    order = [(ident, seq) for ident, kind, seq in replies if kind == "pred"]
    assert [ident for ident, _ in order] == [good, good, junk, junk]  # read last, answered first
    assert [seq for ident, seq in order if ident == junk] == [1, 2]  # a device's own order is kept


def test_a_replaced_session_keeps_its_senders_record() -> None:
    wire = Wire(None)
    core = SessionCore(lambda ident, frames: True)
    core.receive([b"x", *_hello(wire, "x")], 1)
    for i in range(3):
        core.receive([b"x", b"\xc1"], 2 + i)
    again = wire.encode("hello", dev="x-renamed", joints=["j0"], rate_hz=1000.0, urdf="u.urdf", policy="none")
    core.receive([b"x", *again], 9)  # a new session (name and joints changed) from the same identity
    assert core.sessions[b"x"].device_id == "x-renamed" and not core.sessions[b"x"].trusted


def test_a_trusted_sample_that_arrives_mid_flood_waits_for_one_slice_only() -> None:
    """The server looks at its socket again between slices of untrusted messages: a real device's sample that
    arrives while a batch of junk is being served is answered before the rest of that batch."""
    from server.sessions import SLICE

    wire = Wire(None)
    answered: list[tuple[bytes, int]] = []

    def reply(ident: bytes, frames: list[bytes]) -> bool:
        msg = wire.decode(frames)
        if msg["type"] == "pred":
            answered.append((ident, int(msg["seq"])))
        return True

    core = SessionCore(reply)
    good, new = b"good", b"new"
    core.receive([good, *_hello(wire, "good")], 1)
    flood = [([new, *_hello(wire, "new")], 2)] + [([new, *_sample(wire, i)], 10 + i) for i in range(1, 4 * SLICE)]
    arrivals = [[([good, *_sample(wire, 1)], 500)], [([new, *_sample(wire, 999)], 501)]]
    core.receive_batch(flood, more=lambda: arrivals.pop(0) if arrivals else [])
    assert answered.index((good, 1)) <= SLICE  # after the first slice of the flood, not after all of it
    # The newcomer became trusted with its hello, but its own order holds: the late sample comes after the rest.
    news = [seq for ident, seq in answered if ident == new]
    assert news == sorted(news) and news[-1] == 999 and len(news) == 4 * SLICE - 1 + 1
