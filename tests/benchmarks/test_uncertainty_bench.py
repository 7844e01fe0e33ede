"""benchmarks/uncertainty_*.py: forecast coverage scored across groups, and finding the chemprop command."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
import uncertainty_chemprop
import uncertainty_forecast


@pytest.mark.unit
def test_each_group_is_scored_by_calibrators_fitted_on_the_other_groups_only():
    rng = np.random.default_rng(0)
    n = 600
    groups = np.repeat([0, 1, 2], n // 3)
    spread = rng.uniform(0.5, 2.0, n)
    center = rng.normal(size=n)
    preds = center[None, :, None] + 0.1 * spread[None, :, None] * rng.standard_normal((3, n, 1))
    preds -= preds.mean(0, keepdims=True) - center[None, :, None]  # ensemble mean exactly ``center``
    y = center[:, None] + 10.0 * preds.std(0) * rng.standard_normal((n, 1))  # truth 10x wider than the spread
    y[groups == 2] = center[groups == 2, None]  # group 2: no error at all
    scored = uncertainty_forecast.group_calibrated(preds, y, groups)
    rows = uncertainty_forecast.summarise(scored, preds, y, groups)
    at90 = int(np.flatnonzero(np.isclose(uncertainty_forecast.LEVELS, 0.9))[0])
    raw = scored["none"]["covered"][:, 0, at90]
    assert raw[groups == 0].mean() < 0.3  # raw spread far too narrow
    # groups 0 and 1 are calibrated with group 2 among the fitted rows (errors 0), so narrower than they need
    zs = scored["zscale"]["covered"][:, 0, at90]
    assert zs[groups == 2].all() and zs[groups == 0].mean() < 0.9
    assert rows["zscale"]["groups"] == 3 and rows["zscale"]["n"] == n
    per = [zs[groups == g].mean() for g in range(3)]
    assert rows["zscale"]["group_cov90_min"] == pytest.approx(min(per))
    assert rows["zscale"]["group_cov90_max"] == pytest.approx(1.0)
    assert rows["zscale"]["group_cov90_within5"] == pytest.approx(np.mean(np.abs(np.array(per) - 0.9) <= 0.05))
    assert rows["none"]["rmse"] == pytest.approx(np.sqrt(np.mean((center[:, None] - y) ** 2)))
    assert rows["none"]["r2"] == pytest.approx(1 - np.mean((center[:, None] - y) ** 2) / y.var())
    table = uncertainty_forecast.forecast_table([{"k1": rows, "train_seconds": [1.0]}] * 2).splitlines()
    assert len(table) == 2 + 3 and len({line.count("|") for line in table}) == 1
    assert "| k1 | conformal | 600 |" in table[-1] and "of 3 |" in table[-1]


@pytest.mark.unit
def test_exchangeable_groups_get_nominal_conformal_coverage():
    rng = np.random.default_rng(1)
    n = 3000
    groups = rng.integers(0, 5, n)
    preds = rng.standard_normal((4, n, 1))
    y = preds.mean(0) + 3.0 * preds.std(0) * rng.standard_normal((n, 1))
    rows = uncertainty_forecast.summarise(uncertainty_forecast.group_calibrated(preds, y, groups), preds, y, groups)
    for level in (50, 80, 90, 95):
        assert rows["conformal"][f"coverage_{level}"] == pytest.approx(level / 100, abs=0.03)
    assert rows["conformal"]["miscalibration_area"] < 0.03 < rows["none"]["miscalibration_area"]


@pytest.mark.unit
def test_the_chemprop_command_comes_from_the_option_then_the_environment_then_path(tmp_path, monkeypatch):
    fake = tmp_path / "chemprop"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("CHEMPROP", raising=False)
    found, why = uncertainty_chemprop.find_chemprop(None)
    assert found is None and "--chemprop" in why
    assert uncertainty_chemprop.find_chemprop(str(fake)) == (str(fake), "")
    monkeypatch.setenv("CHEMPROP", str(tmp_path / "missing"))
    found, why = uncertainty_chemprop.find_chemprop(None)
    assert found is None and "missing" in why
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + os.environ["PATH"])
    monkeypatch.delenv("CHEMPROP")
    assert uncertainty_chemprop.find_chemprop(None) == (str(fake), "")
