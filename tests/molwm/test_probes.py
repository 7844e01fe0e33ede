"""Ridge probes: per-target fits on observed rows, penalty by leave-one-out, round trip."""

from __future__ import annotations

import numpy as np
import pytest

from molwm.evaluation.ridge_probes import RidgeProbe

pytestmark = pytest.mark.unit


def test_probe_recovers_a_linear_map_with_missing_labels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    w = rng.normal(size=(6, 2))
    y = x @ w + 0.05 * rng.normal(size=(300, 2))
    y[rng.random((300, 2)) < 0.5] = np.nan
    probe = RidgeProbe.fit(x, y)
    pred = probe.predict(x)
    ok = np.isfinite(y)
    assert np.sqrt(np.mean((pred[ok] - y[ok]) ** 2)) < 0.1
    assert np.all(probe.n_train == ok.sum(0)) and np.all(probe.resid_std < 0.1)
    back = RidgeProbe.from_dict(probe.to_dict())
    assert np.allclose(back.predict(x), pred)


def test_probe_shrinks_noise_and_skips_empty_targets():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 30))
    y = np.stack([rng.normal(size=40), np.full(40, np.nan)], 1)  # pure noise; never observed
    probe = RidgeProbe.fit(x, y)
    assert probe.alpha[0] >= 1.0  # LOO picks heavy shrinkage for noise
    pred = probe.predict(x)
    assert np.isnan(pred[:, 1]).all() and np.std(pred[:, 0]) < 0.5


def test_probe_takes_features_per_target():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 2, 3))  # each target has its own features
    y = np.stack([x[:, 0] @ [1.0, 0, 0], x[:, 1] @ [0, 0, -2.0]], 1)
    probe = RidgeProbe.fit(x, y)
    assert np.allclose(probe.predict(x), y, atol=0.05)
    assert np.isnan(probe.predict(np.zeros((1, 2, 3)))).sum() == 0


def test_probe_never_predicts_outside_the_training_range():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(100, 2))
    y = (x @ [1.0, 1.0])[:, None]
    probe = RidgeProbe.fit(x, y)
    far = np.array([[50.0, 50.0], [-50.0, -50.0]])  # a molecule unlike any training one
    pred = probe.predict(far)[:, 0]
    assert pred[0] == y.max() and pred[1] == y.min()
