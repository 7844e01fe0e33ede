"""Simulator output read back by the real-layout readers into multimodal training data."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from molwm.data.formats import FormatError, read_load_data, read_multitask_csv, read_profiles
from molwm.data.mm_sources import MultimodalDataConfig, build_multimodal_data
from molwm.data.splits import murcko_scaffold
from molwm.sim import generate_lab
from molwm.tracking import NullTracker
from molwm.train.pretrain_mm import MultimodalPretrainConfig, run_multimodal_pretrain

pytestmark = pytest.mark.integration

DRUGS = ["CC(=O)Oc1ccccc1C(=O)O", "Cn1c(=O)c2c(ncn2C)n(C)c1=O", "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
         "CC(=O)Nc1ccc(O)cc1", "CN1C(=O)CN=C(c2ccccc2)c2cc(Cl)ccc12", "CN(C)C(=N)N=C(N)N",
         "c1ccc2c(c1)cccc2O", "CCN(CC)CCOC(=O)c1ccc(N)cc1", "OC(=O)c1ccccc1O", "CC1=CC(=O)c2ccccc2C1=O",
         "Clc1ccc(cc1)C(c1ccccc1)N1CCNCC1", "COc1ccc2[nH]cc(CCN)c2c1", "NC(=O)c1cccnc1", "CCOC(=O)c1ccccc1",
         "C1CCC(CC1)N", "c1ccc(cc1)-c1ccccn1"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab")
    generate_lab(DRUGS, out, seed=0, image_size=32, progress=False)
    return out


def test_readers_load_the_simulated_lab(lab):
    index = read_load_data(lab / "load_data.csv", check_files=True)
    assert index.synthetic and index.channels_present == ("DNA", "ER", "RNA", "AGP", "Mito")
    assert set(index.frame.loc[~index.frame["is_control"], "smiles"]) >= set()
    assert (~index.frame["is_control"]).sum() == len(DRUGS)
    panel = read_multitask_csv(lab / "assays.csv")
    assert panel.synthetic and len(panel) == len(DRUGS) and panel.tasks[0] == "SIM_A00"
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


def test_multimodal_pretraining_resumes_exactly(lab, tmp_path):
    base = dict(kind="multimodal", data={"lab": str(lab), "image_size": 32},
                model={"dim": 32, "graph": {"dim": 32, "layers": 1}, "assay": {"dim": 32, "layers": 1},
                       "image": {"dim": 32, "layers": 1, "patch": 8, "image_size": 32},
                       "predictor": {"dim": 32, "layers": 1}},
                batch_size=8, max_steps=6, warmup_steps=2, log_every=1, health_every=3, checkpoint_every=3)
    from molwm.config import from_dict

    straight = from_dict(MultimodalPretrainConfig, {**base, "out_dir": str(tmp_path / "a")})
    res_a = run_multimodal_pretrain(straight, NullTracker(), progress=False)
    split = from_dict(MultimodalPretrainConfig, {**base, "out_dir": str(tmp_path / "b")})
    run_multimodal_pretrain(split, NullTracker(), progress=False, stop_after=3)
    res_b = run_multimodal_pretrain(split, NullTracker(), resume=tmp_path / "b" / "last.pt", progress=False)
    from molwm.train.common import load_checkpoint

    wa, wb = load_checkpoint(res_a.checkpoint)["model"], load_checkpoint(res_b.checkpoint)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [s for s, _ in res_b.history["loss"]] == list(range(6))
    assert "loss.image" in res_a.history and "health.rankme" in res_a.history
