"""Latent planning on a toy problem with a known answer, target parsing and rejected candidates.

The world model's rollout is replaced by a known function of the compound features and the
dose, so the best compound, its best dose and the whole ranking are known analytically.
"""

from __future__ import annotations

import numpy as np
import pytest

from molwm.world.forecast import ForecastError
from molwm.world.plan import plan, plot_plan, resolve_target

pytestmark = pytest.mark.integration  # every test plans with a trained world model (``forecaster``)

HORIZON = 24.0
CANDIDATES = ["CCO", "not_a_smiles", "CCN", "phenol", "CC(=O)O"]  # phenol: a training drug, by name
BEST, BEST_DOSE = "CCN", 3.0


@pytest.fixture
def toy(forecaster, monkeypatch):
    """The forecaster with ``roll`` replaced: the end state is ``[W @ compound, 2 log10 dose, 2 log10 dose]``,
    reached linearly in time from 0 at the start; two members ``spread`` apart per compound."""
    fc = forecaster
    proj = np.random.default_rng(0).normal(size=(fc.drug_features.shape[1], fc.dim - 2)) / 8.0
    start = float(fc.initial[fc.contexts[0]]["time"])
    spread = {}

    def end_state(feats: np.ndarray, log_dose: np.ndarray) -> np.ndarray:
        return np.concatenate([feats @ proj, 2 * log_dose[:, None], 2 * log_dose[:, None]], axis=1)  # [n, KD]

    def roll(tokens, start_time, action, times):
        feats = action.compound.numpy().astype(np.float64)
        end = end_state(feats, action.log_dose.numpy().astype(np.float64))
        frac = (np.asarray(times, np.float64).reshape(-1) - start) / (HORIZON - start)
        mean = frac[None, :, None] * end[:, None, :]  # [n, H, KD]
        wobble = np.zeros_like(mean)
        for key, size in spread.items():  # members disagree on compounds whose features start with `key`
            wobble[(feats[:, :len(key)] == key).all(1)] = size
        return np.stack([mean + wobble, mean - wobble])  # [E=2, n, H, KD]

    monkeypatch.setattr(fc, "roll", roll)
    return fc, end_state, spread


def _expected_distances(fc, end_state, candidates, dose):
    feats, _, _ = fc.compounds(candidates)
    ld = np.full(len(candidates), np.log10(dose))
    target = end_state(fc.compounds([BEST])[0].astype(np.float64), np.array([np.log10(BEST_DOSE)]))[0]
    return np.linalg.norm(end_state(feats.astype(np.float64), ld) - target, axis=1), target


def test_exhaustive_plan_ranks_the_known_best_first(toy, tmp_path):
    fc, end_state, _ = toy
    valid = [c for c in CANDIDATES if c != "not_a_smiles"]
    expected, target = _expected_distances(fc, end_state, valid, BEST_DOSE)
    result = plan(fc, target, CANDIDATES, HORIZON, doses=(0.3, 1.0, BEST_DOSE, 10.0, 30.0))
    table = result.table
    assert table["rank"].tolist() == [1, 2, 3, 4, 5]
    top = table.iloc[0]
    assert top["compound"] == BEST and top["dose_uM"] == BEST_DOSE
    assert top["distance"] == pytest.approx(0, abs=1e-6)
    # the whole ranking and every distance as computed by hand (every candidate's best dose is 3 uM here)
    assert table["compound"].tolist()[:4] == [valid[i] for i in np.argsort(expected, kind="stable")]
    assert (table["dose_uM"].iloc[:4] == BEST_DOSE).all()
    np.testing.assert_allclose(table["distance"].iloc[:4], np.sort(expected), atol=1e-6)
    # the invalid candidate: reported with its input position, ranked last, others unaffected
    assert result.rejects == [(1, "not_a_smiles", "not a valid SMILES nor a drug this model knows")]
    last = table.iloc[-1]
    assert last["compound"] == "not_a_smiles" and np.isnan(last["score"]) and np.isnan(last["distance"])
    # the best candidate's trajectory closes in on the target, linearly in time
    traj = result.trajectories[BEST]
    assert len(traj) == len(result.times) and result.times[-1] == HORIZON
    assert np.all(np.diff(traj) < 0) and traj[-1] == pytest.approx(0, abs=1e-6)
    assert "log_count" in table.columns and np.isfinite(table["log_count"].iloc[0])
    assert plot_plan(result, tmp_path / "plan.png").stat().st_size > 0


def test_cem_finds_the_known_best_dose(toy):
    fc, _, _ = toy
    result = plan(fc, f"{BEST}@{BEST_DOSE}", CANDIDATES, HORIZON, method="cem", dose_range=(0.01, 100.0),
                  cem_iters=6, cem_population=24, cem_elite=4)
    top = result.table.iloc[0]
    assert top["compound"] == BEST
    assert abs(np.log10(top["dose_uM"] / BEST_DOSE)) < 0.1, top["dose_uM"]
    assert top["distance"] < 0.3
    assert [r[1] for r in result.rejects] == ["not_a_smiles"]
    assert result.table.iloc[-1]["compound"] == "not_a_smiles" and np.isnan(result.table.iloc[-1]["score"])


def test_spread_weight_prefers_what_the_members_agree_on(toy):
    fc, end_state, spread = toy
    target = _expected_distances(fc, end_state, [BEST], BEST_DOSE)[1]
    runner_up = plan(fc, target, CANDIDATES, HORIZON, doses=(BEST_DOSE,)).table["compound"].iloc[1]
    spread[tuple(fc.compounds([BEST])[0][0])] = 5.0  # the members disagree wildly about the best candidate
    assert plan(fc, target, CANDIDATES, HORIZON, doses=(BEST_DOSE,)).table["compound"].iloc[0] == BEST
    penalised = plan(fc, target, CANDIDATES, HORIZON, doses=(BEST_DOSE,), spread_weight=1.0).table
    assert penalised["compound"].iloc[0] == runner_up
    assert penalised.set_index("compound").loc[BEST, "spread"] > 1.0


def test_resolve_target_errors_are_messages(forecaster, tmp_path):
    fc = forecaster
    assert resolve_target(fc, np.zeros(fc.dim), HORIZON).shape == (fc.dim,)
    assert resolve_target(fc, "CCO@10", HORIZON).shape == (fc.dim,)
    np.save(tmp_path / "short.npy", np.zeros(5))
    cases = [
        ("a target", "give a .npy embedding or SMILES@DOSE"),
        (str(tmp_path / "short.npy"), f"target has 5 dimensions; this model's states have {fc.dim}"),
        (str(tmp_path / "missing.npy"), "target file not found"),
        ("CCO@ten", "expected SMILES@DOSE with the dose in uM"),
        ("C1CC(@10", "not a valid SMILES"),
        (np.zeros(fc.dim + 1), f"this model's states have {fc.dim}"),
    ]
    for target, message in cases:
        with pytest.raises(ForecastError, match=message.replace("(", r"\(").replace(".", r"\.")):
            resolve_target(fc, target, HORIZON)


def test_plan_argument_errors(forecaster):
    target = np.zeros(forecaster.dim)
    with pytest.raises(ForecastError, match="no candidates"):
        plan(forecaster, target, [], HORIZON)
    with pytest.raises(ForecastError, match="unknown planning method 'grid'"):
        plan(forecaster, target, ["CCO"], HORIZON, method="grid")
    with pytest.raises(ForecastError, match="doses must be >= 0"):
        plan(forecaster, target, ["CCO"], HORIZON, doses=(-1.0,))
    with pytest.raises(ForecastError, match="must be after the start state"):
        plan(forecaster, target, ["CCO"], 0.0)
