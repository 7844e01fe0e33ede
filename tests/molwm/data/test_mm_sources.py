"""Simulator output read back by the real-layout readers into multimodal training data."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from molwm.data.formats import FormatError, read_load_data, read_multitask_csv, read_profiles
from molwm.data.mm_sources import MultimodalDataConfig, build_multimodal_data
from molwm.data.splits import murcko_scaffold
from molwm.train.pretrain_mm import run_multimodal_pretrain

pytestmark = pytest.mark.integration


@pytest.fixture
def lab(tiny_lab):
    """The shared 16-drug lab (``tiny_lab`` in tests/conftest.py: seed 0, 32-pixel sites); read only."""
    return tiny_lab.path


def test_readers_load_the_simulated_lab(lab, tiny_lab):
    index = read_load_data(lab / "load_data.csv", check_files=True)
    assert index.synthetic and index.channels_present == ("DNA", "ER", "RNA", "AGP", "Mito")
    assert set(index.frame.loc[~index.frame["is_control"], "smiles"]) >= set()
    assert (~index.frame["is_control"]).sum() == len(tiny_lab.smiles)
    panel = read_multitask_csv(lab / "assays.csv")
    assert panel.synthetic and len(panel) == len(tiny_lab.smiles) and panel.tasks[0] == "SIM_A00"
    profiles = read_profiles(lab / "profiles.parquet")
    assert profiles.synthetic and len(profiles.meta) == len(index)


def test_build_holds_out_scaffolds_and_keeps_controls_image_only(lab):
    build = build_multimodal_data(MultimodalDataConfig(lab=str(lab), image_size=32, lab_split=[0.6, 0.2, 0.2]),
                                  progress=False)
    train, held = build.train, build.heldout
    assert build.synthetic and held is not None and set(build.heldout_part) <= {"val", "test"}
    scaf = lambda smiles: {murcko_scaffold(s) for s in smiles if s}  # noqa: E731
    assert not scaf(train.smiles) & scaf(held.smiles)
    controls = [i for i, s in enumerate(train.source) if s == "lab-control"]
    assert controls and all(train.graph_of[i] < 0 and train.image_of[i] >= 0 for i in controls)
    assert np.isnan(train.assay_values[controls]).all()
    # per-assay standardisation fitted on the pretraining rows only
    z = train.assay_values
    means = np.nanmean(z, axis=0)
    assert np.all(np.abs(means[np.isfinite(means)]) < 1e-4)
    assert train.images.shape[1:] == (5, 32, 32) and train.images.dtype == np.float16


def test_a_missing_image_file_is_a_reject_not_a_crash(lab, tmp_path):
    import shutil

    copy = tmp_path / "lab"
    shutil.copytree(lab, copy)
    victim = sorted((copy / "images").rglob("*_ER.tiff"))[0]
    os.remove(victim)
    with pytest.raises(FormatError, match="missing"):
        read_load_data(copy / "load_data.csv", check_files=True)
    build = build_multimodal_data(MultimodalDataConfig(lab=str(copy), image_size=32), progress=False)
    assert len(build.rejects) == 1 and victim.name in build.rejects[0]["input"]
    n_sites = len(read_load_data(copy / "load_data.csv"))
    assert int((build.train.image_of >= 0).sum() + (build.heldout.image_of >= 0).sum()) == n_sites - 1


def test_multimodal_pretraining_resumes_exactly(multimodal_pretrain_run, make_multimodal_config, tmp_path):
    res_a = multimodal_pretrain_run  # the uninterrupted run: 6 steps of the tiny config on tiny_lab (conftest)
    split = make_multimodal_config(tmp_path / "b")  # the same run, interrupted after step 3 and resumed
    run_multimodal_pretrain(split, progress=False, stop_after=3)
    res_b = run_multimodal_pretrain(split, resume=tmp_path / "b" / "last.pt", progress=False)
    from molwm.checkpoints import load_checkpoint

    wa, wb = load_checkpoint(res_a.checkpoint)["model"], load_checkpoint(res_b.checkpoint)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [s for s, _ in res_b.history["loss"]] == list(range(6))
    assert "loss.image" in res_a.history and "health.rankme" in res_a.history
