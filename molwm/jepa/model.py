"""Graph JEPA: context encoder, EMA target encoder, predictor, loss.

The context encoder sees only the context atoms (hidden atoms and their bonds
are removed from the graph). The target encoder, an exponential moving
average of the context encoder, sees the whole molecule without gradients;
its atom embeddings, layer-normalised, are the targets. The predictor gets
the context tokens plus one mask token per hidden atom carrying that atom's
positional code, and regresses the hidden atoms' target embeddings.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import to_dense_batch

from featurizers.spec import GraphSpec
from molwm.data.batch import GraphBatch
from molwm.encoders.graph import GraphEncoder, GraphEncoderConfig
from molwm.encoders.tokens import Tokens
from molwm.jepa.losses import prediction_loss, sigreg_regulariser, vicreg_regulariser
from molwm.jepa.masking import GraphMasks


@dataclass
class PredictorConfig:
    """A narrow transformer.

    Attributes:
        dim: Width inside the predictor (narrower than the encoder).
        layers: Transformer layers.
        heads: Attention heads.
    """

    dim: int = 96
    layers: int = 2
    heads: int = 4


@dataclass
class JEPAConfig:
    """The model and its objective.

    Attributes:
        encoder: Graph encoder sizes.
        predictor: Predictor sizes.
        loss: ``smooth_l1`` or ``l2`` between predicted and target embeddings.
        anti_collapse: ``vicreg``, ``sigreg`` or ``none``, applied to the pooled
            context embeddings.
        anti_collapse_weight: Its weight in the total loss.
        ema_start: EMA momentum at step 0 (rises linearly to ``ema_end``).
        ema_end: EMA momentum at the last step.
        graph_target_weight: If > 0, the predictor also predicts the whole
            molecule's pooled target embedding (mean over all atoms,
            layer-normalised) from a learned graph query token, and that loss
            is added with this weight; downstream heads read pooled
            embeddings, so this asks the context for a molecule-level summary.
    """

    encoder: GraphEncoderConfig = field(default_factory=GraphEncoderConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    loss: Literal["smooth_l1", "l2"] = "smooth_l1"
    anti_collapse: Literal["vicreg", "sigreg", "none"] = "vicreg"
    anti_collapse_weight: float = 0.05
    ema_start: float = 0.996
    ema_end: float = 1.0
    graph_target_weight: float = 0.0


@dataclass
class JEPAOutput:
    """What one forward pass returns.

    Attributes:
        loss: Total loss (prediction + weighted anti-collapse).
        pred_loss: Prediction loss alone.
        reg: Anti-collapse term (unweighted).
        pred: ``[Nt, D]`` predicted target embeddings.
        target: ``[Nt, D]`` target embeddings (no gradient).
        context_embedding: ``[B, D]`` pooled context tokens.
        graph_loss: Graph-level prediction loss (zero when not configured).
        extra: Objective-specific metrics (e.g. attribute accuracy), logged as they are.
    """

    loss: Tensor
    pred_loss: Tensor
    reg: Tensor
    pred: Tensor
    target: Tensor
    context_embedding: Tensor
    graph_loss: Tensor | None = None
    extra: dict | None = None


class GraphPredictor(nn.Module):
    """Transformer over ``[context tokens, mask tokens]`` per molecule.

    Args:
        enc_dim: Encoder width ``D`` (input and output).
        pe_dim: Positional code width ``P``.
        config: Predictor sizes.
        graph_query: Add a learned token that predicts the molecule-level target.
    """

    def __init__(self, enc_dim: int, pe_dim: int, config: PredictorConfig, graph_query: bool = False):
        super().__init__()
        d = config.dim
        self.inp = nn.Linear(enc_dim, d)
        self.pos = nn.Linear(pe_dim, d)
        self.mask_token = nn.Parameter(torch.zeros(d))
        nn.init.normal_(self.mask_token, std=0.02)
        # a learned query for the molecule-level target (only when it is trained)
        self.graph_token = nn.Parameter(torch.randn(d) * 0.02) if graph_query else None
        layer = nn.TransformerEncoderLayer(d, config.heads, 2 * d, dropout=0.0, batch_first=True, norm_first=True,
                                           activation="gelu")
        self.blocks = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, enc_dim)

    def forward(self, context: Tokens, target_pos: Tensor, target_pad: Tensor,
                graph_query: bool = False) -> tuple[Tensor, Tensor | None]:
        """Predict hidden tokens' embeddings (and, with ``graph_query``, the molecule's).

        Shapes:
            context: ``x [B, Tc, D]``, ``pad [B, Tc]``, ``pos [B, Tc, P]``;
            target_pos: ``[B, Tm, P]``; target_pad: ``[B, Tm]``; returns
            ``([B, Tm, D], [B, D] or None)``.
        """
        c = self.inp(context.x) + self.pos(context.pos)  # [B, Tc, d]
        m = self.mask_token + self.pos(target_pos)  # [B, Tm, d]
        parts, pads = [c, m], [context.pad, target_pad]
        if graph_query:
            b = c.shape[0]
            parts.append(self.graph_token.expand(b, 1, -1))  # [B, 1, d]
            pads.append(torch.zeros(b, 1, dtype=torch.bool, device=c.device))
        h = self.blocks(torch.cat(parts, dim=1), src_key_padding_mask=torch.cat(pads, dim=1))
        h = self.out(self.norm(h[:, c.shape[1] :]))  # [B, Tm (+1), D]
        if graph_query:
            return h[:, :-1], h[:, -1]
        return h, None


class GraphJEPA(nn.Module):
    """Context encoder + EMA target encoder + predictor.

    Args:
        spec: Featurizer spec the encoders embed.
        config: Model and objective.
    """

    def __init__(self, spec: GraphSpec, config: JEPAConfig | None = None):
        super().__init__()
        self.config = config = config or JEPAConfig()
        self.context_encoder = GraphEncoder(spec, config.encoder)
        self.target_encoder = copy.deepcopy(self.context_encoder)
        for p in self.target_encoder.parameters():
            p.requires_grad_(False)
        self.predictor = GraphPredictor(config.encoder.dim, config.encoder.pe_dim, config.predictor,
                                        graph_query=config.graph_target_weight > 0)

    def forward(self, batch: GraphBatch, masks: GraphMasks, generator: torch.Generator | None = None) -> JEPAOutput:
        """One JEPA pass; masks come from the collate step."""
        d = self.config.encoder.dim
        with_graph = self.config.graph_target_weight > 0
        with torch.no_grad():
            self.target_encoder.eval()
            h_full, mol = self.target_encoder(batch)  # [N, D]
            target = F.layer_norm(h_full, (d,))[masks.target_idx]  # [Nt, D]
            if with_graph:
                total = torch.zeros(batch.num_graphs, d, dtype=h_full.dtype,
                                    device=h_full.device).index_add_(0, mol, h_full)  # [B, D]
                counts = torch.bincount(mol, minlength=batch.num_graphs).clamp(min=1).unsqueeze(1)
                graph_target = F.layer_norm(total / counts, (d,))  # [B, D]
        context = self.context_encoder.tokens(batch, keep=masks.keep)
        # hidden atoms grouped by molecule (masks list them molecule by molecule)
        t_pos, t_real = to_dense_batch(batch.pe[masks.target_idx], masks.target_mol,
                                       batch_size=batch.num_graphs)  # [B, Tm, P]
        pred, graph_pred = self.predictor(context, t_pos, ~t_real, graph_query=with_graph)
        pred = pred[t_real]  # [Nt, D]
        pred_loss = prediction_loss(pred, target, self.config.loss)
        graph_loss = prediction_loss(graph_pred, graph_target, self.config.loss) if with_graph else None
        z = context.pooled()  # [B, D]
        if self.config.anti_collapse == "vicreg":
            reg = vicreg_regulariser(z)
        elif self.config.anti_collapse == "sigreg":
            reg = sigreg_regulariser(z, generator=generator)
        else:
            reg = z.sum() * 0.0
        loss = pred_loss + self.config.anti_collapse_weight * reg
        if graph_loss is not None:
            loss = loss + self.config.graph_target_weight * graph_loss
        return JEPAOutput(loss=loss, pred_loss=pred_loss, reg=reg, pred=pred, target=target, context_embedding=z,
                          graph_loss=graph_loss)

    encoder_prefix = "target_encoder."
    """Where the encoder downstream tasks read (the EMA target) sits in the ``state_dict``."""

    def untrained_parameters(self, batch: GraphBatch, masks: GraphMasks) -> tuple[str, ...]:
        """Parameter prefixes a batch may leave without a gradient: none (the EMA target is frozen)."""
        return ()

    @torch.no_grad()
    def ema_update(self, momentum: float) -> None:
        """``target <- momentum * target + (1 - momentum) * context``."""
        for t, c in zip(self.target_encoder.parameters(), self.context_encoder.parameters()):
            t.mul_(momentum).add_(c.detach(), alpha=1.0 - momentum)

    @torch.no_grad()
    def embed(self, batch: GraphBatch) -> Tensor:
        """Molecule embeddings from the target encoder, ``[B, D]``."""
        self.target_encoder.eval()
        return self.target_encoder.embed(batch)

    def momentum_at(self, step: int, total_steps: int) -> float:
        """EMA momentum schedule: linear from ``ema_start`` to ``ema_end``."""
        frac = min(1.0, step / max(1, total_steps))
        return self.config.ema_start + frac * (self.config.ema_end - self.config.ema_start)
