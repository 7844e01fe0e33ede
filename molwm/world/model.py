"""Action-conditioned latent dynamics: state tokens at t + (compound, dose, time, context) -> state tokens at t'.

The state encoder reads what was observed up to t (a short window of past
observations, never anything later); an EMA copy of it gives the targets at
t'. Predictors are transformers over the state tokens plus explicit action
tokens; an ensemble of them (shared encoder, own weights, bootstrap-weighted
losses) gives a spread. With ``objective: raw`` the same encoder and
predictors are trained to output the raw observation at t' instead (the
non-JEPA baseline with the same budget).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

TIME_SCALE_H = 24.0
"""Hours per unit in every time input (a day)."""


@dataclass
class WorldNetConfig:
    """Sizes of the world model.

    Attributes:
        dim: Token width.
        state_tokens: Tokens per state.
        history: Past observations (the current one included) the state encoder reads.
        depth: Transformer layers per predictor.
        heads: Attention heads.
        ensemble: Predictors (members of the ensemble).
        dropout: Dropout on the compound features (before their projection).
        predictor_dropout: Dropout inside the predictors' transformer layers.
        ema: Momentum of the target encoder.
        id_dropout: Probability, in training, of replacing a drug's identity by "unknown",
            so that the model also learns to forecast from structure alone.
    """

    dim: int = 64
    state_tokens: int = 2
    history: int = 4
    depth: int = 2
    heads: int = 4
    ensemble: int = 3
    dropout: float = 0.1
    predictor_dropout: float = 0.0
    ema: float = 0.99
    id_dropout: float = 0.5


@dataclass
class LatentState:
    """A batch of latent states: ``tokens [B, K, D]`` at ``time [B]`` (hours since dosing)."""

    tokens: Tensor
    time: Tensor


@dataclass
class Action:
    """What was done to each condition.

    Attributes:
        compound: ``[B, C]`` compound features (zeros for controls or drugs without structure).
        drug: ``[B]`` drug identity index; ``n_drugs`` means unknown (new compound, or a control).
        log_dose: ``[B]`` log10 of the dose in uM (0 for controls).
        control: ``[B]`` 1.0 for vehicle controls.
        context: ``[B]`` context (cell line) index; ``n_contexts`` means unknown.
    """

    compound: Tensor
    drug: Tensor
    log_dose: Tensor
    control: Tensor
    context: Tensor

    def take(self, rows: Tensor) -> "Action":
        return Action(self.compound[rows], self.drug[rows], self.log_dose[rows], self.control[rows],
                      self.context[rows])


def window_features(obs: np.ndarray, times: np.ndarray, mask: np.ndarray, history: int) -> np.ndarray:
    """What the state encoder reads at each slot: the last ``history`` observations up to it.

    Per lag ``k`` (0 = the slot itself): the observation (``k = 0``) or its difference
    to the current one (``k > 0``), the time back to it in days, and a present flag.
    Only slots at or before the current one enter, so a state never sees later data.

    Shapes:
        obs: ``[N, T, F]`` (normalised, any value where ``mask`` is False);
        times, mask: ``[N, T]``; returns ``[N, T, history * (F + 2)]`` float32.
    """
    n, t, f = obs.shape
    out = np.zeros((n, t, history, f + 2), np.float32)
    obs = np.where(mask[..., None], obs, 0.0)
    for i in range(n):
        seen = np.flatnonzero(mask[i])
        for pos, slot in enumerate(seen):
            past = seen[max(0, pos - history + 1): pos + 1][::-1]  # current first
            cur = obs[i, slot]
            for k, p in enumerate(past):
                out[i, slot, k, :f] = cur if k == 0 else obs[i, p] - cur
                out[i, slot, k, f] = (times[i, slot] - times[i, p]) / TIME_SCALE_H
                out[i, slot, k, f + 1] = 1.0
    return out.reshape(n, t, history * (f + 2))


class StateEncoder(nn.Module):
    """Observation window ``[B, W]`` -> state tokens ``[B, K, D]``."""

    def __init__(self, in_dim: int, config: WorldNetConfig):
        super().__init__()
        d, k = config.dim, config.state_tokens
        self.k, self.d = k, d
        self.net = nn.Sequential(nn.Linear(in_dim, 2 * d), nn.GELU(), nn.Linear(2 * d, 2 * d), nn.GELU(),
                                 nn.Linear(2 * d, k * d))
        self.norm = nn.LayerNorm(d)

    def forward(self, window: Tensor) -> Tensor:
        return self.norm(self.net(window).view(len(window), self.k, self.d))


class ActionEncoder(nn.Module):
    """Action and times -> action tokens ``[B, 4, D]``: compound, dose, time, context.

    ``action.compound`` here is the shared compound projection (:meth:`WorldNet.embed_action`).
    """

    def __init__(self, compound_dim: int, n_drugs: int, n_contexts: int, config: WorldNetConfig):
        super().__init__()
        d = config.dim
        self.n_drugs, self.n_contexts = n_drugs, n_contexts
        self.compound = nn.Linear(compound_dim, d)
        self.drug = nn.Embedding(n_drugs + 1, d)  # last row: unknown
        self.dose = nn.Sequential(nn.Linear(2, d), nn.GELU(), nn.Linear(d, d))
        self.time = nn.Sequential(nn.Linear(4, d), nn.GELU(), nn.Linear(d, d))
        self.context = nn.Embedding(n_contexts + 1, d)
        self.kinds = nn.Parameter(torch.randn(4, d) * 0.02)

    def forward(self, action: Action, time: Tensor, target_time: Tensor) -> Tensor:
        dt = (target_time - time) / TIME_SCALE_H
        t = time / TIME_SCALE_H
        times = torch.stack([t, dt, torch.log1p(dt.clamp_min(0)), torch.log1p(t.clamp_min(0))], dim=1)
        dose = torch.stack([action.log_dose, action.control], dim=1)
        tokens = torch.stack([
            self.compound(action.compound) + self.drug(action.drug),
            self.dose(dose), self.time(times), self.context(action.context)], dim=1)
        return tokens + self.kinds


class Dynamics(nn.Module):
    """One predictor: ``forward(state, action, target_time) -> [B, K, D]`` predicted state tokens at ``target_time``."""

    def __init__(self, compound_dim: int, n_drugs: int, n_contexts: int, config: WorldNetConfig):
        super().__init__()
        d = config.dim
        self.actions = ActionEncoder(compound_dim, n_drugs, n_contexts, config)
        layer = nn.TransformerEncoderLayer(d, config.heads, 2 * d, config.predictor_dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, config.depth, enable_nested_tensor=False)
        self.state_type = nn.Parameter(torch.randn(config.state_tokens, d) * 0.02)
        self.out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d))
        self.k = config.state_tokens

    def forward(self, state: LatentState, action: Action, target_time: Tensor) -> Tensor:
        """Predicted state tokens ``[B, K, D]`` at ``target_time [B]`` (hours) after ``action``
        (whose compound went through :meth:`WorldNet.embed_action`)."""
        x = torch.cat([state.tokens + self.state_type, self.actions(action, state.time, target_time)], dim=1)
        h = self.blocks(x)[:, : self.k]
        return state.tokens + self.out(h)


class WorldNet(nn.Module):
    """State encoder, its EMA target copy, an ensemble of predictors and a raw read-out head.

    Args:
        window_dim: Width of :func:`window_features` rows.
        obs_dim: Observed features ``F`` (the raw head's output).
        compound_dim: Width of compound features.
        n_drugs, n_contexts: Identity vocabulary sizes (an extra "unknown" row each).
        config: Sizes.
        encoder: The state encoder (default: :class:`StateEncoder` over ``window_dim`` inputs); any
            module from a batch of observations to ``[B, K, D]`` state tokens (images:
            :mod:`molwm.world.images`).
        raw_head: The raw read-out from ``[B, K*D]`` (default: a linear map to ``obs_dim`` features).
    """

    def __init__(self, window_dim: int, obs_dim: int, compound_dim: int, n_drugs: int, n_contexts: int,
                 config: WorldNetConfig, encoder: nn.Module | None = None, raw_head: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.encoder = StateEncoder(window_dim, config) if encoder is None else encoder
        self.target = copy.deepcopy(self.encoder).requires_grad_(False)
        self.compound = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(max(1, compound_dim), config.dim),
                                      nn.GELU())
        self.members = nn.ModuleList(Dynamics(config.dim, n_drugs, n_contexts, config)
                                     for _ in range(config.ensemble))
        self.raw_head = nn.Linear(config.state_tokens * config.dim, obs_dim) if raw_head is None else raw_head

    def forward(self, state: LatentState, action: Action, target_time: Tensor) -> Tensor:
        """One step from ``state`` to ``target_time [B]`` under ``action``: ``[E, B, K, D]``, one row per member."""
        action = self.embed_action(action)
        return torch.stack([m(state, action, target_time) for m in self.members])

    def embed_action(self, action: Action) -> Action:
        """The action with its compound features projected once (shared by members and steps)."""
        return Action(self.compound(action.compound), action.drug, action.log_dose, action.control, action.context)

    @torch.no_grad()
    def untrained_parameters(self, objective: str) -> tuple[str, ...]:
        """Parameter prefixes a step of ``objective`` may leave without a gradient: the raw read-out
        head, which only the ``raw`` objective trains."""
        return ("raw_head.",) if objective != "raw" else ()

    def ema_update(self, momentum: float) -> None:
        """The training driver's name for :meth:`update_target`."""
        self.update_target(momentum)

    def momentum_at(self, step: int, total_steps: int) -> float:
        """EMA momentum at ``step``: from ``config.ema`` towards 1 (:func:`momentum_at`)."""
        return momentum_at(step, total_steps, self.config.ema)

    def update_target(self, momentum: float) -> None:
        for p, q in zip(self.encoder.parameters(), self.target.parameters()):
            q.mul_(momentum).add_(p.detach(), alpha=1.0 - momentum)

    def rollout(self, state: LatentState, action: Action, times: Tensor, member: int | None = None) -> Tensor:
        """Autoregressive forecast through ``times [B, H]`` (hours, increasing).

        Returns ``[E, B, H, K, D]`` (every member) or ``[B, H, K, D]`` for one ``member``.
        """
        action = self.embed_action(action)
        members = range(len(self.members)) if member is None else [member]
        out = []
        for m in members:
            cur, steps = state, []
            for h in range(times.shape[1]):
                nxt = self.members[m](cur, action, times[:, h])
                steps.append(nxt)
                cur = LatentState(nxt, times[:, h])
            out.append(torch.stack(steps, dim=1))
        stacked = torch.stack(out)
        return stacked[0] if member is not None else stacked


def momentum_at(step: int, total: int, base: float) -> float:
    """EMA momentum rising from ``base`` to 1 along a cosine (as in I-JEPA)."""
    return 1.0 - (1.0 - base) * (math.cos(math.pi * min(step, total) / max(total, 1)) + 1.0) / 2.0
