"""Graph pretraining objectives: each learns, the generative targets are the raw hidden content,
the hidden content is really hidden, and budgets stop every objective at the same point."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from featurizers import GRAPH_SPEC, featurize_arrays
from molwm.config import load_config
from molwm.data.batch import GraphBatch
from molwm.encoders.graph import GraphEncoderConfig, HiddenAttributes, structural_pe
from molwm.jepa.masking import MaskConfig, sample_graph_masks
from molwm.jepa.model import JEPAConfig, PredictorConfig
from molwm.objectives import ObjectiveInputs, build_objective, names
from molwm.objectives.graph import GenerativeGraph, GenerativeSettings, encoder_of

TINY = JEPAConfig(encoder=GraphEncoderConfig(dim=32, layers=2, rw_steps=4, lap_k=4),
                  predictor=PredictorConfig(dim=32, layers=1, heads=2))
SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "CN1C=NC2=C1C(=O)N(C(=O)N2C)C", "CCN(CC)CC",
          "OC(=O)c1ccccc1O", "Clc1ccc(Cl)cc1", "CC(C)Cc1ccc(cc1)C(C)C(=O)O"]


def _batch_and_masks(seed: int = 0):
    arrays, _ = featurize_arrays(SMILES)
    b = GraphBatch.from_arrays(arrays, range(len(arrays)))
    b.pe = structural_pe(b.edge_index, b.batch, b.num_graphs, 4, 4)
    masks = sample_graph_masks(b, MaskConfig(target_fraction=0.3, n_blocks=2), np.random.default_rng(seed))
    return b, masks


@pytest.mark.integration
@pytest.mark.parametrize("name", names("graph"))
def test_each_objective_steps_and_its_loss_falls(name, descriptor_targets):
    torch.manual_seed(0)
    settings = {"temperature": 0.5} if name == "contrastive" else {}
    b, masks = _batch_and_masks()
    b.targets = descriptor_targets(SMILES)  # read only by the objectives that regress descriptors
    model = build_objective("graph", name, ObjectiveInputs(GRAPH_SPEC, TINY, n_targets=b.targets.shape[1]),
                            settings)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for step in range(30):
        model.train()
        out = model(b, masks, generator=torch.Generator().manual_seed(0))  # the same views: a fixed problem
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        model.ema_update(model.momentum_at(step, 30))
        losses.append(float(out.loss.detach()))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    z = model.embed(b)
    assert z.shape == (len(SMILES), 32) and torch.isfinite(z).all()
    has_target = name in ("jepa", "jepa_descriptors")  # downstream tasks read the EMA target
    assert encoder_of(model) is (model.target_encoder if has_target else model.encoder)


@pytest.mark.unit
def test_the_generative_bond_loss_is_logged_as_itself_not_as_anti_collapse():
    torch.manual_seed(0)
    model = GenerativeGraph(ObjectiveInputs(GRAPH_SPEC, TINY), GenerativeSettings(bond_weight=0.5))
    b, masks = _batch_and_masks()
    out = model(b, masks)
    assert float(out.reg) == 0.0  # no anti-collapse term in attribute masking
    assert out.extra["bond_loss"] > 0
    assert torch.isclose(out.loss, out.pred_loss + 0.5 * torch.tensor(out.extra["bond_loss"]), atol=1e-5)


@pytest.mark.unit
def test_unknown_objectives_and_settings_fail_with_their_names():
    from molwm.config import ConfigError
    from molwm.objectives import objective_settings

    with pytest.raises(ConfigError, match="unknown graph objective 'nope' \\(known: contrastive, descriptors, generative"):
        objective_settings("graph", "nope", {})
    with pytest.raises(ConfigError, match="objective_settings.temprature"):
        objective_settings("graph", "contrastive", {"temprature": 0.2})
    with pytest.raises(ConfigError, match="takes no settings"):
        objective_settings("graph", "jepa", {"bond_weight": 1.0})


@pytest.mark.unit
def test_generative_targets_are_the_raw_hidden_content_and_it_is_hidden():
    torch.manual_seed(0)
    model = GenerativeGraph(ObjectiveInputs(GRAPH_SPEC, TINY), GenerativeSettings()).eval()
    b, masks = _batch_and_masks()
    x_t, bonds, e_t = model.targets(b, masks)
    assert torch.equal(x_t, b.x[masks.target_idx])  # raw categorical attributes, not embeddings
    assert torch.equal(e_t, b.edge_attr[bonds])
    src, dst = b.edge_index
    hidden = torch.zeros(b.num_nodes, dtype=torch.bool)
    hidden[masks.target_idx] = True
    assert torch.equal(bonds, hidden[src] | hidden[dst])
    # corrupt every hidden atom's and bond's attributes: the encoder's view must not change...
    corrupt = dataclasses.replace(b, x=b.x.clone(), edge_attr=b.edge_attr.clone())
    corrupt.x[masks.target_idx] = (b.x[masks.target_idx] + 1) % torch.tensor(GRAPH_SPEC.atom_sizes)
    corrupt.edge_attr[bonds] = (b.edge_attr[bonds] + 1) % torch.tensor(GRAPH_SPEC.bond_sizes)
    hide = HiddenAttributes(hidden, model.atom_token, bonds, model.bond_token)
    with torch.no_grad():
        h, _ = model.encoder(b, hide=hide)
        h_c, _ = model.encoder(corrupt, hide=hide)
        h_plain, _ = model.encoder(corrupt)
    assert torch.allclose(h, h_c, atol=1e-6)
    assert not torch.allclose(h, h_plain, atol=1e-3)  # ...while an unhidden encoder does see the change
    # ...and the targets of the original input are what was there before the corruption
    assert not torch.equal(model.targets(corrupt, masks)[0], x_t)
    assert torch.equal(model.targets(b, masks)[0], x_t)


@pytest.mark.integration
def test_equal_budgets_stop_every_objective_at_the_same_point(repo_root):
    from molwm.train.pretrain import PretrainConfig, run_pretrain

    def cfg(*overrides):
        return load_config(PretrainConfig, repo_root / "configs/pretrain/tiny.yaml",
                           ["max_steps=500", "limit=128", *overrides])

    seen = {}
    for name in ("jepa", "generative", "contrastive"):
        r = run_pretrain(cfg(f"objective={name}", "budget_samples=160", f"out_dir=s-{name}"), progress=False)
        seen[name] = (r.steps, r.history["samples_seen"][-1][1])
    assert set(seen.values()) == {(5, 160.0)}
    for name in ("jepa", "contrastive"):
        r = run_pretrain(cfg(f"objective={name}", "budget_seconds=0.4", f"out_dir=t-{name}"), progress=False)
        wall = r.history["wall_seconds"]
        assert 0.4 <= wall[-1][1] < 0.4 + 2.0 and r.steps < 500
        assert len(wall) == 1 or wall[-2][1] < 0.4  # it stopped at the first step past the budget


@pytest.mark.unit
def test_configs_from_before_per_objective_settings_still_load():
    """Checkpoints written before the objective registry hold one flat settings block for every objective."""
    from molwm.config import from_dict
    from molwm.train.pretrain import PretrainConfig

    flat = {"bond_weight": 0.3, "head_hidden": 0, "view_mask_fraction": 0.2, "temperature": 0.5, "projection_dim": 64}
    assert from_dict(PretrainConfig, {"objective": "generative", "objective_settings": flat}
                     ).objective_settings == {"bond_weight": 0.3, "head_hidden": 0}
    assert from_dict(PretrainConfig, {"objective": "contrastive", "objective_settings": flat}
                     ).objective_settings == {"view_mask_fraction": 0.2, "temperature": 0.5, "projection_dim": 64}
    assert from_dict(PretrainConfig, {"objective": "jepa", "objective_settings": flat}).objective_settings == {}
