"""Calibrators and uncertainty metrics against results computed by hand or by the textbook."""

from __future__ import annotations

import math

import numpy as np
import pytest

from molwm.config import ConfigError
from molwm.uncertainty.calibration import (CalibrationConfig, Calibrator, conformal_quantile, fit_calibrator,
                                     resolve_method, z_of)
from molwm.evaluation.metrics import (brier_score, expected_calibration_error, gaussian_nll, interval_coverage,
                                 miscalibration_area, spearman_error_std)
from molwm.uncertainty.fit import regression_report, shares_rows

pytestmark = pytest.mark.unit


def test_conformal_quantile_is_the_ceil_n_plus_one_th_smallest_score():
    scores = np.arange(9, 0, -1, dtype=float)  # 9 scores, 1..9 in any order
    assert conformal_quantile(scores, 0.9) == 9.0  # ceil(10 * 0.9) = 9th smallest
    assert conformal_quantile(scores, 0.5) == 5.0  # ceil(5) = 5th
    assert conformal_quantile(scores, 0.8) == 8.0
    assert math.isinf(conformal_quantile(scores, 0.95))  # ceil(9.5) = 10 > n: no finite interval
    assert z_of(0.9) == pytest.approx(1.644854, abs=1e-6)


def test_split_conformal_covers_exactly_k_over_n_plus_one_on_exchangeable_data():
    """Textbook result (Vovk; Lei et al. 2018): marginal coverage ceil((n+1)c)/(n+1) for continuous scores."""
    rng = np.random.default_rng(0)
    n, trials, per = 19, 400, 200
    hits = []
    for _ in range(trials):
        s = rng.uniform(0.5, 2.0, size=(n + per))  # heteroscedastic: the std predicts the noise
        y = rng.normal(0.0, s)
        preds = np.stack([-s, s])[:, :, None]  # two members: mean 0, std s
        cal = fit_calibrator("conformal", "regression", preds[:, :n], y[:n, None], 0.9)
        out = cal.apply(preds[:, n:])
        hits.append(interval_coverage(y[n:], out["lo"][:, 0], out["hi"][:, 0]))
    assert np.mean(hits) == pytest.approx(math.ceil(20 * 0.9) / 20, abs=0.01)


def test_zscale_factor_and_intervals_by_hand():
    mean, s = np.array([0.0, 1.0, 2.0]), np.array([1.0, 2.0, 0.5])
    preds = np.stack([mean - s, mean + s])[:, :, None]  # two members: std across them is s
    y = (mean + 2 * s)[:, None]  # every residual is 2 std
    cal = fit_calibrator("zscale", "regression", preds, y, 0.9)
    assert cal.params[0]["scale"] == pytest.approx(2.0) and cal.params[0]["use_std"]
    out = cal.apply(preds)
    assert out["std"][:, 0] == pytest.approx(2 * s)
    assert out["hi"][:, 0] == pytest.approx(mean + 1.644854 * 2 * s, rel=1e-6)
    # one member: no spread, so a constant std, the validation RMS residual
    single = fit_calibrator("zscale", "regression", preds[:1] * 0 + mean[None, :, None], np.array([[1.0], [1.0], [5.0]]))
    assert not single.params[0]["use_std"]
    assert single.params[0]["scale"] == pytest.approx(math.sqrt((1 + 0 + 9) / 3))


def test_platt_recovers_a_known_temperature_and_isotonic_is_pav():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.02, 0.98, 5000)
    true = 1 / (1 + np.exp(-2.0 * np.log(p / (1 - p))))  # overconfident by a factor 2 in logit
    y = (rng.uniform(size=p.size) < true).astype(float)
    cal = fit_calibrator("platt", "classification", p[None, :, None], y[:, None])
    assert cal.params[0]["a"] == pytest.approx(2.0, abs=0.2) and cal.params[0]["b"] == pytest.approx(0, abs=0.15)
    iso = fit_calibrator("isotonic", "classification", np.array([[0.1, 0.2, 0.3, 0.4]])[:, :, None],
                         np.array([[0.0], [1.0], [0.0], [1.0]]))
    assert iso.probability(0, np.array([0.1, 0.2, 0.3, 0.4])) == pytest.approx([0.0, 0.5, 0.5, 1.0])


def test_calibrator_round_trip_and_uncalibrated_default():
    preds = np.array([[[1.0], [2.0], [0.0]], [[3.0], [2.0], [1.0]]])
    cal = fit_calibrator("conformal", "regression", preds, np.array([[2.5], [2.0], [0.0]]), 0.5)
    again = Calibrator.from_dict(cal.to_dict())
    assert np.allclose(again.apply(preds)["hi"], cal.apply(preds)["hi"])
    old = Calibrator.from_dict(None, "regression", 1)  # a checkpoint from before calibration
    assert old.description.startswith("ensemble_std")
    assert old.apply(preds)["std"][:, 0] == pytest.approx([1.0, 0.0, 0.5])  # the raw spread


def test_resolve_method_calibrates_by_default_and_refuses_a_method_of_the_other_task():
    cfg = CalibrationConfig()
    assert resolve_method(cfg, "regression", True, 3) == "conformal_fixed"
    assert resolve_method(cfg, "classification", True, 3) == "platt"
    # seeds with their own splits are calibrated too (on the first member's own rows), never left raw
    assert resolve_method(cfg, "regression", False, 3) == "conformal_fixed"
    assert resolve_method(CalibrationConfig(method="zscale"), "regression", False, 3) == "zscale"
    assert resolve_method(CalibrationConfig(method="conformal"), "regression", False, 3) == "conformal"
    assert resolve_method(CalibrationConfig(method="none"), "regression", True, 3) == "none"
    with pytest.raises(ConfigError, match="not for classification"):
        resolve_method(CalibrationConfig(method="zscale"), "classification", True, 3)
    with pytest.raises(ConfigError, match="coverage"):
        CalibrationConfig(coverage=1.5).validate()
    same = (np.array([0, 1]), np.array([2]), np.array([3]))
    assert shares_rows([same, (np.array([1]), np.array([2]), np.array([3]))])
    assert not shares_rows([same, (np.array([0, 2]), np.array([1]), np.array([3]))])


def test_metrics_by_hand():
    y = np.array([0.0, 1.0, 2.0, np.nan])
    assert interval_coverage(y, np.array([-1, 1.5, 1, 0]), np.array([1, 2, 3, 0])) == pytest.approx(2 / 3)
    assert miscalibration_area(np.array([0, 0.5, 1]), np.array([0, 1, 1])) == pytest.approx(0.25)
    assert gaussian_nll(np.array([0.0]), np.array([0.0]), np.array([1.0])) == pytest.approx(0.5 * math.log(2 * math.pi))
    assert spearman_error_std(np.zeros(4), np.array([1.0, 2, 3, 4]), np.array([0.1, 0.2, 0.3, 0.4])) == pytest.approx(1)
    yc, pc = np.array([0.0, 1, 1, 1]), np.array([0.05, 0.95, 0.95, 0.55])
    assert expected_calibration_error(yc, pc) == pytest.approx(0.25 * 0.05 + 0.5 * 0.05 + 0.25 * 0.45)
    assert brier_score(yc, pc) == pytest.approx((0.0025 * 3 + 0.2025) / 4)


def test_regression_report_raw_std_of_a_calibrated_gaussian():
    rng = np.random.default_rng(2)
    s = rng.uniform(0.5, 2.0, 20000)
    preds = np.stack([-s, s])[:, :, None]
    y = rng.normal(0.0, s)[:, None]  # the raw std is already calibrated
    got, (expected, observed) = regression_report(Calibrator.from_dict(None, "regression", 1), preds, y)
    assert got["coverage_90"] == pytest.approx(0.9, abs=0.01) and got["miscalibration_area"] < 0.01
    assert got["spearman"] > 0.2
    assert expected[0] == 0 and observed[-1] == 1


def test_conformal_fixed_is_one_width_from_the_residuals_of_the_mean():
    preds = np.array([[[0.0], [1.0], [2.0], [3.0]], [[0.2], [1.0], [2.6], [3.0]]])  # [M=2, N=4, T=1]
    y = np.array([[0.5], [1.0], [2.0], [4.0]])  # |y - mean|: 0.4, 0, 0.3, 1.0
    cal = fit_calibrator("conformal_fixed", "regression", preds, y, 0.8)
    assert cal.params[0]["scores"] == pytest.approx([0.0, 0.3, 0.4, 1.0]) and cal.params[0]["use_std"] is False
    out = cal.apply(np.array([[[5.0], [0.0]], [[5.0], [2.0]]]))  # members agree on row 0, differ on row 1
    half = out["hi"][:, 0] - out["value"][:, 0]
    # ceil(5 * 0.8) = 4th smallest score, the same for both rows whatever the spread
    assert half == pytest.approx([1.0, 1.0])
    rejected = cal.apply(np.full((2, 1, 1), np.nan))  # a rejected molecule: no value, no width
    assert np.isnan(rejected["std"]).all() and np.isnan(rejected["lo"]).all()
