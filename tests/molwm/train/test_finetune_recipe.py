"""The fine-tuning recipe: extra descriptor inputs, staged unfreezing and the tabular head, each through
the real fine-tune, its checkpoint and a query."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from molwm.checkpoints import load_checkpoint
from molwm.config import ConfigError, load_config
from molwm.data.batch import CachedGraphs
from molwm.data.prepare import PrepareConfig, prepare_dataset
from molwm.data.splits import load_splits
from molwm.query import MoleculeModel
from molwm.predictors.extras import ExtraInputs, FeatureScaler, extra_features
from molwm.predictors.forest import ArrayForest
from molwm.train import finetune_steps
from molwm.train.finetune import FinetuneConfig, run_finetune

NAME = "hydration_free_energy"
SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "not a smiles"]


@pytest.mark.unit
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_array_forest_predicts_what_scikit_learn_does(task):
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    y = x[:, 0] * 2 - x[:, 1] + 0.1 * rng.normal(size=200)
    if task == "classification":
        rf = RandomForestClassifier(n_estimators=20, random_state=0, min_samples_leaf=3).fit(x, (y > 0).astype(int))
        expected = rf.predict_proba(x[:50])[:, 1]
    else:
        rf = RandomForestRegressor(n_estimators=20, random_state=0, max_features=0.5).fit(x, y)
        expected = rf.predict(x[:50])
    forest = ArrayForest.from_state(ArrayForest.from_sklearn(rf).to_state())  # through a checkpoint's tensors
    assert np.allclose(forest.predict(x[:50]), expected, atol=1e-12)


@pytest.mark.unit
def test_feature_scaler_is_median_and_mad_clipped_with_nan_as_zero():
    x = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [100.0, np.nan]])
    s = FeatureScaler.fit(x)
    assert s.center.tolist() == [2.5, 5.0]
    assert s.scale[0] == pytest.approx(1.4826 * 1.0) and s.scale[1] == 1.0  # MAD 1; constant column: 1
    z = s.transform(np.array([[2.5, np.nan], [1e6, 5.0]]))
    assert z.tolist() == [[0.0, 0.0], [6.0, 0.0]]
    assert FeatureScaler.from_dict(s.to_dict()).transform(x).tolist() == s.transform(x).tolist()


@pytest.mark.unit
def test_extra_features_are_descriptors_then_morgan_counts():
    cfg = ExtraInputs(descriptors=True, morgan_counts=True, morgan_bits=64)
    x = extra_features(["CCO", "not a smiles"], cfg)
    assert x.shape == (2, cfg.width()) and np.isnan(x[1, :-64]).all() and (x[1, -64:] == 0).all()
    assert np.isfinite(x[0]).all() and x[0, -64:].sum() > 0


@pytest.mark.unit
def test_recipe_keys_are_checked(repo_root):
    path = repo_root / "configs/finetune/tiny.yaml"
    for bad in (["freeze_epochs=1"], ["mode=full", "from_model=x.pt", "freeze_epochs=3"]):
        with pytest.raises(ConfigError, match="freeze_epochs"):
            load_config(FinetuneConfig, path, bad)


def _tiny(repo_root, tmp_path, *overrides):
    return load_config(FinetuneConfig, repo_root / "configs/finetune/tiny.yaml",
                       [f"out_dir={tmp_path / 'out'}", f"cache_dir={tmp_path / 'c'}", "epochs=2", *overrides])


@pytest.mark.integration
def test_descriptor_inputs_are_stored_and_a_query_predicts_what_training_did(repo_root, tmp_path):
    result = run_finetune(_tiny(repo_root, tmp_path, "extra.descriptors=true"), progress=False)
    state = load_checkpoint(result.checkpoint)
    assert state["extra"]["descriptors"] and "extra_scaler" in state["members"][0]
    model = MoleculeModel.load(result.checkpoint)
    width = model.members[0].head[1].in_features  # [dropout, linear, ...]: the MLP's first layer
    assert width == 2 * 32 + ExtraInputs(descriptors=True).width()
    frame = model.predict(SMILES)
    assert frame.status.tolist()[:3] == ["ok"] * 3 and np.isfinite(frame[NAME][:3]).all()
    # the query path (extras computed from SMILES) scores the test rows as training did (extras from the cache)
    prep = prepare_dataset(PrepareConfig(dataset="freesolv", limit=120, cache_dir=str(tmp_path / "c"), progress=False))
    meta, y = prep.cache.meta(), np.concatenate(CachedGraphs(prep.cache, with_labels=True).labels)[:, 0]
    pos_of = {int(r): i for i, r in enumerate(meta["index"])}
    test = [pos_of[int(r)] for r in load_splits(result.split_file)[0][2]]
    _, preds, _ = model.compute(meta["smiles"].iloc[test].tolist(), embed=False, predict=True)
    rmse = float(np.sqrt(np.mean((preds[0, :, 0] - y[test]) ** 2)))
    assert rmse == pytest.approx(result.per_seed[0]["test_rmse"], rel=1e-4)


@pytest.mark.integration
def test_staged_unfreezing_trains_the_head_alone_first(repo_root, tmp_path, graph_pretrain_run, monkeypatch):
    seen = []  # per optimiser step: did the encoder get a gradient?

    class Recording(torch.optim.AdamW):
        def step(self, closure=None):
            enc = self.param_groups[1]["params"]
            seen.append(any(p.grad is not None for p in enc))
            return super().step(closure)

    monkeypatch.setattr(finetune_steps.torch.optim, "AdamW", Recording)
    cfg = _tiny(repo_root, tmp_path, "mode=full", f"from_model={graph_pretrain_run.checkpoint}", "freeze_epochs=1",
                "seeds=[0]", "epochs=3", "patience=5")
    run_finetune(cfg, progress=False)
    per_epoch = len(seen) // 3
    assert per_epoch > 0 and not any(seen[:per_epoch]) and all(seen[per_epoch:])


@pytest.mark.integration
def test_tabular_head_fits_on_validation_and_loads_without_pickle(repo_root, tmp_path, graph_pretrain_run):
    cfg = _tiny(repo_root, tmp_path, "mode=tabular", f"from_model={graph_pretrain_run.checkpoint}",
                "tabular.n_estimators=20", "tabular.n_jobs=1", "extra.morgan_bits=128")
    result = run_finetune(cfg, progress=False)
    assert {"tabular.min_samples_leaf", "tabular.max_features"} <= set(result.per_seed[0])
    assert np.isfinite(result.summary["test_rmse_mean"])
    state = load_checkpoint(result.checkpoint)  # weights_only: the trees are tensors
    assert state["member_kind"] == "tabular" and state["extra"]["morgan_counts"]
    model = MoleculeModel.load(result.checkpoint)
    frame = model.predict(SMILES)
    assert np.isfinite(frame[NAME][:3]).all() and np.isnan(frame[NAME][3])
    assert (frame[f"{NAME}_std"][:3] > 0).all()  # two seeds' forests differ


@pytest.mark.integration
def test_search_chooses_on_validation_and_refits_every_seed(repo_root, tmp_path):
    from molwm.train.search import search_finetune

    cfg = _tiny(repo_root, tmp_path, "epochs=1")
    found = search_finetune(cfg, 2, progress=False)
    key = "val_rmse_mean"
    assert [t["trial"] for t in found.trials] == [0, 1]
    assert found.best_value == min(t[key] for t in found.trials)
    assert found.refit.per_seed and len(found.refit.per_seed) == len(cfg.seeds)  # every seed refit
    state = load_checkpoint(found.refit.checkpoint)
    assert state["config"]["lr"] == pytest.approx(found.best["lr"])
    assert state["config"]["head"]["hidden"] == found.best["head.hidden"]
