"""CLOOME-style contrastive baselines: molecules matched with cell images or well profiles by InfoNCE.

The same graph and image (or profile) encoders as the multimodal JEPA, the
same data and budget; instead of predicting embeddings of hidden parts, each
molecule's pooled embedding is pulled towards the image (profile) of its own
well and pushed away from the other wells in the batch (symmetric InfoNCE
with a learned temperature, as in CLIP/CLOOME). It only learns from samples
that have both. Retrieval ranks candidate wells by cosine similarity of the
projected embeddings. On profiles the molecule side also reads the well's
dose and time (the same action the JEPA's predictor is asked with), since
one compound has a different profile at each.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featurizers.spec import GraphSpec
from molwm.data.multimodal import MultimodalBatch
from molwm.encoders.graph import GraphEncoder
from molwm.encoders.image import ImageEncoder
from molwm.encoders.profile import TIME_SCALE_H
from molwm.jepa.modalities import unit
from molwm.jepa.mm_masking import MultimodalMasks, unseen_parameters
from molwm.jepa.multimodal import MultimodalJEPAConfig, MultimodalOutput


def paired_rows(batch: MultimodalBatch, partner: str = "image") -> tuple[Tensor, Tensor]:
    """Positions, in ``batch.graph`` and in the ``partner`` modality's batch, of samples that have both."""
    if batch.graph is None or batch.part(partner) is None:
        none = torch.zeros(0, dtype=torch.long, device=batch.index.device)
        return none, none
    where = batch.graph_rows.device
    g_pos = torch.full((batch.size,), -1, dtype=torch.long, device=where)
    g_pos[batch.graph_rows] = torch.arange(len(batch.graph_rows), device=where)
    i_pos = torch.full((batch.size,), -1, dtype=torch.long, device=where)
    rows = batch.rows(partner)
    i_pos[rows] = torch.arange(len(rows), device=where)
    both = (g_pos >= 0) & (i_pos >= 0)
    return g_pos[both], i_pos[both]


class ContrastiveMolImage(nn.Module):
    """Graph encoder + image encoder + projections + learned temperature.

    Args:
        spec: Graph featurizer spec.
        config: The JEPA config whose encoder sizes are reused (same capacity).
        temperature: Initial softmax temperature (CLIP: 0.07).
    """

    partner = "image"

    def __init__(self, spec: GraphSpec, config: MultimodalJEPAConfig | None = None, temperature: float = 0.07):
        super().__init__()
        self.config = config = config or MultimodalJEPAConfig()
        self.encoders = nn.ModuleDict({"graph": GraphEncoder(spec, config.graph),
                                       self.partner: self.partner_encoder(spec, config)})
        d = config.dim
        self.proj = nn.ModuleDict({"graph": nn.Linear(d, d), self.partner: nn.Linear(d, d)})
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    @staticmethod
    def partner_encoder(spec: GraphSpec, config: MultimodalJEPAConfig) -> nn.Module:
        """The encoder of the modality molecules are matched with (built right after the graph encoder)."""
        return ImageEncoder(config.image)

    def molecule_embedding(self, batch: MultimodalBatch) -> Tensor:
        """Unit-norm projected molecule embeddings of ``batch.graph``: ``[Bg, D]``."""
        z = self.encoders["graph"].embed(batch.graph)
        return F.normalize(self.proj["graph"](z), dim=-1)

    def image_embedding(self, batch: MultimodalBatch) -> Tensor:
        """Unit-norm projected image embeddings of ``batch.image``: ``[Bi, D]``."""
        t = self.encoders["image"].tokens(batch.image.pixels, batch.image.present)
        return F.normalize(self.proj["image"](t.pooled()), dim=-1)

    def forward(self, batch: MultimodalBatch, masks=None) -> MultimodalOutput:
        """Symmetric InfoNCE over the batch's (molecule, image) pairs; ``masks`` is ignored."""
        gi, ii = paired_rows(batch, self.partner)
        if len(gi) < 2:
            zero = self.logit_scale * 0.0
            return MultimodalOutput(loss=zero, pred_loss=zero, pooled_loss=zero, reg=zero, per_modality={},
                                    joint=zero.reshape(1, 1), pred=zero[None, None][:0], target=zero[None, None][:0])
        zg = self.paired_molecules(batch, gi, ii)  # [P, D]
        zi = self.partner_embedding(batch)[ii]  # [P, D]
        logits = self.logit_scale.clamp(max=math.log(100.0)).exp() * zg @ zi.T  # [P, P]
        labels = torch.arange(len(gi), device=logits.device)
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
        zero = loss * 0.0
        return MultimodalOutput(loss=loss, pred_loss=loss, pooled_loss=zero, reg=zero,
                                per_modality={"infonce": loss.detach()}, joint=zg, pred=zg.detach(), target=zi.detach())

    def partner_embedding(self, batch: MultimodalBatch) -> Tensor:
        """Unit-norm projected embeddings of the partner modality's rows: ``[Bp, D]``."""
        return self.image_embedding(batch)

    def paired_molecules(self, batch: MultimodalBatch, gi: Tensor, ii: Tensor) -> Tensor:
        """Molecule embeddings of the pairs (graph positions ``gi``, partner positions ``ii``): ``[P, D]``."""
        return self.molecule_embedding(batch)[gi]

    def graph_readout(self, batch: MultimodalBatch) -> tuple[Tensor, None]:
        """What a probe reads for the samples with a graph: the projected molecule embedding (no tokens)."""
        return self.molecule_embedding(batch), None

    def retrieval_pair(self, graphs: MultimodalBatch, images: MultimodalBatch) -> tuple[Tensor, Tensor]:
        """Query (projected molecule embedding) and key (projected image embedding)."""
        return self.molecule_embedding(graphs), self.image_embedding(images)

    def untrained_parameters(self, batch: MultimodalBatch, masks: MultimodalMasks | None) -> tuple[str, ...]:
        """Encoders of modalities this batch does not show, and the temperature (clamped at its maximum)."""
        return (*unseen_parameters(batch, masks), "logit_scale")

    def ema_update(self, momentum: float) -> None:
        """No target encoder: nothing to do (keeps one training loop for every objective)."""

    def momentum_at(self, step: int, total_steps: int) -> float:
        return 1.0


class ContrastiveMolProfile(ContrastiveMolImage):
    """Graph encoder + profile encoder + projections + learned temperature (CLOOME on well profiles).

    The molecule side is the graph's pooled embedding plus a linear code of the well's dose and time
    (log10 uM, days), so the same compound can match its different profiles; the profile side is the
    profile encoder's pooled tokens over the whole (unmasked) profile.

    Args:
        spec: Graph featurizer spec.
        config: The JEPA config whose encoder sizes are reused (same capacity).
        temperature: Initial softmax temperature (CLIP: 0.07).
    """

    partner = "profile"

    def __init__(self, spec: GraphSpec, config: MultimodalJEPAConfig | None = None, temperature: float = 0.07):
        super().__init__(spec, config, temperature)
        self.action = nn.Linear(2, self.config.dim)  # drawn after the projections, as before

    @staticmethod
    def partner_encoder(spec: GraphSpec, config: MultimodalJEPAConfig) -> nn.Module:
        return unit("profile").encoder(spec, 1, config)

    def _at(self, z: Tensor, dose: Tensor, time_h: Tensor) -> Tensor:
        """Molecule embeddings ``z`` asked at ``dose`` (log10 uM) and ``time_h``, projected, unit-norm."""
        z = z + self.action(torch.stack([dose, time_h / TIME_SCALE_H], 1).to(z.dtype))
        return F.normalize(self.proj["graph"](z), dim=-1)

    def condition_embedding(self, graphs: MultimodalBatch, dose: Tensor, time_h: Tensor) -> Tensor:
        """Unit-norm molecule embeddings of ``graphs.graph`` asked at ``dose`` (log10 uM) and ``time_h``: ``[Bg, D]``."""
        return self._at(self.encoders["graph"].embed(graphs.graph), dose, time_h)

    def partner_embedding(self, batch: MultimodalBatch) -> Tensor:
        """Unit-norm projected embeddings of ``batch``'s profiles (every feature seen): ``[Bp, D]``."""
        t = self.encoders["profile"].tokens(batch.part("profile"))
        real = (~t.pad).unsqueeze(-1).to(t.x.dtype)
        return F.normalize(self.proj["profile"]((t.x * real).sum(1) / real.sum(1).clamp(min=1.0)), dim=-1)

    def paired_molecules(self, batch: MultimodalBatch, gi: Tensor, ii: Tensor) -> Tensor:
        part = batch.part("profile")
        return self._at(self.encoders["graph"].embed(batch.graph)[gi], part.dose[ii], part.time[ii])

    def image_embedding(self, batch: MultimodalBatch) -> Tensor:
        raise AttributeError("ContrastiveMolProfile has no image encoder")

    def retrieval_pair(self, graphs: MultimodalBatch, profiles: MultimodalBatch) -> tuple[Tensor, Tensor]:
        """Query (molecule at each profile's dose and time; ``graphs`` and ``profiles`` row-aligned) and key."""
        part = profiles.part("profile")
        return self.condition_embedding(graphs, part.dose, part.time), self.partner_embedding(profiles)
