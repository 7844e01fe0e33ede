"""Forecasts from a trained world model: latent trajectories, decoded read-outs, ensemble spread.

A read-out's ``<name>_std`` is the spread of the ensemble's members; where the checkpoint holds a
calibration (fitted on held-out validation courses: :func:`molwm.world.evaluate.calibrate`), it is
the calibrated std and ``<name>_lo`` / ``<name>_hi`` the calibrated interval at its coverage;
otherwise ``_lo`` / ``_hi`` are Gaussian 90% intervals of the raw spread (``uncertainty`` says which).

>>> fc = WorldForecaster.load("runs:/<run>/world_model")          # doctest: +SKIP
>>> out = fc.forecast(["CC(=O)Nc1ccc(O)cc1"], doses=[1.0, 10.0], times=[8, 16, 24, 48])  # doctest: +SKIP
>>> out.frame()                                                   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from molwm import checkpoints
from molwm.checkpoints import CheckpointError
from molwm.config import from_dict
from molwm.errors import MolwmError, RequestError
from molwm.kinds import answers, kind_of, rebuild, refuse_unserved
from molwm.kinds.world import world_network
from molwm.uncertainty.calibration import Calibrator, z_of
from molwm.evaluation.ridge_probes import RidgeProbe
from molwm.world.config import WorldConfig
from molwm.world.model import LatentState
from molwm.world.prepare import Normaliser, build_action, compound_features


class ForecastError(MolwmError, ValueError):
    """A forecast or plan request that cannot be answered (the message says why)."""


@dataclass
class Forecast:
    """Forecast trajectories for ``n`` (compound, dose) actions at ``H`` times.

    Attributes:
        compounds, doses: The ``n`` actions (compound as given).
        times: ``[H]`` hours since dosing.
        latent: ``[E, n, H, K*D]`` per ensemble member.
        readouts: Name -> ``(mean [n, H], std [n, H])`` in data units (std over members).
        rejects: ``(position, input, reason)`` of compounds that could not be featurised.
        intervals: Name -> ``(std, lo, hi)``, each ``[n, H]``: calibrated where the model is.
        uncertainty: What ``intervals`` are.
    """

    compounds: list[str]
    doses: np.ndarray
    times: np.ndarray
    latent: np.ndarray
    readouts: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    rejects: list[tuple[int, str, str]] = field(default_factory=list)
    intervals: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    uncertainty: str = ""

    @property
    def mean_latent(self) -> np.ndarray:
        """``[n, H, K*D]`` ensemble mean."""
        return self.latent.mean(0)

    @property
    def latent_spread(self) -> np.ndarray:
        """``[n, H]`` mean over dimensions of the ensemble std."""
        return self.latent.std(0).mean(-1)

    def frame(self) -> pd.DataFrame:
        """One row per (compound, dose, time): read-out means, stds and intervals (``<name>_lo`` / ``_hi``),
        latent spread."""
        n, h = len(self.compounds), len(self.times)
        data = {"compound": np.repeat(self.compounds, h), "dose_uM": np.repeat(self.doses, h),
                "time_h": np.tile(self.times, n), "latent_spread": self.latent_spread.reshape(-1)}
        for name, (mean, std) in self.readouts.items():
            data[name] = mean.reshape(-1)
            data[name + "_std"] = std.reshape(-1)
            if name in self.intervals:
                cal_std, lo, hi = self.intervals[name]
                data[name + "_std"], data[name + "_lo"], data[name + "_hi"] = (
                    cal_std.reshape(-1), lo.reshape(-1), hi.reshape(-1))
        return pd.DataFrame(data)  # numbers only; what the intervals are is ``uncertainty``


class WorldForecaster:
    """A trained world model, loaded for forecasting and planning.

    Args:
        state: A ``world_model`` checkpoint dict.
        source: Where it came from (for messages).
    """

    def __init__(self, state: dict, source: str = ""):
        self.config = from_dict(WorldConfig, state["config"])
        self.source = source
        self.drugs, self.contexts = list(state["drugs"]), list(state["contexts"])
        self.obs_names, self.truth_names = list(state["obs_names"]), list(state["truth_names"])
        self.drug_features = np.asarray(state["drug_features"], np.float32)
        self.known = np.asarray(state["known_drugs"], bool)
        self.obs_norm = Normaliser.from_dict(state["obs_norm"])
        self.comp_norm = Normaliser.from_dict(state["comp_norm"])
        self.initial = state["initial"]
        self.synthetic = bool(state["synthetic"])
        self.net = world_network(state)
        self.probes = {k: RidgeProbe.from_dict(v) for k, v in state["probes"].items()}
        stored = state.get("calibration")
        self.calibrator = Calibrator.from_dict(stored) if stored else None
        self.calibrated = list(stored["readouts"]) if stored else []

    @classmethod
    def load(cls, uri: str | Path, tracking_uri: str | None = None) -> "WorldForecaster":
        """From a checkpoint path or an MLflow model URI."""
        _, state = checkpoints.read(uri, tracking_uri)
        return cls.from_state(state, str(uri))

    @classmethod
    def from_state(cls, state: dict, source: str = "") -> "WorldForecaster":
        """From a loaded checkpoint dict (which must be a finished world-model run).

        Raises:
            CheckpointError: If it is another kind of model, or an unfinished run.
        """
        uri = source or "checkpoint"
        kind = kind_of(state, uri)
        refuse_unserved(kind, uri)
        if kind.family != "world":
            raise CheckpointError(f"{uri}: not a world model (checkpoint kind {state.get('kind')!r}); "
                                  "train one with `molwm pretrain --config configs/world/lab.yaml`")
        if not state.get("probes") and state.get("step", 0) < state.get("config", {}).get("max_steps", 0):
            raise CheckpointError(f"{uri}: an unfinished run (step {state['step']}); resume it first")
        return rebuild(kind, lambda s: cls(s, str(source)), state, uri)

    @property
    def dim(self) -> int:
        return self.config.model.state_tokens * self.config.model.dim

    # ---------------------------------------------------------------- pieces

    def _context(self, context: str | None) -> tuple[int, dict]:
        name = context if context is not None else self.contexts[0]
        if name not in self.contexts:
            raise ForecastError(f"unknown context {name!r}; this model knows {self.contexts}")
        if name not in self.initial:
            raise ForecastError(f"no initial state for context {name!r} (no control wells in training)")
        return self.contexts.index(name), self.initial[name]

    def compounds(self, compounds: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list]:
        """Features ``[n, C]``, identity ``[n]`` and rejects for compound names (of training drugs) or SMILES."""
        feats = np.zeros((len(compounds), self.drug_features.shape[1]), np.float32)
        ident = np.full(len(compounds), -1, np.int64)
        rejects, new = [], []
        for i, c in enumerate(compounds):
            if c in self.drugs:
                ident[i] = self.drugs.index(c)
                feats[i] = self.drug_features[ident[i]]
            else:
                new.append(i)
        if new:
            raw = compound_features([compounds[i] for i in new], self.config.data.compound)
            bad = ~np.isfinite(raw).any(axis=1)
            if self.config.data.compound == "none":
                bad[:] = False
            for j, i in enumerate(new):
                if bad[j]:
                    rejects.append((i, str(compounds[i]), "not a valid SMILES nor a drug this model knows"))
                feats[i] = self.comp_norm(raw[j : j + 1])[0]
        return feats, ident, rejects

    def action(self, feats: np.ndarray, ident: np.ndarray, doses: np.ndarray, context: int):
        drug = np.where(ident >= 0, ident, 0)
        act = build_action(feats, drug, doses, np.full(len(doses), context), len(self.drugs), len(self.contexts),
                           self.known)
        unknown = torch.from_numpy(ident < 0)
        act.drug = torch.where(unknown, torch.full_like(act.drug, len(self.drugs)), act.drug)
        act.control = torch.from_numpy((np.asarray(doses) <= 0).astype(np.float32))
        return act

    def path_to(self, start: float, t: float) -> np.ndarray:
        """Times a rollout from ``start`` visits to reach ``t``: steps of ``forecast_step_h`` (0: one jump), then ``t``."""
        step = self.config.forecast_step_h
        if t <= start:
            raise ForecastError(f"forecast times must be after the start state at {start:g} h, got {t:g}")
        inner = np.arange(start + step, t - 1e-6, step) if step > 0 else np.empty(0)
        return np.append(inner, t)

    @torch.no_grad()
    def roll(self, tokens: torch.Tensor, start_time: torch.Tensor, action, times) -> np.ndarray:
        """Forecast states ``[n, K, D]`` (all at ``start_time``) to each of ``times [H]``: ``[E, n, H, K*D]``.

        Each time is reached by its own rollout (:meth:`path_to`), so a forecast at ``t``
        does not depend on which other times were asked for.
        """
        start = float(start_time.max())
        out = []
        for t in np.asarray(times, np.float64).reshape(-1):
            visit = self.path_to(start, float(t))
            grid = torch.as_tensor(np.broadcast_to(visit, (len(tokens), len(visit))).copy(), dtype=torch.float32)
            out.append(self.net.rollout(LatentState(tokens, start_time), action, grid)[:, :, -1])  # [E, n, K, D]
        return torch.stack(out, dim=2).flatten(3).numpy()

    def decode(self, latent: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Read-outs of latent states ``[E, ..., K*D]``: name -> (mean, std over members), data units."""
        return {name: (v.mean(0), v.std(0)) for name, v in self.decode_members(latent).items()}

    @property
    def uncertainty(self) -> str:
        """What ``<name>_std`` / ``_lo`` / ``_hi`` of forecasts are."""
        if self.calibrator is None:
            return f"ensemble_std (uncalibrated; {len(self.net.members)} members; Gaussian 90% intervals)"
        flat = bool(self.calibrator.params) and not self.calibrator.params[0].get("use_std", True)
        width = "; one interval width for every row (the ensemble's spread did not narrow them)" if flat else ""
        return f"{self.calibrator.description}{width}; {len(self.net.members)} members"

    def intervals(self, readouts: dict[str, tuple[np.ndarray, np.ndarray]]
                  ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Name -> ``(std, lo, hi)`` from ``(mean, raw std)``: the stored calibration where it covers the
        read-out, else the raw std with Gaussian 90% intervals."""
        out = {}
        for name, (mean, std) in readouts.items():
            if self.calibrator is not None and name in self.calibrated:
                j, cov = self.calibrated.index(name), self.calibrator.coverage
                half = self.calibrator.scale(j, std, cov)
                out[name] = (half / z_of(cov), mean - half, mean + half)
            else:
                out[name] = (std, mean - z_of(0.9) * std, mean + z_of(0.9) * std)
        return out

    def with_calibration(self, calibrator: Calibrator, names: Sequence[str]) -> "WorldForecaster":
        """Use ``calibrator`` (targets in the order of ``names``) for forecasts from now on."""
        self.calibrator, self.calibrated = calibrator, list(names)
        return self

    def decode_members(self, latent: np.ndarray) -> dict[str, np.ndarray]:
        """Read-outs of latent states ``[E, ..., K*D]`` per member: name -> ``[E, ...]``, data units."""
        lead = latent.shape[:-1]
        flat = latent.reshape(-1, latent.shape[-1])
        out = {}
        if self.config.objective == "jepa":
            obs_z = self.probes["obs"].predict(flat) if "obs" in self.probes else None
        else:
            with torch.no_grad():
                obs_z = self.net.raw_head(torch.as_tensor(flat, dtype=torch.float32)).numpy()
        if obs_z is not None:
            obs = self.obs_norm.inverse(obs_z).reshape(*lead, -1)
            for j, name in enumerate(self.obs_names):
                out[name] = obs[..., j]
        if "truth" in self.probes:
            feats = flat if self.config.objective == "jepa" else obs_z
            truth = self.probes["truth"].predict(feats).reshape(*lead, -1)
            for j, name in enumerate(self.truth_names):
                out["true_" + name] = truth[..., j]
        return out

    # ---------------------------------------------------------------- API

    def start_state(self, n: int, context: str | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Untreated cells at the start: ``n`` copies of the context's initial state tokens and time."""
        ctx, init = self._context(context)
        window = torch.as_tensor(init["window"], dtype=torch.float32)[None].expand(n, -1)
        with torch.no_grad():
            tokens = self.net.target(window) if self.config.objective == "jepa" else self.net.encoder(window)
        return tokens, torch.full((n,), float(init["time"])), ctx

    def forecast(self, compounds: Sequence[str], doses: Sequence[float], times: Sequence[float],
                 context: str | None = None) -> Forecast:
        """Forecast every compound at every dose from untreated cells.

        Args:
            compounds: SMILES, or names of drugs the model was trained on (thunor drugs without structure).
            doses: Doses in uM (0 = vehicle control).
            times: Hours since dosing, after the start state's time.
            context: Cell line (default: the model's first context).
        """
        compounds = [str(c) for c in compounds]
        doses = np.asarray(doses, np.float64)
        if not len(compounds) or not len(doses):
            raise ForecastError("nothing to forecast: give at least one compound and one dose")
        if (doses < 0).any() or not np.isfinite(doses).all():
            raise ForecastError(f"doses must be finite and >= 0 uM, got {doses.tolist()}")
        feats, ident, rejects = self.compounds(compounds)
        pairs_c = np.repeat(np.arange(len(compounds)), len(doses))
        pairs_d = np.tile(doses, len(compounds))
        tokens, t0, ctx = self.start_state(len(pairs_c), context)
        act = self.action(feats[pairs_c], ident[pairs_c], pairs_d, ctx)
        times_arr = np.asarray(sorted(float(t) for t in times))
        latent = self.roll(tokens, t0, act, times_arr)
        bad = {i for i, _, _ in rejects}
        latent[:, [i in bad for i in pairs_c]] = np.nan
        readouts = self.decode(latent)
        return Forecast([compounds[i] for i in pairs_c], pairs_d, times_arr, latent, readouts, rejects,
                        self.intervals(readouts), self.uncertainty)

    def answer(self, frame: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """Serving's entry (the one every served family has): one forecast per row of ``frame``
        (``smiles``, ``dose_uM``, ``time_h``, optional ``context``); ``params`` are not used.

        Raises:
            RequestError: A missing column, or a request :meth:`forecast_rows` refuses as a whole.
        """
        missing = [c for c in ("dose_uM", "time_h") if c not in frame.columns]
        if missing:
            raise RequestError(f"a world model needs columns smiles, dose_uM, time_h (missing: {', '.join(missing)})")
        try:
            return self.forecast_rows(frame["smiles"].tolist(), frame["dose_uM"].tolist(), frame["time_h"].tolist(),
                                      frame["context"].tolist() if "context" in frame.columns else None)
        except RequestError:
            raise
        except ValueError as err:
            raise RequestError(str(err)) from None

    def forecast_rows(self, compounds: Sequence[str], doses: Sequence[float], times: Sequence[float],
                      contexts: Sequence[str] | None = None) -> pd.DataFrame:
        """One forecast per row (compound, dose, time[, context]), in input order, with a ``status`` per row.

        Rows with an unusable compound, dose or time are answered with a status naming the problem
        and no values; the others are unaffected.
        """
        n = len(compounds)
        if not (len(doses) == len(times) == n) or (contexts is not None and len(contexts) != n):
            raise ForecastError("compounds, doses, times (and contexts) must have one value per row")
        frame = pd.DataFrame({"smiles": [str(c) for c in compounds], "dose_uM": pd.to_numeric(
            pd.Series(doses, dtype=object), errors="coerce"), "time_h": pd.to_numeric(
            pd.Series(times, dtype=object), errors="coerce")})
        ctx = [None] * n if contexts is None else [None if c is None or c != c else str(c) for c in contexts]
        status = ["ok"] * n
        for i in range(n):
            d, t = frame.at[i, "dose_uM"], frame.at[i, "time_h"]
            if not np.isfinite(d) or d < 0:
                status[i] = "bad_dose: dose_uM must be a number >= 0"
            elif ctx[i] is not None and ctx[i] not in self.contexts:
                status[i] = f"unknown_context: {ctx[i]!r} (known: {', '.join(self.contexts)})"
            elif not np.isfinite(t) or t <= float(self.initial[ctx[i] or self.contexts[0]]["time"]):
                status[i] = "bad_time: time_h must be after the start state"
        values: dict[str, np.ndarray] = {}
        spread = np.full(n, np.nan)
        groups: dict[tuple, list[int]] = {}
        for i in range(n):
            if status[i] == "ok":
                groups.setdefault((ctx[i], float(frame.at[i, "time_h"])), []).append(i)
        for (c, t), rows in groups.items():
            out = self.forecast_pairs([frame.at[i, "smiles"] for i in rows], frame.loc[rows, "dose_uM"].to_numpy(),
                                      t, c)
            intervals = self.intervals(out.readouts)
            for j, i in enumerate(rows):
                if j in out.rejected:
                    status[i] = "invalid_smiles: not a valid SMILES nor a drug this model knows"
                    continue
                spread[i] = out.latent_spread[j, -1]
                for name, (mean, _) in out.readouts.items():
                    values.setdefault(name, np.full(n, np.nan))[i] = mean[j, -1]
                    for suffix, col in zip(("_std", "_lo", "_hi"), intervals[name]):
                        values.setdefault(name + suffix, np.full(n, np.nan))[i] = col[j, -1]
        added = pd.DataFrame({**values, "latent_spread": spread, "uncertainty": self.uncertainty, "status": status},
                             index=frame.index)  # one frame, not ~20 inserts (pandas warns of fragmentation)
        return pd.concat([frame.drop(columns=[c for c in added.columns if c in frame.columns]), added], axis=1)

    def forecast_pairs(self, compounds: Sequence[str], doses: np.ndarray, time_h: float,
                       context: str | None = None) -> "PairForecast":
        """Forecast aligned (compound, dose) pairs to one time: read-outs ``[n, 1]`` and rejected positions."""
        feats, ident, rejects = self.compounds(list(compounds))
        tokens, t0, ctx = self.start_state(len(compounds), context)
        latent = self.roll(tokens, t0, self.action(feats, ident, np.asarray(doses, np.float64), ctx), [time_h])
        return PairForecast(latent, self.decode(latent), {i for i, _, _ in rejects})


@dataclass
class PairForecast:
    """Forecasts of aligned pairs: ``latent [E, n, 1, K*D]``, read-outs, rejected positions."""

    latent: np.ndarray
    readouts: dict[str, tuple[np.ndarray, np.ndarray]]
    rejected: set[int]

    @property
    def latent_spread(self) -> np.ndarray:
        return self.latent.std(0).mean(-1)


@answers("world")
def _load_world_model(state: dict, source: str, path: str) -> WorldForecaster:
    """The world family's loader (:func:`molwm.api.load_model`)."""
    return WorldForecaster.from_state(state, source)
