"""Session recording: one self-describing MCAP file per session (opens in Foxglove), crash-safe by chunk.

Layout (all channels JSON with a JSON schema):
* ``/armtwin/samples``: blocks of consecutive samples (<= 1 s each): ``t_us`` (device time, int64 µs), ``seq``,
  ``q_urad`` (int µrad per joint, the wire resolution), optionally ``sent`` (0/1) and ``qhat_urad`` (what the twin
  displayed, ``null`` before the first prediction). Blocks rather than one message per sample keep an hour-long
  session loadable in seconds.
* ``/armtwin/status``: the device's once-a-second status (link, rates, counters).
* ``/armtwin/timing``: what the host's timing decided in a live run, for the simulator to replay
  (``lab.recorded_run``): when each prediction took effect (``pred_t0_us`` -> ``pred_arrival_us``, device time;
  -1: it never came back) and when each send's acknowledgement was checked (``ack_t_us`` -> ``ack_check_us``,
  ``ack_ok``).
* ``/joint_states/measured`` and ``/joint_states/twin``: every sample again, one message each, as
  ``foxglove.JointStates`` (JSON), so Foxglove's Plot panel shows the 1 kHz angles and its 3D panel plays the arm;
  ``device_t_us`` keeps the device time in each.
* metadata ``armtwin``: joint names, units, URDF, policy, source, ``resampled`` flag...; ``summary`` at close;
  ``clock``: the mapping from device time to the wall clock used for log times (below).
Log times are wall-clock UTC ns: ``wall_t0_ns + (t_us - device_t0_us) * 1000`` (``clock`` metadata); files written
before this (log times = device µs from 0) still load the same.
A killed recorder leaves a file readable up to its last flushed chunk (``load`` tolerates a missing footer;
``armtwin recover`` rewrites it complete and indexed).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from mcap.records import Channel, Chunk, Message, Metadata
from mcap.stream_reader import StreamReader, breakup_chunk
from mcap.writer import CompressionType, Writer

FORMAT = "armtwin-session/1"
SAMPLES_TOPIC = "/armtwin/samples"
STATUS_TOPIC = "/armtwin/status"
TIMING_TOPIC = "/armtwin/timing"
TIMING_FIELDS = ("pred_t0_us", "pred_arrival_us", "ack_t_us", "ack_check_us", "ack_ok")
_SAMPLES_SCHEMA = {
    "type": "object",
    "title": "armtwin.SampleBlock",
    "properties": {
        "t_us": {"type": "array", "items": {"type": "integer"}, "description": "device time, microseconds"},
        "seq": {"type": "array", "items": {"type": "integer"}},
        "q_urad": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
        "sent": {"type": "array", "items": {"type": "integer"}},
        "qhat_urad": {"type": "array", "items": {"type": ["array", "null"], "items": {"type": "integer"}}},
    },
    "required": ["t_us", "seq", "q_urad"],
}
_STATUS_SCHEMA = {"type": "object", "title": "armtwin.Status", "additionalProperties": True}
_TIMING_SCHEMA = {
    "type": "object",
    "title": "armtwin.Timing",
    "properties": {name: {"type": "array", "items": {"type": "integer"}} for name in TIMING_FIELDS},
}


MEASURED_TOPIC = "/joint_states/measured"
TWIN_TOPIC = "/joint_states/twin"
# Foxglove's JointStates schema (JSON encoding); device_t_us is ours and ignored by Foxglove.
_JOINT_STATES_SCHEMA = {
    "type": "object",
    "title": "foxglove.JointStates",
    "properties": {
        "timestamp": {"type": "object", "properties": {"sec": {"type": "integer"}, "nsec": {"type": "integer"}}},
        "joints": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "position": {"type": "number"}}}},
        "device_t_us": {"type": "integer", "description": "device time, microseconds"},
    },
}


@dataclass(frozen=True)
class WallClock:
    """Device time -> wall-clock UTC ns for MCAP log times: ``wall_t0_ns`` is the wall time of ``device_t0_us``."""

    device_t0_us: int
    wall_t0_ns: int

    def ns(self, t_us: int) -> int:
        return self.wall_t0_ns + (int(t_us) - self.device_t0_us) * 1000

    def as_meta(self) -> dict[str, int]:
        return {"device_t0_us": self.device_t0_us, "wall_t0_ns": self.wall_t0_ns}


class SessionError(RuntimeError):
    """A session file cannot be read (not MCAP, not an armtwin session, or no samples)."""


@dataclass
class Session:
    """A loaded session: every measured sample, what was sent, and what the twin displayed."""

    t_us: np.ndarray  # (N,) int64 device time
    q: np.ndarray  # (N, J) float64 rad
    joint_names: list[str]
    seq: np.ndarray | None = None
    sent: np.ndarray | None = None  # (N,) bool, None if the session was never sent (e.g. imported)
    qhat: np.ndarray | None = None  # (N, J) float64 rad, NaN where nothing was displayed yet
    meta: dict[str, Any] = field(default_factory=dict)
    status: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    truncated: bool = False  # the file had no footer (recorder was killed)
    # Live timing to replay (see the module docstring): TIMING_FIELDS -> int64 arrays; None in older sessions.
    timing: dict[str, np.ndarray] | None = None

    @property
    def duration_s(self) -> float:
        return float(self.t_us[-1] - self.t_us[0]) * 1e-6 if len(self.t_us) > 1 else 0.0

    @property
    def joints(self) -> int:
        return int(self.q.shape[1])


def to_urad(q_rad: np.ndarray) -> np.ndarray:
    return np.rint(np.asarray(q_rad, dtype=np.float64) * 1e6).astype(np.int64)


def joint_states_template(names: list[str]) -> str:
    """The JSON text of one foxglove.JointStates message with %-slots for (sec, nsec, device_t_us, *positions):
    byte for byte what ``json.dumps`` writes for it (positions are finite floats, whose repr json uses), at a
    fraction of its cost: the recorder writes two per sample, 2 000 a second."""
    joints = ", ".join('{"name": ' + json.dumps(n).replace("%", "%%") + ', "position": %r}' for n in names)
    return '{"timestamp": {"sec": %d, "nsec": %d}, "device_t_us": %d, "joints": [' + joints + "]}"


class SessionWriter:
    """Writes a session incrementally. Not thread-safe: the device owns it from one writer thread."""

    def __init__(self, path: str | os.PathLike[str], joint_names: list[str], meta: dict[str, Any],
                 clock: WallClock | None = None, joint_states: bool = True) -> None:
        """``clock`` maps device time to the wall clock for log times (default: the first block's first sample is
        taken as written now); ``joint_states`` also writes each sample on the Foxglove JointStates channels."""
        self.path = Path(path)
        self._fh: IO[bytes] = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        # Small chunks: a killed process loses at most ~one chunk (about a second of 7-joint data).
        self._w = Writer(self._fh, chunk_size=64 * 1024, compression=CompressionType.ZSTD)
        self._w.start(profile="", library="armtwin")
        sid = self._w.register_schema("armtwin.SampleBlock", "jsonschema", json.dumps(_SAMPLES_SCHEMA).encode())
        stid = self._w.register_schema("armtwin.Status", "jsonschema", json.dumps(_STATUS_SCHEMA).encode())
        self._samples = self._w.register_channel(SAMPLES_TOPIC, "json", sid)
        self._status = self._w.register_channel(STATUS_TOPIC, "json", stid)
        tid = self._w.register_schema("armtwin.Timing", "jsonschema", json.dumps(_TIMING_SCHEMA).encode())
        self._timing = self._w.register_channel(TIMING_TOPIC, "json", tid)
        full = {"format": FORMAT, "joint_names": joint_names, "units": "rad (stored as int µrad)", **meta}
        self._w.add_metadata("armtwin", {k: json.dumps(v) for k, v in full.items()})
        self.samples_written = 0  # handed to the MCAP writer (some may still sit in the chunk in progress)
        self.first_t_us: int | None = None
        self.last_t_us: int | None = None
        # (samples, their last t_us, file offset) at the last successful flush: all of it was on disk then.
        self._flushed: tuple[int, int | None, int] = (0, None, 0)
        self._closed = False
        self._closed_ok = False
        self.clock = clock
        self._names = list(joint_names)
        self._js = self._register_joint_states() if joint_states else None
        self._js_template = joint_states_template(self._names)

    def write_block(
        self,
        t_us: np.ndarray,
        seq: np.ndarray,
        q_rad: np.ndarray,
        sent: np.ndarray | None = None,
        qhat_rad: np.ndarray | None = None,
    ) -> None:
        if len(t_us) == 0:
            return
        block: dict[str, Any] = {
            "t_us": np.asarray(t_us, dtype=np.int64).tolist(),
            "seq": np.asarray(seq, dtype=np.int64).tolist(),
            "q_urad": to_urad(q_rad).tolist(),
        }
        if sent is not None:
            block["sent"] = np.asarray(sent, dtype=np.int64).tolist()
        if qhat_rad is not None:
            qh = np.asarray(qhat_rad, dtype=np.float64)
            rows = to_urad(np.nan_to_num(qh)).tolist()
            missing = np.asarray(np.isnan(qh).any(axis=1), dtype=bool).tolist()
            block["qhat_urad"] = [None if m else r for r, m in zip(rows, missing, strict=True)]
        log_ns = self._log_ns(int(t_us[0]))
        self._w.add_message(self._samples, log_time=log_ns, data=json.dumps(block).encode(), publish_time=log_ns)
        if self._js is not None:
            self._write_joint_states(block)
        self.samples_written += len(t_us)
        if self.first_t_us is None:
            self.first_t_us = int(t_us[0])
        self.last_t_us = int(t_us[-1])

    def _log_ns(self, t_us: int) -> int:
        if self.clock is None:  # the first sample written fixes the mapping; recorded for readers
            self.clock = WallClock(int(t_us), time.time_ns())
            self._w.add_metadata("clock", {k: json.dumps(v) for k, v in self.clock.as_meta().items()})
        return max(self.clock.ns(t_us), 0)

    def _register_joint_states(self) -> tuple[int, int]:
        sid = self._w.register_schema("foxglove.JointStates", "jsonschema",
                                      json.dumps(_JOINT_STATES_SCHEMA).encode())
        return (self._w.register_channel(MEASURED_TOPIC, "json", sid),
                self._w.register_channel(TWIN_TOPIC, "json", sid))

    def _write_joint_states(self, block: dict[str, Any]) -> None:
        """One foxglove.JointStates message per sample (radians), measured and, where it showed one, the twin."""
        assert self._js is not None
        qhat = block.get("qhat_urad") or [None] * len(block["t_us"])
        template, add = self._js_template, self._w.add_message
        for t, q, qh in zip(block["t_us"], block["q_urad"], qhat, strict=True):
            ns = self._log_ns(t)
            head = (ns // 1_000_000_000, ns % 1_000_000_000, t)
            for chan, row in ((self._js[0], q), (self._js[1], qh)):
                if row is None:
                    continue
                add(chan, log_time=ns, data=(template % (*head, *[v * 1e-6 for v in row])).encode(), publish_time=ns)

    def write_status(self, t_us: int, status: dict[str, Any]) -> None:
        ns = self._log_ns(int(t_us))
        self._w.add_message(self._status, log_time=ns, data=json.dumps(status).encode(), publish_time=ns)

    def write_timing(self, t_us: int, timing: dict[str, Any]) -> None:
        """One block of live timing (``TIMING_FIELDS`` -> int sequences of equal length per pair)."""
        ns = self._log_ns(int(t_us))
        body = {k: np.asarray(timing.get(k, ()), dtype=np.int64).tolist() for k in TIMING_FIELDS}
        self._w.add_message(self._timing, log_time=ns, data=json.dumps(body).encode(), publish_time=ns)

    def flush(self) -> None:
        """Close the chunk in progress and push everything to the OS: a process killed after this loses nothing
        written before it (the recorder calls it every second, so a crash costs at most ~1 s)."""
        self._w.flush()
        self._flushed = (self.samples_written, self.last_t_us, self._fh.tell())

    def on_disk(self) -> tuple[int, int | None]:
        """(samples, last sample's t_us) that a reader finds in the file now: after a failed write, what was kept.

        Everything up to the last successful flush, plus any complete chunk the disk took after it: the records
        past that offset are read back (at most about a second of data), as ``load_session`` would read them.
        """
        n, last, offset = self._flushed
        if self._closed_ok:
            return self.samples_written, self.last_t_us
        try:
            with open(self.path, "rb") as fh:
                fh.seek(offset)
                for rec in StreamReader(fh, skip_magic=offset > 0, emit_chunks=True).records:
                    inner = breakup_chunk(rec, validate_crc=True) if isinstance(rec, Chunk) else [rec]
                    for m in inner:
                        if isinstance(m, Message) and m.channel_id == self._samples:
                            t = json.loads(m.data)["t_us"]
                            n, last = n + len(t), int(t[-1])
        except Exception:  # the damaged tail is where the kept part ends
            pass
        return n, last

    def close(self, summary: dict[str, Any] | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        try:  # a full disk fails finish(): the file handle must still be closed
            if summary is not None:
                self._w.add_metadata("summary", {k: json.dumps(v) for k, v in summary.items()})
            self._w.finish()
            self._fh.close()
            self._closed_ok = True
        finally:
            self._fh.close()


def write_session(path: str | os.PathLike[str], session: Session, block: int = 1000) -> None:
    """Write a whole in-memory session (import, tests, tools)."""
    w = SessionWriter(path, session.joint_names, session.meta, clock=_session_clock(session))
    for a in range(0, len(session.t_us), block):
        b = slice(a, a + block)
        seq = session.seq[b] if session.seq is not None else np.arange(a, min(a + block, len(session.t_us)))
        w.write_block(
            session.t_us[b],
            seq,
            session.q[b],
            None if session.sent is None else session.sent[b],
            None if session.qhat is None else session.qhat[b],
        )
    for st in session.status:
        w.write_status(int(st.get("t_us", 0)), st)
    if session.timing is not None:
        w.write_timing(int(session.t_us[0]) if len(session.t_us) else 0, session.timing)
    w.close(session.summary)


def _session_clock(session: Session) -> WallClock | None:
    """The wall-clock mapping a loaded session carried (rewriting it keeps its log times), else None (now)."""
    c = session.meta.get("clock")
    if isinstance(c, dict) and {"device_t0_us", "wall_t0_ns"} <= set(c):
        return WallClock(int(c["device_t0_us"]), int(c["wall_t0_ns"]))
    return None


def _decode_block(data: bytes) -> dict[str, np.ndarray]:
    """One samples message -> arrays at once: decoded JSON lists cost ~60 bytes per angle (an hour would be GBs),
    arrays 8, so a long session loads at the size of its arrays."""
    b = json.loads(data)
    out = {"t_us": np.asarray(b["t_us"], dtype=np.int64), "seq": np.asarray(b["seq"], dtype=np.int64),
           "q": np.asarray(b["q_urad"], dtype=np.float64) * 1e-6}
    if "sent" in b:
        out["sent"] = np.asarray(b["sent"], dtype=bool)
    if "qhat_urad" in b:
        width = out["q"].shape[1] if out["q"].ndim == 2 else 0
        rows = [r if r is not None else [np.nan] * width for r in b["qhat_urad"]]
        out["qhat"] = np.asarray(rows, dtype=np.float64) * 1e-6  # NaN (nothing displayed yet) stays NaN
    return out


def load_session(path: str | os.PathLike[str]) -> Session:
    """Read a session; a file cut short by a crash loads up to its last complete chunk (``truncated=True``)."""
    path = Path(path)
    if not path.exists():
        raise SessionError(f"{path}: no such file")
    channels: dict[int, str] = {}
    meta: dict[str, Any] = {}
    summary: dict[str, Any] | None = None
    blocks: list[dict[str, np.ndarray]] = []
    status: list[dict[str, Any]] = []
    timing: list[dict[str, Any]] = []
    truncated = False

    def handle(rec: object) -> None:
        nonlocal summary
        if isinstance(rec, Channel):
            channels[rec.id] = rec.topic
        elif isinstance(rec, Message):
            topic = channels.get(rec.channel_id)
            if topic == SAMPLES_TOPIC:
                blocks.append(_decode_block(rec.data))
            elif topic == STATUS_TOPIC:
                status.append(json.loads(rec.data))
            elif topic == TIMING_TOPIC:
                timing.append(json.loads(rec.data))
        elif isinstance(rec, Metadata):
            decoded = {k: json.loads(v) for k, v in rec.metadata.items()}
            if rec.name == "armtwin":
                meta.update(decoded)
            elif rec.name == "summary":
                summary = decoded
            elif rec.name == "clock":
                meta["clock"] = decoded

    with open(path, "rb") as fh:
        try:
            for rec in StreamReader(fh, skip_magic=False, emit_chunks=True).records:
                if isinstance(rec, Chunk):
                    for inner in breakup_chunk(rec, validate_crc=True):
                        handle(inner)
                else:
                    handle(rec)
        except Exception as exc:
            # Whatever was read before the damage is intact (chunks are CRC-checked): keep it.
            if not blocks and not meta:
                raise SessionError(f"{path}: not a readable armtwin session ({exc})") from None
            truncated = True
    if meta.get("format") != FORMAT:
        raise SessionError(f"{path}: not an armtwin session (format {meta.get('format')!r})")
    if not blocks:
        raise SessionError(f"{path}: session holds no samples")
    names = list(meta.pop("joint_names"))
    t = np.concatenate([b["t_us"] for b in blocks])
    seq = np.concatenate([b["seq"] for b in blocks])
    q = np.concatenate([b["q"].reshape(-1, len(names)) for b in blocks])
    sent = qhat = None
    if all("sent" in b for b in blocks):
        sent = np.concatenate([b["sent"] for b in blocks])
    if all("qhat" in b for b in blocks):
        qhat = np.concatenate([b["qhat"].reshape(-1, len(names)) for b in blocks])
    order = np.argsort(t, kind="stable")
    if np.any(order != np.arange(len(t))):  # blocks written out of order (should not happen) - keep time order
        t, seq, q = t[order], seq[order], q[order]
        sent = None if sent is None else sent[order]
        qhat = None if qhat is None else qhat[order]
    timing_arrays = None
    if timing:
        timing_arrays = {k: np.asarray([v for b in timing for v in b.get(k, ())], dtype=np.int64)
                         for k in TIMING_FIELDS}
    return Session(t, q, names, seq, sent, qhat, meta, status, summary, truncated, timing_arrays)
