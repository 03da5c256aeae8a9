"""Closed-loop simulation of on-device online learning (lab.sim_stepped): same sends, fates and windows as the
open-loop simulator when the learner does nothing; λ adapts when it does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device.link_emulation import LinkSpec
from device.policies.kctd3.policy import KCTD3Policy
from device.policies.registry import parse_policy
from device.policies.static import StaticPolicy
from lab.kctd3.train import random_checkpoint
from lab.recorded_run import RecordedRun
from lab.sim_stepped import select_stepped
from lab.simulator import PIPELINE_LATENCY_US, prepare, simulate
from tests.conftest import synthetic_session


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    return random_checkpoint(tmp_path / "rand.pt", eps=0.002, seed=1)


class RecordingLearner:
    """Keeps what it is shown; changes nothing."""

    def __init__(self) -> None:
        self.windows: list[float] = []
        self.steps = 0

    def observe(self, window_mse: list[float]) -> None:
        self.windows.extend(window_mse)

    def step(self) -> None:
        self.steps += 1


def test_closed_loop_with_a_passive_learner_equals_the_open_loop_simulator(ckpt: Path) -> None:
    s = synthetic_session(seconds=6.5)
    link = LinkSpec(loss=0.2, delay_ms=5, jitter_ms=2, seed=4)
    open_loop = simulate(s, KCTD3Policy(ckpt), "kinematic", link, keep=True)
    pol = KCTD3Policy(ckpt)
    assert pol.acks is not None  # the random checkpoint resends: the fates steer the sends too
    prepare(pol, link)
    learner = RecordingLearner()
    sent = select_stepped(s, pol, link, "kinematic", PIPELINE_LATENCY_US, learner).sent
    assert open_loop.sent is not None and np.array_equal(sent, open_loop.sent)
    assert learner.steps == 6  # one per status: once a second of device time
    # The learner saw each 100 ms window of the twin as displayed (the ones the simulator scores) once it was
    # scored: ~264 ms (scoring lag + emulated round trip) after its end, so by 6 s the windows up to 5.7 s.
    assert len(learner.windows) == 57
    assert np.allclose(learner.windows, open_loop.acc.window_mse[:len(learner.windows)])


def test_online_spec_adapts_lambda_per_run(ckpt: Path) -> None:
    pol = parse_policy(f"kc-td3:{ckpt},online=1")
    assert isinstance(pol, KCTD3Policy) and pol.online and pol.spec().endswith(",online=1")
    assert pol.display_name == "kc-td3-online"
    s = synthetic_session(seconds=5.0)
    prepare(pol, LinkSpec())
    lam0 = pol.lam
    simulate(s, pol, "kinematic")
    assert pol.lam != pytest.approx(lam0)  # the random actor is far from ε: the learner moved λ
    moved = pol.lam
    pol.reset()
    assert pol.lam == pytest.approx(lam0)  # a new run starts from the trained λ
    simulate(s, pol, "kinematic")
    assert pol.lam == pytest.approx(moved)  # and is deterministic


def test_each_status_steps_the_learner_even_two_between_samples(ckpt: Path) -> None:
    """A stalled device can run two statuses back to back: each gets its own λ record and learner step."""
    s = synthetic_session(seconds=3.0)
    pol = KCTD3Policy(ckpt)
    prepare(pol, LinkSpec())
    learner = RecordingLearner()
    replay = RecordedRun(status_us=[1_000_100, 1_000_200, 2_000_000])
    stepped = select_stepped(s, pol, LinkSpec(), "kinematic", PIPELINE_LATENCY_US, learner, replay)
    assert learner.steps == 3 and len(stepped.status_lambdas) == 3


def test_recorded_window_counts_are_what_the_learner_gets(ckpt: Path) -> None:
    s = synthetic_session(seconds=4.0)
    pol = KCTD3Policy(ckpt)
    prepare(pol, LinkSpec())
    learner = RecordingLearner()
    replay = RecordedRun(status_us=[1_000_000, 2_000_000, 3_000_000], windows_scored=[7, 7, 25])
    select_stepped(s, pol, LinkSpec(), "kinematic", PIPELINE_LATENCY_US, learner, replay)
    assert len(learner.windows) == 25 and learner.steps == 3


def test_a_kc_td3_recording_replays_with_another_policy() -> None:
    """Link estimates in a recording are for policies that take them; a static policy ignores them."""
    s = synthetic_session(seconds=3.0)
    replay = RecordedRun(link_estimates=[(0, 1.0, 0.0), (1_000_000, 1.2, 0.1)], status_us=[1_000_000])
    res = simulate(s, StaticPolicy(20, 50), "kinematic", replay=replay)
    assert res.metrics["load"] == simulate(s, StaticPolicy(20, 50), "kinematic").metrics["load"]
