"""Embedding health: is the representation alive, spread out, and used?"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def effective_rank(z: Tensor, eps: float = 1e-12) -> float:
    """RankMe: ``exp`` of the entropy of the normalised singular values of ``z`` ``[B, D]``.

    1 means every sample lies on one line (collapse); ``min(B, D)`` is the maximum.
    """
    s = torch.linalg.svdvals(z.float() - z.float().mean(0, keepdim=True))
    p = s / (s.sum() + eps) + eps
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def embedding_health(z: Tensor, pred: Tensor | None = None, target: Tensor | None = None) -> dict[str, float]:
    """Per-dimension std (mean and min over dimensions), effective rank, and
    predictor-vs-target cosine.

    Args:
        z: ``[B, D]`` molecule embeddings (e.g. pooled target-encoder outputs).
        pred: ``[Nt, D]`` predictions, optional.
        target: ``[Nt, D]`` their targets, optional.
    """
    std = z.float().std(0)
    out = {
        "health.std_mean": float(std.mean()),
        "health.std_min": float(std.min()),
        "health.rankme": effective_rank(z),
    }
    if pred is not None and target is not None and len(pred):
        out["health.pred_target_cos"] = float(torch.nn.functional.cosine_similarity(pred, target, dim=-1).mean())
    return out
