"""device.reader.SerialReader on a real pty: decoding, clock unwrap, corruption, loss, port loss and reconnect.

Frames are made with the firmware codec and written into the pty master; the reader opens the slave by path
exactly as it opens ``/dev/ttyACM0``. The reader is reached through a symlink (like a udev ``/dev/armtwin``
rule), so a "re-plugged" arm (a new pty) can appear at the same path. Every wait is on a condition with a
timeout: a broken reader fails the test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import struct
import threading
import tty
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import serial
from cobs import cobs

import device.reader as reader_mod
from device.reader import Sample, SerialReader
from firmware_interfaces.codec import FLAG_ESTOP, PROTOCOL_VERSION, crc16_ccitt, encode_frame
from firmware_interfaces.ports import open_port

TIMEOUT_S = 5.0
U32 = 1 << 32


class Pty:
    """A pty pair whose master the test writes frames into; the slave end is left for the reader to open."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)  # no line discipline: 0x00 must pass untouched
        self.path = os.ttyname(slave)
        os.close(slave)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view):]

    def close(self) -> None:
        """Unplug: the reader's next read on the slave fails (EIO)."""
        if self.master >= 0:
            os.close(self.master)
            self.master = -1


class Watch:
    """Wraps ``open_port`` (as the reader calls it) to record each attempt and wake the test on each success."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.attempts = 0
        self.opens = 0
        self.connected_at_attempt: list[bool] = []  # reader.connected at each attempt after the first
        self.error_at_attempt: list[str] = []  # reader.last_error at each attempt after the first
        self.reader: SerialReader | None = None

    def __call__(self, path: str, baudrate: int) -> serial.SerialBase:
        assert self.reader is not None
        with self.cond:
            self.attempts += 1
            if self.attempts > 1:
                self.connected_at_attempt.append(self.reader.connected.is_set())
                self.error_at_attempt.append(self.reader.last_error)
            self.cond.notify_all()
        ser = open_port(path, baudrate)  # raises PortError while the port is missing
        with self.cond:
            self.opens += 1
            self.cond.notify_all()
        return ser

    def wait(self, predicate: Callable[[], bool], what: str) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, TIMEOUT_S), f"timed out waiting for {what}"


class Rig:
    """A started reader on a symlinked pty, with a condition the reader's ``on_data`` callback notifies."""

    def __init__(self, link: Path, watch: Watch) -> None:
        self.link = link
        self.watch = watch
        self.data = threading.Condition()
        self.got: list[Sample] = []
        self.reader = SerialReader(str(link), on_data=self._on_data, reconnect_s=0.01)
        watch.reader = self.reader

    def _on_data(self) -> None:
        with self.data:
            self.data.notify_all()

    def point_at(self, pty: Pty | None) -> None:
        """Make the reader's path lead to ``pty`` (atomically), or to nothing (the arm is unplugged)."""
        tmp = self.link.with_name(self.link.name + ".new")
        if pty is None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
            return
        os.symlink(pty.path, tmp)
        os.replace(tmp, self.link)

    def wait_samples(self, n: int) -> list[Sample]:
        """Wait until ``n`` samples in total have been read; returns all of them, in order."""
        return self.wait_until(lambda got: len(got) >= n, f"{n} samples")

    def wait_until(self, done: Callable[[list[Sample]], bool], what: str) -> list[Sample]:
        def ready() -> bool:
            self.got.extend(self.reader.drain())
            return done(self.got)

        with self.data:
            assert self.data.wait_for(ready, TIMEOUT_S), f"timed out waiting for {what}; got {self.got}"
        return self.got


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    watch = Watch()
    monkeypatch.setattr(reader_mod, "open_port", watch)
    r = Rig(tmp_path / "ttyARM", watch)
    yield r
    r.reader.stop()
    assert not r.reader._thread.is_alive(), "reader thread did not stop"


@pytest.fixture
def ptys() -> Iterator[Callable[[], Pty]]:
    made: list[Pty] = []

    def make() -> Pty:
        made.append(Pty())
        return made[-1]

    yield make
    for p in made:
        p.close()


def connect(rig: Rig, pty: Pty, opens: int = 1) -> None:
    rig.point_at(pty)
    if opens == 1:
        rig.reader.start()
    rig.watch.wait(lambda: rig.watch.opens >= opens, f"open #{opens}")


def frame_with_bad_crc(seq: int, t_us: int, angles: list[int]) -> bytes:
    """A well-framed (COBS + 0x00) frame whose CRC does not match its payload: bytes damaged on the wire."""
    payload = struct.pack("<BBIIB", PROTOCOL_VERSION, 0, seq, t_us, len(angles)) + struct.pack(
        f"<{len(angles)}i", *angles)
    body = payload + struct.pack("<H", crc16_ccitt(payload) ^ 0x5A5A)
    return bytes(cobs.encode(body)) + b"\x00"


def test_samples_decoded_in_order_with_q_in_radians(rig: Rig, ptys: Callable[[], Pty]) -> None:
    arm = ptys()
    connect(rig, arm)
    angles = [[1_000_000 * i, -2_500_000 + i, 3 * i] for i in range(50)]
    arm.write(b"".join(encode_frame(i, 10_000 + 1000 * i, a) for i, a in enumerate(angles)))
    got = rig.wait_samples(50)
    assert [s.seq for s in got] == list(range(50))
    assert [s.t_us for s in got] == [10_000 + 1000 * i for i in range(50)]
    np.testing.assert_allclose(np.stack([s.q for s in got]), np.asarray(angles) * 1e-6, rtol=0, atol=1e-12)
    assert all(b.host_us >= a.host_us for a, b in itertools.pairwise(got))
    st = rig.reader.decoder.stats
    assert (st.frames_ok, st.frames_lost, st.bad_frames, rig.reader.time_resets) == (50, 0, 0, 0)
    assert rig.reader.connected.is_set()


def test_u32_firmware_clock_wrap_is_unwrapped(rig: Rig, ptys: Callable[[], Pty]) -> None:
    arm = ptys()
    connect(rig, arm)
    t_true = [U32 - 3000 + 1000 * i for i in range(6)]  # crosses 2**32 µs (71.6 min) between i=2 and i=3
    arm.write(b"".join(encode_frame(i, t, [i]) for i, t in enumerate(t_true)))  # the codec sends t mod 2**32
    got = rig.wait_samples(6)
    assert [s.t_us for s in got] == t_true
    assert rig.reader.time_resets == 0  # a wrap is not a firmware restart


def test_corrupt_frame_is_counted_and_the_decoder_resyncs(rig: Rig, ptys: Callable[[], Pty]) -> None:
    arm = ptys()
    connect(rig, arm)
    arm.write(encode_frame(0, 0, [10, 20]) + frame_with_bad_crc(1, 1000, [11, 21]) + b"\x17\x2a\x00"
              + encode_frame(2, 2000, [12, 22]) + encode_frame(3, 3000, [13, 23]))
    got = rig.wait_samples(3)
    assert [s.seq for s in got] == [0, 2, 3]
    np.testing.assert_allclose(got[1].q, [12e-6, 22e-6], rtol=0, atol=1e-12)
    st = rig.reader.decoder.stats
    assert st.crc_errors == 1
    assert st.bad_frames == 2  # the CRC-damaged frame and the 2-byte garbage run
    assert st.frames_lost == 1  # seq 1 never arrived intact
    assert st.frames_ok == 3


def test_sequence_gap_counts_lost_frames(rig: Rig, ptys: Callable[[], Pty]) -> None:
    arm = ptys()
    connect(rig, arm)
    seqs = [0, 1, 2, 6, 7, 9]
    arm.write(b"".join(encode_frame(s, 1000 * s, [s]) for s in seqs))
    got = rig.wait_samples(len(seqs))
    assert [s.seq for s in got] == seqs
    st = rig.reader.decoder.stats
    assert st.frames_lost == 3 + 1
    assert st.bad_frames == 0 and st.resets == 0


def test_estop_flag_is_reported(rig: Rig, ptys: Callable[[], Pty]) -> None:
    arm = ptys()
    connect(rig, arm)
    arm.write(encode_frame(0, 0, [1]) + encode_frame(1, 1000, [1], FLAG_ESTOP) + encode_frame(2, 2000, [1],
                                                                                           FLAG_ESTOP))
    rig.wait_samples(3)
    assert rig.reader.estop and rig.reader.estop_frames == 2
    arm.write(encode_frame(3, 3000, [1]))
    rig.wait_samples(4)
    assert not rig.reader.estop and rig.reader.estop_frames == 2


def test_port_loss_clears_connected_and_reconnects_at_the_same_path(rig: Rig, ptys: Callable[[], Pty]) -> None:
    first = ptys()
    connect(rig, first)
    first.write(encode_frame(0, 5_000_000, [1]) + encode_frame(1, 5_001_000, [2]))
    rig.wait_samples(2)
    # Unplug: the path leads nowhere and the old pty hangs up. The reader must notice, say so and keep retrying.
    rig.point_at(None)
    first.close()
    rig.watch.wait(lambda: rig.watch.attempts >= 3, "two reopen attempts")
    assert rig.watch.connected_at_attempt[:2] == [False, False]
    assert not rig.reader.connected.is_set()
    assert rig.watch.error_at_attempt[0].startswith(f"port {rig.link} lost:")
    assert "no such device" in rig.watch.error_at_attempt[1]
    assert rig.reader.port_errors >= 2  # the loss and at least one failed reopen
    # Re-plug: a restarted arm (seq and firmware time from 0) at the same path.
    second = ptys()
    connect(rig, second, opens=2)
    assert rig.reader.connected.wait(TIMEOUT_S)  # set just after the open returns
    second.write(b"".join(encode_frame(i, 1000 * i, [10 + i]) for i in range(3)))
    got = rig.wait_samples(5)
    assert [s.seq for s in got] == [0, 1, 0, 1, 2]
    np.testing.assert_allclose([s.q[0] for s in got[2:]], [10e-6, 11e-6, 12e-6], rtol=0, atol=1e-12)
    # Device time continues across the firmware restart where the host clock puts it (the seam is the time the
    # cable was out, no jump back and none of the restarted clock's zero), and it is counted as a gap.
    t = [s.t_us for s in got]
    assert t[:2] == [5_000_000, 5_001_000] and t[3] - t[2] == t[4] - t[3] == 1000
    host_gap = got[2].host_us - got[1].host_us
    assert 1000 <= t[2] - t[1] <= host_gap + 1000
    assert rig.reader.time_resets == 1 and rig.reader.reconnects == 1
    assert [(g.after_t_us, g.t_us, g.reason) for g in rig.reader.gaps] == [(t[1], t[2], "restart")]
    assert rig.reader.decoder.stats.resets == 1  # a seq restart, not 4 billion lost frames
    assert rig.reader.decoder.stats.frames_lost == 0


def test_missing_port_at_start_is_retried_until_it_appears(rig: Rig, ptys: Callable[[], Pty]) -> None:
    rig.reader.start()  # nothing at the path yet
    rig.watch.wait(lambda: rig.watch.attempts >= 2, "a retry")
    assert rig.watch.opens == 0 and not rig.reader.connected.is_set()
    assert "no such device" in rig.reader.last_error
    arm = ptys()
    rig.point_at(arm)
    rig.watch.wait(lambda: rig.watch.opens >= 1, "the open")
    arm.write(encode_frame(0, 0, [7]))
    assert rig.wait_samples(1)[0].seq == 0


def test_partial_frame_of_a_lost_port_does_not_spoil_the_first_frame_after_reconnect(
        rig: Rig, ptys: Callable[[], Pty]) -> None:
    first = ptys()
    connect(rig, first)
    cut = encode_frame(1, 1000, [2])
    first.write(encode_frame(0, 0, [1]) + cut[: len(cut) // 2])  # the cable is pulled mid-frame
    rig.wait_samples(1)
    second = ptys()
    rig.point_at(second)
    first.close()
    rig.watch.wait(lambda: rig.watch.opens >= 2, "the reopen")
    second.write(encode_frame(2, 2000, [3]) + encode_frame(3, 3000, [4]))  # intact bytes on the new port
    got = rig.wait_until(lambda got: got[-1].seq == 3, "the last frame")  # arrives with or without the bug
    assert [s.seq for s in got] == [0, 2, 3]
    assert rig.reader.decoder.stats.crc_errors == 0


def test_restart_after_2_31_us_of_uptime_is_not_read_as_a_wrap(rig: Rig, ptys: Callable[[], Pty]) -> None:
    """Defect 2 of issue 10: a stamp from 2^31 + 0.5 s falling to 0.1 s is a forward u32 step of ~2^31 µs."""
    arm = ptys()
    connect(rig, arm)
    up = (1 << 31) + 500_000  # 35.8 min of uptime
    arm.write(b"".join(encode_frame(7_000 + i, up + 1000 * i, [i]) for i in range(3)))
    rig.wait_samples(3)
    arm.write(b"".join(encode_frame(i, 100_000 + 1000 * i, [i]) for i in range(3)))  # rebooted: seq, clock from 0
    got = rig.wait_samples(6)
    t = [s.t_us for s in got]
    assert all(b > a for a, b in itertools.pairwise(t))
    assert t[3] - t[2] < 1_000_000  # not the ~2^31 µs (2147 s) jump a wrap would make
    assert rig.reader.time_resets == 1 and [g.reason for g in rig.reader.gaps] == ["restart"]


def test_a_stamp_beyond_the_host_clock_is_a_restart_even_with_continuous_seq(rig: Rig, ptys: Callable[[], Pty]) -> None:
    arm = ptys()
    connect(rig, arm)
    up = (1 << 31) + 500_000
    arm.write(b"".join(encode_frame(i, up + 1000 * i, [i]) for i in range(3)))
    rig.wait_samples(3)
    arm.write(encode_frame(3, 50_000, [3]))  # the seq goes on, the clock restarted
    got = rig.wait_samples(4)
    assert 0 < got[3].t_us - got[2].t_us < 1_000_000
    assert rig.reader.time_resets == 1


def test_wrap_with_a_host_clock_that_agrees_is_no_restart(rig: Rig, ptys: Callable[[], Pty]) -> None:
    arm = ptys()
    connect(rig, arm)
    for i in range(6):  # one frame per read, so the clock map sees each stamp against the host clock
        arm.write(encode_frame(i, U32 - 2500 + 1000 * i, [i]))
        rig.wait_samples(i + 1)
    assert [s.t_us for s in rig.got] == [U32 - 2500 + 1000 * i for i in range(6)]
    assert rig.reader.time_resets == 0 and not rig.reader.gaps


def test_reader_backlog_is_bounded_and_counts_what_it_dropped(rig: Rig, ptys: Callable[[], Pty]) -> None:
    rig.reader.max_backlog = 10
    arm = ptys()
    connect(rig, arm)
    arm.write(b"".join(encode_frame(i, 1000 * i, [i]) for i in range(25)))
    with rig.data:  # notified after each read that produced samples
        assert rig.data.wait_for(lambda: rig.reader.decoder.stats.frames_ok == 25, TIMEOUT_S)
    assert len(rig.reader.samples) == 10 and rig.reader.backlog_dropped == 15
    assert [s.seq for s in rig.reader.drain()] == list(range(15, 25))


def test_a_usb_selector_is_looked_up_again_when_the_port_comes_back_renamed(
        tmp_path: Path, ptys: Callable[[], Pty], monkeypatch: pytest.MonkeyPatch) -> None:
    """``--port serial:ARM1`` survives a replug that renames the port (ttyACM0 -> ttyACM1): the reader resolves the
    selector at every attempt. The OS's port list is the one thing stood in for (a pty has no USB ids); the ports
    themselves are real ptys at different paths, and the reader opens them as it opens /dev/ttyACM0."""
    import firmware_interfaces.ports as ports_mod
    from firmware_interfaces.ports import PortInfo

    listed: list[PortInfo] = []
    lookups = threading.Condition()
    looked: list[list[str]] = []  # the paths listed at each lookup

    def list_ports() -> list[PortInfo]:
        with lookups:
            looked.append([p.device for p in listed])
            lookups.notify_all()
            return list(listed)

    monkeypatch.setattr(ports_mod, "list_serial_ports", list_ports)
    watch = Watch()
    monkeypatch.setattr(reader_mod, "open_port", watch)
    got: list[Sample] = []
    data = threading.Condition()

    def on_data() -> None:
        with data:
            data.notify_all()

    def wait_samples(n: int) -> list[Sample]:
        def ready() -> bool:
            got.extend(reader.drain())
            return len(got) >= n

        with data:
            assert data.wait_for(ready, TIMEOUT_S), f"timed out waiting for {n} samples; got {got}"
        return got

    reader = SerialReader("serial:ARM1", on_data=on_data, reconnect_s=0.01)
    watch.reader = reader
    first, second = ptys(), ptys()
    assert first.path != second.path
    try:
        listed.append(PortInfo(first.path, 0x2341, 0x0043, "ARM1"))
        reader.start()
        watch.wait(lambda: watch.opens >= 1, "the first open")
        first.write(encode_frame(0, 0, [1]) + encode_frame(1, 1000, [2]))
        wait_samples(2)
        listed.clear()  # unplugged: the adapter is gone from the list and its pty hangs up
        first.close()
        with lookups:
            n = len(looked)
            assert lookups.wait_for(lambda: looked[n:].count([]) >= 2, TIMEOUT_S), "no lookups while unplugged"
        assert "no serial port matches 'serial:ARM1'" in reader.last_error
        listed.append(PortInfo(second.path, 0x2341, 0x0043, "ARM1"))  # back, under another name
        watch.wait(lambda: watch.opens >= 2, "the reopen at the new path")
        second.write(encode_frame(2, 2000, [3]))
        assert [s.seq for s in wait_samples(3)] == [0, 1, 2]
        assert reader.reconnects == 1
    finally:
        reader.stop()
    assert not reader._thread.is_alive()
