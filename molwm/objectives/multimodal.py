"""Multimodal objectives beside the JEPA: predict the raw hidden content, or contrast two masked views.

Both reuse the JEPA's context encoders, fusion, predictor, masks, data and
step loop (:mod:`molwm.train.pretrain_mm`); only what is predicted changes,
so the comparison is at equal architecture and budget.

* ``generative`` (MAE-style for images, masked values for assays, attribute
  masking for graphs): the predictor answers the same hidden-token queries as
  the JEPA's, and small heads map each answer to the raw content: the
  normalised pixels of a hidden patch (each patch and channel standardised on
  its own, as MAE's normalised-pixel target; absent channels carry no loss),
  the normalised value of a hidden measurement, the categories of a hidden
  atom. The targets are read from the input batch, never from an encoder.
* ``contrastive_views`` (SimCLR/GraphCL-style for any modality): view 1 is the
  masks' context, view 2 the tokens the masks hide (disjoint); the two joint
  embeddings of a sample are matched against the batch's other samples with
  symmetric InfoNCE through a projection head.

Neither has an EMA target encoder: the trained encoders are the ones probes
and downstream tasks read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featurizers.spec import GraphSpec
from molwm.data.multimodal import MultimodalBatch
from molwm.jepa.contrastive import ContrastiveMolImage, ContrastiveMolProfile
from molwm.jepa.mm_masking import MultimodalMasks, hidden_tokens
from molwm.jepa.modalities import units
from molwm.jepa.modalities.image import normalised_patches  # noqa: F401 (re-exported)
from molwm.jepa.multimodal import MultimodalJEPA, MultimodalJEPAConfig, MultimodalOutput
from molwm.objectives.registry import ObjectiveInputs, register


class _NoTargets(MultimodalJEPA):
    """The JEPA's modules without EMA target encoders (nothing to average)."""

    def __init__(self, spec: GraphSpec, n_assays: int, config: MultimodalJEPAConfig | None = None):
        super().__init__(spec, n_assays, config, with_targets=False)

    def ema_update(self, momentum: float) -> None:
        return None

    def momentum_at(self, step: int, total_steps: int) -> float:
        return 0.0


class MultimodalGenerative(_NoTargets):
    """Predict the raw content of hidden tokens: pixels, assay values, atom attributes.

    Args:
        spec: Graph featurizer spec (the atom heads' category counts).
        n_assays: Assay vocabulary size.
        config: Sizes (shared with the JEPA).
    """

    def __init__(self, spec: GraphSpec, n_assays: int, config: MultimodalJEPAConfig | None = None):
        super().__init__(spec, n_assays, config)
        # one head per modality, named by its unit (``atom_heads``, ``value_head``, ``pixel_head``);
        # built last unit first, the order the first three were written in, so seeded runs repeat
        for u in reversed(self.units):
            setattr(self, u.head_name, u.raw_head(spec, self.config))

    def untrained_parameters(self, batch: MultimodalBatch, masks: MultimodalMasks) -> tuple[str, ...]:
        """As the JEPA's, plus the raw-content heads of modalities with nothing hidden."""
        heads = {u.name: f"{u.head_name}." for u in units()}
        return (*super().untrained_parameters(batch, masks),
                *(heads[m] for m, has in hidden_tokens(masks).items() if not has))

    def raw_targets(self, batch: MultimodalBatch, select: Tensor, modality: int) -> tuple[Tensor, Tensor | None]:
        """The raw hidden content of one modality, read from the input: ``(target, weight)``.

        Graph: ``[Nt, Ca]`` atom categories; assay: ``[Nt]`` values; image:
        ``[Nt, C, p*p]`` normalised pixels with ``[Nt, C]`` present-channel weights.
        """
        u = self.units[modality]
        return u.raw_target(batch.part(u.name), select, self.config)

    def forward(self, batch: MultimodalBatch, masks: MultimodalMasks) -> MultimodalOutput:
        """Reconstruct every hidden token's raw content from the fused context."""
        queries = self.hidden_queries(batch, masks)
        targets = [self.raw_targets(batch, q.select, q.modality) for q in queries]  # read before encoding
        context = self.context(batch, masks)
        none = torch.full((batch.size,), -1, dtype=torch.long, device=context.joint.device)
        preds, _ = self.predictor(context, [(q.modality, q.pos, q.pad) for q in queries], none)
        per_modality = {}
        for q, pred, (tgt, weight) in zip(queries, preds, targets):
            u = self.units[q.modality]
            per_modality[u.name] = u.raw_loss(getattr(self, u.head_name), pred[~q.pad], tgt, weight)  # [Nt, D]
        zero = context.joint.sum() * 0.0
        pred_loss = torch.stack(list(per_modality.values())).mean() if per_modality else zero
        reg = self.anti_collapse(context).detach()  # logged for comparison, not trained on
        empty = context.joint[:0]
        return MultimodalOutput(loss=pred_loss, pred_loss=pred_loss, pooled_loss=zero, reg=reg,
                                per_modality=per_modality, joint=context.joint, pred=empty, target=empty)


class MultimodalViews(_NoTargets):
    """Two disjoint masked views of each sample, symmetric InfoNCE on their joint embeddings.

    Args:
        spec: Graph featurizer spec.
        n_assays: Assay vocabulary size.
        config: Sizes (shared with the JEPA).
        temperature: InfoNCE temperature.
    """

    def __init__(self, spec: GraphSpec, n_assays: int, config: MultimodalJEPAConfig | None = None,
                 temperature: float = 0.1):
        super().__init__(spec, n_assays, config)
        self.predictor = None  # nothing is predicted: the two views' embeddings are compared
        d = self.config.dim
        self.projection = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.temperature = temperature

    @staticmethod
    def second_view(batch: MultimodalBatch, masks: MultimodalMasks) -> MultimodalMasks:
        """The hidden tokens as a context: view 2 sees exactly what view 1 does not predict from."""
        return replace(masks, parts={u.name: u.second_view(batch.part(u.name), masks.part(u.name))
                                     for u in units() if masks.part(u.name) is not None})

    @staticmethod
    def _has_tokens(context) -> Tensor:
        return (~context.pad[:, 1:]).any(1)  # position 0 is the global token

    def forward(self, batch: MultimodalBatch, masks: MultimodalMasks) -> MultimodalOutput:
        """InfoNCE between the two views over the samples that have tokens in both."""
        c1 = self.context(batch, masks)
        c2 = self.context(batch, self.second_view(batch, masks))
        both = self._has_tokens(c1) & self._has_tokens(c2)
        reg = self.anti_collapse(c1).detach()
        if int(both.sum()) < 2:
            zero = c1.joint.sum() * 0.0
            return MultimodalOutput(loss=zero, pred_loss=zero, pooled_loss=zero, reg=reg, per_modality={},
                                    joint=c1.joint, pred=c1.joint[:0], target=c1.joint[:0])
        z1 = F.normalize(self.projection(c1.joint[both]), dim=-1)
        z2 = F.normalize(self.projection(c2.joint[both]), dim=-1)
        logits = z1 @ z2.T / self.temperature
        labels = torch.arange(len(z1), device=logits.device)
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
        zero = loss * 0.0
        return MultimodalOutput(loss=loss, pred_loss=loss, pooled_loss=zero, reg=reg,
                                per_modality={"infonce": loss.detach()}, joint=c1.joint, pred=c1.joint[:0],
                                target=c1.joint[:0])


@dataclass
class InfoNCESettings:
    """Settings of the contrastive multimodal objectives.

    Attributes:
        temperature: InfoNCE temperature (the CLOOME-style model's initial, learned one).
    """

    temperature: float = 0.1


@dataclass
class CLOOMESettings(InfoNCESettings):
    """Settings of the CLOOME-style molecule-image model (CLIP's initial temperature)."""

    temperature: float = 0.07


@register("multimodal", "jepa")
def multimodal_jepa(inputs: ObjectiveInputs, settings: None = None) -> MultimodalJEPA:
    """Predict the per-modality EMA targets' embeddings of hidden tokens and wholly hidden modalities."""
    return MultimodalJEPA(inputs.spec, inputs.n_assays, inputs.model)


@register("multimodal", "generative")
def multimodal_generative(inputs: ObjectiveInputs, settings: None = None) -> MultimodalGenerative:
    """Predict the raw content of hidden tokens: pixels (MAE-style), assay values, atom attributes."""
    return MultimodalGenerative(inputs.spec, inputs.n_assays, inputs.model)


@register("multimodal", "contrastive_views", settings=InfoNCESettings)
def multimodal_views(inputs: ObjectiveInputs, settings: InfoNCESettings) -> MultimodalViews:
    """Two disjoint masked views of each sample, symmetric InfoNCE on their joint embeddings."""
    return MultimodalViews(inputs.spec, inputs.n_assays, inputs.model, temperature=settings.temperature)


@register("multimodal", "contrastive", settings=CLOOMESettings, needs=("graph", "image"))
def cloome(inputs: ObjectiveInputs, settings: CLOOMESettings) -> ContrastiveMolImage:
    """CLOOME-style: match each molecule to its own image against the batch's others (needs both)."""
    return ContrastiveMolImage(inputs.spec, inputs.model, temperature=settings.temperature)


@register("multimodal", "contrastive_profile", settings=CLOOMESettings, needs=("graph", "profile"))
def cloome_profile(inputs: ObjectiveInputs, settings: CLOOMESettings) -> ContrastiveMolProfile:
    """CLOOME-style on well profiles: match each molecule (at the well's dose and time) to its own profile."""
    return ContrastiveMolProfile(inputs.spec, inputs.model, temperature=settings.temperature)
