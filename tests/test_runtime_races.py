"""Races of the device's threads (issue 10 defects 6 and 7): the online learner against the status, and a second
Ctrl-C landing inside the first one's handler. Each interleaving is forced with events, not left to timing."""

from __future__ import annotations

import signal
import threading
from collections import deque
from typing import Any

import pytest

from device.agent import DeviceAgent, DeviceConfig, install_signal_handlers
from device.policies.kctd3.online import OnlineLearner
from device.policies.kctd3.policy import KCTD3Policy
from device.policies.static import StaticPolicy

TIMEOUT_S = 5.0


class FakeTunable:
    """What the learner and ``KCTD3Policy.set_link`` touch, with a λ(link) that depends on the loss estimate."""

    def __init__(self) -> None:
        self.window_log: deque[float] = deque()
        self.meta: dict[str, Any] = {}
        self.eps, self.loss, self.rtt_ms = 1.0, 0.0, 1.0
        self.lam_scale, self.lam = 1.0, 1.0
        self.lam_grid = object()  # not None: set_link recomputes λ
        self.lam_lock = threading.Lock()
        self.hook: Any = None  # called inside base_lambda (the learner's read of the link)

    def base_lambda(self) -> float:
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        return 1.0 + 10.0 * self.loss

    set_link = KCTD3Policy.set_link  # the real method, on this object


def test_a_link_update_during_a_learner_step_is_not_overwritten_with_the_old_link() -> None:
    pol = FakeTunable()
    learner = OnlineLearner(pol, lr=0.1)  # type: ignore[arg-type]
    done = threading.Event()

    def status_comes_now() -> None:
        # The status thread updates the link while the learner is between reading λ(link) and writing λ.
        setter = threading.Thread(target=lambda: (pol.set_link(1.0, 0.3), done.set()), name="status")
        setter.start()
        done.wait(0.2)  # without the lock it completes here; with it, it waits for the step (bounded either way)
        pol.after = setter  # type: ignore[attr-defined]

    pol.hook = status_comes_now
    learner.step([2.0] * 10)
    pol.after.join(TIMEOUT_S)  # type: ignore[attr-defined]
    assert pol.lam_scale > 1.0  # the step moved the scale
    assert pol.lam == pytest.approx((1.0 + 10.0 * 0.3) * pol.lam_scale)  # and λ reflects the new link


def test_a_nudge_while_a_step_runs_is_stepped_after_it_not_lost() -> None:
    pol = FakeTunable()
    learner = OnlineLearner(pol, lr=0.1, period_s=60.0)  # type: ignore[arg-type]
    in_step, release = threading.Event(), threading.Event()
    stepped = threading.Condition()
    real_step = learner.step

    def slow_step(batch: Any = None) -> None:
        if learner.updates == 0:
            in_step.set()
            assert release.wait(TIMEOUT_S)
        real_step(batch)
        with stepped:
            stepped.notify_all()

    learner.step = slow_step  # type: ignore[method-assign]
    learner.start()
    try:
        learner.observe([2.0])
        learner.nudge()
        assert in_step.wait(TIMEOUT_S)
        for _ in range(3):  # three statuses while the first step is still running
            learner.observe([2.0])
            learner.nudge()
        release.set()
        with stepped:
            assert stepped.wait_for(lambda: learner.updates == 4, TIMEOUT_S), f"{learner.updates} of 4 steps"
    finally:
        learner.stop()


@pytest.fixture
def agent() -> Any:
    cfg = DeviceConfig(port="/nonexistent/tty", server="tcp://127.0.0.1:1", policy=StaticPolicy(k=1))
    a = DeviceAgent(cfg)
    old = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    install_signal_handlers(a)
    yield a
    signal.signal(signal.SIGINT, old[0])
    signal.signal(signal.SIGTERM, old[1])
    a._wake_rx.close(linger=0)
    a._wake_tx.close(linger=0)
    a.ctx.term()


@pytest.mark.parametrize("held", ["wake lock", "stop event"])
def test_a_second_ctrl_c_inside_the_first_handler_does_not_deadlock(agent: Any, held: str) -> None:
    handler = signal.getsignal(signal.SIGINT)
    assert callable(handler)
    # The first Ctrl-C's handler is interrupted by the second while it holds a lock (same thread): the second
    # handler must not take that lock again.
    lock = agent._wake_lock if held == "wake lock" else agent._stop._cond
    done = threading.Event()

    def first_handler_interrupted() -> None:
        with lock:
            handler(signal.SIGINT, None)
        done.set()

    t = threading.Thread(target=first_handler_interrupted, name="main-stand-in", daemon=True)
    t.start()
    assert done.wait(TIMEOUT_S), "the signal handler deadlocked"
    t.join(TIMEOUT_S)
    assert agent.stopping
