"""The serial threads' real-time scheduling: taken where permitted, reported, and given back."""

from __future__ import annotations

import os
import threading

import pytest

from firmware_interfaces.realtime import ENV_OFF, realtime


def _in_thread(fn: object) -> list[object]:
    out: list[object] = []
    th = threading.Thread(target=lambda: out.append(fn()))  # type: ignore[operator]
    th.start()
    th.join(timeout=10)
    assert not th.is_alive()
    return out


def test_the_thread_gets_fifo_where_permitted_and_its_old_class_back_after() -> None:
    def body() -> tuple[str, int, int]:
        before = os.sched_getscheduler(0)
        with realtime(7) as got:
            inside = os.sched_getscheduler(0)
        assert os.sched_getscheduler(0) == before
        return got, inside, before

    [(got, inside, before)] = _in_thread(body)
    if got.startswith("off: not permitted"):
        assert inside == before  # an unprivileged user keeps time-sharing, and is told why
    else:
        assert got == "SCHED_FIFO 7" and inside == os.SCHED_FIFO
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the test's own thread never changed


def test_it_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_OFF, "1")

    def body() -> tuple[str, int]:
        with realtime() as got:
            return got, os.sched_getscheduler(0)

    [(got, inside)] = _in_thread(body)
    assert got == f"off: {ENV_OFF} is set" and inside == os.SCHED_OTHER
