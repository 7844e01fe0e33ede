"""Latent planning: which compound, at which dose, ends closest to a target state?

Every candidate is forecast from untreated cells to the planning horizon; its
score is the distance between the ensemble-mean end state and the target
embedding (lower is better), plus ``spread_weight`` times the ensemble spread
(prefer forecasts the members agree on). Doses are scored exhaustively from a
list, or searched per compound with the cross-entropy method over log dose.

The target can be an embedding (``.npy``), a reference: ``SMILES@DOSE``
(that compound's forecast end state at that dose, e.g. a known drug's effect), or a
read-out value, ``NAME=VALUE`` (e.g. ``rel_count=0.5``: half as many cells as the
vehicle); the distance is then ``|decoded read-out - VALUE|`` at the horizon.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from molwm.atomic import atomic_path
from molwm.world.forecast import ForecastError, WorldForecaster


@dataclass
class PlanResult:
    """A ranked plan.

    Attributes:
        table: One row per candidate (its best dose): rank, compound, dose_uM, distance,
            spread, score, and the decoded read-outs at the horizon.
        target: ``[K*D]`` target embedding (NaN for a read-out target, ``NAME=VALUE``).
        times: Forecast times (hours) of the trajectories.
        trajectories: Candidate -> ``[H]`` distance to the target along its best-dose forecast.
        readouts: Candidate -> read-out name -> ``[H]`` decoded values along that forecast.
        rejects: Candidates that could not be featurised: ``(position, input, reason)``.
    """

    table: pd.DataFrame
    target: np.ndarray
    times: np.ndarray
    trajectories: dict[str, np.ndarray] = field(default_factory=dict)
    readouts: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    rejects: list[tuple[int, str, str]] = field(default_factory=list)


def resolve_target(fc: WorldForecaster, target: str | np.ndarray, time_h: float, context: str | None = None
                   ) -> np.ndarray:
    """A target embedding ``[K*D]`` from an array, a ``.npy`` file, or ``SMILES@DOSE`` (its forecast end state)."""
    if isinstance(target, np.ndarray):
        vec = np.asarray(target, np.float64).reshape(-1)
    elif str(target).endswith(".npy"):
        path = Path(target)
        if not path.is_file():
            raise ForecastError(f"target file not found: {path}")
        vec = np.load(path).astype(np.float64).reshape(-1)
    elif "@" in str(target):
        smiles, _, dose = str(target).rpartition("@")
        try:
            dose_v = float(dose)
        except ValueError:
            raise ForecastError(f"target {target!r}: expected SMILES@DOSE with the dose in uM") from None
        fcst = fc.forecast([smiles], [dose_v], [time_h], context)
        if fcst.rejects:
            raise ForecastError(f"target {target!r}: {fcst.rejects[0][2]}")
        vec = fcst.mean_latent[0, -1]
    else:
        raise ForecastError(f"target {target!r}: give a .npy embedding or SMILES@DOSE (uM)")
    if vec.shape[0] != fc.dim:
        raise ForecastError(f"target has {vec.shape[0]} dimensions; this model's states have {fc.dim}")
    return vec


def readout_target(fc: WorldForecaster, target) -> tuple[str, float] | None:
    """``(name, value)`` for a read-out target ``NAME=VALUE`` (a read-out this model decodes), else None.

    Raises:
        ForecastError: If ``NAME`` is not one of the model's read-outs or ``VALUE`` is not a number.
    """
    if not isinstance(target, str) or "=" not in target or target.endswith(".npy"):
        return None
    name, _, value = target.partition("=")
    known = list(fc.obs_names) + ["true_" + t for t in fc.truth_names]
    if name.strip() not in known:
        raise ForecastError(f"target {target!r}: {name.strip()!r} is not a read-out of this model ({', '.join(known)})")
    try:
        number = float(value)
    except ValueError:
        raise ForecastError(f"target {target!r}: expected NAME=VALUE with a number") from None
    if not np.isfinite(number):
        raise ForecastError(f"target {target!r}: the value must be finite")
    return name.strip(), number


def _score(fc: WorldForecaster, compounds: list[str], doses: np.ndarray, times: np.ndarray, target,
           context, spread_weight: float):
    """Forecast each (compound, dose) pair (aligned lists): distances ``[n, H]``, spreads ``[n]``, forecast.

    ``target`` is an embedding ``[K*D]`` or a read-out target ``(name, value)``."""
    feats, ident, rejects = fc.compounds(compounds)
    tokens, t0, ctx = fc.start_state(len(compounds), context)
    act = fc.action(feats, ident, np.asarray(doses, np.float64), ctx)
    latent = fc.roll(tokens, t0, act, times)  # [E, n, H, KD]
    if isinstance(target, tuple):
        dist = np.abs(fc.decode(latent)[target[0]][0] - target[1])  # [n, H]: the ensemble mean's read-out
    else:
        dist = np.linalg.norm(latent.mean(0) - target, axis=-1)  # [n, H]
    spread = np.linalg.norm(latent[:, :, -1] - latent[:, :, -1].mean(0), axis=-1).mean(0)  # [n]
    return dist, spread, latent, rejects


def plan(fc: WorldForecaster, target: str | np.ndarray, candidates: Sequence[str], time_h: float,
         doses: Sequence[float] = (1.0, 10.0), context: str | None = None, method: str = "exhaustive",
         dose_range: tuple[float, float] = (0.01, 100.0), spread_weight: float = 0.0, n_points: int = 6,
         cem_iters: int = 5, cem_population: int = 16, cem_elite: int = 4, seed: int = 0) -> PlanResult:
    """Rank candidate compounds (and doses) by how close their forecast at ``time_h`` ends to ``target``.

    Args:
        fc: A loaded world model.
        target: See :func:`resolve_target`, or a read-out value ``NAME=VALUE`` (:func:`readout_target`).
        candidates: SMILES (or names of drugs the model was trained on).
        time_h: Planning horizon (hours after dosing).
        doses: Doses (uM) scored exhaustively (``method="exhaustive"``).
        context: Cell line (default: the model's first).
        method: ``exhaustive`` or ``cem`` (cross-entropy search over log dose in ``dose_range``).
        spread_weight: Penalty per unit of ensemble spread at the horizon.
        n_points: Trajectory points per forecast (evenly spaced to the horizon) for plots.
    """
    candidates = [str(c) for c in candidates]
    if not candidates:
        raise ForecastError("no candidates to plan over")
    wanted = readout_target(fc, target)
    vec = wanted if wanted is not None else resolve_target(fc, target, time_h, context)
    start = fc.start_state(1, context)[1].item()
    times = np.linspace(start, time_h, n_points + 1)[1:]
    n = len(candidates)
    if method == "exhaustive":
        grid = np.asarray(doses, np.float64)
        if not len(grid) or (grid < 0).any():
            raise ForecastError(f"doses must be >= 0 uM, got {list(doses)}")
        comp = [c for c in candidates for _ in grid]
        dist, spread, latent, rejects = _score(fc, comp, np.tile(grid, n), times, vec, context, spread_weight)
        score = (dist[:, -1] + spread_weight * spread).reshape(n, len(grid))
        best = np.nanargmin(np.where(np.isfinite(score), score, np.inf), axis=1)
        pick = np.arange(n) * len(grid) + best
        chosen_dose = grid[best]
    elif method == "cem":
        lo, hi = np.log10(dose_range[0]), np.log10(dose_range[1])
        rng = np.random.default_rng(seed)
        mu, sd = np.full(n, (lo + hi) / 2), np.full(n, (hi - lo) / 2)
        for _ in range(cem_iters):
            ld = np.clip(mu[:, None] + sd[:, None] * rng.standard_normal((n, cem_population)), lo, hi)
            comp = [c for c in candidates for _ in range(cem_population)]
            dist, spread, _, rejects = _score(fc, comp, 10 ** ld.reshape(-1), times[-1:], vec, context,
                                              spread_weight)
            s = (dist[:, -1] + spread_weight * spread).reshape(n, cem_population)
            elite = np.argsort(s, axis=1)[:, :cem_elite]
            e = np.take_along_axis(ld, elite, 1)
            mu, sd = e.mean(1), np.maximum(e.std(1), 0.05)
        chosen_dose = 10 ** mu
        dist, spread, latent, rejects = _score(fc, candidates, chosen_dose, times, vec, context, spread_weight)
        pick = np.arange(n)
    else:
        raise ForecastError(f"unknown planning method {method!r}: expected exhaustive or cem")
    bad = {i for i, _, _ in rejects} if method == "cem" else {i // len(np.asarray(doses)) for i, _, _ in rejects}
    d_end, sp = dist[pick, -1], spread[pick]
    table = pd.DataFrame({"compound": candidates, "dose_uM": chosen_dose, "distance": d_end, "spread": sp,
                          "score": d_end + spread_weight * sp})
    decoded = fc.decode(latent[:, pick, -1])
    for name, (mean, std) in decoded.items():
        table[name] = mean
    table.loc[list(bad), ["distance", "spread", "score"]] = np.nan
    table = table.sort_values("score", na_position="last", kind="stable").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    trajectories = {c: dist[p] for c, p in zip(candidates, pick)}
    dec_traj = fc.decode(latent[:, pick])
    readouts = {c: {k: v[0][i] for k, v in dec_traj.items()} for i, c in enumerate(candidates)}
    cand_rejects = [(i, candidates[i], "not a valid SMILES nor a drug this model knows") for i in sorted(bad)]
    target_vec = np.full(fc.dim, np.nan) if wanted is not None else vec
    return PlanResult(table, target_vec, times, trajectories, readouts, cand_rejects)


def plot_plan(result: PlanResult, path: str | Path, top: int = 5, readout: str | None = None) -> Path:
    """Distance to the target along each top candidate's forecast (and one decoded read-out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.table.dropna(subset=["score"]).head(top)
    names = list(rows["compound"])
    first = next(iter(result.readouts.values()), {})
    readout = readout or next((k for k in first if not k.startswith("true_")), None)
    ncols = 2 if readout else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 3.8), squeeze=False)
    for name, dose in zip(names, rows["dose_uM"]):
        label = f"{name[:28]} @ {dose:.3g} uM"
        axes[0, 0].plot(result.times, result.trajectories[name], "o-", ms=3, label=label)
        if readout:
            axes[0, 1].plot(result.times, result.readouts[name][readout], "o-", ms=3, label=label)
    axes[0, 0].set(xlabel="hours after dosing", ylabel="distance to target", title="forecast trajectories")
    if readout:
        axes[0, 1].set(xlabel="hours after dosing", ylabel=readout, title="decoded read-out")
    axes[0, 0].legend(fontsize=7)
    for ax in axes[0]:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path
