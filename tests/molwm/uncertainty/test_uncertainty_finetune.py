"""A tiny fine-tune with calibration: figures reported, columns returned; older checkpoints still predict."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from molwm.checkpoints import save_checkpoint
from molwm.config import load_config
from molwm.query import MoleculeModel
from molwm.train.finetune import FinetuneConfig, run_finetune

pytestmark = pytest.mark.integration

NAME = "hydration_free_energy"


def test_tiny_finetune_calibrates_on_shared_validation_rows(repo_root, tmp_path):
    cfg = load_config(FinetuneConfig, repo_root / "configs/finetune/tiny.yaml",
                      [f"out_dir={tmp_path / 'out'}", f"cache_dir={tmp_path / 'c'}", "split.shared=true",
                       "calibration.method=conformal", "calibration.coverage=0.8", "epochs=2"])
    result = run_finetune(cfg, progress=False)
    for key in ("test_coverage_50", "test_coverage_90", "test_coverage_95", "test_miscalibration_area",
                "test_spearman", "test_nll", "test_coverage_90.raw", "val_domain_threshold",
                "test_domain_error_ratio"):
        assert key in result.uncertainty
    assert 0 <= result.uncertainty["test_coverage_90"] <= 1
    model = MoleculeModel.load(result.checkpoint)
    frame = model.predict(["CCO", "c1ccccc1O", "not a smiles"])
    cols = [NAME, f"{NAME}_std", f"{NAME}_lo", f"{NAME}_hi", "uncertainty", "max_tanimoto",
            "embedding_distance", "in_domain", "status"]
    assert list(frame.columns) == ["smiles", *cols]
    ok = frame.status == "ok"
    assert (frame.loc[ok, f"{NAME}_lo"] < frame.loc[ok, NAME]).all() and (frame.loc[ok, f"{NAME}_hi"] > frame.loc[ok, NAME]).all()
    assert frame.uncertainty[0].startswith("conformal (12 validation rows; 80% intervals)")
    assert frame.max_tanimoto[0] <= 1 and frame.in_domain.isna()[2] and np.isnan(frame[NAME][2])
    # the stored interval is the conformal one: the 80% half-width is the ceil(13 * 0.8) = 11th of 12 scores
    scores = np.sort(model.calibrator.params[0]["scores"])
    _, preds, _ = model.compute(["CCO"], embed=False, predict=True)
    assert (frame[f"{NAME}_hi"][0] - frame[NAME][0]) == pytest.approx(scores[10] * preds[:, 0, 0].std(), rel=1e-6)


def test_a_checkpoint_without_calibration_still_predicts(finetune_run, tmp_path):
    state = torch.load(finetune_run.checkpoint, weights_only=True)
    assert state["uncertainty"]["calibration"]["method"] == "conformal_fixed"  # calibrated by default
    del state["uncertainty"]  # as written before calibration existed
    frame = MoleculeModel.load(save_checkpoint(state, tmp_path / "old.pt")).predict(["CCO"])
    assert frame.uncertainty[0].startswith("ensemble_std (uncalibrated)")
    assert {f"{NAME}_std", f"{NAME}_lo", f"{NAME}_hi"} <= set(frame.columns) and "in_domain" not in frame.columns
    half = frame[f"{NAME}_hi"][0] - frame[NAME][0]
    assert half == pytest.approx(1.644854 * frame[f"{NAME}_std"][0], rel=1e-5)  # Gaussian on the raw spread


def test_seeds_with_their_own_splits_are_calibrated_on_the_first_members_own_rows(repo_root, tmp_path):
    cfg = load_config(FinetuneConfig, repo_root / "configs/finetune/tiny.yaml",
                      [f"out_dir={tmp_path / 'out'}", f"cache_dir={tmp_path / 'c'}", "split.shared=false",
                       "epochs=2"])
    result = run_finetune(cfg, progress=False)
    for key in ("test_coverage_50", "test_coverage_80", "test_coverage_90", "test_coverage_95",
                "test_miscalibration_area", "test_nll"):
        assert np.isfinite(result.uncertainty[key]), key
    model = MoleculeModel.load(result.checkpoint)
    assert model.calibrator.method == "conformal_fixed" and model.calibrator.params[0]["use_std"] is False
    frame = model.predict(["CCO", "c1ccccc1O"])
    assert frame.uncertainty[0].startswith("conformal_fixed (12 validation rows")
    # one member's width (no spread): the same half-width for every molecule, around the ensemble mean
    half = (frame[f"{NAME}_hi"] - frame[NAME]).to_numpy()
    assert half[0] == pytest.approx(half[1]) and half[0] > 0
