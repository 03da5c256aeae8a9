"""The learned predictor: live == batch, model files, registry names, safety fallbacks and the fit-predictor verb."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from armtwin.cli import main
from lab.fit_predictor import fit_predictor, static_mse
from tests.conftest import synthetic_session
from twin.learned_predictor import (
    DEFAULT_MODEL,
    HISTORY,
    LearnedModel,
    LearnedModelError,
    LearnedPredictor,
)
from twin.predictors import HoldPredictor, OnlinePredictor, QuadraticPredictor, make_predictor
from twin.session import write_session


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained in about a second on synthetic motion, saved to disk."""
    model = fit_predictor([synthetic_session(seconds=10, joints=3)], [5, 10], horizon_ms=50, epochs=2, seed=0,
                          max_rows=20_000, log=lambda _: None, progress=False)
    path = tmp_path_factory.mktemp("model") / "tiny.npz"
    model.save(path)
    return path


def every_k(n: int, k: int, seed: int, loss: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Received (t_us, q) of a 4-joint 1 kHz stream sent every k-th sample, with µs jitter and optional losses."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(1000 + rng.integers(-3, 4, size=n * k)).astype(np.int64)
    q = np.cumsum(np.cumsum(rng.normal(size=(n * k, 4)) * 1e-5, axis=0), axis=0)
    recv = np.arange(0, n * k, k)
    recv = recv[rng.random(len(recv)) >= loss]
    return t[recv], q[recv]


def test_online_equals_batch_on_both_paths(tiny_model: Path) -> None:
    t, q = every_k(300, 5, seed=3, loss=0.1)
    pred = LearnedPredictor(tiny_model)
    batch = pred.fit_all(t, q)
    online = OnlinePredictor(LearnedPredictor(tiny_model))
    for i in range(len(t)):
        np.testing.assert_allclose(online.update(int(t[i]), q[i], 50_000).coeffs, batch[i], rtol=1e-9, atol=1e-12)
    # Both the network (regular windows) and the quadratic fallback (windows with a lost sample) were exercised.
    quad = QuadraticPredictor().fit_all(t, q)
    used_net = ~np.isclose(batch, quad, rtol=1e-6, atol=1e-12).all(axis=(1, 2))
    assert 0.2 < used_net.mean() < 0.9
    assert not used_net[: HISTORY - 1].any()  # not enough history yet: the quadratic predictor's rows
    np.testing.assert_array_equal(batch[:, 0], q)  # c0 is the newest sample: the twin never jumps off it


def test_untrained_sampling_falls_back_to_quadratic(tiny_model: Path) -> None:
    pred = LearnedPredictor(tiny_model)
    for k in (1, 200):  # gaps far outside the trained 5..10 ms
        t, q = every_k(50, k, seed=4)
        np.testing.assert_allclose(pred.fit_all(t, q), QuadraticPredictor().fit_all(t, q), rtol=1e-12, atol=0)


def test_prediction_is_odd_and_rest_predicts_rest(tiny_model: Path) -> None:
    pred = LearnedPredictor(tiny_model)
    t, q = every_k(100, 10, seed=5)
    np.testing.assert_allclose(pred.fit_all(t, -q), -pred.fit_all(t, q), rtol=1e-12, atol=1e-15)
    rest = pred.fit_all(t, np.full_like(q, 0.3))
    assert np.all(rest[:, 1:] == 0.0)


def test_npz_round_trip(tiny_model: Path, tmp_path: Path) -> None:
    model = LearnedModel.load(tiny_model)
    assert model.meta["schema"] == "armtwin-learned-predictor/1"
    assert model.meta["history"] == HISTORY and model.meta["ks"] == [5, 10] and model.meta["epochs"] == 2
    again = tmp_path / "again.npz"
    model.save(again)
    reloaded = LearnedModel.load(again)
    for name in ("W0", "b0", "W1", "b1", "W2", "Ws", "whiten", "t_mean", "t_std"):
        np.testing.assert_array_equal(getattr(reloaded, name), getattr(model, name))
    assert reloaded.meta == model.meta
    t, q = every_k(60, 10, seed=6)
    np.testing.assert_array_equal(LearnedPredictor(again).fit_all(t, q), LearnedPredictor(model).fit_all(t, q))


def test_bad_or_missing_model_files_give_clear_errors(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(LearnedModelError, match=r"no such model file.*fit-predictor"):
        LearnedPredictor(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    with pytest.raises(LearnedModelError, match="not a learned-predictor model"):
        LearnedPredictor(junk)
    with np.load(tiny_model) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    wrong = tmp_path / "wrong_schema.npz"
    np.savez(wrong, **{**arrays, "meta": np.array(json.dumps({**meta, "schema": "other/9"}))})
    with pytest.raises(LearnedModelError, match="schema 'other/9'"):
        LearnedPredictor(wrong)
    partial = tmp_path / "partial.npz"
    np.savez(partial, **{k: v for k, v in arrays.items() if k != "W1"})
    with pytest.raises(LearnedModelError, match="missing W1"):
        LearnedPredictor(partial)
    bad_shape = tmp_path / "bad_shape.npz"
    np.savez(bad_shape, **{**arrays, "W2": np.zeros((3, 2))})
    with pytest.raises(LearnedModelError, match="inconsistent model arrays"):
        LearnedPredictor(bad_shape)
    with pytest.raises(ValueError, match="no such model file"):  # what the server and simulator catch
        make_predictor(f"learned:{tmp_path / 'missing.npz'}")


def test_make_predictor_name_and_path(tiny_model: Path) -> None:
    p = make_predictor(f"learned:{tiny_model}")
    assert isinstance(p, LearnedPredictor) and p.path == tiny_model
    default = make_predictor("learned")
    assert isinstance(default, LearnedPredictor) and default.path == DEFAULT_MODEL  # the bundled default
    with pytest.raises(ValueError, match="takes no argument"):
        make_predictor("linear:3")
    with pytest.raises(ValueError, match="learned"):
        make_predictor("nope")


def test_bundled_default_model() -> None:
    assert DEFAULT_MODEL.stat().st_size < 16_000
    model = LearnedModel.load(DEFAULT_MODEL)
    assert model.meta["sessions"] == ["train_a.mcap", "train_b.mcap"]
    table = model.meta["validation"]["mse_deg2"]
    for row in table.values():  # recorded when it was trained: it beat hold and linear on held-out sessions
        assert row["learned"] < row["linear"] < row["hold"]


def test_fit_predictor_cli_beats_hold_on_held_out_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train, held, out = tmp_path / "train.mcap", tmp_path / "held.mcap", tmp_path / "sub" / "model.npz"
    write_session(train, synthetic_session(seconds=12, joints=3, seed=0))
    write_session(held, synthetic_session(seconds=6, joints=2, seed=7))
    rc = main(["fit-predictor", str(train), "-o", str(out), "--k", "10,20", "--epochs", "2",
               "--max-rows", "20000", "--seed", "1", "--validate", str(held)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "held-out MSE" in text and f"wrote {out}" in text
    model = LearnedModel.load(out)
    assert model.meta["seed"] == 1 and model.meta["sessions"] == ["train.mcap"]
    session = synthetic_session(seconds=6, joints=2, seed=7)
    for k in (10, 20):
        learned, n = static_mse(session, LearnedPredictor(out), k, 50_000)
        hold, _ = static_mse(session, HoldPredictor(), k, 50_000)
        assert learned / n < 0.01 * hold / n
        assert model.meta["validation"]["mse_deg2"][str(k)]["learned"] == pytest.approx(learned / n)


def test_fit_predictor_is_deterministic() -> None:
    s = synthetic_session(seconds=6, joints=2)
    a, b = (fit_predictor([s], [5], horizon_ms=50, epochs=1, seed=3, max_rows=5_000, log=lambda _: None,
                          progress=False) for _ in range(2))
    for name in ("W0", "W1", "W2", "Ws", "whiten"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_fit_predictor_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit-predictor", str(tmp_path / "none.mcap"), "-o", str(tmp_path / "m.npz")]) == 2
    assert "error:" in capsys.readouterr().err
    good = tmp_path / "s.mcap"
    write_session(good, synthetic_session(seconds=2, joints=1))
    assert main(["fit-predictor", str(good), "-o", str(tmp_path / "m.npz"), "--k", "1,5"]) == 2
    assert "--k must be >= 2" in capsys.readouterr().err
    assert not (tmp_path / "m.npz").exists()
