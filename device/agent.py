"""The device agent: serial reader -> policy -> uplink, predictions -> tracking monitor, status and summary.

One loop in the main thread waits on a ZeroMQ poller that wakes on either a server reply or new serial data
(the reader thread pings an inproc socket), so it never busy-polls and never blocks the reader.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import zmq

from device.link_emulation import LinkSpec
from device.policies.base import Learner, Policy
from device.reader import SerialReader, host_us
from device.recorder import Recorder
from device.scoring import DEFAULT_SCORE_LAG_MS, TrackingMonitor, score_lag_us
from device.stages import StageClock, now_ns
from device.summary import run_summary
from device.uplink import Uplink
from firmware_interfaces.ports import DEFAULT_BAUD
from twin.arm_spec import ArmSpec, check_arm
from twin.constants import DEFAULT_URDF
from twin.joint_map import ArmModelError, JointMap
from twin.kinematics import DERIV_WINDOW, quad_fit
from twin.schema import ProtocolError, Wire, prediction_from_wire
from twin.security import Security
from twin.session import SessionWriter

FINALIZE_EVERY_US = 100_000


@dataclass
class DeviceConfig:
    """Everything ``armtwin device`` needs; validated on construction."""

    port: str
    server: str
    policy: Policy
    device_id: str = "arm0"
    baudrate: int = DEFAULT_BAUD
    duration_s: float | None = None
    record: Path | None = None
    summary_json: Path | None = None
    joint_names: list[str] | None = None
    urdf: str = DEFAULT_URDF
    lag_ms: float = DEFAULT_SCORE_LAG_MS
    status_every_s: float = 1.0
    key: bytes | None = None
    security: Security | None = None  # CURVE keys for the uplink (None: plaintext, as --insecure)
    link: LinkSpec = field(default_factory=LinkSpec)
    meta: dict[str, Any] = field(default_factory=dict)
    online_learning: bool = False  # KC-TD3: adapt λ on the device (background thread, bounded CPU)
    urdf_joint_names: list[str] | None = None  # used when joint_names is None and the counts match
    joint_map: str | None = None  # --joint-map: its recorded names name the joints when none are given
    ee_link: str | None = None
    arm_named: bool = False  # --urdf/--joint-map/--ee-link given: an arm that does not fit the frames is an error

    def __post_init__(self) -> None:
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError("--duration must be > 0 seconds")
        if self.lag_ms < 10:
            raise ValueError("scoring lag must be >= 10 ms")


class DeviceAgent:
    """Runs until ``duration_s`` elapses or ``stop()`` is called (Ctrl-C / SIGTERM in the CLI)."""

    def __init__(self, cfg: DeviceConfig, out: TextIO = sys.stdout, source: Any = None) -> None:
        """``source``: a ``device.sample_source.SampleSource`` feeding samples instead of the serial port."""
        self.cfg = cfg
        self.out = out
        self._stop = threading.Event()
        self._stop_requested = False  # set by the signal handler: a plain store, no lock (see request_stop)
        self.ctx: zmq.Context[Any] = zmq.Context()
        self._wake_addr = f"inproc://wake-{id(self)}"
        self._wake_rx = self.ctx.socket(zmq.PULL)
        self._wake_rx.bind(self._wake_addr)
        self._wake_tx = self.ctx.socket(zmq.PUSH)
        self._wake_tx.setsockopt(zmq.SNDHWM, 2)  # a wake-up is a hint; one pending is enough
        self._wake_tx.connect(self._wake_addr)
        self._wake_lock = threading.Lock()
        if cfg.online_learning and cfg.policy.supports_online:  # = online=1: recordings and simulator see it
            cfg.policy.online = True
        # Warm the policy up (numba loads its compiled kernel on first use, ~0.1-1 s) before the arm streams.
        cfg.policy.select(np.array([0, 1000], dtype=np.int64), np.zeros((2, 1)))
        cfg.policy.reset()
        quad_fit(np.array([0, 1000, 2000]), np.zeros((3, 1)), np.array([2]), DERIV_WINDOW)
        self.stages = StageClock()  # where the time goes (the summary's "stages"; armtwin bench reports it)
        self.reader = (SerialReader(cfg.port, cfg.baudrate, on_data=self._wake, stages=self.stages) if source is None
                       else source)
        if source is not None:
            source.on_data = self._wake
        self.uplink: Uplink | None = None
        self.tracking: TrackingMonitor | None = None
        self.recorder: Recorder | None = None
        self.summary: dict[str, Any] = {}
        self._checked_predictor = False
        self._ring_t = np.zeros(0, dtype=np.int64)
        self._ring_q = np.zeros((0, 1))
        self.learner: Learner | None = None  # on-device learner (KC-TD3 online=1)
        self._policy_t_us = 0
        self._kc_prev, self._kc_win = (0, 0), 0  # (sent, predictions back) at the last status; windows fed
        self._status_lam: float | None = None
        self.ended_because = ""  # why the run ended by itself (replay over, no frames within --duration)
        self.arm_error: str | None = None  # the named arm does not fit the frames: the run stopped at the first

    def _wake(self) -> None:
        with self._wake_lock, contextlib.suppress(zmq.Again):
            self._wake_tx.send(b"", flags=zmq.NOBLOCK)

    def stop(self) -> None:
        self._stop.set()
        self._wake()

    def request_stop(self) -> None:
        """Stop from a signal handler: one attribute store. A handler runs in the main thread between any two
        bytecodes, so one that takes a lock (the wake socket's, or an Event's own) deadlocks when a second Ctrl-C
        lands while the first handler holds it; the loop polls at least every 20 ms and sees the flag."""
        self._stop_requested = True

    @property
    def stopping(self) -> bool:
        return self._stop_requested or self._stop.is_set()

    # -- main loop -----------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        self.uplink = Uplink(self.ctx, cfg.server, None, Wire(cfg.key), link=cfg.link, security=cfg.security)
        self._await_link(timeout_s=2.0)
        if cfg.policy.acks is not None:  # the resend timeout starts from the RTT of the hello exchange
            cfg.policy.acks.set_rtt(self.uplink.rtt_percentiles_ms()[1])
        self.reader.start()
        start_us = host_us()
        first_sample_us: int | None = None
        next_status = start_us + int(cfg.status_every_s * 1e6)
        last_status_measured = 0
        poller = zmq.Poller()
        poller.register(self._wake_rx, zmq.POLLIN)
        poller.register(self.uplink.sock, zmq.POLLIN)
        down_since: int | None = None
        next_finalize = start_us
        link_down_us = 0
        try:
            while not self.stopping:
                now = host_us()
                # --duration counts from the first sample; with none at all it ends the wait for one as well.
                since = first_sample_us if first_sample_us is not None else start_us
                if cfg.duration_s is not None and now - since >= cfg.duration_s * 1e6:
                    if first_sample_us is None:
                        self.ended_because = f"no frames from {cfg.port} within --duration {cfg.duration_s:g} s"
                    break
                if self.reader.ended.is_set() and not self.reader.samples:
                    self.ended_because = "the replay ended (the mock arm sent its last frame)"
                    break
                timeout_ms = 20.0
                release = self.uplink.next_release_us() if self.uplink is not None else None
                if release is not None:
                    timeout_ms = min(timeout_ms, max((release - now) / 1000, 0.0))
                socks = dict(poller.poll(timeout=int(timeout_ms)))  # zmq polls in whole ms
                if self._wake_rx in socks:
                    while True:
                        try:
                            self._wake_rx.recv(flags=zmq.NOBLOCK)
                        except zmq.Again:
                            break
                samples = self.reader.drain()
                now = host_us()
                if self.tracking is not None:  # replies first: the policy must see the acks that are here
                    t_ns = now_ns()
                    for msg in self.uplink.poll_replies(now):
                        self._handle_prediction(msg)
                    self.stages.ns["replies"] += now_ns() - t_ns
                if samples:
                    if self.tracking is None:
                        first_sample_us = now
                        self._start_session(len(samples[0].q), now)
                        if self.arm_error is not None:
                            break
                    self._handle_samples(samples, now)
                if self.tracking is None:
                    self.uplink.poll_replies(now)
                    self.uplink.tick(now)
                    if now >= next_status:  # say what the device waits for, not nothing
                        self._waiting_line()
                        next_status = now + int(5e6)
                    continue
                if self.uplink.welcomed and not self._checked_predictor:
                    self._check_predictor()
                self.uplink.tick(now, self._brief_status)
                if not self.uplink.link_up:
                    down_since = now if down_since is None else down_since
                elif down_since is not None:
                    link_down_us += now - down_since
                    down_since = None
                if self.reader.clock.ready and now >= next_finalize:
                    # Server clock -> host clock -> device (firmware) clock, with the newest estimates; score and
                    # record in 100 ms blocks: per-sample scoring cost more than the 1 kHz path itself.
                    t_ns = now_ns()
                    self.tracking.advance(now, self.uplink.server_offset_us, self.reader.clock,
                                          retired=self._retired())
                    self.stages.ns["score"] += now_ns() - t_ns
                    next_finalize = now + FINALIZE_EVERY_US
                if now >= next_status:
                    dt = (now - next_status) / 1e6 + cfg.status_every_s
                    self._status_line(self.tracking.measured - last_status_measured, dt, now)
                    last_status_measured = self.tracking.measured
                    next_status += int(cfg.status_every_s * 1e6)
        finally:
            if down_since is not None:
                link_down_us += host_us() - down_since
            self.summary = self._shutdown(start_us, link_down_us)
        return self.summary

    def _await_link(self, timeout_s: float) -> None:
        """Connect to the server before the arm streams, so the first samples are not dropped for want of a
        TCP connection; a server that is down only delays the start by ``timeout_s`` (then samples are
        recorded and sends counted as dropped until it comes)."""
        assert self.uplink is not None
        deadline = host_us() + int(timeout_s * 1e6)
        while not self.uplink.link_up and not self.stopping:
            now = host_us()
            if now > deadline:
                print(f"warning: no answer from server {self.cfg.server}; reading the arm anyway",
                      file=sys.stderr, flush=True)
                return
            self.uplink.tick(now)
            release = self.uplink.next_release_us()
            wait_ms = 50 if release is None else max(0, min(50, (release - now) // 1000))
            if self.uplink.sock.poll(wait_ms):
                self.uplink.poll_replies(host_us())
            else:
                self.uplink.poll_replies(host_us())  # releases emulated-delay replies that are due

    def _start_session(self, joints: int, now: int) -> None:
        cfg = self.cfg
        names = cfg.joint_names or [f"joint_{i + 1}" for i in range(joints)]
        mapped = JointMap.parse(cfg.joint_map).recorded
        if cfg.joint_names is None and mapped is not None and len(mapped) == joints:
            names = mapped  # the joint map is written for these names
        elif cfg.joint_names is None and cfg.urdf_joint_names is not None and len(cfg.urdf_joint_names) == joints:
            names = list(cfg.urdf_joint_names)  # the URDF's movable joints, when their count fits the frames
        if len(names) != joints:
            print(f"warning: {len(names)} joint names given but the arm sends {joints}; using generic names",
                  file=sys.stderr)
            names = [f"joint_{i + 1}" for i in range(joints)]
        urdf = cfg.urdf
        try:
            check_arm(ArmSpec(cfg.urdf, cfg.joint_map, cfg.ee_link), names)
        except ArmModelError as exc:
            if cfg.arm_named:
                self.arm_error = f"the arm's frames do not fit the arm given: {exc}"
                return
            # The default URDF (the KUKA iiwa) was never asked for: announce and record no URDF rather than a
            # wrong one, and say how to name the arm.
            print(f"warning: the arm sends {joints} joints, which the default URDF {cfg.urdf} does not fit: no URDF "
                  f"announced or recorded; pass --urdf YOUR_ARM.urdf (and --joint-map) so views and the "
                  f"end-effector error use your arm", file=sys.stderr, flush=True)
            urdf = ""
        self.joint_names = names
        hello = {"dev": cfg.device_id, "joints": names, "rate_hz": 1000.0, "urdf": urdf,
                 "policy": cfg.policy.spec()}
        assert self.uplink is not None
        self.uplink.set_hello(hello, now)  # before the first sample, or the server would drop it
        lag_us = score_lag_us(cfg.link, cfg.lag_ms)  # scoring waits for replies
        if cfg.record is not None:
            meta = {"source": "device", "device_id": cfg.device_id, "urdf": urdf, "policy": cfg.policy.spec(),
                    "port": cfg.port, "server": cfg.server, "link": cfg.link.label(), **cfg.meta}
            if cfg.joint_map:  # the arm the session describes, for every verb that reads it (twin.arm_spec)
                meta["joint_map"] = JointMap.parse(cfg.joint_map).spec()
            if cfg.ee_link:
                meta["ee_link"] = cfg.ee_link
            # What the simulator replays (lab.recorded_run): the resend timeout, the link estimates and the lag.
            if cfg.policy.acks is not None:
                meta["ack_timeout_us"] = cfg.policy.acks.timeout_us
            estimate = cfg.policy.link_estimate()
            if estimate is not None:
                meta["link_estimate"] = estimate
                meta["score_lag_us"] = lag_us
            self.recorder = Recorder(SessionWriter(cfg.record, names, meta), stages=self.stages)
        self.tracking = TrackingMonitor(joints, lag_us, self.recorder)
        if self.recorder is not None and cfg.policy.acks is not None:
            cfg.policy.acks.log = []  # the simulator replays each resend check (lab.recorded_run)
        if cfg.policy.online:
            # Stepped on the main loop at each status (below), not on its thread: a step is a few µs of arithmetic,
            # and a λ stored by another thread at an unrecorded moment changed the decisions of whatever chunk was
            # being selected (live and simulated λ paths parted) and could race the status's own λ update.
            self.learner = cfg.policy.make_learner()

    def _handle_samples(self, samples: list[Any], now: int) -> None:
        assert self.uplink is not None and self.tracking is not None
        t = np.fromiter((s.t_us for s in samples), dtype=np.int64, count=len(samples))
        q = np.stack([s.q for s in samples])
        if self.cfg.policy.acks is not None:  # how late this chunk is processed (device.acks.AckTracker)
            # The reader's drift-aware map (twin.clock) from the serial latency floor: device time <-> host time.
            self.cfg.policy.acks.processing_lag_us = max(0, self.reader.clock.to_a(now) - int(t[-1]))
        stage_ns = self.stages.ns
        t_ns = now_ns()
        mask = self.cfg.policy.select(t, q)
        t_sel = now_ns()
        stage_ns["policy"] += t_sel - t_ns
        sent = np.zeros(len(samples), dtype=bool)
        # The last measured samples before this chunk: the window of the device-side velocity estimate.
        tt, qq = np.concatenate([self._ring_t, t]), np.concatenate([self._ring_q.reshape(-1, q.shape[1]), q])
        offset = len(tt) - len(t)
        wants_d = self.uplink.server_wants_derivatives
        hz = self.cfg.policy.horizons_us(len(samples))  # per-sample H (KC-TD3 changes it on the fly)
        for i in np.flatnonzero(mask):
            s = samples[i]
            d = quad_fit(tt, qq, np.array([offset + i]), DERIV_WINDOW)[0, 1:] if wants_d else None
            sent[i] = self.uplink.send_sample(s.seq, s.t_us, s.q, int(hz[i]), now, self.cfg.policy.k, d,
                                              self.tracking.preds.acked)
            self.stages.sent_after(host_us() - s.host_us)  # frame read from the port -> packet handed to ZeroMQ
        self._ring_t, self._ring_q = tt[-(DERIV_WINDOW - 1):], qq[-(DERIV_WINDOW - 1):]
        self._policy_t_us = int(t[-1])  # a status takes effect for the policy after this sample
        t_sent = now_ns()
        stage_ns["send"] += t_sent - t_sel
        self.tracking.add_samples([s.t_us for s in samples], [s.seq for s in samples], [s.q for s in samples], sent)
        stage_ns["score"] += now_ns() - t_sent

    def _retired(self) -> list[tuple[int, int, bool]]:
        acks = self.cfg.policy.acks
        return acks.take_log() if acks is not None else []

    def _waiting_line(self) -> None:
        r = self.reader
        why = r.last_error or ("port open, no frames yet: is the arm streaming?" if r.connected.is_set()
                               else f"opening {self.cfg.port}")
        print(f"waiting for frames on {self.cfg.port}: {why}", file=self.out, flush=True)

    def _check_predictor(self) -> None:
        """A dead-reckoning device must mirror the predictor the server really runs, or its sends are wrong."""
        assert self.uplink is not None
        self._checked_predictor = True
        mirrored = self.cfg.policy.predictor_name
        if mirrored is not None and mirrored != self.uplink.server_predictor:
            print(f"warning: policy mirrors predictor {mirrored!r} but the server runs "
                  f"{self.uplink.server_predictor!r}; start the server with --predictor {mirrored}",
                  file=sys.stderr, flush=True)

    def _handle_prediction(self, msg: dict[str, Any]) -> None:
        assert self.uplink is not None and self.tracking is not None
        known = self.tracking.preds.has
        for item in msg["preds"]:
            if known(item[0]):  # a repeat of one already here (each reply repeats the last 3, more when behind)
                continue
            try:
                # Checked by Wire.decode (the uplink renumbered pred_seq within range): only the joint count here.
                pred_seq, pred = prediction_from_wire(item, self.tracking.preds.joints, checked=True)
            except ProtocolError as exc:  # e.g. a prediction for another joint count: counted by reason
                self.uplink.stats.bad(exc.reason)
                continue
            # Server receive time in the server's clock; redundant older predictions carry their own (item 5).
            rx = int(msg["rx"]) if len(item) < 6 else int(item[5])
            self.tracking.add_prediction(pred_seq, rx, pred)
            if self.cfg.policy.acks is not None:  # a resending policy learns which sends made it
                self.cfg.policy.acks.ack(pred.t0_us)

    # -- reporting -----------------------------------------------------------------------------------------
    def _brief_status(self) -> dict[str, Any]:
        tr = self.tracking
        if tr is None:
            return {}
        p50 = self.uplink.rtt_percentiles_ms()[0] if self.uplink is not None else float("nan")
        return {"load": tr.load, "mse_deg2": tr.acc.mse_deg2, "k": self.cfg.policy.k,
                "h_ms": self.cfg.policy.horizon_us / 1000, "rtt_ms": p50,
                "link_up": bool(self.uplink is not None and self.uplink.link_up)}

    def _status_line(self, n: int, dt: float, now: int) -> None:
        assert self.uplink is not None and self.tracking is not None
        st = self.reader.decoder.stats
        p50, p99 = self.uplink.rtt_percentiles_ms()
        win = self.tracking.take_window()
        link = "up" if self.uplink.link_up else "DOWN"
        port = "" if self.reader.connected.is_set() else " port=DOWN"
        port += " ESTOP" if self.reader.estop else ""
        port += " REC=STOPPED" if self.recorder is not None and self.recorder.failed else ""
        line = (f"rate={n / dt:7.1f}Hz load={self.tracking.load:.3f} mse={win.mse_deg2:.3g}deg2 "
                f"avg_mse={self.tracking.acc.mse_deg2:.3g} k={self.cfg.policy.k:.3g} "
                f"H={self.cfg.policy.horizon_us / 1000:.4g}ms rtt={p50:.2f}/{p99:.2f}ms lost={st.frames_lost} "
                f"crc={st.crc_errors} dropped={self.uplink.stats.dropped_packets} link={link}{port}")
        if self.cfg.policy.acks is not None:
            self.cfg.policy.acks.set_rtt(p99)
            line += f" resent={self.cfg.policy.acks.resends}"
        if self.cfg.policy.uses_link:
            line += self._link_status(p50)
        print(line, file=self.out, flush=True)
        if self.recorder is not None:
            t_dev = self.reader.clock.to_a(now)
            extra: dict[str, Any] = {}
            if self.cfg.policy.acks is not None:
                extra["ack_timeout_us"] = self.cfg.policy.acks.timeout_us
            estimate = self.cfg.policy.link_estimate()
            if estimate is not None:  # what the policy was told (the simulator replays it)
                extra["link_estimate"] = estimate
            if self._status_lam is not None:  # KC-TD3's λ (online learning: the simulated path is checked on it)
                extra["lambda"] = self._status_lam
            if self.learner is not None:  # how far scoring had got when the learner was handed the windows
                extra["windows_scored"] = self._kc_win
            # The last sample the policy had selected when this status changed it: on a busy host the status runs
            # a few ms of device time after it, and the simulator applies it where the device did.
            extra["policy_t_us"] = self._policy_t_us
            self.recorder.status(t_dev, {
                "t_us": t_dev, **extra, "rate_hz": n / dt, "load": self.tracking.load, "mse_deg2_window": win.mse_deg2,
                "rtt_p50_ms": p50, "rtt_p99_ms": p99, "link_up": self.uplink.link_up, **st.as_dict(),
                "time_resets": self.reader.time_resets, "port_reconnects": self.reader.reconnects,
                "dropped_packets": self.uplink.stats.dropped_packets})

    def _link_status(self, rtt_ms: float) -> str:
        """Hand the link estimates (RTT; loss = sends with no prediction back) to the policy and the
        device-scored 100 ms windows to the online learner; the policy's status fields (KC-TD3: λ, mirrored avg
        MSE vs ε)."""
        tr, policy = self.tracking, self.cfg.policy
        assert tr is not None
        sent, back = tr.sent, tr.predictions_back
        d_sent, d_back, self._kc_prev = sent - self._kc_prev[0], back - self._kc_prev[1], (sent, back)
        policy.set_link(rtt_ms, max(0.0, 1 - d_back / d_sent) if d_sent > 0 else 0.0)
        self._status_lam = float(policy.lam)  # before this status's learner step
        if self.learner is not None:
            windows, self._kc_win = tr.windows_from(self._kc_win)  # the monitor keeps only the newest windows
            self.learner.observe(windows)
            self.learner.step()  # one step per status, between chunks (the simulator does the same)
        kc = policy.status()
        if not kc:
            return ""
        return f" lam={kc['lambda']:.3g} mirror_avg_mse={kc['avg_mse']:.3g}/eps={kc['eps']:g}"

    def _shutdown(self, start_us: int, link_down_us: int) -> dict[str, Any]:
        if self.learner is not None:
            self.learner.stop()
        self.reader.stop()
        # Samples still in the reader's queue were measured: they must be scored and recorded too.
        leftover = self.reader.drain()
        if leftover and self.tracking is not None:
            self.tracking.add_samples([s.t_us for s in leftover], [s.seq for s in leftover],
                                      [s.q for s in leftover], np.zeros(len(leftover), dtype=bool))
        if self.uplink is not None and self.tracking is not None:
            # Let the last sends reach the server and their replies come back before scoring the tail, as the
            # simulator assumes: the emulated link still holds some, and a reply takes a round trip. Bounded by
            # the scoring lag (a server that dropped a sample never answers it).
            deadline = host_us() + score_lag_us(self.cfg.link, self.cfg.lag_ms)
            while self.uplink.in_flight() and (now := host_us()) < deadline:
                release = self.uplink.next_release_us()
                self.uplink.sock.poll(10 if release is None else max(0, min(10, (release - now) // 1000)))
                self.uplink.flush_due(host_us())
                for msg in self.uplink.poll_replies(host_us()):
                    self._handle_prediction(msg)
            if self.cfg.policy.acks is not None:
                self.cfg.policy.acks.log_unchecked()
            self.tracking.advance(host_us(), self.uplink.server_offset_us, self.reader.clock, final=True,
                                  retired=self._retired())
        summary = run_summary(self.cfg.policy, self.reader, self.tracking, self.uplink, self.cfg.link,
                              (host_us() - start_us) / 1e6, link_down_us)
        # Samples measured after this one (drained at shutdown) never reached the policy (lab.recorded_run).
        summary["last_selected_t_us"] = self._policy_t_us
        summary["stages"] = self.stages.report()
        if self.recorder is not None:
            summary["recording"] = self.recorder.report()  # also in the file: how much of the run it holds
            self.recorder.close(summary)
            summary["recording"] = self.recorder.report()  # final counts (the close may have failed too)
            if self.recorder.error:
                rep = summary["recording"]
                print(f"error: {self.recorder.error}; the recording {rep['path']} holds {rep['samples_kept']} of "
                      f"{rep['samples_kept'] + rep['samples_dropped']} samples ({rep['seconds_kept']:.1f} s); "
                      f"`armtwin recover {rep['path']} -o FIXED.mcap` makes it a complete file", file=sys.stderr)
        if self.uplink is not None:
            self.uplink.close()
        self._wake_rx.close(linger=0)
        self._wake_tx.close(linger=0)
        self.ctx.term()
        return summary

def install_signal_handlers(agent: DeviceAgent) -> None:
    """Ctrl-C and SIGTERM end the run cleanly (summary printed, recording closed)."""

    def handler(signum: int, frame: object) -> None:
        agent.request_stop()  # lock-free: a second Ctrl-C inside this handler must not deadlock

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
