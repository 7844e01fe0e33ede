"""How good are the image-level forecasts? k steps ahead on held-out scaffolds, decoded by ridge probes.

Both forecasters are read the same way: a ridge probe (:class:`molwm.evaluation.ridge_probes.RidgeProbe`)
fitted on the training conditions' sites maps a site's embedding to the lab's hidden cell state.
The embedding is the encoder downstream use reads: the EMA target for ``jepa``, the trained
encoder for ``raw``. A latent forecast is decoded by that probe directly; a pixel forecast is
first encoded by the same encoder (the predicted site is read as a site). Persistence (nothing
changes after the start) is the start site's embedding, decoded by the same probe. Beside it:
``observed`` (the probe on the future site actually imaged: what any forecast decoded this way
can reach) and ``true_persistence`` (the hidden state at the start as the forecast).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from molwm.evaluation.ridge_probes import RidgeProbe
from molwm.world.evaluate import _starts, r2_score
from molwm.world.images import ImageWorldNet
from molwm.world.model import LatentState
from molwm.world.prepare import WorldData


@torch.no_grad()
def embed_sites(net: ImageWorldNet, sites: Tensor, objective: str, batch: int = 256) -> np.ndarray:
    """State embeddings ``[M, K*D]`` of ``sites [M, C, S, S]`` from the encoder the objective's read-outs use."""
    net.eval()
    enc = net.target if objective == "jepa" else net.encoder
    out = [enc(sites[i:i + batch]).flatten(1) for i in range(0, len(sites), batch)]
    return torch.cat(out).numpy() if out else np.zeros((0, net.config.state_tokens * net.config.dim))


def fit_image_probe(net: ImageWorldNet, data: WorldData, objective: str, max_rows: int = 4000, seed: int = 0,
                    batch: int = 256) -> RidgeProbe:
    """Ridge probe from site embeddings to the hidden state, on (up to ``max_rows``) observed training slots."""
    if data.truth is None:
        raise ValueError("the image-level probes read the lab's hidden state: these courses have none")
    idx = np.argwhere(data.mask.numpy())
    if len(idx) > max_rows:
        idx = idx[np.sort(np.random.default_rng(seed).choice(len(idx), max_rows, replace=False))]
    z = embed_sites(net, data.windows[idx[:, 0], idx[:, 1]], objective, batch)
    return RidgeProbe.fit(z, data.truth[idx[:, 0], idx[:, 1]])


def _nmse(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean squared error over rows, relative to the rows' own variance around their mean (1: the mean)."""
    pred, true = pred.reshape(len(pred), -1), true.reshape(len(true), -1)
    denom = ((true - true.mean(0)) ** 2).sum(1).mean()
    return float(((pred - true) ** 2).sum(1).mean() / max(denom, 1e-12))


@torch.no_grad()
def image_steps_ahead(net: ImageWorldNet, data: WorldData, probe: RidgeProbe, objective: str,
                      ks=(1, 2, 4), max_starts: int = 2000, seed: int = 0, batch: int = 256) -> dict[str, float]:
    """Forecasts ``k`` observed steps ahead from every start of ``data`` (held-out drugs, identities unknown).

    Keys per ``k``: ``truth_r2.k{k}`` (the forecast, decoded), ``.persistence``, ``.observed``,
    ``.true_persistence``; ``latent_nmse.k{k}`` and ``.persistence`` (``jepa``: to the target
    embedding of the future site) or ``pixel_nmse.k{k}`` and ``.persistence`` (``raw``: to the
    future site's pixels); ``starts.k{k}``.
    """
    net.eval()
    out: dict[str, float] = {}
    mask = data.mask.numpy()
    for k in ks:
        rows, slots = _starts(mask, k)
        if not len(rows):
            continue
        if len(rows) > max_starts:
            pick = np.sort(np.random.default_rng(seed).choice(len(rows), max_starts, replace=False))
            rows, slots = rows[pick], slots[pick]
        preds, starts, ends = [], [], []
        for i in range(0, len(rows), batch):
            r, s = torch.from_numpy(rows[i:i + batch]), torch.from_numpy(slots[i:i + batch])
            first, last = data.windows[r, s[:, 0]], data.windows[r, s[:, -1]]
            tokens = (net.target if objective == "jepa" else net.encoder)(first)  # [b, K, D]
            act = data.action.take(r)
            act.drug = torch.full_like(act.drug, net.members[0].actions.n_drugs)  # held out: unknown identity
            times = data.times[r[:, None], s[:, 1:]]  # [b, k]
            latent = net.rollout(LatentState(tokens, data.times[r, s[:, 0]]), act, times)[:, :, -1]  # [E, b, K, D]
            if objective == "jepa":
                preds.append(latent.mean(0).flatten(1).numpy())
            else:
                pixels = torch.stack([net.raw_head(m.flatten(1)) for m in latent]).mean(0)  # [b, C, S, S]
                preds.append(pixels.numpy())
            starts.append(first.numpy() if objective == "raw" else tokens.flatten(1).numpy())
            ends.append(last.numpy())
        pred, start, end = np.concatenate(preds), np.concatenate(starts), np.concatenate(ends)
        truth_end = data.truth[rows, slots[:, -1]]
        end_z = embed_sites(net, torch.from_numpy(end), objective, batch)
        if objective == "jepa":
            pred_z, start_z = pred, start
            out[f"latent_nmse.k{k}"] = _nmse(pred_z, end_z)
            out[f"latent_nmse.k{k}.persistence"] = _nmse(start_z, end_z)
        else:
            pred_z = embed_sites(net, torch.from_numpy(pred), objective, batch)
            start_z = embed_sites(net, torch.from_numpy(start), objective, batch)
            out[f"pixel_nmse.k{k}"] = _nmse(pred, end)
            out[f"pixel_nmse.k{k}.persistence"] = _nmse(start, end)
        out[f"truth_r2.k{k}"] = r2_score(probe.predict(pred_z), truth_end)
        out[f"truth_r2.k{k}.persistence"] = r2_score(probe.predict(start_z), truth_end)
        out[f"truth_r2.k{k}.observed"] = r2_score(probe.predict(end_z), truth_end)
        out[f"truth_r2.k{k}.true_persistence"] = r2_score(data.truth[rows, slots[:, 0]], truth_end)
        out[f"starts.k{k}"] = float(len(rows))
    return out


@torch.no_grad()
def image_planning(net: ImageWorldNet, train: WorldData, test: WorldData, objective: str, candidates: int = 50,
                   targets: int = 20, seed: int = 0, batch: int = 256) -> dict:
    """Reference-phenotype planning on held-out compounds (as ``benchmarks/world.py lab`` does for profiles).

    Candidates: held-out compounds at the top dose. Each target is one candidate's site observed at
    the last time; every candidate is forecast from untreated cells (the mean state of the training
    controls' first sites) to that time and ranked by its distance to the target (``jepa``: state
    embeddings, target = the EMA target's embedding of the target site; ``raw``: pixels, target = the
    site itself). A hit: the target's own compound in the top 5.

    Returns:
        ``top5``, ``median_rank``, ``targets``, ``candidates``, ``chance_top5`` and, for a ceiling
        computed by the caller, ``candidate_rows`` and ``rows`` (test rows of the candidates and of
        the targets) and ``slot`` (the last time's slot).
    """
    net.eval()
    dose = float(test.courses.dose.max())
    slot = int(np.nanargmax(np.nan_to_num(test.courses.times[0], nan=-1)))
    ok = np.flatnonzero(test.mask[:, slot].numpy() & (test.courses.dose == dose) & (test.courses.drug >= 0))
    rng = np.random.default_rng(seed)
    cands = np.sort(rng.choice(ok, min(candidates, len(ok)), replace=False))
    if len(cands) < 2:
        return {"top5": float("nan"), "median_rank": float("nan"), "targets": 0, "candidates": len(cands),
                "chance_top5": float("nan"), "candidate_rows": cands.tolist(), "rows": [], "slot": slot}
    ctrl = np.flatnonzero((train.action.control > 0).numpy())
    first = train.mask.float().argmax(1).numpy()
    z0 = (net.target if objective == "jepa" else net.encoder)(train.windows[ctrl, first[ctrl]]).mean(0)  # [K, D]
    t0 = float(train.times[ctrl, first[ctrl]].mean())
    r = torch.from_numpy(cands)
    act = test.action.take(r)
    act.drug = torch.full_like(act.drug, net.members[0].actions.n_drugs)
    n = len(cands)
    latent = net.rollout(LatentState(z0.expand(n, -1, -1), torch.full((n,), t0)), act,
                         test.times[r, slot][:, None])[:, :, -1]  # [E, n, K, D]
    if objective == "jepa":
        forecast = latent.mean(0).flatten(1).numpy()
        observed = embed_sites(net, test.windows[r, slot], objective, batch)
    else:
        forecast = torch.stack([net.raw_head(m.flatten(1)) for m in latent]).mean(0).flatten(1).numpy()
        observed = test.windows[r, slot].flatten(1).numpy()
    picks = np.arange(min(targets, n))
    ranks = []
    for j in picks:
        dist = np.linalg.norm(forecast - observed[j], axis=1)
        ranks.append(int((dist < dist[j]).sum()) + 1)
    ranks = np.asarray(ranks)
    return {"top5": float((ranks <= 5).mean()), "median_rank": float(np.median(ranks)), "targets": len(picks),
            "candidates": int(n), "chance_top5": min(1.0, 5 / n), "candidate_rows": cands.tolist(),
            "rows": cands[picks].tolist(), "slot": slot}
