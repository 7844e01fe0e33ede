"""Training the world model: one-step teacher-forced + multi-step rollout losses in embedding space.

``molwm pretrain --config configs/world/lab.yaml`` (``kind: world``). The loop,
checkpoints, exact resume and buffered MLflow metrics are the shared ones of
:mod:`molwm.train.loop`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from molwm.jepa.health import embedding_health
from molwm.jepa.losses import vicreg_regulariser
from molwm.evaluation.ridge_probes import RidgeProbe
from molwm.world.config import WorldConfig, WorldDataConfig  # noqa: F401  (re-exported: the run's schema)
from molwm.world.data import CourseError, TimeCourses, load_lab_courses
from molwm.world.model import Action, LatentState, WorldNet
from molwm.world.prepare import Normaliser, WorldData, compound_features, drug_split, make_world_data


@dataclass
class WorldBuild:
    """Everything derived from the data: courses, split, normalisers, tensors."""

    courses: TimeCourses
    train_drugs: np.ndarray
    test_drugs: np.ndarray
    obs_norm: Normaliser
    comp_norm: Normaliser
    drug_features: np.ndarray
    train: WorldData
    test: WorldData
    train_rows: np.ndarray
    test_rows: np.ndarray
    val: WorldData | None = None
    val_rows: np.ndarray | None = None


def load_courses(config: WorldDataConfig) -> TimeCourses:
    """The configured time courses (the first ``drugs_limit`` drugs' conditions and the controls)."""
    courses = _read_courses(config)
    if config.drugs_limit is not None:
        courses = courses.subset(np.flatnonzero(courses.drug < config.drugs_limit))
    return courses


def _read_courses(config: WorldDataConfig) -> TimeCourses:
    if config.source == "thunor":
        from molwm.world.thunor import load_thunor

        return load_thunor(config.thunor_file)
    if config.source == "lincs":
        from molwm.world.lincs import load_lincs

        return load_lincs(config.dataset, config.data_dir)
    return load_lab_courses(config.lab)


def build_world_data(config: WorldConfig, courses: TimeCourses | None = None) -> WorldBuild:
    """Split conditions by drug, fit normalisers on the training side, build tensors."""
    d = config.data
    courses = courses if courses is not None else load_courses(d)
    train_drugs, test_drugs = drug_split(courses, d.split, d.seed, d.test_fraction, d.n_folds, d.fold, d.holdout)
    treated = courses.drug >= 0
    held_ctx = np.isin(courses.context, [courses.contexts.index(c) for c in d.holdout_contexts
                                         if c in courses.contexts])
    unknown = sorted(set(d.holdout_contexts) - set(courses.contexts))
    if unknown:
        raise CourseError(f"data.holdout_contexts: {unknown} not in the data (contexts: {courses.contexts})")
    test_rows = np.flatnonzero((treated & test_drugs[np.clip(courses.drug, 0, None)]) | held_ctx)
    val_rows = None
    if d.calibration_fraction > 0:  # drugs kept out of training to calibrate the intervals on
        val_drugs = _calibration_drugs(courses, train_drugs, d.calibration_fraction, d.seed)
        train_drugs = train_drugs & ~val_drugs
        val_rows = np.setdiff1d(np.flatnonzero(treated & val_drugs[np.clip(courses.drug, 0, None)]), test_rows)
        test_rows_all = np.union1d(test_rows, val_rows)
    else:
        test_rows_all = test_rows
    train_rows = np.setdiff1d(np.arange(courses.n), test_rows_all)
    train_c = courses.subset(train_rows)
    if d.max_time_h is not None:
        train_c = train_c.until(d.max_time_h)
    raw = compound_features(courses.smiles, d.compound)
    comp_norm = Normaliser.fit(raw[train_drugs]) if train_drugs.any() else Normaliser.fit(raw)
    drug_features = comp_norm(raw)
    obs_norm = Normaliser.fit(train_c.obs[train_c.mask])
    h = config.model.history
    val = None if val_rows is None else make_world_data(courses.subset(val_rows), obs_norm, drug_features, h,
                                                        train_drugs)
    return WorldBuild(courses, train_drugs, test_drugs, obs_norm, comp_norm, drug_features,
                      make_world_data(train_c, obs_norm, drug_features, h, train_drugs),
                      make_world_data(courses.subset(test_rows), obs_norm, drug_features, h, train_drugs),
                      train_rows, test_rows, val, val_rows)


def _calibration_drugs(courses: TimeCourses, train_drugs: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A scaffold-grouped ``fraction`` of the training drugs (with structure), kept for calibration."""
    from molwm.data.splits import scaffold_split

    pool = [i for i in np.flatnonzero(train_drugs) if courses.smiles[i]]
    out = np.zeros(len(courses.drugs), bool)
    if len(pool) < 4:
        return out
    _, _, held = scaffold_split([courses.smiles[i] for i in pool], (1 - fraction, 0.0, fraction), seed + 7919)
    out[np.asarray(pool, np.int64)[np.asarray(held, np.int64)]] = True
    return out


@dataclass
class WorldBatch:
    """The courses of one training step: ``B`` courses with ``H + 1`` observed slots each, in time order.

    Attributes:
        windows: ``[B, H+1, W]`` observation windows (what the state encoder reads; for the
            image-level model, ``[B, H+1, C, S, S]`` sites).
        times: ``[B, H+1]`` hours since dosing.
        obs: ``[B, H+1, O]`` normalised observations (the raw objective's targets; sites for images).
        valid: ``[B, H+1]`` bool, True where the slot was observed.
        action: The courses' actions (compound, dose, context), identities dropped at ``id_dropout``.
        weights: ``[E, B]`` bootstrap weights of each ensemble member (Poisson(1) per course).
    """

    windows: torch.Tensor
    times: torch.Tensor
    obs: torch.Tensor
    valid: torch.Tensor
    action: Action
    weights: torch.Tensor


def sample_batch(data: WorldData, batch_size: int, horizon: int, seed: int, step: int,
                 id_dropout: float, n_members: int) -> WorldBatch:
    """A deterministic (in ``seed, step``) batch of courses with ``horizon + 1`` observed slots each, in time order."""
    rng = np.random.default_rng([seed, step])
    pool = np.flatnonzero(data.n_obs.numpy() >= 2)
    rows = pool[rng.integers(0, len(pool), batch_size)]
    mask = data.mask.numpy()[rows]
    t = mask.shape[1]
    scores = np.where(mask, rng.random(mask.shape), np.inf)
    pick = np.argsort(scores, axis=1)[:, : horizon + 1]
    valid = np.take_along_axis(mask, pick, 1)
    slots = np.sort(np.where(valid, pick, t), axis=1)
    valid = slots < t
    slots = np.minimum(slots, t - 1)
    action = data.action.take(torch.from_numpy(rows))
    drop = torch.from_numpy(rng.random(batch_size) < id_dropout)
    action.drug = torch.where(drop, torch.full_like(action.drug, len(data.courses.drugs)), action.drug)
    r = torch.from_numpy(rows)[:, None]
    s = torch.from_numpy(slots)
    return WorldBatch(windows=data.windows[r, s], times=data.times[r, s], obs=data.obs[r, s],
                      valid=torch.from_numpy(valid), action=action,
                      weights=torch.from_numpy(rng.poisson(1.0, (n_members, batch_size)).astype(np.float32)))


def _masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the last dims, weighted per row and masked. Shapes: ``[B, ...]``, ``[B]``, ``[B]``."""
    per = (pred - target).pow(2).flatten(1).mean(1)
    w = mask.float() * weight
    return (per * w).sum() / w.sum().clamp_min(1.0)


def world_losses(net: WorldNet, batch: WorldBatch, config: WorldConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Teacher-forced and rollout losses (and VICReg for ``jepa``) on one batch."""
    w, tm, valid = batch.windows, batch.times, batch.valid
    b, hp1 = w.shape[:2]
    horizon = hp1 - 1
    z = net.encoder(w.flatten(0, 1)).view(b, hp1, net.config.state_tokens, net.config.dim)  # [B, H+1, K, D]
    if config.objective == "jepa":
        with torch.no_grad():
            target = net.target(w.flatten(0, 1)).view_as(z)
    action = net.embed_action(batch.action)
    tf_total, roll_total = 0.0, 0.0
    for m, member in enumerate(net.members):
        weight = batch.weights[m]
        tf, roll, cur = 0.0, 0.0, z[:, 0]
        for k in range(1, horizon + 1):
            step_mask = valid[:, k]
            one = member(LatentState(z[:, k - 1], tm[:, k - 1]), action, tm[:, k])
            cur = member(LatentState(cur, tm[:, k - 1]), action, tm[:, k]) if k > 1 else one
            if config.objective == "jepa":
                tf = tf + _masked_mse(one, target[:, k], step_mask, weight)
                roll = roll + _masked_mse(cur, target[:, k], step_mask, weight)
            else:
                obs = batch.obs[:, k]
                tf = tf + _masked_mse(net.raw_head(one.flatten(1)), obs, step_mask, weight)
                roll = roll + _masked_mse(net.raw_head(cur.flatten(1)), obs, step_mask, weight)
        tf_total, roll_total = tf_total + tf / horizon, roll_total + roll / horizon
    n = len(net.members)
    loss = tf_total / n + config.rollout_weight * roll_total / n
    metrics = {"loss.teacher_forced": float(tf_total.detach()) / n, "loss.rollout": float(roll_total.detach()) / n}
    if config.objective == "jepa" and config.vicreg_weight > 0:
        flat = z[valid].flatten(1)
        vic = vicreg_regulariser(flat)
        loss = loss + config.vicreg_weight * vic
        metrics["loss.vicreg"] = float(vic.detach())
    metrics["loss"] = float(loss.detach())
    return loss, metrics


@torch.no_grad()
def world_health(net: WorldNet, batch: WorldBatch) -> dict[str, float]:
    net.eval()
    w, valid = batch.windows, batch.valid
    z = net.target(w[valid])
    out = embedding_health(z.flatten(1))
    return out


@torch.no_grad()
def embed_observations(net: WorldNet, data: WorldData, target: bool = True) -> torch.Tensor:
    """State embeddings ``[N, T, K, D]`` of every slot (meaningful where ``data.mask``)."""
    net.eval()
    enc = net.target if target else net.encoder
    n, t, w = data.windows.shape
    return enc(data.windows.reshape(n * t, w)).view(n, t, net.config.state_tokens, net.config.dim)


def fit_probes(net: WorldNet, data: WorldData, config: WorldConfig) -> dict:
    """Read-outs from states: ``obs`` (normalised observations) and ``truth`` (hidden state, where known).

    For ``jepa`` they are ridge probes on target-encoder embeddings (the encoder never saw
    the observations as targets); for ``raw`` the observation read-out is the trained head and
    the truth probe maps normalised observations to the hidden state.
    """
    mask = data.mask.numpy()
    rng = np.random.default_rng(config.seed)
    idx = np.argwhere(mask)
    if len(idx) > config.probe_rows:
        idx = idx[np.sort(rng.choice(len(idx), config.probe_rows, replace=False))]
    obs = data.obs.numpy()[idx[:, 0], idx[:, 1]]
    probes = {}
    if config.objective == "jepa":
        z = embed_observations(net, data).flatten(2).numpy()[idx[:, 0], idx[:, 1]]
        probes["obs"] = RidgeProbe.fit(z, obs).to_dict()
        feats = z
    else:
        feats = obs
    if data.truth is not None:
        probes["truth"] = RidgeProbe.fit(feats, data.truth[idx[:, 0], idx[:, 1]]).to_dict()
    return probes


def initial_states(build: WorldBuild) -> dict:
    """Per context, the mean state-window of controls at their first observation (the start of a plan)."""
    data = build.train
    ctrl = (data.action.control > 0).numpy()
    first = data.mask.float().argmax(1).numpy()
    out = {}
    for c in range(len(build.courses.contexts)):
        rows = np.flatnonzero(ctrl & (data.action.context.numpy() == c))
        if not len(rows):
            rows = np.flatnonzero(data.action.context.numpy() == c)
        if not len(rows):
            continue
        w = data.windows[rows, first[rows]].mean(0)
        t = float(data.times[rows, first[rows]].mean())
        out[build.courses.contexts[c]] = {"window": w.tolist(), "time": t}
    return out
