"""Loss recovery from the server's replies: a send whose prediction has not come back within a timeout is
declared lost, and the policy sends the current sample at once (ack-based resend).

Why: with a periodic or rate-controlled policy a lost sample leaves the twin extrapolating an old prediction for
a whole sending interval (or two, or more): those windows make the error tail under loss. The device already
receives every prediction back (docs/architecture.md), so it knows within about one round trip which sends never made
it. Resending the *current* sample (not the lost one) repairs the twin with the freshest data; a reply that was
lost on the way back only costs one spare send.

``AckTracker`` is what the live device uses (``ack`` is fed from the replies). ``SimulatedAcks`` answers the same
questions in the simulator from the emulated link's fates, drawn in the order the live uplink draws them (one
uplink draw per send, one downlink draw per reply), so live and simulated resends agree.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from device.link_emulation import LinkModel
from twin.constants import REDUNDANCY, REPEAT_MAX

MAX_MISSES = 5  # consecutive unacknowledged sends after which resending stops until a send is acknowledged
_NEVER = np.iinfo(np.int64).max


def ack_timeout_us(rtt_ms: float) -> int:
    """How long to wait for a send's prediction: 1.25 x the RTT's 99th percentile + 2 ms (live: measured; the
    simulator: twice the delay plus jitter plus the pipeline). The p99, not the median: a late reply costs a
    spare send, and on a busy 2-core host loopback RTTs have a long tail (p50 0.8 ms, p99 2.6-7 ms)."""
    return int(1250 * max(rtt_ms, 0.0) + 2000)


class AckTracker:
    """Outstanding sends (device time) and the replies that acknowledged them; decides when a send is lost.

    ``processing_lag_us`` (live only) is how late the device is processing the current chunk beyond the serial latency
    floor: a send goes out, and a deadline is checked, that much after its sample's device time, so both are
    shifted by it (a burst of late samples must not shorten the time a reply has to come back).
    """

    def __init__(self, rtt_ms: float = 1.0) -> None:
        self.timeout_us = ack_timeout_us(rtt_ms)
        self.processing_lag_us = 0
        self._pending: deque[tuple[int, int]] = deque()  # (sample time, sample time + lag when sent), in order
        self._ack_at: dict[int, int] = {}  # sample time -> device time the ack is (or was) there
        self.sends = 0
        self.declared_lost = 0  # sends with no prediction back in time
        self.misses = 0  # consecutive ones (a dead server or link: stop resending, no flood)
        self.resends = 0  # sends made because of them (several lost at once need one resend)
        # Live runs that record: every retirement (send time, sample time it was checked at, acknowledged?), so
        # the simulator can replay decisions that depended on the host's timing (lab.recorded_run).
        self.log: list[tuple[int, int, bool]] | None = None

    def set_rtt(self, rtt_ms: float) -> None:
        """The RTT's 99th percentile (ms), as measured live; NaN (nothing measured yet) keeps the last value."""
        if np.isfinite(rtt_ms):
            self.timeout_us = ack_timeout_us(rtt_ms)

    def sent(self, t_us: int, resend: bool = False) -> None:
        """A sample sent at ``t_us`` (``resend``: because an earlier one was declared lost)."""
        self.resends += resend
        self._pending.append((t_us, t_us + self.processing_lag_us))
        self._ack_at.setdefault(t_us, _NEVER)
        self.sends += 1

    def ack(self, t0_us: int) -> None:
        """A prediction for the sample sent at ``t0_us`` came back (live: it is here now)."""
        if t0_us in self._ack_at:
            self._ack_at[t0_us] = -1

    def next_deadline_us(self) -> int | None:
        """Sample time at which the oldest outstanding send is declared lost if still unacknowledged."""
        return self._pending[0][1] + self.timeout_us - self.processing_lag_us if self._pending else None

    def expire(self, t_now: int) -> bool:
        """Retire every send whose deadline is <= ``t_now``; True if one of them was never acknowledged and
        fewer than ``MAX_MISSES`` sends in a row went unacknowledged (resend now)."""
        lost = False
        now = t_now + self.processing_lag_us
        while self._pending and self._pending[0][1] + self.timeout_us <= now:
            t = self._pending.popleft()[0]
            lost |= self._retire(t, t_now, self._ack_at.pop(t, _NEVER) <= now)
        return lost and self.misses <= MAX_MISSES

    def _retire(self, t_us: int, t_now: int, acked: bool) -> bool:
        """Count one retired send; True if it was lost."""
        if self.log is not None:
            self.log.append((t_us, t_now, acked))
        if acked:
            self.misses = 0
            return False
        self.declared_lost += 1
        self.misses += 1
        return True

    def take_log(self) -> list[tuple[int, int, bool]]:
        """The retirements logged since the last call (empty unless ``log`` was set to a list)."""
        if self.log is None:
            return []
        out, self.log = self.log, []
        return out

    def log_unchecked(self) -> None:
        """At the end of a run: log the sends still waiting as never checked (check time -1)."""
        if self.log is not None:
            self.log.extend((t, -1, False) for t, _ in self._pending)

    def deadline_of(self, t_us: int) -> int:
        """Sample time at which a send made now at ``t_us`` would be checked."""
        return t_us + self.timeout_us


class SimulatedAcks(AckTracker):
    """``AckTracker`` whose acknowledgements come from the emulated link (simulator and training)."""

    def __init__(self, link: LinkModel, rtt_ms: float, latency_us: int,
                 timeouts: list[tuple[int, int]] | None = None,
                 retired: dict[int, tuple[int, bool]] | None = None) -> None:
        super().__init__(rtt_ms)
        self.link, self.latency_us = link, latency_us
        # Sends that reached the server: [device time, when the device has their prediction]. A reply carries the
        # last REDUNDANCY predictions and every one the device had not acknowledged when it sent the sample.
        self._unacked: deque[list[int]] = deque()
        self._last: deque[list[int]] = deque(maxlen=REDUNDANCY)
        # (device time, timeout) pairs a live device used (from its recording): follow them instead of the
        # link's nominal RTT, so a replay takes the same resend decisions the device took.
        self._timeouts = deque(sorted(timeouts or []))
        if self._timeouts:  # the first value holds from the start (the device's hello round trip)
            self.timeout_us = self._timeouts.popleft()[1]
        # A recording's retirements (send time -> (sample time checked at, acknowledged?)): when the live reply
        # came back depended on the host's scheduling, which no model repeats. A send the live device also made is
        # retired as it was; any other send follows the link model.
        self._retired = retired or {}

    def follow(self, t_us: int) -> None:
        """Take the recorded timeout changes up to ``t_us`` (the simulator calls it at each replayed status too:
        a policy reads the timeout when it decides, not only when it sends)."""
        while self._timeouts and self._timeouts[0][0] <= t_us:
            self.timeout_us = self._timeouts.popleft()[1]

    def sent(self, t_us: int, resend: bool = False) -> None:
        self.follow(t_us)
        super().sent(t_us, resend)
        key = self.link.keys([t_us])
        lost, delay = self.link.up.fates(key)
        if lost[0]:
            return
        # The device's acknowledgement as this sample leaves: the predictions back by then (and holes older than
        # the server repeats, which can no longer be filled).
        while self._unacked and (self._unacked[0][1] <= t_us or len(self._unacked) >= REPEAT_MAX):
            self._unacked.popleft()
        item = [t_us, _NEVER]
        self._unacked.append(item)
        self._last.append(item)
        down_lost, down_delay = self.link.down.fates(key)  # the reply to this sample
        if down_lost[0]:
            return
        arrival = t_us + int(delay[0]) + int(down_delay[0]) + 2 * self.latency_us
        carried = {id(x): x for x in (*self._unacked, *self._last)}  # server.twin_server.reply_preds
        for x in carried.values():  # the reply repeats these predictions: it acknowledges them too
            x[1] = min(x[1], arrival)
            if x[0] in self._ack_at:
                self._ack_at[x[0]] = min(self._ack_at[x[0]], arrival)

    def deadline_of(self, t_us: int) -> int:
        rec = self._retired.get(t_us)
        return rec[0] if rec is not None else super().deadline_of(t_us)

    def next_deadline_us(self) -> int | None:
        if self._pending and self._pending[0][0] in self._retired:
            check = self._retired[self._pending[0][0]][0]
            return None if check < 0 else check  # < 0: the live run ended before checking it
        # A recorded timeout change applies to the sends already waiting (live: from that status on), so the
        # deadline is checked again when it comes.
        deadline = super().next_deadline_us()
        if deadline is not None and self._timeouts and self._timeouts[0][0] < deadline:
            return self._timeouts[0][0]
        return deadline

    def expire(self, t_now: int) -> bool:
        self.follow(t_now)
        if not self._retired:
            return super().expire(t_now)
        lost = False
        while self._pending:
            t, sent_at = self._pending[0]
            rec = self._retired.get(t)
            if rec is not None:
                if rec[0] < 0 or rec[0] > t_now:  # never checked live (the run ended), or not yet
                    break
                acked = rec[1]
            elif sent_at + self.timeout_us <= t_now:
                acked = self._ack_at.get(t, _NEVER) <= t_now
            else:
                break
            self._pending.popleft()
            self._ack_at.pop(t, None)
            lost |= self._retire(t, t_now, acked)
        return lost and self.misses <= MAX_MISSES

    def ack(self, t0_us: int) -> None:  # acknowledgements are simulated; nothing comes from outside
        return


def periodic_sends(t_us: np.ndarray, out: np.ndarray, i: int, j: int, countdown: int, k: int,
                   acks: AckTracker) -> int:
    """Mark in ``out[i:j]`` a send every ``k`` samples (the next one ``countdown`` samples after ``i``), plus a
    resend at the first sample where a lost send is detected (the period restarts there). Returns the countdown
    at ``j``. One Python step per send or deadline: sends are sparse, so this stays cheap."""
    while True:
        due = i + countdown
        deadline = acks.next_deadline_us()
        r = j if deadline is None else i + int(np.searchsorted(t_us[i:j], deadline, side="left"))
        if r < j and r <= due:
            if acks.expire(int(t_us[r])):
                out[r] = True
                acks.sent(int(t_us[r]), resend=True)
                i, countdown = r + 1, k - 1
            else:
                i, countdown = r, due - r
            continue
        if due >= j:
            return due - j
        out[due] = True
        acks.sent(int(t_us[due]))
        i, countdown = due + 1, k - 1
