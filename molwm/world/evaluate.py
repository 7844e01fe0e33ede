"""How good are the forecasts? k-steps-ahead errors on held-out drugs, against persistence.

``steps_ahead`` starts from every observed slot of every held-out course and
rolls the model forward through the next ``k`` observed time points (actions
and times given, nothing observed after the start), then compares:
- in latent space: normalised MSE to the target encoder's embedding of what
  was observed at ``t + k`` (1 = as bad as predicting the mean embedding);
- decoded: R² of the observations and, where known, of the hidden state.
Persistence (nothing changes after the start) is scored the same way.

Calibration of the ensemble spread (:func:`calibrate`) is fitted on member forecasts of held-out
validation courses (:func:`members_from_cutoff`, :func:`members_steps_ahead`) with the property
models' calibrators (:mod:`molwm.uncertainty.calibration`), and written into the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from molwm.atomic import atomic_path
from molwm.checkpoints import save_checkpoint
from molwm.uncertainty.calibration import Calibrator, fit_calibrator
from molwm.world.forecast import WorldForecaster
from molwm.world.model import LatentState
from molwm.world.prepare import WorldData


def r2_score(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean over columns of R² (columns with no variance skipped). Shapes: ``[n, C]``."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    ok = np.isfinite(pred).all(1) & np.isfinite(true).all(1)
    pred, true = pred[ok], true[ok]
    if len(true) < 2:
        return float("nan")
    var = true.var(0)
    keep = var > 1e-12
    return float(np.mean(1.0 - ((pred - true) ** 2).mean(0)[keep] / var[keep]))


def _starts(mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and start slots that have at least ``k`` later observed slots; returns ``(rows, slots[:, k+1])``."""
    rows, slots = [], []
    for i in range(len(mask)):
        seen = np.flatnonzero(mask[i])
        for p in range(len(seen) - k):
            rows.append(i)
            slots.append(seen[p: p + k + 1])
    return np.asarray(rows, np.int64), np.asarray(slots, np.int64).reshape(-1, k + 1)


@torch.no_grad()
def _k_step(fc: WorldForecaster, data: WorldData, k: int, max_starts: int, seed: int):
    """Roll every start ``k`` observed steps ahead: ``(rows, slots, start tokens, latent [E, n, K*D])``."""
    net = fc.net
    rows, slots = _starts(data.mask.numpy(), k)
    if not len(rows):
        return rows, slots, None, None
    if len(rows) > max_starts:
        pick = np.sort(np.random.default_rng(seed).choice(len(rows), max_starts, replace=False))
        rows, slots = rows[pick], slots[pick]
    r = torch.from_numpy(rows)
    w0 = data.windows[r, slots[:, 0]]
    tokens = net.target(w0) if fc.config.objective == "jepa" else net.encoder(w0)
    times = data.times[r[:, None], torch.from_numpy(slots[:, 1:])]
    act = data.action.take(r)
    # held-out drugs: their identity is unknown to the model
    act.drug = torch.full_like(act.drug, len(fc.drugs))
    latent = net.rollout(LatentState(tokens, data.times[r, slots[:, 0]]), act, times)[:, :, -1]  # [E,n,K,D]
    return rows, slots, tokens, latent.flatten(2).numpy()


def members_steps_ahead(fc: WorldForecaster, data: WorldData, k: int, max_starts: int = 20000, seed: int = 0
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Member forecasts of the observations ``k`` observed steps ahead.

    Returns:
        ``(preds [E, n, F], observed [n, F], rows [n])`` in data units; ``rows`` index ``data``'s courses.
    """
    rows, slots, _, latent = _k_step(fc, data, k, max_starts, seed)
    if latent is None:
        f = len(fc.obs_names)
        return np.zeros((len(fc.net.members), 0, f)), np.zeros((0, f)), rows
    dec = fc.decode_members(latent)
    preds = np.stack([dec[n] for n in fc.obs_names], -1)  # [E, n, F]
    return preds, fc.obs_norm.inverse(data.obs.numpy()[rows, slots[:, -1]]), rows


@torch.no_grad()
def steps_ahead(fc: WorldForecaster, data: WorldData, ks: Sequence[int] = (1, 2, 4),
                max_starts: int = 20000, seed: int = 0) -> dict[str, float]:
    """Forecast metrics ``k`` observed steps ahead for each ``k`` (see the module docstring)."""
    net, jepa = fc.net, fc.config.objective == "jepa"
    out: dict[str, float] = {}
    for k in ks:
        rows, slots, tokens, latent = _k_step(fc, data, k, max_starts, seed)
        if latent is None:
            continue
        r = torch.from_numpy(rows)
        end = slots[:, -1]
        true_obs = fc.obs_norm.inverse(data.obs.numpy()[rows, end])
        dec = fc.decode(latent)
        start_obs = data.obs.numpy()[rows, slots[:, 0]]
        if jepa:  # persistence: the start state, decoded like the forecasts
            pers = fc.decode(tokens.flatten(1).numpy()[None])
        else:  # raw space: the start observation itself (and the truth probe on it)
            pers = {n: (fc.obs_norm.inverse(start_obs)[:, j], None) for j, n in enumerate(fc.obs_names)}
            if "truth" in fc.probes:
                tp = fc.probes["truth"].predict(start_obs)
                pers.update({"true_" + n: (tp[:, j], None) for j, n in enumerate(fc.truth_names)})
        pred_obs = np.stack([dec[n][0] for n in fc.obs_names], 1)
        pers_obs = np.stack([pers[n][0] for n in fc.obs_names], 1)
        out[f"obs_r2.k{k}"] = r2_score(pred_obs, true_obs)
        out[f"obs_r2.k{k}.persistence"] = r2_score(pers_obs, true_obs)
        out[f"obs_r2.k{k}.last_observed"] = r2_score(fc.obs_norm.inverse(start_obs), true_obs)
        bounds = fc.intervals({n: dec[n] for n in fc.obs_names})  # calibrated if fc is, else raw Gaussian 90%
        inside = [(true_obs[:, j] >= bounds[n][1]) & (true_obs[:, j] <= bounds[n][2])
                  for j, n in enumerate(fc.obs_names)]
        out[f"obs_interval_coverage.k{k}"] = float(np.mean(inside))
        if data.truth is not None and "truth" in fc.probes:
            true_s = data.truth[rows, end]
            names = ["true_" + n for n in fc.truth_names]
            out[f"truth_r2.k{k}"] = r2_score(np.stack([dec[n][0] for n in names], 1), true_s)
            out[f"truth_r2.k{k}.persistence"] = r2_score(np.stack([pers[n][0] for n in names], 1), true_s)
            out[f"truth_r2.k{k}.exact_start"] = r2_score(data.truth[rows, slots[:, 0]], true_s)
        if jepa:
            target = net.target(data.windows[r, end]).flatten(1).numpy()
            denom = ((target - target.mean(0)) ** 2).sum(1).mean()
            out[f"latent_nmse.k{k}"] = float(((latent.mean(0) - target) ** 2).sum(1).mean() / denom)
            out[f"latent_nmse.k{k}.persistence"] = float(
                ((tokens.flatten(1).numpy() - target) ** 2).sum(1).mean() / denom)
            out[f"latent_spread.k{k}"] = float(latent.std(0).mean())
        out[f"starts.k{k}"] = float(len(rows))
    return out


@dataclass
class HeldoutReport:
    """Held-out forecast metrics and the plots drawn from them."""

    metrics: dict[str, float]
    plots: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"metrics": self.metrics, "plots": [p.name for p in self.plots]}


def evaluate_heldout(checkpoint: str | Path, build, plot_dir: str | Path | None = None,
                     ks: Sequence[int] = (1, 2, 4)) -> HeldoutReport:
    """Score a finished run's checkpoint on its held-out drugs; optionally plot R² against k."""
    fc = WorldForecaster.load(checkpoint)
    kmax = int(build.test.mask.sum(1).max().item()) - 1 if build.test.n else 0
    ks = [k for k in ks if k <= kmax] or ([kmax] if kmax > 0 else [])
    metrics = steps_ahead(fc, build.test, ks) if ks else {}
    plots = []
    if plot_dir is not None and ks:
        plots.append(plot_steps_ahead(metrics, ks, Path(plot_dir) / "forecast_r2_vs_steps.png"))
    return HeldoutReport(metrics, plots)


def plot_steps_ahead(metrics: dict[str, float], ks: Sequence[int], path: Path) -> Path:
    """R² of decoded forecasts against steps ahead, model vs persistence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, label in [("truth_r2", "hidden state"), ("obs_r2", "observations")]:
        if f"{key}.k{ks[0]}" not in metrics:
            continue
        ax.plot(ks, [metrics[f"{key}.k{k}"] for k in ks], "o-", label=f"{label}: model")
        ax.plot(ks, [metrics[f"{key}.k{k}.persistence"] for k in ks], "s--", label=f"{label}: persistence")
    ax.set_xlabel("steps ahead")
    ax.set_ylabel("R² (held-out drugs)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def forecast_from_cutoff(fc: WorldForecaster, data: WorldData, cutoff_h: float, target_h: np.ndarray,
                         identity: bool = False) -> np.ndarray:
    """Decoded forecasts ``[N, F]`` at ``target_h [N]`` from each course's last observation at or before ``cutoff_h``.

    The state is encoded from observations up to the cutoff only; ``identity`` lets the model use
    drug identities it was trained with (seen drugs), otherwise every drug is new to it.
    NaN rows: nothing observed by the cutoff. The ensemble mean of :func:`members_from_cutoff`.
    """
    return members_from_cutoff(fc, data, cutoff_h, target_h, identity).mean(0)


@torch.no_grad()
def members_from_cutoff(fc: WorldForecaster, data: WorldData, cutoff_h: float, target_h: np.ndarray,
                        identity: bool = False) -> np.ndarray:
    """:func:`forecast_from_cutoff` per ensemble member: ``[E, N, F]``."""
    mask = data.mask.numpy() & (data.times.numpy() <= cutoff_h + 1e-6)
    slot = np.where(mask, np.arange(mask.shape[1])[None], -1).max(1)
    ok = slot >= 0
    out = np.full((len(fc.net.members), data.n, len(fc.obs_names)), np.nan)
    rows = np.flatnonzero(ok & np.isfinite(target_h))
    if not len(rows):
        return out
    r = torch.from_numpy(rows)
    s = torch.from_numpy(slot[rows])
    jepa = fc.config.objective == "jepa"
    tokens = (fc.net.target if jepa else fc.net.encoder)(data.windows[r, s])
    t0 = data.times[r, s]
    act = data.action.take(r)
    if not identity:
        act.drug = torch.full_like(act.drug, len(fc.drugs))
    preds = np.full((len(fc.net.members), len(rows), len(fc.obs_names)), np.nan)
    # rows share a rollout grid only when they share start and target times: group them
    keys = np.round(np.stack([t0.numpy(), target_h[rows]], 1), 3)
    for key in np.unique(keys, axis=0):
        g = np.flatnonzero((keys == key).all(1))
        gi = torch.from_numpy(g)
        latent = fc.roll(tokens[gi], t0[gi], act.take(gi), np.array([key[1]]))  # [E, g, 1, KD]
        dec = fc.decode_members(latent[:, :, 0])
        preds[:, g] = np.stack([dec[n] for n in fc.obs_names], -1)
    out[:, rows] = preds
    return out


def calibrate(fc: WorldForecaster, preds: np.ndarray, observed: np.ndarray, method: str = "zscale",
              coverage: float = 0.9) -> Calibrator:
    """Fit ``method`` on member forecasts ``preds [E, n, F]`` of held-out validation courses and their
    observations ``[n, F]`` (read-outs in ``fc.obs_names`` order), and use it in ``fc`` from now on."""
    cal = fit_calibrator(method, "regression", preds, observed, coverage)
    fc.with_calibration(cal, fc.obs_names)
    return cal


def save_calibrated(checkpoint: str | Path, cal: Calibrator, names: Sequence[str], out: str | Path,
                    fitted_on: str) -> Path:
    """A copy of a world-model checkpoint with ``cal`` stored (forecasts loaded from it use it)."""
    from molwm import checkpoints

    _, state = checkpoints.read(checkpoint)
    state["calibration"] = {**cal.to_dict(), "readouts": list(names), "fitted_on": fitted_on}
    return save_checkpoint(state, out)


def calibration_on(fc: WorldForecaster, data: WorldData, method: str = "conformal", coverage: float = 0.9) -> dict:
    """A stored calibration (the checkpoint's ``calibration`` entry) fitted on validation courses ``data``:
    each course is forecast from its state at the latest first-observation time to every later observed
    time, as a new compound (no identity), and ``method`` is fitted on those residuals, scaled by the
    ensemble's spread per row or unscaled (one width for every row), whichever gives the narrower
    intervals on the validation rows (both cover ``coverage`` of them by construction).

    Raises:
        ValueError: If the validation courses give fewer than 2 forecasts per read-out.
    """
    mask, times = data.mask.numpy(), data.times.numpy()
    first = np.where(mask.any(1), times[np.arange(data.n), mask.argmax(1)], np.nan)
    cutoff = float(np.nanmax(first))
    preds, ys = [], []
    for s in range(mask.shape[1]):
        target = np.where(mask[:, s] & (times[:, s] > cutoff + 1e-6), times[:, s], np.nan)
        if not np.isfinite(target).any():
            continue
        p = members_from_cutoff(fc, data, cutoff, target)
        ok = np.isfinite(target)
        preds.append(p[:, ok])
        ys.append(data.courses.obs[ok, s])
    if not preds:
        raise ValueError("the validation courses have nothing observed after their start state")
    members, observed = np.concatenate(preds, 1), np.concatenate(ys, 0)
    # scaled by the ensemble's spread, or one width for every row: whichever gives the narrower intervals
    # on the validation rows at the same coverage (an uninformative spread makes the scaled ones far wider)
    scaled = fit_calibrator(method, "regression", members, observed, coverage)
    flat = fit_calibrator(method, "regression", members.mean(0, keepdims=True), observed, coverage)
    std = members.std(0)
    widths = [float(np.nanmean([np.nanmean(c.scale(j, std[:, j], coverage)) for j in range(std.shape[1])]))
              for c in (scaled, flat)]
    cal = scaled if widths[0] <= widths[1] else flat
    n = sum(len(y) for y in ys)
    return {**cal.to_dict(), "readouts": list(fc.obs_names),
            "fitted_on": f"{n} forecasts of {data.n} validation courses (drugs kept out of training); "
                         f"{'scaled by the ensemble spread' if cal is scaled else 'one width for every row'} "
                         f"(mean 90% half-width {min(widths):.3g}, against {max(widths):.3g} for the other)"}
