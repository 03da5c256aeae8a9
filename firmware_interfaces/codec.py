"""Sans-IO codec for serial frame protocol v1 (see FRAME_SPEC.md next to this file).

No I/O and no threads here: the encoder turns one sample into bytes, the decoder turns arbitrary byte chunks into
frames. Both the mock arm and the device agent use it, and the C header produces the same bytes.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass, field

from cobs import cobs

PROTOCOL_VERSION = 1
MAX_JOINTS = 32
FLAG_ESTOP = 0x01
FLAG_SIM = 0x02
FLAG_END = 0x04  # the last frame of a finite replay (mock arm only): the reader ends the run on it
_HEADER = struct.Struct("<BBIIB")  # version, flags, seq, t_us, n
HEADER_SIZE = _HEADER.size  # 11
CRC_SIZE = 2
# Largest legal frame on the wire: COBS adds 1 byte per 254 (payload+crc <= 141 bytes -> 1) plus the delimiter.
MAX_WIRE_FRAME = HEADER_SIZE + 4 * MAX_JOINTS + CRC_SIZE + 1 + 1
_U32 = 1 << 32
_ANGLES = [struct.Struct(f"<{n}i") for n in range(MAX_JOINTS + 1)]  # by joint count: no format built per frame


def seq_restarted(prev_seq: int, seq: int) -> bool:
    """A sequence step that is no loss but a firmware restart (or a looped replay): a repeat, or backwards by more
    than 2^30 frames' worth (12 days of loss at 1 kHz is not plausible; a reset to 0 is)."""
    step = (seq - prev_seq) % _U32
    return step == 0 or step > (1 << 30)


class FrameError(ValueError):
    """A sample cannot be encoded (bad joint count, angle out of int32 range, field out of range)."""


def crc16_ccitt(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF); binascii does it in C."""
    return binascii.crc_hqx(data, 0xFFFF)


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded sample: firmware sequence number, raw u32 microsecond stamp and angles in µrad."""

    seq: int
    t_us: int
    angles_urad: tuple[int, ...]
    flags: int = 0


def encode_frame(seq: int, t_us: int, angles_urad: tuple[int, ...] | list[int], flags: int = 0) -> bytes:
    """Encode one sample into its wire bytes (COBS + trailing 0x00). ``seq`` and ``t_us`` are taken mod 2^32."""
    n = len(angles_urad)
    if not 1 <= n <= MAX_JOINTS:
        raise FrameError(f"joint count {n} outside 1..{MAX_JOINTS}")
    if not 0 <= flags <= 0xFF:
        raise FrameError(f"flags {flags} do not fit in one byte")
    try:
        payload = _HEADER.pack(PROTOCOL_VERSION, flags, seq % _U32, t_us % _U32, n) + struct.pack(
            f"<{n}i", *angles_urad
        )
    except struct.error as exc:  # an angle beyond +-2147 rad
        raise FrameError(f"angle out of int32 µrad range: {exc}") from exc
    body = payload + struct.pack("<H", crc16_ccitt(payload))
    return bytes(cobs.encode(body)) + b"\x00"


@dataclass
class DecoderStats:
    """Counters of everything the decoder saw; nothing is dropped without being counted."""

    frames_ok: int = 0
    crc_errors: int = 0
    cobs_errors: int = 0
    length_errors: int = 0
    version_errors: int = 0
    bytes_skipped: int = 0
    frames_lost: int = 0
    resets: int = 0
    bytes_in: int = 0

    @property
    def bad_frames(self) -> int:
        return self.crc_errors + self.cobs_errors + self.length_errors + self.version_errors

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class FrameDecoder:
    """Turns byte chunks of any size into validated frames.

    ``feed`` never raises on bad input: garbage, truncated or corrupt frames are counted in ``stats`` and skipped,
    and the decoder resynchronises at the next 0x00. The internal buffer never exceeds ``MAX_WIRE_FRAME`` bytes.
    """

    stats: DecoderStats = field(default_factory=DecoderStats)
    _buf: bytearray = field(default_factory=bytearray)
    _last_seq: int | None = None
    _overflowed: bool = False

    def drop_partial(self) -> None:
        """Forget a frame cut short (the port went away mid-frame): the next port's bytes start a new one."""
        self._buf.clear()
        self._overflowed = False

    def feed(self, data: bytes) -> list[Frame]:
        self.stats.bytes_in += len(data)
        out: list[Frame] = []
        start = 0
        while True:
            end = data.find(b"\x00", start)
            if end < 0:
                self._append(data[start:])
                return out
            if not self._buf and not self._overflowed:  # a whole frame within this chunk: no copy into the buffer
                if end - start > MAX_WIRE_FRAME:
                    self.stats.bytes_skipped += end - start
                elif end > start:
                    frame = self._parse(bytes(data[start:end]))
                    if frame is not None:
                        out.append(frame)
                start = end + 1
                continue
            self._append(data[start:end])
            if self._overflowed:
                # The bytes of this over-long run were already counted as skipped; resync here.
                self._overflowed = False
            elif self._buf:
                frame = self._parse(bytes(self._buf))
                if frame is not None:
                    out.append(frame)
            self._buf.clear()
            start = end + 1

    def _append(self, chunk: bytes) -> None:
        if self._overflowed:
            self.stats.bytes_skipped += len(chunk)
            return
        self._buf += chunk
        if len(self._buf) > MAX_WIRE_FRAME:
            self.stats.bytes_skipped += len(self._buf)
            self._buf.clear()
            self._overflowed = True

    def _parse(self, encoded: bytes) -> Frame | None:
        try:
            body = cobs.decode(encoded)
        except cobs.DecodeError:
            self.stats.cobs_errors += 1
            self.stats.bytes_skipped += len(encoded) + 1
            return None
        if len(body) < HEADER_SIZE + 4 + CRC_SIZE:
            self.stats.length_errors += 1
            self.stats.bytes_skipped += len(encoded) + 1
            return None
        payload, crc = body[:-CRC_SIZE], body[-CRC_SIZE:]
        if crc16_ccitt(payload) != int.from_bytes(crc, "little"):
            self.stats.crc_errors += 1
            self.stats.bytes_skipped += len(encoded) + 1
            return None
        version, flags, seq, t_us, n = _HEADER.unpack_from(payload)
        if version != PROTOCOL_VERSION:
            self.stats.version_errors += 1
            self.stats.bytes_skipped += len(encoded) + 1
            return None
        if not 1 <= n <= MAX_JOINTS or len(payload) != HEADER_SIZE + 4 * n:
            self.stats.length_errors += 1
            self.stats.bytes_skipped += len(encoded) + 1
            return None
        angles = _ANGLES[n].unpack_from(payload, HEADER_SIZE)
        self._track_seq(seq)
        self.stats.frames_ok += 1
        return Frame(seq=seq, t_us=t_us, angles_urad=angles, flags=flags)

    def _track_seq(self, seq: int) -> None:
        if self._last_seq is not None:
            step = (seq - self._last_seq) % _U32
            if seq_restarted(self._last_seq, seq):
                self.stats.resets += 1  # firmware restarted or replay looped: not loss
            elif step > 1:
                self.stats.frames_lost += step - 1
        self._last_seq = seq


class TimestampUnwrapper:
    """Unwraps the firmware's u32 microsecond counter (wraps every 71.6 min) into a monotonic int64 timeline.

    Stamps alone cannot tell a wrap from a firmware restart after 2^31 µs of uptime: the device's reader decides
    with the sequence number and the host clock (``device/reader.py``); this is the stamps-only rule for offline use.
    """

    def __init__(self) -> None:
        self._last: int | None = None
        self._offset = 0

    def unwrap(self, t_us: int) -> int:
        if self._last is not None and t_us < self._last and self._last - t_us > (1 << 31):
            self._offset += _U32
        self._last = t_us
        return t_us + self._offset

    def reset(self) -> None:
        self._last = None
        self._offset = 0
