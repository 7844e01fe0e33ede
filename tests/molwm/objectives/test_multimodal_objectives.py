"""Image and assay objectives: each steps and learns; generative targets are the raw hidden content,
which the context never sees; the contrastive views are disjoint; lab probes read the right truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featurizers.molecule import GRAPH_SPEC
from molwm.jepa.mm_masking import MultimodalMaskConfig, add_pe, sample_multimodal_masks
from molwm.objectives import ObjectiveInputs, build_objective, names, objective_spec
from molwm.objectives.multimodal import MultimodalGenerative, MultimodalViews, normalised_patches

ONLY = {"image": ("graph", "assay"), "assay": ("graph", "image"), "all": ()}


def _batch(data, cfg, step=0, drop=()):
    b = add_pe(data.batch(np.arange(len(data)), drop=drop), cfg, torch.Generator().manual_seed(step))
    m = sample_multimodal_masks(b, MultimodalMaskConfig(), cfg.image.grid, np.random.default_rng(step))
    return b, m


@pytest.mark.integration  # 25 training steps per case
@pytest.mark.parametrize("objective", [n for n in names("multimodal")  # the pairing models have tests of their own
                                       if not objective_spec("multimodal", n).needs])
@pytest.mark.parametrize("shown", ["image", "assay", "all"])
def test_each_objective_steps_and_its_loss_falls(mm_data, mm_config, objective, shown):
    torch.manual_seed(0)
    model = build_objective("multimodal", objective, ObjectiveInputs(GRAPH_SPEC, mm_config, mm_data.n_assays))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for step in range(25):
        b, m = _batch(mm_data, mm_config, step % 3, ONLY[shown])  # three batches, revisited
        out = model(b, m)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        model.ema_update(0.99)
        losses.append(out.loss.item())
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses


@pytest.mark.unit
def test_generative_targets_are_the_raw_hidden_pixels_and_values_which_the_context_never_sees(mm_data, mm_config):
    torch.manual_seed(0)
    model = MultimodalGenerative(GRAPH_SPEC, mm_data.n_assays, mm_config).eval()
    b, m = _batch(mm_data, mm_config)
    queries = {q.modality: q for q in model.hidden_queries(b, m)}
    img_q, assay_q = queries[2], queries[1]
    target, weight = model.raw_targets(b, img_q.select, 2)
    patches = normalised_patches(b.image.pixels, mm_config.image.patch)
    assert torch.equal(target, patches[m.image_target]) and weight.shape == target.shape[:2]
    # sample 0's site lacks a channel: its patches carry no weight there
    assert (weight[: int(m.image_target[0].sum())].sum(1) == 4).all()
    values, _ = model.raw_targets(b, assay_q.select, 1)
    assert torch.equal(values, b.assay.values[m.assay_target])

    def heads(batch):
        ctx = model.context(batch, m)
        preds, _ = model.predictor(ctx, [(q.modality, q.pos, q.pad) for q in queries.values()],
                                   torch.full((batch.size,), -1, dtype=torch.long))
        return [p[~q.pad] for q, p in zip(queries.values(), preds)]

    before = heads(b)
    # corrupt exactly the hidden content: hidden patches' pixels and hidden measurements
    p = mm_config.image.patch
    grid = mm_config.image.grid
    pix = b.image.pixels.clone()
    for i, row in enumerate(m.image_target):
        for k in torch.nonzero(row).flatten().tolist():
            y, x = divmod(k, grid)
            pix[i, :, y * p:(y + 1) * p, x * p:(x + 1) * p] = torch.randn(pix.shape[1], p, p) * 5
    b.image.pixels = pix
    vals = b.assay.values.clone()
    vals[m.assay_target] = 1e3
    b.assay.values = vals
    with torch.no_grad():
        after = heads(b)
    for x, y in zip(before, after):
        assert torch.allclose(x, y, atol=1e-5)  # the context saw none of it
    new_target, _ = model.raw_targets(b, img_q.select, 2)
    assert not torch.allclose(new_target, target)  # ... while the targets are that content


@pytest.mark.unit
def test_contrastive_views_are_disjoint(mm_data, mm_config):
    b, m = _batch(mm_data, mm_config)
    v2 = MultimodalViews.second_view(b, m)
    assert not (m.image_keep & v2.image_keep).any() and v2.image_keep.any()
    assert not (m.assay_keep & v2.assay_keep).any()
    assert not (m.graph.keep & v2.graph.keep).any() and v2.graph.keep.sum() == len(m.graph.target_idx)


@pytest.mark.integration
def test_lab_probe_reads_each_sample_s_own_truth(tmp_path):
    from molwm.data.mm_sources import MultimodalDataConfig, build_multimodal_data
    from molwm.evaluation.lab_probes import LabProbeConfig, LabProbeSuite
    from molwm.sim.lab import generate_lab, load_smiles_for_lab

    lab = tmp_path / "lab"
    generate_lab(load_smiles_for_lab("moses", 120, seed=0), lab, seed=0, doses=[1.0, 10.0], image_size=24,
                 progress=False)
    build = build_multimodal_data(MultimodalDataConfig(lab=str(lab), lab_split=[0.5, 0.25, 0.25], image_size=24),
                                  progress=False)
    suite = LabProbeSuite(LabProbeConfig(modality="image"), build.heldout, lab)
    assert len(suite.rows) == int((build.heldout.image_of >= 0).sum())
    # the truth itself as features: a perfect probe (the rows are matched to their own compound and well)
    for name, y in suite.targets.items():
        assert suite.score(y)[f"probe.{name}.r2"] > 0.95
    # shuffled truth: no signal
    rng = np.random.default_rng(0)
    shuffled = suite.targets["state"][rng.permutation(len(suite.rows))]
    assert suite.score(shuffled)["probe.state.r2"] < 0.5
    # no compound on both sides of the probe split
    comp = np.array([build.heldout.compound[i] for i in suite.rows])
    assert not set(comp[suite.fit]) & set(comp[~suite.fit])
