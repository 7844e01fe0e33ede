"""Encoder, positional code, EMA, gradients, and a JEPA that learns without collapsing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featurizers import GRAPH_SPEC, featurize_arrays
from molwm.data.batch import GraphBatch
from molwm.data.registry import get_card
from molwm.data.sources import load_table
from molwm.encoders.graph import GraphEncoder, GraphEncoderConfig, structural_pe
from molwm.jepa.masking import MaskConfig, sample_graph_masks
from molwm.jepa.model import GraphJEPA, JEPAConfig, PredictorConfig

TINY = JEPAConfig(encoder=GraphEncoderConfig(dim=32, layers=2, rw_steps=4, lap_k=4),
                  predictor=PredictorConfig(dim=32, layers=1, heads=2))


def _batch(smiles, cfg=TINY.encoder, seed=None):
    arrays, _ = featurize_arrays(smiles)
    b = GraphBatch.from_arrays(arrays, range(len(arrays)))
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    b.pe = structural_pe(b.edge_index, b.batch, b.num_graphs, cfg.rw_steps, cfg.lap_k, gen)
    return b


@pytest.mark.unit
def test_random_walk_code_by_hand():
    b = _batch(["C1CCCCC1", "CC"], GraphEncoderConfig(rw_steps=4, lap_k=0))
    # 6-ring: return after 1 step 0, after 2 steps 1/2, after 3 steps 0, after 4 steps 3/8
    assert torch.allclose(b.pe[0], torch.tensor([0.0, 0.5, 0.0, 0.375]))
    # ethane: a walk alternates between the two atoms
    assert torch.allclose(b.pe[6], torch.tensor([0.0, 1.0, 0.0, 1.0]))


@pytest.mark.unit
def test_laplacian_code_is_orthonormal_and_sign_flipped():
    b = _batch(["c1ccccc1CCO"], GraphEncoderConfig(rw_steps=0, lap_k=4))
    gram = b.pe.T @ b.pe
    assert torch.allclose(gram, torch.eye(4), atol=1e-5)
    flipped = _batch(["c1ccccc1CCO"], GraphEncoderConfig(rw_steps=0, lap_k=4), seed=3)
    assert torch.allclose(flipped.pe.abs(), b.pe.abs(), atol=1e-5)


@pytest.mark.unit
def test_encoder_tokens_shapes_and_keep():
    b = _batch(["CCO", "c1ccccc1", "CCCCCCCCCC"])
    enc = GraphEncoder(GRAPH_SPEC, TINY.encoder)
    tok = enc.tokens(b)
    assert tok.x.shape == (3, 10, 32) and tok.pos.shape == (3, 10, 8)
    assert tok.pad.sum(1).tolist() == [7, 4, 0]
    keep = torch.ones(b.num_nodes, dtype=torch.bool)
    keep[[0, 5, 6]] = False
    tok = enc.tokens(b, keep)
    assert (~tok.pad).sum(1).tolist() == [2, 4, 10]
    assert enc.embed(b).shape == (3, 32)


@pytest.mark.unit
def test_ema_target_gets_no_gradient_and_follows_momentum():
    torch.manual_seed(0)
    model = GraphJEPA(GRAPH_SPEC, TINY)
    b = _batch(load_table(get_card("moses"), limit=16).frame["smiles"].tolist())
    m = sample_graph_masks(b, MaskConfig(), np.random.default_rng(0))
    out = model(b, m)
    out.loss.backward()
    assert all(p.grad is None for p in model.target_encoder.parameters())
    assert all(not p.requires_grad for p in model.target_encoder.parameters())
    with torch.no_grad():
        for p in model.context_encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.target_encoder.parameters()]
    ctx = [p.clone() for p in model.context_encoder.parameters()]
    model.ema_update(0.9)
    for t, t0, c in zip(model.target_encoder.parameters(), before, ctx):
        assert torch.allclose(t, 0.9 * t0 + 0.1 * c, atol=1e-6)
    assert model.momentum_at(0, 100) == pytest.approx(TINY.ema_start)
    assert model.momentum_at(100, 100) == pytest.approx(TINY.ema_end)


@pytest.mark.integration
def test_jepa_on_64_molecules_learns_without_collapse():
    from molwm.jepa.health import embedding_health
    from molwm.train.pretrain import PretrainConfig, build, train_step

    smiles = load_table(get_card("moses"), limit=64).frame["smiles"].tolist()
    cfg = PretrainConfig(model=TINY, batch_size=64, lr=3e-3, warmup_steps=5, seed=0)
    model, opt = build(cfg)
    losses = []
    for step in range(60):
        b = _batch(smiles, seed=step)
        m = sample_graph_masks(b, cfg.mask, np.random.default_rng(step))
        losses.append(train_step(model, opt, b, m, cfg, step, 60, check_grads=step == 0)["pred_loss"])
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5])
    health = embedding_health(model.embed(_batch(smiles)))
    assert health["health.std_min"] > 0.01 and health["health.std_mean"] > 0.05
    assert health["health.rankme"] > 4.0


@pytest.mark.unit
def test_pooling_options():
    from molwm.encoders.graph import SUM_POOL_SCALE

    b = _batch(["CCO", "c1ccccc1CCCC"])
    enc = GraphEncoder(GRAPH_SPEC, TINY.encoder).eval()
    mean, total, both = enc.embed(b, "mean"), enc.embed(b, "sum"), enc.embed(b, "mean_sum")
    counts = torch.tensor([[3.0], [10.0]])
    assert torch.allclose(total * SUM_POOL_SCALE, mean * counts, atol=1e-5)
    assert both.shape == (2, 64) and torch.allclose(both[:, :32], mean)
    with pytest.raises(ValueError, match="unknown pooling"):
        enc.embed(b, "max")


@pytest.mark.unit
def test_gps_layer_attends_within_each_molecule_only():
    torch.manual_seed(0)
    cfg = GraphEncoderConfig(dim=32, layers=2, rw_steps=4, lap_k=4, layer="gps", heads=4)
    enc = GraphEncoder(GRAPH_SPEC, cfg).eval()
    alone = enc.embed(_batch(["CCO"], cfg))
    together = enc.embed(_batch(["CCO", "c1ccccc1CCCC", "CCN(CC)CC"], cfg))
    # padding and other molecules in the batch must not leak into a molecule's embedding
    assert torch.allclose(alone[0], together[0], atol=1e-5)
    enc.train()
    enc.embed(_batch(["CCO", "c1ccccc1"], cfg)).sum().backward()
    assert all(p.grad is not None for p in enc.parameters())


@pytest.mark.unit
def test_gps_config_checks_heads_divide_dim():
    from molwm.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="not divisible by 'heads'"):
        from_dict(GraphEncoderConfig, {"layer": "gps", "dim": 30, "heads": 4}, "encoder")


@pytest.mark.unit
def test_graph_level_target_is_predicted_and_trained():
    from dataclasses import replace

    from molwm.train.pretrain import PretrainConfig, build, train_step

    smiles = load_table(get_card("moses"), limit=16).frame["smiles"].tolist()
    cfg = PretrainConfig(model=replace(TINY, graph_target_weight=1.0), batch_size=16, seed=0)
    model, opt = build(cfg)
    assert model.predictor.graph_token is not None
    assert GraphJEPA(GRAPH_SPEC, TINY).predictor.graph_token is None
    b = _batch(smiles, seed=0)
    m = sample_graph_masks(b, cfg.mask, np.random.default_rng(0))
    # check_grads raises if any optimised parameter (graph token included) got no gradient
    metrics = train_step(model, opt, b, m, cfg, 0, 10, check_grads=True)
    assert metrics["graph_loss"] > 0
    out = model(b, m)
    assert out.loss.item() == pytest.approx(
        (out.pred_loss + TINY.anti_collapse_weight * out.reg + out.graph_loss).item(), rel=1e-5)


@pytest.mark.unit
def test_encoder_gine_update_equals_pyg_gineconv():
    from molwm.encoders.graph import _distinct_rows

    torch.manual_seed(0)
    b = _batch(["CC(=O)Oc1ccccc1C(=O)O", "C/C=C/Cl", "[Na+].[Cl-]", "C", "C#N"])
    enc = GraphEncoder(GRAPH_SPEC, TINY.encoder).eval()
    kinds, inverse = _distinct_rows(b.edge_attr, enc._bond_radix)
    assert torch.equal(kinds[inverse], b.edge_attr) and len(kinds) < len(b.edge_attr)
    with torch.no_grad():
        h = enc.atom_embed(b.x) + enc.pe_proj(b.pe)
        e = enc.bond_embed(b.edge_attr)
        for conv, norm in zip(enc.convs, enc.norms):
            h = h + conv(norm(h), b.edge_index, e)  # PyG's own forward
        ours, _ = enc(b)
    assert torch.allclose(ours, enc.out_norm(h), atol=1e-5)
