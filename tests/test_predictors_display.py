"""Predictors (batch == online), the display rule, and the error metrics."""

from __future__ import annotations

import numpy as np
import pytest

from twin.display import Prediction, displayed, in_effect
from twin.metrics import ErrorAccumulator
from twin.predictors import PREDICTORS, OnlinePredictor, make_predictor


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_online_equals_batch(name: str) -> None:
    rng = np.random.default_rng(1)
    t = np.cumsum(rng.integers(1, 30, size=200)) * 1000
    q = np.cumsum(rng.normal(size=(200, 4)) * 1e-3, axis=0)
    batch = make_predictor(name).fit_all(t, q)
    online = OnlinePredictor(make_predictor(name))
    for i in range(len(t)):
        pred = online.update(int(t[i]), q[i], 50_000)
        np.testing.assert_allclose(pred.coeffs, batch[i], rtol=1e-9, atol=1e-12)


def test_polynomial_predictors_are_exact_on_their_model() -> None:
    t = np.arange(0, 100_000, 10_000)
    tau = t * 1e-6
    lin = np.stack([0.1 + 2.0 * tau], axis=1)
    quad = np.stack([0.1 + 2.0 * tau - 3.0 * tau**2], axis=1)
    c = make_predictor("linear").fit_all(t, lin)[-1]
    np.testing.assert_allclose(c[:, 0], [lin[-1, 0], 2.0], atol=1e-9)
    c = make_predictor("quadratic").fit_all(t, quad)[-1]
    np.testing.assert_allclose(c[:, 0], [quad[-1, 0], 2.0 - 6.0 * tau[-1], -3.0], atol=1e-6)


def test_horizon_clamps_extrapolation() -> None:
    p = Prediction(t0_us=1000, horizon_us=5000, coeffs=np.array([[1.0], [10.0]]))
    np.testing.assert_allclose(p.evaluate(np.array([1000, 3000, 6000, 60000]))[:, 0], [1, 1.02, 1.05, 1.05])
    hold = Prediction(t0_us=1000, horizon_us=0, coeffs=np.array([[1.0], [10.0]]))
    assert hold.evaluate(50_000)[0] == 1.0


def test_unknown_predictor_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="hold"):
        make_predictor("nope")


def test_display_rule_newest_arrived_prediction() -> None:
    # Sample at t0=0 arrives at 5 ms, t0=10 ms arrives at 30 ms, t0=20 ms overtakes it and arrives at 25 ms.
    arrival = np.array([5_000, 30_000, 25_000])
    t0 = np.array([0, 10_000, 20_000])
    keep = in_effect(arrival, t0)
    assert keep.tolist() == [0, 2]  # t0=10 ms arrived after a newer one: the server ignores it
    coeffs = np.array([[[1.0]], [[2.0]], [[3.0]]])
    h = np.zeros(3, dtype=np.int64)
    out = displayed(np.array([0, 4_999, 5_000, 24_999, 25_000, 40_000]), arrival[keep], t0[keep], h[keep],
                    coeffs[keep])
    assert np.isnan(out[0, 0]) and np.isnan(out[1, 0])
    assert out[2:, 0].tolist() == [1.0, 1.0, 3.0, 3.0]


def test_error_accumulator_matches_direct_computation() -> None:
    rng = np.random.default_rng(2)
    t = np.arange(5000) * 1000
    q = rng.normal(size=(5000, 3)) * 1e-3
    qhat = q + rng.normal(size=q.shape) * 1e-3
    qhat[:10] = np.nan
    acc = ErrorAccumulator()
    for a in range(0, 5000, 137):  # chunked like the device
        acc.add(t[a:a + 137], q[a:a + 137], qhat[a:a + 137])
    e = np.degrees(q[10:] - qhat[10:])
    assert acc.mse_deg2 == pytest.approx(np.mean(e**2), rel=1e-9)
    assert acc.quantile_abs(0.99) == pytest.approx(np.quantile(np.abs(e), 0.99), rel=0.01)
    assert acc.uncounted == 10
    assert 0.0 <= acc.tail_fraction(np.mean(e**2)) <= 1.0
    assert len(acc.window_mse) == 49


def test_compiled_parabola_fit_matches_numpy_reference() -> None:
    from twin.kinematics import quad_fit, quad_fit_reference

    rng = np.random.default_rng(4)
    t = np.cumsum(rng.integers(900, 1100, 3000))
    q = np.cumsum(rng.normal(size=(3000, 5)) * 1e-3, axis=0)
    ends = rng.choice(3000, 500, replace=False)
    for window in (2, 5, 20):
        np.testing.assert_allclose(quad_fit(t, q, ends, window), quad_fit_reference(t, q, ends, window),
                                   rtol=1e-7, atol=1e-9)


def test_kinematic_predictor_uses_device_derivatives() -> None:
    pred = make_predictor("kinematic")
    t = np.array([0, 10_000])
    q = np.array([[0.0], [0.1]])
    deriv = np.array([[[np.nan], [np.nan]], [[2.0], [-1.0]]])
    coeffs = pred.fit_with_derivatives(t, q, deriv)  # type: ignore[attr-defined]
    np.testing.assert_allclose(coeffs[1, :, 0], [0.1, 2.0, -1.0])
    np.testing.assert_allclose(coeffs[0, :, 0], [0.0, 0.0, 0.0])  # no derivatives: the fallback fit (hold)


@pytest.mark.parametrize("name", sorted(n for n, cls in PREDICTORS.items() if cls.uses_derivatives))
def test_online_with_derivatives_equals_batch(name: str) -> None:
    """The live wrapper's shortcut (a sample's own derivatives are its coefficients) gives exactly the batch
    fit, also where some samples came without derivatives and the fit falls back on the history."""
    rng = np.random.default_rng(2)
    t = np.cumsum(rng.integers(1, 30, size=300)) * 1000
    q = np.cumsum(rng.normal(size=(300, 4)) * 1e-3, axis=0)
    deriv = rng.normal(size=(300, 2, 4))
    deriv[rng.random(300) < 0.3] = np.nan  # sent without derivatives
    batch = make_predictor(name).fit_with_derivatives(t, q, deriv)  # type: ignore[attr-defined]
    online = OnlinePredictor(make_predictor(name))
    for i in range(len(t)):
        d = None if np.isnan(deriv[i]).any() else deriv[i]
        pred = online.update(int(t[i]), q[i], 50_000, d)
        np.testing.assert_array_equal(pred.coeffs, batch[i])
