"""Property tests for the sans-IO serial codec (firmware_interfaces/codec.py, protocol v1 in FRAME_SPEC.md)."""

from __future__ import annotations

import random
import struct

import pytest
from cobs import cobs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_interfaces.codec import (
    FLAG_ESTOP,
    FLAG_SIM,
    MAX_JOINTS,
    MAX_WIRE_FRAME,
    Frame,
    FrameDecoder,
    FrameError,
    TimestampUnwrapper,
    crc16_ccitt,
    encode_frame,
)

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
U32 = 2**32

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u32 = st.integers(0, U32 - 1)
angles_st = st.lists(
    st.one_of(st.integers(I32_MIN, I32_MAX), st.sampled_from([I32_MIN, I32_MAX, 0, -1, 1, 256, 65536])),
    min_size=1,
    max_size=MAX_JOINTS,
).map(tuple)
frames_st = st.builds(Frame, seq=u32, t_us=u32, angles_urad=angles_st, flags=st.integers(0, 255))


def wire(frame: Frame) -> bytes:
    return encode_frame(frame.seq, frame.t_us, frame.angles_urad, frame.flags)


def raw_wire(payload: bytes) -> bytes:
    """Wire bytes for an arbitrary payload with a *valid* CRC (to reach the checks behind the CRC)."""
    return cobs.encode(payload + struct.pack("<H", crc16_ccitt(payload))) + b"\x00"


def feed_chunked(decoder: FrameDecoder, data: bytes, sizes: list[int]) -> list[Frame]:
    out: list[Frame] = []
    pos, k = 0, 0
    while pos < len(data):
        size = sizes[k % len(sizes)] if sizes else len(data)
        out += decoder.feed(data[pos : pos + size])
        pos += size
        k += 1
    return out


# ----------------------------------------------------------------------------------------------- encode / decode


def test_crc_check_value() -> None:
    assert crc16_ccitt(b"123456789") == 0x29B1


def test_frame_sizes_match_spec() -> None:
    assert len(encode_frame(0, 0, [0] * 6)) == 39
    assert len(encode_frame(0, 0, [0] * 7)) == 43
    assert len(encode_frame(0, 0, [0] * MAX_JOINTS)) == MAX_WIRE_FRAME == 143


def test_payload_layout() -> None:
    w = encode_frame(0x04030201, 0x08070605, [-2, 0x0D0C0B0A], FLAG_ESTOP | FLAG_SIM)
    assert w.endswith(b"\x00") and b"\x00" not in w[:-1]
    body = cobs.decode(w[:-1])
    payload = body[:-2]
    assert payload == bytes([1, 3, 1, 2, 3, 4, 5, 6, 7, 8, 2]) + b"\xfe\xff\xff\xff" + b"\x0a\x0b\x0c\x0d"
    assert body[-2:] == struct.pack("<H", crc16_ccitt(payload))


@SETTINGS
@given(frames_st)
def test_round_trip(frame: Frame) -> None:
    w = wire(frame)
    assert len(w) == 15 + 4 * len(frame.angles_urad) <= MAX_WIRE_FRAME
    assert b"\x00" not in w[:-1] and w[-1] == 0
    decoder = FrameDecoder()
    assert decoder.feed(w) == [frame]
    assert decoder.stats.frames_ok == 1 and decoder.stats.bad_frames == 0 and decoder.stats.bytes_skipped == 0


@SETTINGS
@given(st.integers(-(2**40), 2**40), st.integers(-(2**40), 2**40))
def test_seq_and_t_us_taken_mod_2_32(seq: int, t_us: int) -> None:
    (frame,) = FrameDecoder().feed(encode_frame(seq, t_us, [1, 2, 3]))
    assert (frame.seq, frame.t_us) == (seq % U32, t_us % U32)


@SETTINGS
@given(st.lists(frames_st, min_size=1, max_size=20), st.lists(st.integers(1, 200), min_size=1, max_size=30))
def test_random_chunking_gives_same_frames(frames: list[Frame], sizes: list[int]) -> None:
    stream = b"".join(wire(f) for f in frames)
    decoder = FrameDecoder()
    assert feed_chunked(decoder, stream, sizes) == frames
    assert decoder.stats.bad_frames == 0 and decoder.stats.bytes_skipped == 0
    assert decoder.stats.bytes_in == len(stream)


def test_byte_at_a_time_and_empty_frames() -> None:
    frames = [Frame(seq=i, t_us=1000 * i, angles_urad=(i, -i, 0)) for i in range(5)]
    stream = b"\x00\x00" + b"\x00".join(wire(f) for f in frames) + b"\x00\x00"  # empty frames: legal flushes
    decoder = FrameDecoder()
    assert feed_chunked(decoder, stream, [1]) == frames
    assert decoder.stats.bad_frames == 0 and decoder.stats.bytes_skipped == 0 and decoder.stats.frames_lost == 0


# ------------------------------------------------------------------------------------------- garbage and bit flips


@SETTINGS
@given(
    st.lists(st.tuples(st.binary(max_size=300), frames_st), min_size=1, max_size=10),
    st.lists(st.integers(1, 300), min_size=1, max_size=10),
)
def test_garbage_between_frames_never_yields_corrupt_frames(
    pieces: list[tuple[bytes, Frame]], sizes: list[int]
) -> None:
    # Garbage (any bytes, 0x00 included) is always followed by a 0x00, so it cannot merge with the next frame.
    stream = b"".join(garbage + b"\x00" + wire(frame) for garbage, frame in pieces)
    decoder = FrameDecoder()
    assert feed_chunked(decoder, stream, sizes) == [frame for _, frame in pieces]
    assert decoder.stats.frames_ok == len(pieces)
    assert len(decoder._buf) <= MAX_WIRE_FRAME


@SETTINGS
@given(st.binary(min_size=1, max_size=200).map(lambda b: b.replace(b"\x00", b"\x01")), frames_st, frames_st)
def test_garbage_merged_with_frame_is_counted_not_delivered(garbage: bytes, merged: Frame, after: Frame) -> None:
    # Garbage with no 0x00 right before a frame merges with it: the merged run must be rejected and counted.
    merged_run = garbage + wire(merged)[:-1]
    decoder = FrameDecoder()
    out = decoder.feed(b"\x00" + merged_run + b"\x00" + wire(after))
    assert out == [after]
    if len(merged_run) <= MAX_WIRE_FRAME:
        assert decoder.stats.bad_frames == 1
        assert decoder.stats.bytes_skipped == len(merged_run) + 1
    else:  # too long to be a frame: discarded by the bounded buffer
        assert decoder.stats.bad_frames == 0
        assert decoder.stats.bytes_skipped == len(merged_run)


def _assert_flip_detected(w: bytes, bit: int, follow: bytes) -> None:
    flipped = bytearray(w)
    flipped[bit // 8] ^= 1 << (bit % 8)
    decoder = FrameDecoder()
    # The extra 0x00 terminates the run even when the flip hit the delimiter itself.
    out = decoder.feed(bytes(flipped) + b"\x00" + follow)
    stats = decoder.stats
    assert stats.crc_errors + stats.cobs_errors + stats.length_errors >= 1, (w.hex(), bit)
    assert stats.frames_ok == 1, (w.hex(), bit)  # only the clean frame after it
    assert len(out) == 1 and wire(out[0]) == follow


@SETTINGS
@given(frames_st, st.data())
def test_single_bit_flip_is_detected(frame: Frame, data: st.DataObject) -> None:
    w = wire(frame)
    bit = data.draw(st.integers(0, 8 * len(w) - 1), label="bit")
    _assert_flip_detected(w, bit, encode_frame(7, 7, [7]))


def test_every_single_bit_flip_is_detected() -> None:
    rng = random.Random(11)
    follow = encode_frame(1, 2, [3])
    samples = [
        encode_frame(0, 0, [0]),
        encode_frame(1, 1000, [0] * 6),
        encode_frame(U32 - 1, U32 - 1, [I32_MIN, I32_MAX, -1, 1, 0, 256, 65536], FLAG_ESTOP),
        encode_frame(rng.getrandbits(32), rng.getrandbits(32), [rng.randint(I32_MIN, I32_MAX) for _ in range(32)]),
    ]
    for w in samples:
        for bit in range(8 * len(w)):
            _assert_flip_detected(w, bit, follow)


def test_bounded_buffer_and_recovery() -> None:
    rng = random.Random(5)
    junk = bytes(rng.randint(1, 255) for _ in range(10_000))  # no 0x00 anywhere
    decoder = FrameDecoder()
    pos = 0
    while pos < len(junk):
        size = rng.randint(1, 500)
        assert decoder.feed(junk[pos : pos + size]) == []
        assert len(decoder._buf) <= MAX_WIRE_FRAME
        pos += size
    assert decoder.stats.bytes_skipped == len(junk)
    assert decoder.stats.bad_frames == 0
    # The next 0x00 resynchronises; the frames after it all come through.
    frames = [Frame(seq=i, t_us=i, angles_urad=(i,) * 6) for i in range(3)]
    assert decoder.feed(b"\x00" + b"".join(wire(f) for f in frames)) == frames
    # One huge chunk is bounded as well.
    decoder = FrameDecoder()
    assert decoder.feed(junk) == []
    assert len(decoder._buf) <= MAX_WIRE_FRAME and decoder.stats.bytes_skipped == len(junk)
    assert decoder.feed(junk[:100] + b"\x00" + wire(frames[0])) == [frames[0]]


def test_longest_legal_frame_is_not_cut_by_the_buffer_bound() -> None:
    frame = Frame(seq=1, t_us=2, angles_urad=tuple(range(1, MAX_JOINTS + 1)))
    decoder = FrameDecoder()
    assert feed_chunked(decoder, wire(frame), [1]) == [frame]
    assert decoder.stats.bytes_skipped == 0


# -------------------------------------------------------------------------------- checks behind a valid CRC


def test_other_version_is_counted_and_dropped() -> None:
    v2 = bytes([2, 0]) + struct.pack("<IIB", 1, 2, 1) + struct.pack("<i", 5) + b"\x99\x99"  # v2: extra field
    v0 = bytes([0, 0]) + struct.pack("<IIB", 1, 2, 1) + struct.pack("<i", 5)
    decoder = FrameDecoder()
    assert decoder.feed(raw_wire(v2) + raw_wire(v0) + encode_frame(3, 4, [5])) == [Frame(3, 4, (5,))]
    assert decoder.stats.version_errors == 2 and decoder.stats.bad_frames == 2


@pytest.mark.parametrize(
    ("n", "angles"),
    [(0, 1), (2, 1), (1, 2), (33, 1), (33, 30), (200, 1)],
)
def test_length_must_match_joint_count(n: int, angles: int) -> None:
    payload = bytes([1, 0]) + struct.pack("<IIB", 1, 2, n) + b"\x01\x02\x03\x04" * angles
    decoder = FrameDecoder()
    assert decoder.feed(raw_wire(payload)) == []
    assert decoder.stats.length_errors == 1 and decoder.stats.bad_frames == 1


def test_33_joint_frame_exceeds_the_wire_bound() -> None:
    payload = bytes([1, 0]) + struct.pack("<IIB", 1, 2, 33) + b"\x01\x02\x03\x04" * 33
    run = raw_wire(payload)
    assert len(run) == MAX_WIRE_FRAME + 4
    decoder = FrameDecoder()
    assert decoder.feed(run) == []
    assert decoder.stats.bytes_skipped == len(run) - 1 and decoder.stats.bad_frames == 0


def test_too_short_and_malformed_cobs() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(raw_wire(bytes([1, 0, 0, 0, 0, 0]))) == []
    assert decoder.stats.length_errors == 1
    assert decoder.feed(b"\x05\x01\x00") == []  # code byte promises 4 data bytes, only 1 follows
    assert decoder.stats.cobs_errors == 1


def test_reserved_flag_bits_do_not_reject_a_frame() -> None:
    (frame,) = FrameDecoder().feed(encode_frame(1, 2, [3], flags=0xFC | FLAG_ESTOP))
    assert frame.flags & FLAG_ESTOP and not frame.flags & FLAG_SIM


# ----------------------------------------------------------------------------------------- sequence tracking


def _seq_stats(seqs: list[int]) -> tuple[int, int, int]:
    decoder = FrameDecoder()
    out = decoder.feed(b"".join(encode_frame(s, 0, [0]) for s in seqs))
    assert len(out) == len(seqs)
    return decoder.stats.frames_lost, decoder.stats.resets, decoder.stats.frames_ok


def test_sequence_gaps_wrap_and_restart() -> None:
    assert _seq_stats([0, 1, 2, 5, 6, 10]) == (2 + 3, 0, 6)
    assert _seq_stats([U32 - 2, U32 - 1, 0, 1]) == (0, 0, 4)  # the u32 wrap is not a loss
    assert _seq_stats([U32 - 2, 1]) == (2, 0, 2)  # U32-1 and 0 lost across the wrap
    assert _seq_stats([100, 101, 102, 0, 1, 2]) == (0, 1, 6)  # firmware restart
    assert _seq_stats([5, 5]) == (0, 1, 2)  # repeated seq (replay loop): reset, not loss
    assert _seq_stats([0, 2**30]) == (2**30 - 1, 0, 2)  # largest jump still counted as loss
    assert _seq_stats([0, 2**30 + 1]) == (0, 1, 2)  # a jump larger than 2^30: restart


@SETTINGS
@given(u32, st.lists(st.integers(0, 1000), min_size=1, max_size=50))
def test_frames_lost_counts_every_gap(start: int, gaps: list[int]) -> None:
    seqs = [start]
    for gap in gaps:
        seqs.append((seqs[-1] + 1 + gap) % U32)
    assert _seq_stats(seqs) == (sum(gaps), 0, len(seqs))


def test_corrupt_frames_do_not_touch_sequence_tracking() -> None:
    bad = bytearray(encode_frame(1, 0, [0]))
    bad[3] ^= 0x10  # the low seq byte (a data byte, not a COBS code byte): caught by the CRC
    decoder = FrameDecoder()
    out = decoder.feed(encode_frame(0, 0, [0]) + bytes(bad) + encode_frame(2, 0, [0]))
    assert [f.seq for f in out] == [0, 2]
    assert decoder.stats.crc_errors == 1 and decoder.stats.frames_lost == 1 and decoder.stats.resets == 0


# ------------------------------------------------------------------------------------------ timestamp unwrapping


def test_timestamp_unwrapper_across_wrap() -> None:
    unwrap = TimestampUnwrapper()
    raw = [U32 - 2000, U32 - 1000, 0, 1000, U32 - 1, 5]  # wrap twice: after U32-1000 and after U32-1
    assert [unwrap.unwrap(t) for t in raw] == [U32 - 2000, U32 - 1000, U32, U32 + 1000, 2 * U32 - 1, 2 * U32 + 5]
    unwrap.reset()
    assert unwrap.unwrap(7) == 7


@SETTINGS
@given(u32, st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=100))
def test_timestamp_unwrapper_is_monotonic_for_forward_steps(start: int, steps: list[int]) -> None:
    unwrap = TimestampUnwrapper()
    t = start
    assert unwrap.unwrap(t) == start
    expected = start
    for step in steps:
        t = (t + step) % U32
        expected += step
        assert unwrap.unwrap(t) == expected


# ------------------------------------------------------------------------------------------------ encoder errors


@pytest.mark.parametrize("n", [0, MAX_JOINTS + 1])
def test_encode_rejects_bad_joint_count(n: int) -> None:
    with pytest.raises(FrameError):
        encode_frame(0, 0, [0] * n)


@pytest.mark.parametrize("angle", [I32_MAX + 1, I32_MIN - 1, 2**63])
def test_encode_rejects_angles_outside_int32(angle: int) -> None:
    with pytest.raises(FrameError):
        encode_frame(0, 0, [0, angle])


@pytest.mark.parametrize("flags", [-1, 256])
def test_encode_rejects_flags_outside_a_byte(flags: int) -> None:
    with pytest.raises(FrameError):
        encode_frame(0, 0, [0], flags=flags)


def test_encode_accepts_int32_extremes() -> None:
    (frame,) = FrameDecoder().feed(encode_frame(0, 0, [I32_MIN, I32_MAX]))
    assert frame.angles_urad == (I32_MIN, I32_MAX)
