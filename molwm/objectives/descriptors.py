"""Descriptor objectives: what a chemist would compute about a molecule, as the pretraining target.

* ``descriptors`` (CheMeleon-style, Burns et al. 2025): the encoder reads the whole molecule and a
  head regresses its standardised descriptors (:mod:`molwm.data.descriptors`) from the pooled
  embedding; each step's loss covers a random ``mask_fraction`` of the entries (15% in CheMeleon),
  missing values never.
* ``jepa_descriptors``: the graph JEPA (hidden atom blocks' target embeddings) plus the same
  descriptor regression from the context encoder's view of the whole molecule, weighted by
  ``descriptor_weight``; downstream tasks read the EMA target, as for the JEPA.

Both need the descriptor targets in ``batch.targets`` (``needs=("descriptors",)``: graph pretraining
prepares them beside the cache and fits their statistics on the pretraining rows).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from molwm.data.batch import GraphBatch
from molwm.jepa.masking import GraphMasks
from molwm.jepa.model import GraphJEPA, JEPAOutput
from molwm.objectives.graph import _head, _NoTarget, _pool
from molwm.objectives.registry import ObjectiveInputs, register


@dataclass
class DescriptorSettings:
    """Settings of descriptor regression.

    Attributes:
        mask_fraction: Share of the (observed) descriptor entries in each step's loss.
        head_hidden: Hidden width of the regression head (0: a linear head).
    """

    mask_fraction: float = 0.15
    head_hidden: int = 256


@dataclass
class JEPADescriptorSettings(DescriptorSettings):
    """Settings of the JEPA plus descriptor regression.

    Attributes:
        descriptor_weight: Weight of the descriptor loss beside the JEPA's.
    """

    descriptor_weight: float = 1.0


def descriptor_loss(pred: Tensor, targets: Tensor, fraction: float, generator: torch.Generator | None) -> Tensor:
    """Mean squared error over a random ``fraction`` of the observed entries of ``targets``.

    The entries are drawn where the generator lives (training passes a CPU one) and moved, so a GPU run
    scores the same entries as a CPU run; at least one observed entry is always scored.

    Shapes:
        pred, targets: ``[B, K]`` (targets NaN where missing) -> scalar.
    """
    observed = ~torch.isnan(targets)
    where = generator.device if generator is not None else torch.device("cpu")
    draw = torch.rand(targets.shape, generator=generator, device=where).to(targets.device)
    chosen = observed & (draw < fraction)
    if not bool(chosen.any()):
        chosen = observed
    if not bool(chosen.any()):
        return pred.sum() * 0.0
    return F.mse_loss(pred[chosen], targets[chosen])


def _targets(batch: GraphBatch) -> Tensor:
    if batch.targets is None:
        raise ValueError("descriptor objectives need batch.targets (graph pretraining fills them from the "
                         "descriptor table); none were collated")
    return batch.targets


@register("graph", "descriptors", settings=DescriptorSettings, needs=("descriptors",))
class DescriptorGraph(_NoTarget):
    """Regress the whole molecule's standardised descriptors from its pooled embedding (CheMeleon-style)."""

    def __init__(self, inputs: ObjectiveInputs, settings: DescriptorSettings):
        super().__init__(inputs, settings)
        self.head = _head(inputs.model.encoder.dim, max(1, inputs.n_targets), settings.head_hidden)

    def untrained_parameters(self, batch: GraphBatch, masks: GraphMasks) -> tuple[str, ...]:
        """The base's atom mask token: this objective hides no atom."""
        return ("atom_token",)

    def forward(self, batch: GraphBatch, masks: GraphMasks, generator: torch.Generator | None = None) -> JEPAOutput:
        h, mol = self.encoder(batch)  # the whole molecule: its descriptors describe all of it
        z = _pool(h, mol, batch.num_graphs)  # [B, D]
        loss = descriptor_loss(self.head(z), _targets(batch), self.objective.mask_fraction, generator)
        empty = z.new_zeros(0, z.shape[1])
        return JEPAOutput(loss=loss, pred_loss=loss, reg=loss.detach() * 0.0, pred=empty, target=empty,
                          context_embedding=z, extra={"descriptor_loss": float(loss.detach())})


@register("graph", "jepa_descriptors", settings=JEPADescriptorSettings, needs=("descriptors",))
class JEPADescriptorGraph(GraphJEPA):
    """The graph JEPA plus descriptor regression from the context encoder's view of the whole molecule."""

    def __init__(self, inputs: ObjectiveInputs, settings: JEPADescriptorSettings):
        super().__init__(inputs.spec, inputs.model)
        self.settings = settings
        self.descriptor_head = _head(inputs.model.encoder.dim, max(1, inputs.n_targets), settings.head_hidden)

    def forward(self, batch: GraphBatch, masks: GraphMasks, generator: torch.Generator | None = None) -> JEPAOutput:
        out = super().forward(batch, masks, generator)
        h, mol = self.context_encoder(batch)  # [N, D], the whole molecule
        pred = self.descriptor_head(_pool(h, mol, batch.num_graphs))
        dloss = descriptor_loss(pred, _targets(batch), self.settings.mask_fraction, generator)
        return replace(out, loss=out.loss + self.settings.descriptor_weight * dloss,
                       extra={**(out.extra or {}), "descriptor_loss": float(dloss.detach())})
