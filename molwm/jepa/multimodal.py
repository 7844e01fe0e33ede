"""Multimodal JEPA: graph, assay-panel and image encoders in one joint space.

Context path: each modality's encoder sees only its visible tokens (atoms
outside the hidden blocks, kept patches, kept measurements); the fusion
transformer joins them. Target path: EMA copies of the modality encoders,
each seeing its whole modality alone (so a hidden modality's targets never
carry information from the visible ones), layer-normalised. The predictor
gets the fused context plus one query per hidden token (a mask token, the
modality's embedding and the token's positional code) and one pooled query
per wholly hidden modality, and regresses their target embeddings.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featurizers.spec import GraphSpec
from molwm.data.multimodal import MultimodalBatch
from molwm.encoders.assay import AssayEncoderConfig
from molwm.encoders.fusion import FusedTokens, Fusion, FusionConfig
from molwm.encoders.graph import GraphEncoderConfig
from molwm.encoders.image import ImageEncoderConfig
from molwm.jepa.losses import prediction_loss, vicreg_regulariser
from molwm.jepa.mm_masking import MultimodalMasks, unseen_parameters
from molwm.jepa.modalities import HiddenQuery, ModalityUnit, modality_index, modality_names, place, units
from molwm.jepa.model import PredictorConfig


@dataclass
class MultimodalJEPAConfig:
    """The joint model and its objective.

    Attributes:
        dim: Joint width ``D``; every encoder's ``dim`` must equal it.
        graph: Graph encoder sizes.
        assay: Assay encoder sizes.
        image: Image encoder sizes.
        fusion: Joint transformer sizes.
        predictor: Predictor sizes.
        loss: ``smooth_l1`` or ``l2`` in embedding space.
        pooled_weight: Weight of the wholly hidden modalities' pooled targets.
        anti_collapse_weight: VICReg weight; the term averages the joint
            (global-token) embedding's and each modality's pooled context embedding's.
        ema_start: EMA momentum at step 0.
        ema_end: EMA momentum at the last step.
        modality_settings: Encoder settings of modalities beyond the built-ins, by name
            (read by their unit, :mod:`molwm.jepa.modalities`).
        modalities: The modalities the model has parts for (encoders, fusion and predictor rows): the
            first ones of the registry, in its order (None: every registered one). Multimodal runs
            record it in their checkpoints; one written before it existed reads as graph, assay,
            image (:func:`molwm.checkpoints.load_checkpoint`).
    """

    dim: int = 128
    graph: GraphEncoderConfig = field(default_factory=GraphEncoderConfig)
    assay: AssayEncoderConfig = field(default_factory=AssayEncoderConfig)
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    loss: Literal["smooth_l1", "l2"] = "smooth_l1"
    pooled_weight: float = 1.0
    anti_collapse_weight: float = 0.05
    ema_start: float = 0.996
    ema_end: float = 1.0
    modality_settings: dict[str, dict] = field(default_factory=dict)
    modalities: list[str] | None = None

    def validate(self) -> None:
        from molwm.config import ConfigError

        names = list(modality_names())
        if self.modalities is not None and (not self.modalities or self.modalities != names[:len(self.modalities)]):
            raise ConfigError(f"model.modalities {self.modalities} must be the first modalities of the registry "
                              f"{names}, in its order")
        for name in ("graph", "assay", "image"):
            if getattr(self, name).dim != self.dim:
                raise ConfigError(f"{name}.dim ({getattr(self, name).dim}) must equal dim ({self.dim}): "
                                  "every modality meets in one joint width")


def model_units(config: MultimodalJEPAConfig) -> tuple[ModalityUnit, ...]:
    """The units a model built from ``config`` has parts for (a prefix of the registry)."""
    every = units()
    return every if config.modalities is None else every[:len(config.modalities)]


@dataclass
class MultimodalOutput:
    """One forward pass.

    Attributes:
        loss: Total loss.
        pred_loss: Mean over modalities of the hidden-token loss.
        pooled_loss: Loss on wholly hidden modalities' pooled embeddings (0 if none).
        reg: Anti-collapse term (unweighted).
        per_modality: Hidden-token loss of each modality that had targets.
        joint: ``[B, D]`` joint context embedding.
        pred: ``[Nt, D]`` all predictions (modalities concatenated).
        target: ``[Nt, D]`` their targets.
    """

    loss: Tensor
    pred_loss: Tensor
    pooled_loss: Tensor
    reg: Tensor
    per_modality: dict[str, Tensor]
    joint: Tensor
    pred: Tensor
    target: Tensor


class MultimodalPredictor(nn.Module):
    """Narrow transformer over ``[context, token queries per modality, pooled queries]``.

    Args:
        dim: Joint width ``D``.
        pos_dims: Positional code width of each modality (in registry order).
        config: Sizes.
    """

    def __init__(self, dim: int, pos_dims: list[int], config: PredictorConfig):
        super().__init__()
        d = config.dim
        self.inp = nn.Linear(dim, d)
        self.pos = nn.ModuleList(nn.Linear(p, d) for p in pos_dims)
        self.modality = nn.Parameter(torch.randn(len(pos_dims), d) * 0.02)
        self.mask_token = nn.Parameter(torch.randn(d) * 0.02)
        self.pooled_query = nn.Parameter(torch.randn(len(pos_dims), d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, config.heads, 2 * d, dropout=0.0, batch_first=True, norm_first=True,
                                           activation="gelu")
        self.blocks = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, dim)

    def forward(self, context: FusedTokens, queries: list[tuple[int, Tensor, Tensor]],
                pooled: Tensor) -> tuple[list[Tensor], Tensor]:
        """Predict target embeddings.

        Shapes:
            context: ``x [B, Tc, D]``; queries: ``[(modality, pos [B, Tq, P_m], pad [B, Tq])]``;
            pooled: ``[B]`` modality index to predict whole (-1: none) ->
            ``([pred [B, Tq, D] per query group], pooled pred [B, D])``.
        """
        b = context.x.shape[0]
        xs, pads = [self.inp(context.x)], [context.pad]
        for m, pos, pad in queries:
            xs.append(self.mask_token + self.modality[m] + self.pos[m](pos))  # [B, Tq, d]
            pads.append(pad)
        xs.append(self.pooled_query[pooled.clamp(min=0)].unsqueeze(1))  # [B, 1, d]
        pads.append((pooled < 0).unsqueeze(1))
        h = self.out(self.norm(self.blocks(torch.cat(xs, 1), src_key_padding_mask=torch.cat(pads, 1))))
        outs, start = [], context.x.shape[1]
        for _, pos, _ in queries:
            outs.append(h[:, start:start + pos.shape[1]])
            start += pos.shape[1]
        return outs, h[:, -1].reshape(b, -1)


class MultimodalJEPA(nn.Module):
    """Context encoders + fusion, EMA target encoders, predictor.

    Args:
        spec: Graph featurizer spec.
        n_assays: Assay vocabulary size.
        config: Sizes and objective.
        with_targets: Build the EMA target encoders (objectives without one reuse the rest).
    """

    def __init__(self, spec: GraphSpec, n_assays: int, config: MultimodalJEPAConfig | None = None,
                 with_targets: bool = True):
        super().__init__()
        self.config = config = config or MultimodalJEPAConfig()
        self.units = model_units(config)
        self.encoders = nn.ModuleDict({u.name: u.encoder(spec, n_assays, config) for u in self.units})
        if with_targets:  # objectives without a target encoder (molwm.objectives.multimodal) skip it
            self.targets = copy.deepcopy(self.encoders)
            for p in self.targets.parameters():
                p.requires_grad_(False)
        self.fusion = Fusion(config.dim, len(self.units), config.fusion)
        pos_dims = [u.pos_dim(n_assays, config) for u in self.units]
        self.predictor = MultimodalPredictor(config.dim, pos_dims, config.predictor)

    @property
    def readout(self) -> nn.ModuleDict:
        """The encoders targets and downstream reads come from: the EMA targets (the trained
        encoders for objectives without targets)."""
        return self.targets if hasattr(self, "targets") else self.encoders

    # ---- encoders -------------------------------------------------------------------------------
    def _encode(self, encoders: nn.ModuleDict, batch: MultimodalBatch, modality: str, keep: Tensor | None):
        """Tokens of one modality for the rows that keep any, as ``(tokens, rows)`` (``(None, rows)`` if no row)."""
        u = self.units[modality_index(modality)]
        return u.encode(encoders[modality], batch.part(modality), batch.rows(modality), keep)

    def context(self, batch: MultimodalBatch, masks: MultimodalMasks | None = None) -> FusedTokens:
        """Fused context tokens; without masks every present token is visible."""
        parts = []
        for j, u in enumerate(self.units):
            if batch.part(u.name) is None:
                continue
            mask = masks.part(u.name) if masks is not None else None
            t, rows = self._encode(self.encoders, batch, u.name, None if mask is None else u.keep(mask))
            if t is not None:
                x, pad = place(t.x, t.pad, rows, batch.size)
                parts.append((j, x, pad))
        if not parts:
            z = self.fusion.global_token.new_zeros(batch.size, 0, self.config.dim)
            parts.append((0, z, torch.zeros(batch.size, 0, dtype=torch.bool)))
        return self.fusion(parts)

    @torch.no_grad()
    def target_tokens(self, batch: MultimodalBatch, modality: str, encoders: nn.ModuleDict | None = None):
        """Layer-normed target tokens of one modality for its rows: ``(x [Bm, T, D], pad [Bm, T])``;
        from ``encoders`` when given (default: :attr:`readout`). An encoder whose config says
        ``token_norm: false`` (the image variant) keeps its tokens' scale."""
        encoders = self.readout if encoders is None else encoders
        for enc in encoders.values():
            enc.eval()
        t, _ = self._encode(encoders, batch, modality, None)
        norm = getattr(getattr(encoders[modality], "config", None), "token_norm", True)
        return (F.layer_norm(t.x, (self.config.dim,)) if norm else t.x), t.pad

    # ---- objective ------------------------------------------------------------------------------
    def hidden_queries(self, batch: MultimodalBatch, masks: MultimodalMasks) -> list[HiddenQuery]:
        """One query group per modality with hidden tokens: where they are and which they are.

        Every objective that predicts hidden parts (embeddings here, raw content in
        :mod:`molwm.objectives.multimodal`) asks the predictor the same questions.
        """
        out = []
        for j, u in enumerate(self.units):
            if batch.part(u.name) is None or masks.part(u.name) is None:
                continue
            q = u.query(j, self.encoders[u.name], batch.part(u.name), masks.part(u.name), batch.rows(u.name),
                        batch.size)
            if q is not None:
                out.append(q)
        return out

    def forward(self, batch: MultimodalBatch, masks: MultimodalMasks) -> MultimodalOutput:
        """One JEPA pass over a multimodal batch; masks come from the collate step."""
        d, b = self.config.dim, batch.size
        pooled_t = torch.zeros(b, d, device=batch.index.device)
        tokens = {}
        for j, u in enumerate(self.units):
            if batch.part(u.name) is None:
                continue
            tx, tpad = self.target_tokens(batch, u.name)  # [Bm, T, D]
            tokens[j] = (tx, tpad)
            real = (~tpad).unsqueeze(-1).to(tx.dtype)
            mean = (tx * real).sum(1) / real.sum(1).clamp(min=1.0)  # [Bm, D]
            pooled_t[batch.rows(u.name)] = F.layer_norm(mean, (d,))
        queries = self.hidden_queries(batch, masks)
        targets = [self.units[q.modality].hidden_targets(*tokens[q.modality], q.select) for q in queries]
        context = self.context(batch, masks)
        preds, pooled_p = self.predictor(context, [(q.modality, q.pos, q.pad) for q in queries], masks.hidden)
        per_modality = {}
        flat_pred = []
        for q, pred, tgt in zip(queries, preds, targets):
            p = pred[~q.pad]  # row-major: rows ascending, tokens in position order, like the targets
            per_modality[self.units[q.modality].name] = prediction_loss(p, tgt, self.config.loss)
            flat_pred.append(p)
        zero = context.joint.sum() * 0.0
        pred_loss = torch.stack(list(per_modality.values())).mean() if per_modality else zero
        whole = masks.hidden >= 0
        pooled_loss = prediction_loss(pooled_p[whole], pooled_t[whole], self.config.loss) if whole.any() else zero
        reg = self.anti_collapse(context)
        loss = pred_loss + self.config.pooled_weight * pooled_loss + self.config.anti_collapse_weight * reg
        pred = torch.cat(flat_pred) if flat_pred else pooled_p[:0]
        target = torch.cat(targets) if targets else pooled_t[:0]
        return MultimodalOutput(loss=loss, pred_loss=pred_loss, pooled_loss=pooled_loss, reg=reg,
                                per_modality=per_modality, joint=context.joint, pred=pred, target=target)

    @staticmethod
    def anti_collapse(context: FusedTokens) -> Tensor:
        """VICReg on the joint embedding and on each modality's own pooled context embedding:
        a modality whose pooled tokens barely vary across samples cannot serve as a target."""
        regs = [vicreg_regulariser(context.joint)]
        regs += [vicreg_regulariser(z) for z in context.pooled.values() if len(z) >= 2]
        return torch.stack(regs).mean()

    @torch.no_grad()
    def graph_readout(self, batch: MultimodalBatch) -> tuple[Tensor, Tensor]:
        """What the assay probes read for the samples with a graph: ``([Bg, 2D], [Bg, A, D])``."""
        shared, per = self.assay_readout(batch)
        return shared[batch.graph_rows], per[batch.graph_rows]

    def retrieval_pair(self, graphs: MultimodalBatch, images: MultimodalBatch) -> tuple[Tensor, Tensor]:
        """Query (the image embedding predicted from the molecule alone) and key (the target's image embedding)."""
        return self.predict_modality(graphs, "image"), self.modality_embedding(images, "image")[0]

    def untrained_parameters(self, batch: MultimodalBatch, masks: MultimodalMasks) -> tuple[str, ...]:
        """Parameter prefixes this batch may leave without a gradient (modalities it does not show)."""
        return unseen_parameters(batch, masks)

    def ema_update(self, momentum: float) -> None:
        """``target <- momentum * target + (1 - momentum) * context`` for every modality encoder."""
        for t, c in zip(self.targets.parameters(), self.encoders.parameters()):
            t.mul_(momentum).add_(c.detach(), alpha=1.0 - momentum)

    def momentum_at(self, step: int, total_steps: int) -> float:
        """EMA momentum schedule: linear from ``ema_start`` to ``ema_end``."""
        frac = min(1.0, step / max(1, total_steps))
        return self.config.ema_start + frac * (self.config.ema_end - self.config.ema_start)

    # ---- embeddings for downstream use ------------------------------------------------------------
    @torch.no_grad()
    def embed(self, batch: MultimodalBatch) -> Tensor:
        """Joint embedding of whatever each sample has: ``[B, D]``."""
        self.eval()
        return self.context(batch).joint

    @torch.no_grad()
    def predict_modality(self, batch: MultimodalBatch, modality: str) -> Tensor:
        """Predicted pooled target embedding of ``modality`` from the modalities present: ``[B, D]``."""
        self.eval()
        context = self.context(batch)
        hidden = torch.full((batch.size,), modality_index(modality), dtype=torch.long)
        _, pooled = self.predictor(context, [], hidden)
        return pooled

    @torch.no_grad()
    def assay_readout(self, batch: MultimodalBatch) -> tuple[Tensor, Tensor]:
        """Features to read assay values from, given whatever each sample shows (usually its graph).

        Returns:
            ``(shared [B, 2D], per_assay [B, A, D])``: shared = the graph target
            encoder's mean-pooled embedding (zeros without a graph) and the joint
            embedding; per_assay = the predictor's forecast of each assay's token.
        """
        self.eval()
        context = self.context(batch)
        b, d = batch.size, self.config.dim
        n = self.encoders["assay"].n_assays
        ids = torch.arange(n).expand(b, n)
        queries = [(modality_index("assay"), self.encoders["assay"].positions(ids), torch.zeros(b, n, dtype=torch.bool))]
        (tokens,), _ = self.predictor(context, queries, torch.full((b,), -1, dtype=torch.long))
        graph = torch.zeros(b, d)
        if batch.graph is not None:
            self.readout["graph"].eval()
            graph[batch.graph_rows] = self.readout["graph"].embed(batch.graph)
        return torch.cat([graph, context.joint], dim=1), tokens

    @torch.no_grad()
    def modality_embedding(self, batch: MultimodalBatch, modality: str,
                           readout: Literal["target", "context"] = "target") -> tuple[Tensor, Tensor]:
        """Pooled (layer-normed) embedding of ``modality`` for the rows that have it, seeing the whole
        modality: from the encoder downstream tasks read (``target``: the EMA target, or the trained
        encoder of objectives without one) or from the context encoder (``context``).

        Returns:
            ``(embeddings [Bm, D], rows [Bm])``.
        """
        tx, tpad = self.target_tokens(batch, modality, self.encoders if readout == "context" else None)
        real = (~tpad).unsqueeze(-1).to(tx.dtype)
        mean = (tx * real).sum(1) / real.sum(1).clamp(min=1.0)
        return F.layer_norm(mean, (self.config.dim,)), batch.rows(modality)
