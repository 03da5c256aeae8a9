"""The pty mock arm, read through pyserial exactly like hardware."""

from __future__ import annotations

import threading

import numpy as np

from firmware_interfaces.codec import FrameDecoder
from firmware_interfaces.mock_arm import MockArm
from firmware_interfaces.ports import open_port


def _read_frames(arm: MockArm, count: int) -> list:  # type: ignore[type-arg]
    stop = threading.Event()
    ser = open_port(arm.port, timeout=0.2)
    runner = threading.Thread(target=arm.run, args=(stop,), name="mock-arm")
    try:
        assert arm.wait_for_reader(stop, timeout=5)
        runner.start()
        dec, frames = FrameDecoder(), []
        while len(frames) < count:
            data = ser.read(ser.in_waiting or 1)
            assert data, "mock arm stopped streaming"
            frames += dec.feed(data)
        return frames[:count]
    finally:
        stop.set()
        if runner.is_alive():
            runner.join(timeout=5)
        ser.close()


def test_bounce_plays_back_and_forth_with_continuous_time() -> None:
    t = np.array([0, 1000, 2000, 3000], dtype=np.int64)
    q = np.array([[10], [20], [30], [40]], dtype=np.int64)
    with MockArm(t, q, rate=20.0, bounce=True) as arm:
        frames = _read_frames(arm, 12)
    assert [f.angles_urad[0] for f in frames] == [10, 20, 30, 40, 40, 30, 20, 10, 10, 20, 30, 40]
    assert [f.seq for f in frames] == list(range(12))
    assert np.all(np.diff([f.t_us for f in frames]) > 0)


def test_corruption_is_counted_and_caught_by_the_decoder() -> None:
    n = 400
    t = np.arange(n, dtype=np.int64) * 1000
    q = np.arange(n * 3, dtype=np.int64).reshape(n, 3)
    with MockArm(t, q, rate=50.0, corrupt_rate=0.01, seed=1) as arm:
        stop = threading.Event()
        ser = open_port(arm.port, timeout=0.2)
        assert arm.wait_for_reader(stop, timeout=5)
        arm.run(stop)  # 400 frames at 50x: 8 ms; the pty buffers them
        dec, frames = FrameDecoder(), []
        while True:
            data = ser.read(ser.in_waiting or 1)
            if not data:
                break
            frames += dec.feed(data)
        ser.close()
    assert arm.stats.bytes_corrupted > 0
    assert dec.stats.bad_frames > 0
    for f in frames:  # what got through is exactly what was sent
        assert list(f.angles_urad) == q[f.seq].tolist()


def test_drift_start_and_restart_stamp_like_misbehaving_firmware() -> None:
    t = np.arange(400, dtype=np.int64) * 1000
    q = np.zeros((400, 1), dtype=np.int64)
    start = (1 << 32) - 2_000
    with MockArm(t, q, rate=20.0, drift_ppm=50_000, start_us=start, restart_after_s=0.2) as arm:
        frames = _read_frames(arm, 260)
    # Before the restart: the crystal runs 5 % fast from start_us, and the stamp wraps the u32 (codec: mod 2^32).
    assert [f.t_us for f in frames[:4]] == [(start + round(1000 * i * 1.05)) % (1 << 32) for i in range(4)]
    assert [f.seq for f in frames[:4]] == [0, 1, 2, 3]
    # At 0.2 s of recording time it restarts: 0.1 s of boot with no frames, then seq and clock from zero.
    k = next(i for i, f in enumerate(frames) if i and f.seq == 0)
    assert k == 200 and frames[k - 1].seq == 199
    assert frames[k].t_us == round(100_000 * 1.05) and frames[k + 1].t_us - frames[k].t_us == 1050
    assert arm.stats.restarts == 1 and arm.stats.frames_booting == 100


def test_unplug_and_replug_keep_the_link_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    t = np.arange(10, dtype=np.int64) * 1000
    link = str(tmp_path / "ttyARM")
    with MockArm(t, np.zeros((10, 1), dtype=np.int64), link=link) as arm:
        first = arm.pty
        assert arm.port == link and os.path.realpath(link) == first
        arm.unplug()
        assert not os.path.lexists(link)
        arm._write(b"\x01\x00")
        assert arm.stats.frames_unplugged == 1
        arm.replug()
        assert os.path.realpath(link) == arm.pty
    assert not os.path.lexists(link)
