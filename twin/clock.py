"""Drift-aware mapping between two free-running clocks, from stamps that travel one way (or both ways).

A message stamped ``a`` on the sender's clock and received at ``b`` on the receiver's satisfies
``b - a = offset(a) + latency`` with ``latency >= floor >= 0``. Two crystals differ by a rate (20-100 ppm for
quartz, up to 0.5 % for a ceramic resonator), so ``offset`` is a line, not a constant: a plain minimum of
``b - a`` is right only while the sender runs fast; when it runs slow the minimum stays at its first value and the
map falls behind by ``rate x elapsed`` (50 ppm: 250 ms after 1.4 h).

``ClockMap`` keeps the minimum of ``b - a`` per bucket of sender time (1 s by default) over a sliding window of
buckets (2 min) and fits the line under all of them that is closest to them: the edge of their lower convex hull
above the points' mean time (the linear-programming estimator of one-way clock synchronisation). It follows a
changing rate within a window, costs O(1) per observation and O(window) once per bucket, and is thread-safe (one
thread observes, others map). ``TwoWayClockMap`` combines two of them for request/reply exchanges (NTP stamps).

Used by the device's serial reader (firmware clock -> host clock, ``device/reader.py``) for scoring and for telling
a firmware restart from a u32 wrap. The uplink's server clock and the viewer's feed clock can use the same classes.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

DEFAULT_BUCKET_US = 1_000_000
DEFAULT_BUCKETS = 120
MIN_FIT_SPAN_US = 10_000_000  # below this span a rate is mostly noise: the map is the plain minimum
MAX_RATE = 0.01  # 10 000 ppm: beyond any crystal or resonator; a steeper fit is a glitch, not drift
REFIT_EVERY = 5  # buckets between line fits (~0.1 ms each); in between a new low only lowers the line


def envelope_line(points: list[tuple[int, int]], max_rate: float = MAX_RATE) -> tuple[float, float, float]:
    """The line ``y = c + r (x - x_ref)`` under every point, closest to them in the sum (returns x_ref, c, r).

    The optimum touches the lower convex hull at the points' mean x, and the hull there is the lowest chord between
    a point at or left of the mean and one at or right of it: all such chords at once in numpy (<= 60 x 60 for a
    120-bucket window). A slope beyond ``max_rate`` is clamped and the line lowered until it is under every point.
    """
    pts = np.asarray(points, dtype=np.float64)
    x, y = pts[:, 0], pts[:, 1]
    x_ref = float(x.mean())
    left, right = x <= x_ref, x >= x_ref
    xl, yl, xr, yr = x[left][:, None], y[left][:, None], x[right][None, :], y[right][None, :]
    dx = xr - xl
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(dx > 0, (yr - yl) / dx, 0.0)
    at_ref = np.where(dx > 0, yl + slope * (x_ref - xl), np.minimum(yl, yr))
    r = float(slope.flat[int(np.argmin(at_ref))])
    r = max(-max_rate, min(max_rate, r))
    c = float(np.min(y - r * (x - x_ref)))
    return x_ref, c, r


class ClockMap:
    """Maps sender time ``a`` to receiver time ``b`` (``b = a + offset(a)``), ``offset`` a drifting lower envelope.

    ``observe(a, b)`` for each message (or the earliest-received one of a batch); ``offset_at(a)``, ``to_b(a)``
    and ``to_a(b)`` map with the newest estimate. Until two buckets span ``min_fit_span_us`` the offset is the plain
    minimum (no rate). ``rate`` is the fitted drift (b per a, minus 1): +1e-4 = the sender's clock runs 100 ppm slow.
    """

    def __init__(self, bucket_us: int = DEFAULT_BUCKET_US, buckets: int = DEFAULT_BUCKETS,
                 min_fit_span_us: int = MIN_FIT_SPAN_US, max_rate: float = MAX_RATE,
                 refit_every: int = REFIT_EVERY) -> None:
        if bucket_us <= 0 or buckets < 2:
            raise ValueError("ClockMap needs bucket_us > 0 and at least 2 buckets")
        self.bucket_us, self.min_fit_span_us, self.max_rate = bucket_us, min_fit_span_us, max_rate
        self.refit_every = refit_every
        self._since_fit = 0
        self._lock = threading.Lock()
        self._closed: deque[tuple[int, int]] = deque(maxlen=buckets - 1)  # (a, min offset) of finished buckets
        self._cur: tuple[int, int] | None = None  # the open bucket's (a, min offset)
        self._cur_bucket = 0
        self._line: tuple[float, float, float] | None = None  # (a_ref, c, r)
        self.observations = 0

    def observe(self, a_us: int, b_us: int) -> None:
        off = b_us - a_us
        bucket = a_us // self.bucket_us
        with self._lock:
            self.observations += 1
            if self._cur is None or bucket != self._cur_bucket:
                if self._cur is not None:
                    self._closed.append(self._cur)
                self._cur, self._cur_bucket = (a_us, off), bucket
                self._since_fit += 1
                if self._line is None or self._line[2] == 0.0 or self._since_fit >= self.refit_every:
                    self._refit()
                else:
                    self._keep_under(self._cur)
            elif off < self._cur[1]:
                self._cur = (a_us, off)
                self._keep_under(self._cur)

    def _refit(self) -> None:
        assert self._cur is not None
        self._since_fit = 0
        pts = [*self._closed, self._cur]
        if pts[-1][0] - pts[0][0] < self.min_fit_span_us:
            self._line = (float(self._cur[0]), float(min(p[1] for p in pts)), 0.0)
        else:
            self._line = envelope_line(pts, self.max_rate)

    def _keep_under(self, p: tuple[int, int]) -> None:
        """A new low in the open bucket: the line must stay under it (lower its intercept, keep its rate)."""
        assert self._line is not None
        a_ref, c, r = self._line
        excess = c + r * (p[0] - a_ref) - p[1]
        if excess > 0:
            self._line = (a_ref, c - excess, r)

    @property
    def ready(self) -> bool:
        return self._line is not None

    @property
    def rate(self) -> float:
        line = self._line
        return 0.0 if line is None else line[2]

    def offset_at(self, a_us: int) -> int:
        """``b - a`` at sender time ``a`` (0 before the first observation)."""
        line = self._line
        if line is None:
            return 0
        a_ref, c, r = line
        return round(c + r * (a_us - a_ref))

    def to_b(self, a_us: int) -> int:
        return a_us + self.offset_at(a_us)

    def to_a(self, b_us: int) -> int:
        """The sender time that maps to receiver time ``b`` (the line is nearly flat: two fixed-point steps)."""
        line = self._line
        if line is None:
            return b_us
        a = b_us - round(line[1])
        a = b_us - self.offset_at(a)
        return b_us - self.offset_at(a)

    def reset(self) -> None:
        """Forget everything (the sender's clock was replaced by one unrelated to it)."""
        with self._lock:
            self._closed.clear()
            self._cur, self._line = None, None

    def buckets(self) -> int:
        return len(self._closed) + (self._cur is not None)


class TwoWayClockMap:
    """Offset of a peer's clock from ours, from request/reply exchanges (the four NTP stamps).

    With t1 = our send, t2 = peer receive, t3 = peer send, t4 = our receive: ``t2 - t1 = θ + d_up`` and
    ``t4 - t3 = -θ + d_down``; each direction's lower envelope is a ``ClockMap``, and θ (peer minus ours) is half
    their difference: exact when the two minimum latencies are equal, whatever the jitter and the drift.
    """

    def __init__(self, bucket_us: int = DEFAULT_BUCKET_US, buckets: int = DEFAULT_BUCKETS,
                 min_fit_span_us: int = MIN_FIT_SPAN_US) -> None:
        self._up = ClockMap(bucket_us, buckets, min_fit_span_us)  # ours -> peer
        self._down = ClockMap(bucket_us, buckets, min_fit_span_us)  # peer -> ours

    def observe(self, t1: int, t2: int, t3: int, t4: int) -> None:
        self._up.observe(t1, t2)
        self._down.observe(t3, t4)

    @property
    def ready(self) -> bool:
        return self._up.ready and self._down.ready

    def peer_minus_ours(self, ours_us: int) -> int:
        """θ at our time ``ours_us``."""
        up = self._up.offset_at(ours_us)
        down = self._down.offset_at(ours_us + up)
        return (up - down) // 2

    def reset(self) -> None:
        self._up.reset()
        self._down.reset()
