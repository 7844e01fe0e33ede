"""JEPA losses: regression in embedding space and anti-collapse regularisers."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def prediction_loss(pred: Tensor, target: Tensor, kind: str = "smooth_l1") -> Tensor:
    """Mean regression loss between predicted and target embeddings ``[Nt, D]``."""
    if len(pred) == 0:
        return pred.sum() * 0.0
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target)
    if kind == "l2":
        return F.mse_loss(pred, target)
    raise ValueError(f"unknown loss '{kind}' (expected smooth_l1 or l2)")


def vicreg_regulariser(z: Tensor, std_target: float = 1.0, cov_weight: float = 0.04) -> Tensor:
    """Variance (hinge on per-dimension std) plus covariance (off-diagonal) terms of VICReg.

    Args:
        z: ``[B, D]`` embeddings of the context branch.
    """
    z = z - z.mean(0, keepdim=True)
    std = torch.sqrt(z.var(0) + 1e-4)
    var_term = F.relu(std_target - std).mean()
    if z.shape[0] < 2:
        return var_term
    cov = (z.T @ z) / (z.shape[0] - 1)  # [D, D]
    off = cov - torch.diag(torch.diag(cov))
    return var_term + cov_weight * off.pow(2).sum() / z.shape[1]


def sigreg_regulariser(z: Tensor, n_directions: int = 64, n_points: int = 17,
                       generator: torch.Generator | None = None) -> Tensor:
    """SIGReg-style: push random 1-D projections of ``z`` towards a standard normal.

    Compares each projection's empirical characteristic function with
    ``exp(-t^2 / 2)`` on a grid of ``t`` (an Epps-Pulley statistic), weighted by
    the Gaussian window.
    """
    d = z.shape[1]
    # drawn where the generator lives (a CPU one in training), then moved: the same directions on every device
    where = generator.device if generator is not None else torch.device("cpu")
    dirs = torch.randn(d, n_directions, generator=generator, device=where).to(z)  # [D, K]
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    proj = z @ dirs  # [B, K]
    t = torch.linspace(-3.0, 3.0, n_points, device=z.device, dtype=z.dtype)  # [T]
    arg = proj.unsqueeze(-1) * t  # [B, K, T]
    re, im = torch.cos(arg).mean(0), torch.sin(arg).mean(0)  # [K, T]
    gauss = torch.exp(-0.5 * t**2)
    stat = ((re - gauss) ** 2 + im**2) * gauss
    return stat.mean() * math.sqrt(z.shape[0])
