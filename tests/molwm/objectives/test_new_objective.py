"""The recipe of docs/architecture.md: a new graph objective is a registered class plus a config, and
pretraining, its checkpoint kind and the encoder loader follow without another edit."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from molwm.checkpoints import load_checkpoint
from molwm.config import ConfigError, load_config
from molwm.jepa.model import JEPAOutput
from molwm.kinds import load_encoder
from molwm.objectives.graph import _NoTarget, _pool
from molwm.objectives.registry import OBJECTIVES, ObjectiveInputs, register
from molwm.train.pretrain import PretrainConfig, run_pretrain


@dataclass
class AtomCountSettings:
    """Settings of the toy objective."""

    scale: float = 0.1


@pytest.fixture
def toy_objective():
    """``graph/atom_count``: regress each molecule's atom count (scaled) from its pooled embedding."""

    @register("graph", "atom_count", settings=AtomCountSettings)
    class AtomCount(_NoTarget):
        """Regress the atom count from the pooled embedding (a toy objective for the recipe)."""

        def __init__(self, inputs: ObjectiveInputs, settings: AtomCountSettings):
            super().__init__(inputs, settings)
            self.head = torch.nn.Linear(inputs.model.encoder.dim, 1)

        def untrained_parameters(self, batch, masks) -> tuple[str, ...]:
            return ("atom_token",)  # the base's mask token: this objective hides no attribute

        def forward(self, batch, masks, generator=None) -> JEPAOutput:
            h, mol = self.encoder(batch, keep=masks.keep)
            z = _pool(h, mol, batch.num_graphs)
            count = torch.bincount(batch.batch, minlength=batch.num_graphs).to(z.dtype) * self.objective.scale
            loss = F.mse_loss(self.head(z).squeeze(1), count)
            empty = z[:0]
            return JEPAOutput(loss=loss, pred_loss=loss, reg=loss.detach() * 0.0, pred=empty, target=empty,
                              context_embedding=z)

    yield "atom_count"
    OBJECTIVES.pop(("graph", "atom_count"))


@pytest.mark.integration
def test_a_registered_objective_pretrains_and_its_encoder_loads(toy_objective, repo_root, tmp_path):
    cfg = load_config(PretrainConfig, repo_root / "configs/pretrain/tiny.yaml", [
        f"objective={toy_objective}", "objective_settings.scale=0.05", "max_steps=3", "health_every=3",
        f"out_dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}"])
    result = run_pretrain(cfg, progress=False)  # the driver's step-one check: every parameter got a gradient
    assert result.steps == 3 and torch.isfinite(torch.tensor(result.final_loss))
    state = load_checkpoint(result.checkpoint)
    assert state["kind"] == "graph_pretrain" and state["objective"] == toy_objective
    assert load_encoder(result.checkpoint).config.dim == cfg.model.encoder.dim
    with pytest.raises(ConfigError, match="objective_settings.scal"):
        load_config(PretrainConfig, repo_root / "configs/pretrain/tiny.yaml",
                    [f"objective={toy_objective}", "objective_settings.scal=1"])
