"""Calibrating a deep ensemble's uncertainty on validation rows, and applying it at prediction time.

Regression (per target, from the ensemble mean ``m`` and std ``s`` across members):

* ``zscale``: one factor ``a`` with ``a**2 = mean((y - m)**2 / s**2)`` (the maximum-likelihood scale of
  a Gaussian with std ``a * s``; Chemprop v2's z-scaling) over the rows where ``s`` is more than
  1e-6 of its median (members that agree to rounding say nothing about the scale); intervals
  ``m ± z_{(1+c)/2} * a * s``.
* ``conformal``: split conformal with the scaled score ``|y - m| / s`` (Lei et al. 2018, locally
  weighted); the interval at coverage ``c`` is ``m ± q_c * s`` where ``q_c`` is the
  ``ceil((n + 1) c)``-th smallest of the ``n`` validation scores (infinite when that exceeds ``n``).
  The stored scores give any level; ``<name>_std`` is the Gaussian-equivalent ``q_c * s / z_{(1+c)/2}``.
* ``conformal_fixed``: split conformal on ``|y - m|`` alone: one width for every molecule, the
  members' spread not used (what ``auto`` picks: see :func:`resolve_method`).
* ``none``: the raw ensemble std, Gaussian intervals ``m ± z * s``.

An ensemble of one member has ``s = 0`` everywhere; the calibrators then use ``s = 1`` (a constant,
homoscedastic std fitted on validation) and say so.

Classification (probability of the positive class): ``platt`` (logistic regression on the logit of the
ensemble mean) and ``isotonic`` (monotone step function); the value is the calibrated mean
probability, ``<name>_std`` the std across members of their calibrated probabilities, ``_lo``/``_hi``
the calibrated mean ± z std clipped to [0, 1] (the members' spread, not an interval on the label).

Shapes: member predictions ``[M, N, T]``; labels ``[N, T]`` with NaN where missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.special import expit, logit
from scipy.stats import norm

from molwm.config import ConfigError

REGRESSION_METHODS = ("conformal_fixed", "conformal", "zscale")  # the first is what ``auto`` picks
CLASSIFICATION_METHODS = ("platt", "isotonic")
_EPS = 1e-12


@dataclass
class CalibrationConfig:
    """How a fine-tuned ensemble's uncertainty is calibrated (fitted on validation rows only).

    Attributes:
        method: ``auto`` (``conformal_fixed`` for regression, ``platt`` for classification), ``none``
            (the raw ensemble std), ``zscale``, ``conformal``, ``conformal_fixed`` (regression),
            ``platt``, ``isotonic`` (classification).
        coverage: Coverage of the ``<name>_lo`` / ``<name>_hi`` intervals returned by predictions.
        domain_factor: The applicability domain ends at the embedding distance beyond which the
            validation error is this many times the error within it.
    """

    method: Literal["auto", "none", "zscale", "conformal", "conformal_fixed", "platt", "isotonic"] = "auto"
    coverage: float = 0.9
    domain_factor: float = 1.3

    def validate(self) -> None:
        if not 0.0 < self.coverage < 1.0:
            raise ConfigError(f"calibration.coverage must be in (0, 1), got {self.coverage}")
        if self.domain_factor <= 1.0:
            raise ConfigError(f"calibration.domain_factor must be above 1, got {self.domain_factor}")


def resolve_method(config: CalibrationConfig, task: str, shared: bool, n_members: int) -> str:
    """The calibrator a run fits: ``auto`` resolved, and a method that does not fit the task refused.

    ``auto`` is ``conformal_fixed`` for regression and ``platt`` for classification. Measured on
    default fine-tunes from ``molwm:base`` (3 seeds on one shared scaffold split, 3 splits each of
    solubility and FreeSolv, ``benchmarks/calibration_choice.py``, docs/benchmarks.md): 90% coverage
    pooled over the 582 test rows 0.893 with one width, 0.830 scaled by the members' spread
    (``conformal``), 0.873 with ``zscale``; mean miscalibration area 0.065, 0.123, 0.168. The spread of
    seeds that start from the same pretrained encoder says little about which molecules are hard,
    and the intervals it scales are worse than one width. Calibrated whether or not the members
    share their validation rows (when they do not, :mod:`molwm.uncertainty.fit` fits it on the first
    member's own rows: a fine-tune is never left uncalibrated unless ``method: none`` asks for it).

    Args:
        shared: True when no member trained on another member's validation rows.

    Raises:
        ConfigError: For a regression method on classification (or the reverse).
    """
    allowed = CLASSIFICATION_METHODS if task == "classification" else REGRESSION_METHODS
    method = config.method
    if method == "auto":
        return allowed[0]
    if method != "none" and method not in allowed:
        raise ConfigError(f"calibration.method {method!r} is not for {task} (choose none, {', '.join(allowed)})")
    return method


def z_of(coverage: float) -> float:
    """The standard normal quantile of a central interval with this coverage (1.645 for 0.9)."""
    return float(norm.ppf(0.5 + coverage / 2.0))


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The ``ceil((n + 1) * coverage)``-th smallest score (split conformal); ``inf`` when that is past ``n``."""
    scores = np.sort(np.asarray(scores, np.float64))
    k = math.ceil((len(scores) + 1) * coverage - 1e-9)
    return float(scores[k - 1]) if 1 <= k <= len(scores) else float("inf")


@dataclass
class Calibrator:
    """A fitted calibration of one ensemble, per target; stored in the checkpoint as plain data.

    Attributes:
        method: ``none``, ``zscale``, ``conformal``, ``platt`` or ``isotonic``.
        task: ``regression`` or ``classification``.
        coverage: Coverage of the returned intervals.
        params: Per target: what the method fitted (``scale``; ``scores``; ``a``, ``b``; ``x``, ``y``)
            and ``use_std`` (regression: False when the ensemble has one member).
        n_fit: Per target: validation rows it was fitted on.
    """

    method: str
    task: str
    coverage: float = 0.9
    params: list[dict] = field(default_factory=list)
    n_fit: list[int] = field(default_factory=list)

    @property
    def description(self) -> str:
        """What the ``uncertainty`` column says."""
        if self.method == "none":
            return "ensemble_std (uncalibrated)"
        n = "+".join(str(k) for k in self.n_fit)  # no commas: the column is cut out of CSV files
        return f"{self.method} ({n} validation rows; {self.coverage:.0%} intervals)"

    def _std(self, j: int, std: np.ndarray) -> np.ndarray:
        if self.params[j].get("use_std", True):
            return np.maximum(std, _EPS)
        return np.where(np.isnan(std), np.nan, 1.0)  # one width; a rejected row (NaN) stays NaN

    def scale(self, j: int, std: np.ndarray, coverage: float) -> np.ndarray:
        """Regression: half-width of the central interval at ``coverage`` for target ``j``, per row."""
        z = z_of(coverage)
        if self.method == "none":
            return z * std
        s = self._std(j, std)
        if self.method == "zscale":
            return z * self.params[j]["scale"] * s
        return conformal_quantile(np.asarray(self.params[j]["scores"]), coverage) * s

    def interval(self, j: int, mean: np.ndarray, std: np.ndarray, coverage: float) -> tuple[np.ndarray, np.ndarray]:
        """Regression: ``(lo, hi)`` at ``coverage`` for target ``j`` from the raw ensemble mean and std."""
        half = self.scale(j, std, coverage)
        return mean - half, mean + half

    def probability(self, j: int, p: np.ndarray) -> np.ndarray:
        """Classification: the calibrated probability of target ``j``."""
        par = self.params[j] if self.params else {}
        if self.method == "platt":
            return expit(par["a"] * logit(np.clip(p, 1e-6, 1 - 1e-6)) + par["b"])
        if self.method == "isotonic":
            return np.interp(p, par["x"], par["y"])
        return p

    def apply(self, preds: np.ndarray) -> dict[str, np.ndarray]:
        """Values, calibrated std and interval bounds from member predictions ``[M, N, T]``.

        Returns:
            ``value``, ``std``, ``lo``, ``hi``: each ``[N, T]`` (NaN where the prediction is).
        """
        out = {k: np.full(preds.shape[1:], np.nan) for k in ("value", "std", "lo", "hi")}
        z = z_of(self.coverage)
        for j in range(preds.shape[2]):
            p = preds[:, :, j]
            if self.task == "classification":
                cal = self.probability(j, p)  # [M, N]
                value = self.probability(j, p.mean(0))
                std = cal.std(0)
                out["value"][:, j], out["std"][:, j] = value, std
                out["lo"][:, j], out["hi"][:, j] = np.clip(value - z * std, 0, 1), np.clip(value + z * std, 0, 1)
                continue
            mean, raw = p.mean(0), p.std(0)
            half = self.scale(j, raw, self.coverage)
            out["value"][:, j] = mean
            out["std"][:, j] = half / z
            out["lo"][:, j], out["hi"][:, j] = mean - half, mean + half
        return out

    def to_dict(self) -> dict:
        return {"method": self.method, "task": self.task, "coverage": self.coverage, "params": self.params,
                "n_fit": self.n_fit}

    @classmethod
    def from_dict(cls, data: dict | None, task: str | None = None, n_targets: int = 0) -> "Calibrator":
        """A stored calibrator, or the uncalibrated one for checkpoints written before calibration."""
        if not data:
            return cls("none", task or "regression", 0.9, [{} for _ in range(n_targets)], [0] * n_targets)
        return cls(data["method"], data["task"], float(data["coverage"]), list(data["params"]),
                   [int(n) for n in data["n_fit"]])


def fit_calibrator(method: str, task: str, preds: np.ndarray, y: np.ndarray, coverage: float = 0.9) -> Calibrator:
    """Fit ``method`` on validation member predictions ``preds [M, N, T]`` and labels ``y [N, T]``.

    Raises:
        ValueError: If a target has fewer than 2 observed validation labels (or one class only, for
            Platt/isotonic) while a calibrator was asked for.
    """
    params, n_fit = [], []
    single = preds.shape[0] < 2
    for j in range(y.shape[1]):
        ok = np.isfinite(y[:, j]) & np.isfinite(preds[:, :, j]).all(0)
        p, t = preds[:, ok, j], y[ok, j]
        n_fit.append(int(ok.sum()))
        if method == "none":
            params.append({})
            continue
        if ok.sum() < 2:
            raise ValueError(f"target {j}: {ok.sum()} observed validation labels, too few to calibrate on")
        if task == "classification":
            params.append(_fit_probability(method, p.mean(0), t))
            continue
        mean, std = p.mean(0), p.std(0)
        use_std = not single and bool((std > 0).any())
        s = np.maximum(std, _EPS) if use_std else np.ones_like(std)
        if method == "zscale":  # rows where the members agree exactly say nothing about the scale
            fit = std > 1e-6 * np.median(std) if use_std else np.ones_like(std, bool)
            params.append({"scale": float(np.sqrt(np.mean((t[fit] - mean[fit]) ** 2 / s[fit] ** 2))),
                           "use_std": use_std})
        elif method in ("conformal", "conformal_fixed"):
            fixed = method == "conformal_fixed" or not use_std
            params.append({"scores": np.sort(np.abs(t - mean) / (1.0 if fixed else s)).tolist(), "use_std": not fixed})
        else:
            raise ValueError(f"unknown regression calibration {method!r}")
    return Calibrator(method, task, coverage, params, n_fit)


def _fit_probability(method: str, p: np.ndarray, t: np.ndarray) -> dict:
    if len(np.unique(t)) < 2:
        raise ValueError("one class only among the validation labels: cannot calibrate probabilities")
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        x = logit(np.clip(p, 1e-6, 1 - 1e-6))[:, None]
        lr = LogisticRegression(C=1e6, max_iter=1000).fit(x, t.astype(int))
        return {"a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, t)
        return {"x": iso.X_thresholds_.astype(float).tolist(), "y": iso.y_thresholds_.astype(float).tolist()}
    raise ValueError(f"unknown classification calibration {method!r}")
