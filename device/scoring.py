"""Scoring on the device: what the twin displayed for every measured millisecond, and the error online.

A sample's displayed value is final only once every prediction that could have been in effect at its time has
come back, so samples are held for ``lag_us`` (a few RTTs) before they are scored and recorded. Nothing measured
is dropped: at shutdown every pending sample is finalised with what is known.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from device.link_emulation import LinkSpec
from device.recorder import Recorder
from device.ring import Int64Ring
from twin.clock import ClockMap
from twin.constants import REPEAT_MAX
from twin.display import Prediction, displayed, in_effect
from twin.metrics import ErrorAccumulator

DEFAULT_SCORE_LAG_MS = 250.0  # samples wait this long for the twin's predictions before being scored
# Memory stays flat on a run with no --duration: the newest of each diagnostic, running totals for the rest.
MAX_LATENCIES = 100_000  # uplink latencies kept for the percentiles (800 kB)
MAX_WINDOWS = 10_000  # 100 ms window MSEs kept (17 min) for the online learner, which reads them within a second


def score_lag_us(link: LinkSpec, lag_ms: float = DEFAULT_SCORE_LAG_MS) -> int:
    """How long samples are held before scoring: the configured lag plus the emulated round trip on top."""
    return round(1000 * (lag_ms + 2 * (link.delay_ms + link.jitter_ms)))


@dataclass
class _Pred:
    arrival_us: int  # server clock
    pred: Prediction
    arrival_dev_us: int | None = None  # device time, fixed when first scored (see PredictionLog.freeze)


class PredictionLog:
    """Predictions keyed by server sequence (duplicates from redundant replies ignored), evaluable at any time.

    Arrivals are kept in the server's clock and mapped to device time only when evaluated, so every prediction uses
    the best clock estimate available by then: server clock minus device time is ``clock_offset_us`` at server time
    ``clock_ref_us`` and changes by ``clock_rate`` per µs (the clocks drift: an arrival seconds old is mapped with
    the offset of its own time, not of now).
    """

    def __init__(self, joints: int) -> None:
        self.joints = joints
        self._preds: dict[int, _Pred] = {}
        self.clock_offset_us = 0
        self.clock_rate = 0.0
        self.clock_ref_us = 0
        # Acknowledgement sent with each sample: every pred_seq up to ``acked`` has been received (or given up on:
        # the server repeats at most REPEAT_MAX predictions, so an older hole can no longer be filled).
        self.acked = 0
        self.never_received = 0
        self._above: set[int] = set()

    def add(self, pred_seq: int, arrival_us: int, pred: Prediction) -> None:
        self._preds.setdefault(pred_seq, _Pred(arrival_us, pred))
        if pred_seq <= self.acked:
            return
        self._above.add(pred_seq)
        floor = max(self._above) - REPEAT_MAX
        if floor > self.acked:
            # Holes more than REPEAT_MAX behind the newest can no longer be filled: give them up in one step (a
            # broken server's jump to pred_seq 2^62 used to be walked one number at a time, hanging the device).
            filled = {s for s in self._above if s <= floor}
            self.never_received += floor - self.acked - len(filled)
            self._above -= filled
            self.acked = floor
        while self.acked + 1 in self._above:
            self._above.discard(self.acked + 1)
            self.acked += 1

    def __len__(self) -> int:
        return len(self._preds)

    def has(self, pred_seq: int) -> bool:
        """Already here: ``add`` keeps the first copy, so a later one (a reply's redundant repeat) changes nothing."""
        return pred_seq in self._preds

    def evaluate(self, t_us: np.ndarray) -> np.ndarray:
        if not self._preds:
            return np.full((len(t_us), self.joints), np.nan)
        items = list(self._preds.values())
        arrival = self._arrivals_dev(items)
        t0 = np.fromiter((p.pred.t0_us for p in items), dtype=np.int64)
        keep = in_effect(arrival, t0)
        width = max(p.pred.coeffs.shape[0] for p in items)
        coeffs = np.zeros((len(keep), width, self.joints))
        for row, i in enumerate(keep):
            c = items[i].pred.coeffs
            coeffs[row, : c.shape[0]] = c
        h = np.fromiter((items[i].pred.horizon_us for i in keep), dtype=np.int64)
        return displayed(t_us, arrival[keep], t0[keep], h, coeffs)

    def _to_device(self, server_us: np.ndarray) -> np.ndarray:
        off = self.clock_offset_us + np.rint(self.clock_rate * (server_us - self.clock_ref_us)).astype(np.int64)
        return server_us - off

    def _arrivals_dev(self, items: list[_Pred]) -> np.ndarray:
        """Device-time arrivals: fixed ones as fixed, the others mapped with the clock of their own time."""
        mapped = self._to_device(np.fromiter((p.arrival_us for p in items), dtype=np.int64, count=len(items)))
        for i, p in enumerate(items):
            if p.arrival_dev_us is not None:
                mapped[i] = p.arrival_dev_us
        return mapped

    def freeze(self) -> list[tuple[int, int]]:
        """Fix the device-time arrival of every prediction not yet scored with (a sample scored once is final, and
        a later clock estimate must not move a prediction half-way through its use); returns the newly fixed
        ones as (sample time, arrival)."""
        items = [p for p in self._preds.values() if p.arrival_dev_us is None]
        if not items:
            return []
        for p, a in zip(items, self._arrivals_dev(items).tolist(), strict=True):
            p.arrival_dev_us = a
        return [(p.pred.t0_us, int(p.arrival_dev_us)) for p in items if p.arrival_dev_us is not None]

    def prune_before(self, t_us: int) -> None:
        """Forget predictions superseded before ``t_us`` (keep the newest one that arrived by then)."""
        seqs = list(self._preds)
        arrival = self._arrivals_dev([self._preds[s] for s in seqs])
        old = [(s, self._preds[s]) for s, a in zip(seqs, arrival.tolist(), strict=True) if a <= t_us]
        if len(old) <= 1:
            return
        newest = max(old, key=lambda sp: sp[1].pred.t0_us)[0]
        for s, _ in old:
            if s != newest:
                del self._preds[s]


class TrackingMonitor:
    """Holds measured samples until their display is known, then scores and records them."""

    def __init__(self, joints: int, lag_us: int, recorder: Recorder | None = None) -> None:
        self.preds = PredictionLog(joints)
        self.lag_us = lag_us
        self.recorder = recorder
        self.acc = ErrorAccumulator()
        self.window = ErrorAccumulator()  # since the last status line
        self._t: list[int] = []
        self._seq: list[int] = []
        self._q: list[np.ndarray] = []
        self._sent: list[bool] = []
        self.measured = 0
        self.sent = 0
        # Uplink latency (sample -> server, device time) of the newest MAX_LATENCIES predictions: a ring of int64.
        self._lat = Int64Ring(MAX_LATENCIES)
        self.predictions_back = 0  # predictions received once each (redundant copies not counted)
        self._lat_pending: list[tuple[int, int]] = []  # (server rx, t0) that came before the clocks were mapped
        self._clock_set = False
        self.windows_trimmed = 0  # window MSEs dropped from the front of acc.window_mse (bounded memory)
        self._newest_pred_seq = -1
        self._arrived_t0: set[int] = set()  # predictions fixed but whose samples are not scored yet
        self._retired: list[tuple[int, int, bool]] = []  # resend checks not recorded yet

    def add_samples(self, t_us: list[int], seq: list[int], q: list[np.ndarray], sent: np.ndarray) -> None:
        self._t.extend(t_us)
        self._seq.extend(seq)
        self._q.extend(q)
        self._sent.extend(bool(s) for s in sent)
        self.measured += len(t_us)
        self.sent += int(np.count_nonzero(sent))

    def add_prediction(self, pred_seq: int, server_rx_us: int, pred: Prediction) -> None:
        """A prediction whose sample reached the server at ``server_rx_us`` (server clock)."""
        if pred_seq > self._newest_pred_seq:
            # Age of the sample when it reached the server: the pipeline + network latency the twin lives with.
            # Redundant copies in later replies carry older sequence numbers and are not counted twice.
            self._newest_pred_seq = pred_seq
            if self._clock_set:
                self._add_latency(server_rx_us, pred.t0_us)
            elif len(self._lat_pending) < MAX_LATENCIES:
                self._lat_pending.append((server_rx_us, pred.t0_us))
            self.predictions_back += 1
        self.preds.add(pred_seq, server_rx_us, pred)

    def set_clock(self, server_minus_device_us: int, rate: float = 0.0, ref_server_us: int = 0) -> None:
        """Server clock minus device time: ``server_minus_device_us`` at server time ``ref_server_us``, changing by
        ``rate`` per µs of server time."""
        self.preds.clock_offset_us = server_minus_device_us
        self.preds.clock_rate = rate
        self.preds.clock_ref_us = ref_server_us
        self._clock_set = True
        for rx, t0 in self._lat_pending:
            self._add_latency(rx, t0)
        self._lat_pending.clear()

    def _add_latency(self, server_rx_us: int, t0_us: int) -> None:
        """Mapped when it comes (the clock of its own time), into the ring."""
        arrival = int(self.preds._to_device(np.array([server_rx_us], dtype=np.int64))[0])
        self._lat.append(arrival - t0_us)

    def windows_from(self, start: int) -> tuple[list[float], int]:
        """The 100 ms window MSEs from absolute index ``start`` on, and the index after the last one."""
        w = self.acc.window_mse
        return w[max(start - self.windows_trimmed, 0):], self.windows_trimmed + len(w)

    def advance(self, host_now_us: int, server_minus_host_us: int, clock: ClockMap, final: bool = False,
                retired: list[tuple[int, int, bool]] | None = None) -> int:
        """Map the clocks with the newest estimates (server -> host -> firmware, the last drift-aware) and score every
        sample older than the device's "now" less the lag (all of them if ``final``). Returns how many were scored."""
        dev_now = clock.to_a(host_now_us)
        server_now = host_now_us + server_minus_host_us
        # Device time runs at 1 + rate against the host's: an arrival s server-µs ago was (s / (1 + rate)) device-µs.
        self.set_clock(server_now - dev_now, clock.rate / (1.0 + clock.rate), server_now)
        return self.finalize(None if final else dev_now, retired)

    def latency_percentiles_ms(self) -> tuple[float, float]:
        if not len(self._lat):
            return float("nan"), float("nan")
        arr = self._lat.values() / 1000
        return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))

    def finalize(self, now_dev_us: int | None, retired: list[tuple[int, int, bool]] | None = None) -> int:
        """Score and record every pending sample older than ``now - lag`` (all of them if ``now`` is None).
        ``retired``: the resend tracker's retirements since the last call (``AckTracker.log``), recorded."""
        if self.recorder is not None and retired:
            self._retired.extend(retired)  # recorded with the next block scored
        if not self._t:
            return 0
        if now_dev_us is None:
            n = len(self._t)
        else:
            n = int(np.searchsorted(np.asarray(self._t, dtype=np.int64), now_dev_us - self.lag_us, side="right"))
        if n == 0:
            return 0
        t = np.asarray(self._t[:n], dtype=np.int64)
        q = np.stack(self._q[:n])
        # Samples are scored only here, so the newest clock estimate applies to all of them.
        qhat = self.preds.evaluate(t)
        fixed = self.preds.freeze()
        self.acc.add(t, q, qhat)
        self.window.add(t, q, qhat)
        if self.recorder is not None:
            sent = np.asarray(self._sent[:n])
            self.recorder.block(t, np.asarray(self._seq[:n]), q, sent, qhat)
            self._record_timing(t, sent, fixed, self._retired)
            self._retired = []
        del self._t[:n], self._seq[:n], self._q[:n], self._sent[:n]
        self.preds.prune_before(int(t[-1]))
        extra = len(self.acc.window_mse) - MAX_WINDOWS
        if extra > 0:
            del self.acc.window_mse[:extra]
            self.windows_trimmed += extra
        return n

    def _record_timing(self, t: np.ndarray, sent: np.ndarray, fixed: list[tuple[int, int]],
                       retired: list[tuple[int, int, bool]]) -> None:
        """What the simulator cannot model and replays (lab.recorded_run): when each prediction took effect in
        this block's scoring, -1 for a send of this block whose prediction has not come back (a later record
        replaces it if it still does), and the resend tracker's retirements."""
        assert self.recorder is not None
        self._arrived_t0.update(t0 for t0, _ in fixed)
        missing = [int(x) for x in t[sent] if int(x) not in self._arrived_t0]
        last = int(t[-1])
        self._arrived_t0 = {x for x in self._arrived_t0 if x > last}
        if not fixed and not missing and not retired:
            return
        self.recorder.timing(int(t[0]), {
            "pred_t0_us": [t0 for t0, _ in fixed] + missing,
            "pred_arrival_us": [a for _, a in fixed] + [-1] * len(missing),
            "ack_t_us": [r[0] for r in retired], "ack_check_us": [r[1] for r in retired],
            "ack_ok": [int(r[2]) for r in retired]})

    @property
    def load(self) -> float:
        return self.sent / self.measured if self.measured else float("nan")

    def take_window(self) -> ErrorAccumulator:
        w, self.window = self.window, ErrorAccumulator()
        return w
