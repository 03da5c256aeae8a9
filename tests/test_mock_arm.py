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
