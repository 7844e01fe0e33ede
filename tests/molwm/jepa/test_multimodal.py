"""Multimodal JEPA: three mask levels, missing modalities train, whole-modality targets, contrastive baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featurizers.molecule import GRAPH_SPEC
from molwm.data.multimodal import MODALITIES
from molwm.jepa.contrastive import ContrastiveMolImage
from molwm.jepa.mm_masking import MultimodalMaskConfig, add_pe, image_block_masks, sample_multimodal_masks, unseen_parameters
from molwm.jepa.multimodal import MultimodalJEPA


def _batch(data, cfg, rows=None, step=0, mask=None):
    b = add_pe(data.batch(np.arange(len(data)) if rows is None else rows), cfg, torch.Generator().manual_seed(step))
    m = sample_multimodal_masks(b, mask or MultimodalMaskConfig(), cfg.image.grid, np.random.default_rng(step))
    return b, m


@pytest.mark.unit
def test_batch_keeps_each_modality_only_where_present(mm_data):
    b = mm_data.batch(np.arange(len(mm_data)))
    assert b.graph.num_graphs == len(b.graph_rows) == 22
    assert 3 not in b.graph_rows.tolist() and 7 not in b.graph_rows.tolist()
    assert all(r >= 4 for r in b.assay_rows.tolist())  # rows 0-3 have no assays
    assert b.image.pixels.shape[0] == 12 and b.image_rows.tolist() == list(range(0, 24, 2))
    assert b.image.present.sum().item() == 12 * 5 - 1 and not b.image.present[0, 3]  # sample 0 lacks AGP
    present = b.present()
    assert present.shape == (24, 4) and present.sum().item() == 22 + len(b.assay_rows) + 12


@pytest.mark.unit
def test_masks_are_disjoint_deterministic_and_whole_only_with_two_modalities(mm_data, mm_config):
    b, m = _batch(mm_data, mm_config, step=3)
    _, again = _batch(mm_data, mm_config, step=3)
    assert torch.equal(m.hidden, again.hidden) and torch.equal(m.image_keep, again.image_keep)
    assert not (m.image_keep & m.image_target).any() and not (m.assay_keep & m.assay_target).any()
    present = b.present()
    hidden = m.hidden
    assert ((hidden < 0) | (present.sum(1) >= 2)).all()
    assert all(present[i, hidden[i]] for i in range(b.size) if hidden[i] >= 0)
    img_whole = hidden[b.image_rows] == MODALITIES.index("image")
    assert m.image_target[img_whole].all() and not m.image_keep[img_whole].any()
    assert m.image_keep[~img_whole].any(1).all()  # inside-modality masking always leaves context
    g_whole = hidden[b.graph_rows] == MODALITIES.index("graph")
    atoms_whole = g_whole[b.graph.batch]
    assert not m.graph.keep[atoms_whole].any()
    assert set(torch.nonzero(atoms_whole).squeeze(1).tolist()) <= set(m.graph.target_idx.tolist())


@pytest.mark.unit
def test_image_block_masks_cover_target_scale():
    keep, target = image_block_masks(50, 8, MultimodalMaskConfig(), np.random.default_rng(0))
    share = target.mean(1)
    assert 0.15 < share.mean() < 0.7 and keep.any(1).all() and not (keep & target).any()


@pytest.mark.unit
def test_whole_modality_targets_are_that_modality(mm_data, mm_config):
    """Hiding the image of every sample that has one: the targets are all of its patches, nothing else."""
    torch.manual_seed(0)
    model = MultimodalJEPA(GRAPH_SPEC, mm_data.n_assays, mm_config)
    mask = MultimodalMaskConfig(whole_modality_prob=1.0, whole_modality_weights={"graph": 0, "assay": 0, "image": 1})
    b, m = _batch(mm_data, mm_config, mask=mask)
    with_other = b.present()[:, [0, 1]].any(1)
    expect = torch.where(b.present()[:, 2] & with_other, 2, -1)
    assert torch.equal(m.hidden, expect)
    whole = m.hidden[b.image_rows] == 2
    out = model(b, m)
    n_patches = mm_config.image.n_patches
    # pooled target of a hidden image equals the layer-normed mean of its own target tokens
    tx, _ = model.target_tokens(b, "image")
    assert m.image_target[whole].sum() == whole.sum() * n_patches
    assert set(out.per_modality) >= {"image"} and torch.isfinite(out.loss)
    pooled = torch.nn.functional.layer_norm(tx.mean(1), (mm_config.dim,))
    assert pooled.shape == (len(b.image_rows), mm_config.dim)


@pytest.mark.integration
def test_missing_modality_batches_train_and_loss_falls(mm_data, mm_config):
    torch.manual_seed(0)
    model = MultimodalJEPA(GRAPH_SPEC, mm_data.n_assays, mm_config)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for step in range(40):
        b, m = _batch(mm_data, mm_config, step=step)
        out = model(b, m)
        opt.zero_grad()
        out.loss.backward()
        if step == 0:
            unseen = unseen_parameters(b, m)  # the profile's parts: these samples have no well profile
            assert "encoders.profile." in unseen and not any(u.startswith("encoders.g") for u in unseen)
            missing = [n for n, p in model.named_parameters()
                       if p.requires_grad and p.grad is None and not n.startswith(unseen)]
            assert not missing, missing
        opt.step()
        model.ema_update(0.99)
        losses.append(out.loss.item())
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    # single-modality batches (graph only; image only) also run
    for rows in ([0, 2], [3, 7]):
        b, m = _batch(mm_data, mm_config, rows=np.array(rows))
        assert torch.isfinite(model(b, m).loss)
    z = model.embed(add_pe(mm_data.batch(np.arange(24)), mm_config))
    assert z.shape == (24, mm_config.dim) and z.std(0).mean() > 1e-3


@pytest.mark.integration
def test_contrastive_baseline_learns_pairs(mm_data, mm_config):
    torch.manual_seed(0)
    model = ContrastiveMolImage(GRAPH_SPEC, mm_config)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for step in range(30):
        b, _ = _batch(mm_data, mm_config, step=step)
        out = model(b)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.unit
def test_init_graph_starts_both_graph_encoders_from_a_graph_checkpoint(tmp_path, mm_config):
    from molwm.checkpoints import save_checkpoint
    from molwm.config import ConfigError, to_dict
    from molwm.encoders.graph import GraphEncoder
    from molwm.train.pretrain_mm import MultimodalPretrainConfig, build_model

    torch.manual_seed(5)
    enc = GraphEncoder(GRAPH_SPEC, mm_config.graph)
    ckpt = save_checkpoint({"kind": "graph_jepa", "config": {"model": {"encoder": to_dict(mm_config.graph)}},
                            "model": {f"target_encoder.{k}": v for k, v in enc.state_dict().items()}},
                           tmp_path / "g.pt")
    cfg = MultimodalPretrainConfig(model=mm_config, init_graph=str(ckpt))
    model, _ = build_model(cfg, n_assays=3)
    for holder in (model.encoders, model.targets):
        assert all(torch.equal(a, b) for a, b in zip(holder["graph"].state_dict().values(), enc.state_dict().values()))
    mm_config.graph.layers = 3
    with pytest.raises(ConfigError, match="differs from model.graph"):
        build_model(MultimodalPretrainConfig(model=mm_config, init_graph=str(ckpt)), n_assays=3)


@pytest.mark.unit
def test_context_drop_removes_a_modality_without_predicting_it(mm_data, mm_config):
    mask = MultimodalMaskConfig(whole_modality_prob=1.0, context_drop_prob=1.0)
    b, m = _batch(mm_data, mm_config, mask=mask, step=1)
    present = b.present()
    for i in range(b.size):
        if m.hidden[i] >= 0 and present[i].sum() == 3:
            assert m.dropped[i] >= 0 and m.dropped[i] != m.hidden[i]
        else:
            assert m.dropped[i] == -1
    img_gone = m.dropped[b.image_rows] == MODALITIES.index("image")
    assert (m.dropped >= 0).sum() >= 5  # most three-modality samples lose one
    assert not m.image_keep[img_gone].any() and not m.image_target[img_gone].any()
    g_gone = (m.dropped[b.graph_rows] == MODALITIES.index("graph"))[b.graph.batch]
    assert not m.graph.keep[g_gone].any()
    assert not set(torch.nonzero(g_gone).squeeze(1).tolist()) & set(m.graph.target_idx.tolist())
    model = MultimodalJEPA(GRAPH_SPEC, mm_data.n_assays, mm_config)
    assert torch.isfinite(model(b, m).loss)


@pytest.mark.unit
def test_image_block_masks_with_blocks_that_cover_the_site_still_keep_and_hide():
    """configs/ablate/image_large_masks.yaml's four 30-40% blocks on 8 x 8 patches cover a site entirely now
    and then (numpy's choice then raised ValueError mid-ablation); a target patch goes back to the context."""
    for scale, covered in (([0.3, 0.4], False), ([0.7, 0.9], True)):  # the second covers most sites
        config = MultimodalMaskConfig(image_block_scale=scale)
        keep, target = image_block_masks(400, 8, config, np.random.default_rng(0))
        assert keep.any(1).all() and target.any(1).all() and not (keep & target).any()
        assert ((keep.sum(1) == 1) & (target.sum(1) == 63)).any() == covered
        again = image_block_masks(400, 8, config, np.random.default_rng(0))
        assert np.array_equal(again[0], keep) and np.array_equal(again[1], target)
