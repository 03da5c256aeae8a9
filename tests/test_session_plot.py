"""``armtwin plot``: every joint measured vs twin (both visible), error against ε, sends, load, end-effector mm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from armtwin.cli import main
from tests.conftest import synthetic_session
from twin.session import Session, write_session
from viewer.session_plot import load_over_time, plot_session


@pytest.fixture(scope="module", autouse=True)
def fonts_loaded(tmp_path_factory: pytest.TempPathFactory) -> None:
    """matplotlib keeps used font files open for the process: load them before the leak check's baseline."""
    plot_session(tracked(), tmp_path_factory.mktemp("fonts") / "warm.png", eps=0.002)


def tracked(joints: int = 7) -> Session:
    s = synthetic_session(3.0, joints=joints)
    s.qhat = np.roll(s.q, 15, axis=0)
    s.qhat[:200] = np.nan  # nothing displayed before the first prediction
    s.sent = np.arange(len(s.t_us)) % 25 == 0
    s.meta["urdf"] = "kuka_iiwa/model.urdf"
    return s


def test_every_panel_shows_what_it_says(tmp_path: Path) -> None:
    s = tracked()
    fig = plot_session(s, tmp_path / "s.png", eps=0.004)
    assert (tmp_path / "s.png").stat().st_size > 0
    axes = fig.axes
    assert len(axes) == s.joints + 4
    for ax in axes[: s.joints]:
        lines = {str(ln.get_label()): ln for ln in ax.get_lines()}
        measured, twin = lines["measured q"], lines["twin displayed q̂"]
        assert twin.get_zorder() > measured.get_zorder()
        assert twin.get_linewidth() < measured.get_linewidth()
        assert twin.get_linestyle() == "--" and twin.get_color() != measured.get_color()
    err_ax, send_ax, load_ax, ee_ax = axes[s.joints:]
    eps = [ln for ln in err_ax.get_lines() if "ε" in str(ln.get_label())]
    assert len(eps) == 1
    np.testing.assert_allclose(np.asarray(eps[0].get_ydata(), dtype=float), 0.004)
    sends = np.concatenate([np.asarray(c.get_positions()) for c in send_ax.collections])
    assert len(sends) == int(s.sent.sum())
    load = np.asarray(load_ax.get_lines()[0].get_ydata(), dtype=float)
    np.testing.assert_allclose(load, 1 / 25, rtol=0.05)
    ee = np.asarray(ee_ax.get_lines()[0].get_ydata(), dtype=float)
    assert np.isnan(ee[:200]).all(), "no end-effector error before the twin displays anything"
    assert 0.01 < np.nanmax(ee) < 500, "a 15 ms lag of a moving KUKA: millimetres, not metres or zero"


def test_load_over_time_drops_a_short_last_window() -> None:
    t = np.arange(2100) * 1e-3
    sent = np.zeros(2100, dtype=bool)
    sent[2050:] = True  # the 100 samples past the second whole window: a spike if drawn
    starts, load = load_over_time(t, sent)
    assert list(starts) == [0.0, 1.0] and load.max() == 0.0


def test_cli_plots_a_session_file_and_refuses_bad_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.mcap"
    write_session(path, tracked())
    assert main(["plot", str(path), "-o", str(tmp_path / "out" / "s.png")]) == 0
    assert (tmp_path / "out" / "s.png").stat().st_size > 0
    assert main(["plot", str(path), "-o", str(tmp_path / "s.txt")]) == 2
    assert main(["plot", str(tmp_path / "missing.mcap"), "-o", str(tmp_path / "m.png")]) == 2
    err = capsys.readouterr().err
    assert ".png" in err and "no such file" in err


def test_imported_session_without_twin_still_plots(tmp_path: Path) -> None:
    fig = plot_session(synthetic_session(1.0, joints=2), tmp_path / "i.png")
    texts = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "no sends recorded" in texts and "end-effector error unavailable" in texts
