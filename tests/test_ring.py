"""The int64 ring behind whole-run percentiles: keeps the newest values, never grows."""

from __future__ import annotations

from device.ring import Int64Ring


def test_the_ring_keeps_the_newest_values_and_counts_all() -> None:
    r = Int64Ring(4)
    assert len(r) == 0 and r.values().size == 0
    for v in range(1, 11):
        r.append(v)
    assert len(r) == 4 and r.appended == 10
    assert sorted(r.values().tolist()) == [7, 8, 9, 10]
    assert r.values().base is not None and r.values().base.size == 4  # a view of the one preallocated buffer
