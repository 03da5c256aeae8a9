"""A fixed-size ring of int64 for whole-run percentiles (RTTs, latencies): bounded and flat in memory."""

from __future__ import annotations

import numpy as np


class Int64Ring:
    """The newest ``capacity`` values. Its memory is touched when it is made, so a long run's RSS does not creep up
    as the ring fills (a lazily mapped ``np.zeros`` or a deque of Python ints grows for hours, then stops)."""

    def __init__(self, capacity: int) -> None:
        self._buf = np.empty(capacity, dtype=np.int64)
        self._buf.fill(0)  # touch every page now
        self._n = 0

    def append(self, value: int) -> None:
        self._buf[self._n % len(self._buf)] = value
        self._n += 1

    @property
    def appended(self) -> int:
        """Values ever appended (the ring keeps the newest ``capacity`` of them)."""
        return self._n

    def __len__(self) -> int:
        return min(self._n, len(self._buf))

    def values(self) -> np.ndarray:
        """The values kept, in no particular order (percentiles do not need one)."""
        return self._buf[:len(self)]
