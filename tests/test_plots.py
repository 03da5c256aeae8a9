"""The demo's tracking plot: the twin is drawn visibly over the measured line, and the error panel shows ε."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from armtwin.demo import DEFAULT_EPSILON, plot_epsilon
from tests.conftest import REPO, synthetic_session
from twin.session import Session
from viewer.plots import plot_tracking


@pytest.fixture(scope="module", autouse=True)
def fonts_loaded(tmp_path_factory: pytest.TempPathFactory) -> None:
    """matplotlib keeps the font files it has used open for the life of the process (its font cache): load them
    once before the per-test leak check takes its baseline, so only what a test itself leaves open is flagged."""
    plot_tracking(tracked_session(), tmp_path_factory.mktemp("fonts") / "warm.png", eps=0.002)


def tracked_session() -> Session:
    s = synthetic_session(3.0, joints=3)
    s.qhat = np.roll(s.q, 15, axis=0)
    s.qhat[:200] = np.nan  # nothing displayed before the first prediction
    s.sent = np.arange(len(s.t_us)) % 20 == 0
    return s


def test_twin_line_is_over_the_measured_one_and_epsilon_is_drawn(tmp_path: Path) -> None:
    out = tmp_path / "tracking.png"
    fig = plot_tracking(tracked_session(), out, eps=0.002)
    assert out.stat().st_size > 0
    *angle_axes, error_ax = fig.axes
    for ax in angle_axes:  # the joints and the zoom
        lines = {str(ln.get_label()): ln for ln in ax.get_lines()}
        measured = next(ln for label, ln in lines.items() if label.startswith("measured"))
        twin = next(ln for label, ln in lines.items() if label.startswith("twin"))
        assert twin.get_zorder() > measured.get_zorder(), "the twin must be drawn over the measured line"
        assert twin.get_linewidth() < measured.get_linewidth(), "a thin twin over a thick measured line"
    eps_lines = [ln for ln in error_ax.get_lines() if "ε" in str(ln.get_label())]
    assert len(eps_lines) == 1
    np.testing.assert_allclose(np.asarray(eps_lines[0].get_ydata(), dtype=float), 0.002)
    assert "deg²" in error_ax.get_ylabel(), "ε is an MSE bound (deg²): the panel must be in deg² too"
    assert plot_tracking(tracked_session(), out).axes[-1].get_lines(), "without ε: the error, no ε line"
    assert not [ln for ln in plot_tracking(tracked_session(), out).axes[-1].get_lines()
                if "ε" in str(ln.get_label())]


@pytest.mark.parametrize(("policy", "given", "expected"), [
    ("dead-reckoning:delta=0.1,h=200", None, DEFAULT_EPSILON),
    (f"kc-td3:{REPO / 'data' / 'policies' / 'kctd3_eps0.007.pt'}", None, 0.007),
    (f"kc-td3:{REPO / 'data' / 'policies' / 'kctd3_eps0.007.pt'}", 0.01, 0.01),
    ("static:k=5,h=20", 0.004, 0.004),
])
def test_demo_plots_the_policy_constraint(policy: str, given: float | None, expected: float) -> None:
    """The demo's ε: --epsilon if given, else the constraint the policy was trained for, else the default."""
    assert plot_epsilon(policy, given)[0] == pytest.approx(expected)
