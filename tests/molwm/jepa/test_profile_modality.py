"""The real well-profile modality: its masks and queries, every objective on real compact-set wells, and
multimodal checkpoints written before it was registered."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from featurizers.assay import AssayNormalizer
from featurizers.molecule import GRAPH_SPEC
from molwm.api import load_model
from molwm.checkpoints import load_checkpoint, save_checkpoint
from molwm.config import from_dict
from molwm.data.formats.profile_sets import ProfileWells
from molwm.data.mm_profiles import plain_smiles, usable_wells
from molwm.data.mm_sources import MultimodalBuild, MultimodalDataConfig, build_multimodal_data
from molwm.data.profile_store import ProfileBatch, dose_code
from molwm.encoders.profile import ProfileEncoder, ProfileSettings
from molwm.jepa.mm_masking import MultimodalMaskConfig, add_pe, sample_multimodal_masks, unseen_parameters
from molwm.jepa.modalities import modality_names, unit
from molwm.jepa.modalities.profile import chunk_masks
from molwm.jepa.multimodal import MultimodalJEPAConfig
from molwm.kinds import load_encoder
from molwm.jepa.contrastive import paired_rows
from molwm.objectives import ObjectiveInputs, build_objective
from molwm.train.pretrain_mm import (
    MultimodalPretrainConfig,
    resolved_model,
    run_multimodal_pretrain,
    train_step,
)

LINCS = "lincs_sq00015054_profiles_compact"


def _part(n: int = 5, f: int = 10) -> ProfileBatch:
    g = torch.Generator().manual_seed(0)
    return ProfileBatch(torch.randn(n, f, generator=g), torch.tensor([-1.0, 0.0, 1.0, 0.5, 0.0][:n]),
                        torch.tensor([24.0, 48.0, 24.0, 6.0, 48.0][:n]), torch.tensor([False] * (n - 1) + [True]))


@pytest.mark.unit
def test_profile_is_registered_after_the_built_ins():
    assert modality_names() == ("graph", "assay", "image", "profile")
    assert dose_code(np.array([0.0, 1.0, 10.0, 0.1])).tolist() == pytest.approx([0.0, 0.0, 1.0, -1.0])


@pytest.mark.unit
def test_chunk_masks_are_disjoint_and_whole_rows_are_all_targets():
    keep, target = chunk_masks(50, 7, 0.5, np.random.default_rng(0))
    assert not (keep & target).any() and keep.any(1).all() and target.any(1).all()
    assert (target.sum(1) == 4).all()  # round(0.5 * 7)
    keep1, target1 = chunk_masks(3, 1, 0.5, np.random.default_rng(0))  # one token (an MLP): kept whole
    assert keep1.all() and not target1.any()
    config = MultimodalMaskConfig(modality_settings={"profile": {"chunk": 4, "hidden_fraction": 0.5}})
    part = _part()
    whole, gone = np.array([True, False, False, False, False]), np.array([False, True, False, False, False])
    m = unit("profile").sample_mask(part, config, 4, np.random.default_rng(1), whole, gone)
    assert m.keep.shape == (5, 3)  # ceil(10 / 4) chunks
    assert m.target[0].all() and not m.keep[0].any()  # hidden whole
    assert not m.target[1].any() and not m.keep[1].any()  # left out
    assert not (m.keep & m.target).any()


@pytest.mark.unit
def test_queries_carry_the_chunk_dose_and_time_and_hidden_chunks_never_leak():
    cfg = MultimodalJEPAConfig(dim=16, modality_settings={"profile": {"chunk": 4, "features": 10, "heads": 2}})
    u = unit("profile")
    enc = u.encoder(GRAPH_SPEC, 1, cfg)
    assert u.pos_dim(1, cfg) == 3 + 3 == enc.pos_dim
    part = _part()
    target = torch.zeros(5, 3, dtype=torch.bool)
    target[2, 1] = target[4, 0] = True
    mask = type(u.sample_mask(part, MultimodalMaskConfig(), 4, np.random.default_rng(0), np.zeros(5, bool),
                              np.zeros(5, bool)))(keep=~target, target=target)
    q = u.query(3, enc, part, mask, torch.arange(5), 6)
    assert q.pos.shape == (6, 1, 6) and q.pad[:, 0].tolist() == [True, True, False, True, False, True]
    assert q.pos[2, 0].tolist() == pytest.approx([0, 1, 0, 1.0, 1.0, 0])  # chunk 1; 10 uM, 24 h, treated
    assert q.pos[4, 0].tolist() == pytest.approx([1, 0, 0, 0.0, 2.0, 1])  # chunk 0; DMSO, 48 h
    # the context never sees a hidden chunk: changing it leaves the visible tokens as they were
    enc.eval()
    keep = torch.ones(5, 3, dtype=torch.bool)
    keep[:, 2] = False
    before = enc.tokens(part, keep).x
    changed = dataclasses.replace(part, values=part.values.clone())
    changed.values[:, 8:] += 100.0
    assert torch.allclose(enc.tokens(changed, keep).x, before)
    values, weight = u.raw_target(part, target, cfg)
    assert values.shape == (2, 4) and weight.sum() == 4 + 4
    single = ProfileEncoder(16, ProfileSettings(features=10, chunk=64, heads=2))  # one token: an MLP
    assert single.n_tokens == 1 and single.tokens(part).x.shape == (5, 1, 16)
    assert ProfileEncoder(16, ProfileSettings(features=10, heads=2)).n_tokens == 1  # the default, chunk 0


@pytest.fixture(scope="module")
def lincs_build():
    """The LINCS plate's wells as multimodal samples (compact copy), split by scaffold."""
    return build_multimodal_data(MultimodalDataConfig(profiles=LINCS), progress=False)


@pytest.mark.integration
def test_profile_source_splits_by_scaffold_and_counts_every_well(lincs_build):
    b = lincs_build
    assert not b.rejects  # the compact plate has no unusable well (CXSMILES extensions are stripped)
    assert len(b.train) + len(b.heldout) == 384 and len(b.heldout_part) == len(b.heldout)
    train = {c for c in b.train.compound if c != "control"}
    assert train and not train & set(b.heldout.compound)  # held-out compounds are never pretrained on
    assert "control" not in b.heldout.compound
    v = b.profiles.values[b.profiles.part == "train"]  # standardised with the training wells' statistics
    assert np.abs(v.mean(0)).max() < 0.2 and b.profiles.values.shape[1] == 454


def _small(build, n: int = 20):
    rows = np.flatnonzero(build.train.stores["graph"].of >= 0)[:n - 4]
    controls = np.flatnonzero(build.train.stores["graph"].of < 0)[:4]
    return build.train.subset(np.concatenate([rows, controls]))


@pytest.mark.integration
@pytest.mark.parametrize("objective", ["jepa", "generative", "contrastive_views", "contrastive_profile"])
def test_every_objective_trains_on_real_wells(objective, lincs_build):
    data = _small(lincs_build)
    model_cfg = from_dict(MultimodalJEPAConfig, {
        "dim": 32, "graph": {"dim": 32, "layers": 2}, "assay": {"dim": 32, "layers": 1},
        "image": {"dim": 32, "layers": 1}, "predictor": {"dim": 32, "layers": 1},
        "modality_settings": {"profile": {"chunk": 64, "heads": 2}}})
    mask = MultimodalMaskConfig(whole_modality_prob=0.5)
    config = resolved_model(MultimodalPretrainConfig(model=model_cfg, mask=mask, objective=objective, max_steps=3,
                                                     modalities=["graph", "profile"]), data)
    assert config.model.modality_settings["profile"]["features"] == 454
    torch.manual_seed(0)
    model = build_objective("multimodal", objective, ObjectiveInputs(GRAPH_SPEC, config.model, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for step in range(3):
        b = add_pe(data.batch(np.arange(len(data)), drop=("assay", "image")), config.model,
                   torch.Generator().manual_seed(step))
        masks = sample_multimodal_masks(b, config.mask, 4, np.random.default_rng(step))
        assert "encoders.profile." not in unseen_parameters(b, masks)
        metrics = train_step(model, optimizer, b, masks, config, step, 3, check_grads=step == 0)
        losses.append(metrics["loss"])
    assert np.isfinite(losses).all()
    out = model(b, masks)
    if objective.startswith("contrastive"):
        assert torch.isfinite(out.per_modality["infonce"])
    else:
        assert "profile" in out.per_modality and torch.isfinite(out.per_modality["profile"])
    if objective == "contrastive_profile":  # CLOOME on profiles: the molecule is asked at the well's dose and time
        model.eval()
        gi, ii = paired_rows(b, "profile")
        part = b.part("profile")
        assert len(gi) == len(b.rows("graph")) < len(part.values)  # DMSO wells have no molecule
        q = model.paired_molecules(b, gi, ii)
        at = torch.zeros(len(b.rows("graph")))
        at[gi] = part.dose[ii]
        times = torch.zeros_like(at)
        times[gi] = part.time[ii]
        assert torch.allclose(model.condition_embedding(b, at, times)[gi], q, atol=1e-6)
        assert torch.allclose(q.norm(dim=1), torch.ones(len(q)), atol=1e-5)
        assert not torch.allclose(model.condition_embedding(b, at + 1.0, times)[gi], q)  # dose reaches the molecule
        assert model.partner_embedding(b).shape == (len(part.values), config.model.dim)


def _lab_build(data) -> MultimodalBuild:
    normalizer = AssayNormalizer(columns=list(data.assay_names)).fit(data.assay_values)
    return MultimodalBuild(train=data, heldout=None, heldout_part=np.array([]), normalizer=normalizer, rejects=[],
                           synthetic=True)


@pytest.mark.integration
def test_a_checkpoint_written_before_the_profile_modality_loads_and_answers_the_same(mm_data, mm_config, tmp_path):
    build = _lab_build(mm_data)
    config = MultimodalPretrainConfig(model=mm_config, max_steps=2, batch_size=8, out_dir=str(tmp_path / "run"),
                                      checkpoint_every=1, modalities=["graph", "assay", "image"])
    path = run_multimodal_pretrain(config, progress=False, data=build).checkpoint
    state = load_checkpoint(path)
    assert state["config"]["model"]["modalities"] == ["graph", "assay", "image", "profile"]
    # what a checkpoint written before the profile modality looks like: no profile parts, three-row tables,
    # and no list of modalities in its config
    old = dict(state, model={k: v for k, v in state["model"].items()
                             if ".profile." not in k and not k.startswith("predictor.pos.3.")})
    for key in ("fusion.modality_embed", "predictor.modality", "predictor.pooled_query"):
        old["model"][key] = old["model"][key][:3]
    del old["config"]["model"]["modalities"]
    old_path = save_checkpoint(old, tmp_path / "old.pt")
    assert load_checkpoint(old_path)["config"]["model"]["modalities"] == ["graph", "assay", "image"]
    new, legacy = load_model(path), load_model(old_path)
    smiles = [s for s in mm_data.smiles if s][:6]
    assert np.array_equal(new.embed(smiles), legacy.embed(smiles))
    assert new.predict(smiles).equals(legacy.predict(smiles))
    old_encoder, encoder = load_encoder(old_path), load_encoder(path)
    assert all(torch.equal(a, b) for a, b in zip(old_encoder.state_dict().values(), encoder.state_dict().values()))
    assert "profile" not in legacy.joint.model.encoders and "profile" in new.joint.model.encoders


@pytest.mark.integration
def test_a_run_from_before_the_profile_modality_resumes(mm_data, mm_config, tmp_path):
    build = _lab_build(mm_data)
    legacy_model = dataclasses.replace(mm_config, modalities=["graph", "assay", "image"])  # the old layout
    config = MultimodalPretrainConfig(model=legacy_model, max_steps=4, batch_size=8, out_dir=str(tmp_path / "run"),
                                      checkpoint_every=1, modalities=["graph", "assay", "image"],
                                      data=MultimodalDataConfig(moleculeace=True, image_size=mm_config.image.image_size))
    part = run_multimodal_pretrain(config, progress=False, data=build, stop_after=2).checkpoint
    state = load_checkpoint(part)
    assert not any(".profile." in k for k in state["model"])
    del state["config"]["model"]["modalities"]  # as written before the list existed
    save_checkpoint(state, part)
    done = run_multimodal_pretrain(config, progress=False, data=build, resume=part)
    assert done.steps == 4 and np.isfinite(done.final_loss)
    assert load_checkpoint(done.checkpoint)["config"]["model"]["modalities"] == ["graph", "assay", "image"]


@pytest.mark.unit
def test_unusable_wells_are_rejects_with_their_reason():
    wells = pd.DataFrame({"smiles": ["CCO", "", "CCN", "CCC", "CS(C)=O", "CCCl"],
                          "dose_uM": [1.0, 1.0, 0.0, 1.0, 0.0, 1.0], "time_h": [24.0, 24.0, 24.0, 24.0, 24.0, np.nan],
                          "is_control": [False, False, False, False, True, False]})
    x = np.zeros((6, 3), np.float32)
    x[3, 1] = np.nan
    keep, bad = usable_wells(ProfileWells(wells, x, ["a", "b", "c"]), controls=True)
    assert keep.tolist() == [0, 4]
    assert bad == [(1, "no structure"), (2, "no dose"), (3, "non-finite feature values"), (5, "no time")]
    keep, bad = usable_wells(ProfileWells(wells, x, ["a", "b", "c"]), controls=False)
    assert keep.tolist() == [0] and len(bad) == 4  # DMSO wells left out on purpose are not rejects
    assert plain_smiles("C[C@H](N)O |&1:1,r|") == "C[C@H](N)O" and plain_smiles("CCO") == "CCO"
