"""Forecast intervals: raw Gaussian without a calibration, the stored calibration once one is fitted."""

from __future__ import annotations

import numpy as np
import pytest

from molwm.world.evaluate import calibrate, members_steps_ahead, save_calibrated
from molwm.world.forecast import WorldForecaster

pytestmark = pytest.mark.integration  # reads a trained world model (``world_run``)


def test_forecasts_use_a_calibration_fitted_on_held_out_courses(world_run, tmp_path):
    fc = WorldForecaster.load(world_run.checkpoint)
    raw = fc.forecast_rows(["CCO"], [1.0], [24.0])
    assert raw.uncertainty[0].startswith("ensemble_std (uncalibrated")
    assert raw.log_count_hi[0] - raw.log_count[0] == pytest.approx(1.644854 * raw.log_count_std[0], rel=1e-5)
    preds, observed, rows = members_steps_ahead(fc, world_run.build.train, 1)  # stand-in validation courses
    assert preds.shape == (2, len(rows), 1) and observed.shape == (len(rows), 1)
    cal = calibrate(fc, preds, observed, "zscale")
    spread = preds.std(0)[:, 0]
    fit = spread > 1e-6 * np.median(spread)  # rows where the members agree to rounding are left out
    scale = np.sqrt(np.mean((observed[fit, 0] - preds.mean(0)[fit, 0]) ** 2 / spread[fit] ** 2))
    assert cal.params[0]["scale"] == pytest.approx(scale, rel=1e-6)
    loaded = WorldForecaster.load(save_calibrated(world_run.checkpoint, cal, fc.obs_names, tmp_path / "cal.pt",
                                                  "toy courses"))
    rows = loaded.forecast_rows(["CCO"], [1.0], [24.0])
    assert rows.uncertainty[0].startswith("zscale")
    assert rows.log_count_lo[0] <= rows.log_count[0] <= rows.log_count_hi[0]
    std, lo, hi = loaded.intervals({"log_count": (np.array([1.0]), np.array([0.2]))})["log_count"]
    assert std[0] == pytest.approx(0.2 * scale) and hi[0] == pytest.approx(1.0 + 1.644854 * 0.2 * scale, rel=1e-6)
    frame = loaded.forecast(["CCO"], [1.0, 10.0], [8.0, 24.0]).frame()
    assert {"log_count_lo", "log_count_hi"} <= set(frame.columns) and len(frame) == 4
