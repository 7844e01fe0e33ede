"""Fine-tuning: missing labels, modes, split files, baselines."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from molwm.config import ConfigError, load_config
from molwm.evaluation.metrics import classification_metrics, masked_loss, regression_metrics
from molwm.train.finetune import FinetuneConfig, run_finetune


@pytest.mark.unit
def test_masked_loss_ignores_missing_labels():
    out = torch.tensor([[1.0, 5.0], [2.0, 0.0]], requires_grad=True)
    y = torch.tensor([[1.0, float("nan")], [0.0, float("nan")]])
    loss = masked_loss(out, y, "regression")
    assert loss.item() == pytest.approx(2.0)  # ((1-1)^2 + (2-0)^2) / 2
    loss.backward()
    assert out.grad[:, 1].abs().sum() == 0  # the missing column gets no gradient
    assert masked_loss(out, torch.full((2, 2), float("nan")), "classification").item() == 0.0


@pytest.mark.unit
def test_metrics_skip_missing():
    y = np.array([[1.0, np.nan], [2.0, 1.0], [3.0, 0.0], [4.0, 1.0]])
    p = np.array([[1.0, 0.9], [2.0, 0.8], [3.0, 0.1], [5.0, 0.7]])
    m = regression_metrics(y[:, :1], p[:, :1])
    assert m["rmse"] == pytest.approx(0.5) and m["mae"] == pytest.approx(0.25)
    assert classification_metrics(y[:, 1:], p[:, 1:])["roc_auc"] == pytest.approx(1.0)


@pytest.fixture
def cfg(repo_root, tmp_path):
    """``cfg(*overrides)``: configs/finetune/tiny.yaml, writing under this test's folder."""
    def make(*over):
        return load_config(FinetuneConfig, repo_root / "configs/finetune/tiny.yaml",
                           [f"out_dir={tmp_path / 'out'}", f"cache_dir={tmp_path / 'c'}", *over])

    return make


@pytest.mark.integration
def test_scratch_finetune_runs_seeds_and_writes_split_file(finetune_run, cfg):
    result = finetune_run  # configs/finetune/tiny.yaml as it is, trained once per run (tests/conftest.py)
    assert result.task == "regression" and len(result.per_seed) == 2
    assert {"test_rmse_mean", "test_rmse_std", "test_r2_mean"} <= set(result.summary)
    splits = json.loads(result.split_file.read_text())
    assert len(splits) == 2 and set(splits[0]) == {"train", "val", "test", "n_rows", "smiles_sha256"}
    assert splits[0]["n_rows"] == 120  # the dataset it indexes is recorded (issue 26 item 9)
    all_rows = sorted(splits[0]["train"] + splits[0]["val"] + splits[0]["test"])
    assert all_rows == list(range(120))  # source rows of freesolv[:120], none rejected
    # giving the split back reproduces the same rows and the same metrics
    again = run_finetune(cfg(f"split.file={result.split_file}"), progress=False)
    assert json.loads(again.split_file.read_text()) == splits
    assert again.per_seed[0]["test_rmse"] == pytest.approx(result.per_seed[0]["test_rmse"], rel=1e-5)


@pytest.mark.integration
def test_linear_probe_and_full_from_a_pretrained_checkpoint(graph_pretrain_run, cfg):
    pre = graph_pretrain_run  # configs/pretrain/tiny.yaml, trained once per test run (tests/conftest.py)
    probe = run_finetune(cfg("mode=linear_probe", f"from_model={pre.checkpoint}", "seeds=[0]"),
                         progress=False)
    full = run_finetune(cfg("mode=full", f"from_model={pre.checkpoint}", "seeds=[0]"), progress=False)
    assert np.isfinite(probe.summary["test_rmse_mean"]) and np.isfinite(full.summary["test_rmse_mean"])
    from molwm.query import WorldModel

    wm = WorldModel.load(full.checkpoint)
    frame = wm.predict(["CCO", "not a smiles", "c1ccccc1"])
    assert frame["status"].tolist()[0] == "ok" and frame["status"].tolist()[1] != "ok"
    assert np.isfinite(frame["hydration_free_energy"].iloc[0]) and np.isnan(frame["hydration_free_energy"].iloc[1])


@pytest.mark.integration
def test_classification_with_missing_labels(tmp_path, cfg):
    csv = tmp_path / "tox.csv"
    rng = np.random.default_rng(0)
    from molwm.data.registry import get_card
    from molwm.data.sources import load_table

    smiles = load_table(get_card("b3db_classification"), limit=150).frame["smiles"].tolist()
    a = rng.integers(0, 2, 150).astype(float)
    b = rng.integers(0, 2, 150).astype(float)
    b[::3] = np.nan
    import pandas as pd

    pd.DataFrame({"smiles": smiles, "a": a, "b": b}).to_csv(csv, index=False)
    card = tmp_path / "tox.yaml"
    card.write_text("name: tox\nsource: {kind: local, files: [{path: tox.csv}]}\ncolumns: {targets: [a, b]}\n"
                    "task: {type: multitask_classification, metric: roc_auc}\n")
    result = run_finetune(cfg(f"dataset={card}", "limit=null", "seeds=[0]"), progress=False)
    assert result.task == "classification"
    assert 0.0 <= result.summary["test_roc_auc_mean"] <= 1.0


@pytest.mark.unit
def test_config_errors(repo_root):
    tiny = repo_root / "configs/finetune/tiny.yaml"
    with pytest.raises(ConfigError, match="needs from_model"):
        load_config(FinetuneConfig, tiny, ["mode=full"])
    with pytest.raises(ConfigError, match="unknown config key 'head.hiden'"):
        load_config(FinetuneConfig, tiny, ["head.hiden=3"])


@pytest.mark.integration
def test_random_forest_baselines_on_a_real_split():
    from molwm.baselines import morgan_fingerprints, random_forest, rdkit_descriptors
    from molwm.data.registry import get_card
    from molwm.data.sources import load_table
    from molwm.data.splits import scaffold_split

    frame = load_table(get_card("freesolv"), limit=200).frame
    smiles = frame["smiles"].tolist()
    y = frame[["hydration_free_energy"]].to_numpy()
    split = scaffold_split(smiles, seed=0)
    fp = morgan_fingerprints(smiles)
    assert fp.shape == (200, 2048) and fp.sum() > 0
    desc = rdkit_descriptors(smiles)
    assert desc.shape[0] == 200 and desc.shape[1] > 100
    m1 = random_forest(fp, y, split, "regression", seed=0, n_trees=50, n_jobs=1)
    m2 = random_forest(desc, y, split, "regression", seed=0, n_trees=50, n_jobs=1)
    assert 0 < m1["test_rmse"] < 10 and 0 < m2["test_rmse"] < 10


@pytest.mark.unit
def test_probe_standardisation_folds_into_the_head():
    from molwm.train.finetune import _fold_standardisation

    torch.manual_seed(0)
    head = torch.nn.Linear(5, 2)
    x = torch.randn(7, 5) * 3 + 1
    mean, std = x.mean(0), x.std(0)
    expected = head((x - mean) / std)
    _fold_standardisation(head, mean, std)
    assert torch.allclose(head(x), expected, atol=1e-5)
