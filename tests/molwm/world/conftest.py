"""Hand-made time courses and tiny world-model configs shared by the world tests."""

from __future__ import annotations

import numpy as np
import pytest

from molwm.world.data import TimeCourses
from molwm.world.model import WorldNetConfig
from molwm.world.train import WorldConfig, WorldDataConfig

TOY_TIMES = (0.0, 8.0, 16.0, 24.0, 32.0, 48.0)
TOY_DOSES = (0.1, 1.0, 10.0, 100.0)


def toy_courses(seed: int = 0, replicates: int = 4, times=TOY_TIMES) -> TimeCourses:
    """2 drugs x 4 doses x ``replicates`` + 8 controls (40 conditions), one feature: log cell count.

    Controls grow at 0.8 per day; a drug slows growth by ``strength * (log10 dose + 1)``
    (phenol twice as strongly as ethanol), so the effect is a known function of drug and dose.
    """
    rng = np.random.default_rng(seed)
    times = np.asarray(times, np.float64)
    drug = [d for d in (0, 1) for _ in TOY_DOSES for _ in range(replicates)] + [-1] * 8
    dose = [x for _ in (0, 1) for x in TOY_DOSES for _ in range(replicates)] + [0.0] * 8
    drug, dose = np.asarray(drug, np.int64), np.asarray(dose, np.float64)
    strength = np.array([0.3, 0.6])
    log_dose = np.log10(np.maximum(dose, 1e-3))
    effect = np.where(drug >= 0, strength[np.clip(drug, 0, None)] * (log_dose + 1), 0.0)
    rate = 0.8 - effect
    n = len(drug)
    obs = np.log(50.0) + rate[:, None] * times[None] / 24.0 + 0.02 * rng.normal(size=(n, len(times)))
    return TimeCourses(obs[..., None].astype(np.float32), np.tile(times, (n, 1)), drug, dose,
                       np.zeros(n, np.int64), ["ethanol", "phenol"], ["CCO", "c1ccccc1O"], ["toy"],
                       ["log_count"], [f"c{i}" for i in range(n)])


def tiny_config(out_dir: str, max_steps: int = 80, compound: str = "none", objective: str = "jepa",
                dropout: float = 0.1, **kw) -> WorldConfig:
    """A world model with a few thousand parameters: seconds on one thread."""
    fields = dict(max_steps=max_steps, batch_size=32, warmup_steps=5, log_every=4, health_every=40,
                  checkpoint_every=40, out_dir=out_dir)
    fields.update(kw)
    return WorldConfig(objective=objective,
                       data=WorldDataConfig(source="lab", lab="unused: courses are passed in",
                                            compound=compound, split="none"),
                       model=WorldNetConfig(dim=16, ensemble=2, depth=1, heads=2, history=2, dropout=dropout),
                       **fields)


@pytest.fixture
def make_courses():
    return toy_courses


@pytest.fixture
def make_config():
    return tiny_config


@pytest.fixture(scope="session")
def forecaster(tmp_path_factory):
    """A briefly trained world model (Morgan compound features) on the toy courses, loaded for forecasting."""
    from molwm.world.forecast import WorldForecaster
    from molwm.world.run import run_world

    out = tmp_path_factory.mktemp("world")
    result = run_world(tiny_config(str(out / "run"), max_steps=12, compound="morgan"), courses=toy_courses(),
                       progress=False)
    return WorldForecaster.load(result.checkpoint)
