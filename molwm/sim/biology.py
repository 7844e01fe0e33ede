"""Assay panels (Hill dose-response) and cell-state dynamics from mechanisms.

All parameters are drawn once from the lab seed; every function here is a pure
map from mechanisms (and doses, times) to readouts plus seeded noise. The
equations and constants are documented in docs/synthetic_lab.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from molwm.sim.mechanism import rng_for

STREAM_ASSAY_PARAMS, STREAM_ASSAY_NOISE, STREAM_CELL_PARAMS, STREAM_WELL_NOISE = 2, 3, 4, 5

ASSAY_DOSES_UM = tuple(float(d) for d in np.round(np.logspace(-3, np.log10(30.0), 8), 6))
"""Eight log-spaced doses from 1 nM to 30 uM, in uM."""

STATE_NAMES = ("log_count", "log_cell_area", "log_nucleus_area", "log_er_rna", "log_agp_mito", "log_texture")
"""Cell-state components. ``log_count`` is the natural log of cells per 96x96 field; the
others are natural-log fold changes against the DMSO control (0 = control)."""


def hill(dose_um: np.ndarray, ac50_um: np.ndarray, n: np.ndarray | float) -> np.ndarray:
    """Fraction of the maximal effect at ``dose_um``: ``d^n / (d^n + AC50^n)``."""
    dose_um = np.asarray(dose_um, np.float64)
    return 1.0 / (1.0 + (np.asarray(ac50_um) / np.maximum(dose_um, 1e-12)) ** n)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class AssayPanel:
    """Parameters of the simulated assay panel.

    Args:
        n_assays: Number of assays (named ``SIM_A00``...).
        k: Mechanism dimension.
        seed: Lab seed.
        missing_rate: MCAR probability that a (compound, assay) pair is not reported.
        inactive_missing: Extra probability that an inactive pair is not reported
            (not-tested-if-inactive; applied after MCAR).
        potency_noise: SD of the reported pAC50 around the true one (log units).
        response_noise: SD of raw dose-response points (% of control).

    Attributes:
        base: ``[A]``; weights: ``[A, k]``; hill_n: ``[A]``;
        eff_weights: ``[A, k]``; eff_bias: ``[A]``.
    """

    n_assays: int = 12
    k: int = 8
    seed: int = 0
    missing_rate: float = 0.4
    inactive_missing: float = 0.5
    potency_noise: float = 0.3
    response_noise: float = 5.0
    active_efficacy: float = 0.3
    p_range: tuple[float, float] = (3.0, 10.0)
    base: np.ndarray = field(init=False, repr=False)
    weights: np.ndarray = field(init=False, repr=False)
    hill_n: np.ndarray = field(init=False, repr=False)
    eff_weights: np.ndarray = field(init=False, repr=False)
    eff_bias: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        if self.n_assays < 0:
            raise ValueError(f"n_assays must be >= 0, got {self.n_assays}")
        for name in ("missing_rate", "inactive_missing"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        rng = rng_for(self.seed, STREAM_ASSAY_PARAMS)
        a, k = self.n_assays, self.k
        self.base = rng.uniform(5.5, 7.0, a)
        self.weights = rng.normal(0.0, 1.6 / np.sqrt(k), (a, k))
        self.hill_n = rng.uniform(0.8, 2.0, a)
        self.eff_weights = rng.normal(0.0, 3.0 / np.sqrt(k), (a, k))
        self.eff_bias = rng.normal(0.0, 0.5, a)

    @property
    def names(self) -> list[str]:
        return [f"SIM_A{j:02d}" for j in range(self.n_assays)]

    def truth(self, mech: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """True potency and efficacy.

        Shapes:
            mech: ``[N, k]``; returns pAC50 ``[N, A]`` and efficacy in [0, 1] ``[N, A]``.
        """
        p = np.clip(self.base + mech @ self.weights.T, *self.p_range)
        eff = _sigmoid(mech @ self.eff_weights.T + self.eff_bias)
        return p, eff

    def active(self, p: np.ndarray, eff: np.ndarray) -> np.ndarray:
        """A pair is active when it reaches ``active_efficacy`` inside the tested range (AC50 <= 30 uM)."""
        return (eff >= self.active_efficacy) & (p >= 6.0 - np.log10(max(ASSAY_DOSES_UM)))

    def params(self) -> dict:
        return {
            "names": self.names, "base": self.base, "weights": self.weights, "hill_n": self.hill_n,
            "eff_weights": self.eff_weights, "eff_bias": self.eff_bias, "missing_rate": self.missing_rate,
            "inactive_missing": self.inactive_missing, "potency_noise": self.potency_noise,
            "response_noise": self.response_noise, "active_efficacy": self.active_efficacy,
            "p_range": list(self.p_range), "doses_uM": list(ASSAY_DOSES_UM),
        }


@dataclass
class AssayData:
    """Simulated assay readouts.

    Attributes:
        p_true, efficacy, active, measured, p_reported: ``[N, A]`` (``p_reported`` NaN where not measured).
        responses: Raw % responses at :data:`ASSAY_DOSES_UM`. Shapes: ``[N, A, 8]``.
    """

    p_true: np.ndarray
    efficacy: np.ndarray
    active: np.ndarray
    measured: np.ndarray
    p_reported: np.ndarray
    responses: np.ndarray


def simulate_assays(panel: AssayPanel, mech: np.ndarray) -> AssayData:
    """Run the panel on mechanisms (noise from the lab seed).

    Shapes:
        mech: ``[N, k]``.
    """
    rng = rng_for(panel.seed, STREAM_ASSAY_NOISE)
    n, a = mech.shape[0], panel.n_assays
    p, eff = panel.truth(mech)
    active = panel.active(p, eff)
    doses = np.asarray(ASSAY_DOSES_UM)
    ac50 = 10.0 ** (6.0 - p)  # uM
    frac = hill(doses[None, None, :], ac50[..., None], panel.hill_n[None, :, None])  # [N, A, 8]
    responses = 100.0 * eff[..., None] * frac + rng.normal(0.0, panel.response_noise, (n, a, len(doses)))
    reported = p + rng.normal(0.0, panel.potency_noise, (n, a))
    u_mcar, u_inact = rng.random((n, a)), rng.random((n, a))
    missing = (u_mcar < panel.missing_rate) | (~active & (u_inact < panel.inactive_missing))
    return AssayData(p, eff, active, ~missing, np.where(missing, np.nan, reported), responses)


@dataclass
class CellModel:
    """Parameters of the cell-state model.

    Attributes:
        effect: Steady-state effect per unit mechanism, rows = :data:`STATE_NAMES`. Shapes: ``[6, k]``.
        ec50_w: Weights of the cellular pEC50. Shapes: ``[k]``.
        tau_w: Weights of log response time. Shapes: ``[k]``.
        growth_w: Weights of the growth-inhibition strength. Shapes: ``[k]``.
    """

    k: int = 8
    seed: int = 0
    log_n0: float = float(np.log(10.0))
    growth_rate: float = float(np.log(2.0) / 24.0)
    ec50_base: float = 5.0
    hill_n: float = 1.5
    tau_base_h: float = 12.0
    tau_range_h: tuple[float, float] = (2.0, 72.0)
    growth_bias: float = -0.5
    well_noise: tuple[float, ...] = (0.10, 0.04, 0.04, 0.05, 0.05, 0.05)
    effect: np.ndarray = field(init=False, repr=False)
    ec50_w: np.ndarray = field(init=False, repr=False)
    tau_w: np.ndarray = field(init=False, repr=False)
    growth_w: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        rng = rng_for(self.seed, STREAM_CELL_PARAMS)
        k = self.k
        scale = np.array([0.0, 0.4, 0.3, 0.6, 0.6, 1.0])[:, None]  # row 0 (count) goes through growth
        self.effect = rng.normal(0.0, 1.0, (6, k)) * scale / np.sqrt(k) * 2.0
        self.ec50_w = rng.normal(0.0, 1.5 / np.sqrt(k), k)
        self.tau_w = rng.normal(0.0, 1.0 / np.sqrt(k), k)
        self.growth_w = rng.normal(0.0, 3.0 / np.sqrt(k), k)

    def control(self, times_h: np.ndarray) -> np.ndarray:
        """DMSO state at each time. Shapes: ``[T]`` -> ``[T, 6]``."""
        t = np.asarray(times_h, np.float64)
        s = np.zeros((len(t), 6))
        s[:, 0] = self.log_n0 + self.growth_rate * t
        return s

    def kinetics(self, mech: np.ndarray) -> dict[str, np.ndarray]:
        """Per-molecule pEC50, tau (h) and growth-inhibition strength delta in [-2, 0].

        Shapes:
            mech: ``[N, k]``; each returned array ``[N]``.
        """
        return {
            "pec50": self.ec50_base + mech @ self.ec50_w,
            "tau_h": np.clip(self.tau_base_h * np.exp(mech @ self.tau_w), *self.tau_range_h),
            "delta": -2.0 * _sigmoid(mech @ self.growth_w + self.growth_bias),
        }

    def state(self, mech: np.ndarray, dose_um: np.ndarray, time_h: np.ndarray) -> np.ndarray:
        """Noise-free state of treated wells.

        Args:
            mech: Mechanism of each well's compound.
            dose_um: Dose of each well (uM).
            time_h: Time of each well (h).

        Shapes:
            mech: ``[W, k]``; dose_um, time_h: ``[W]``; returns ``[W, 6]``.
        """
        kin = self.kinetics(mech)
        t = np.asarray(time_h, np.float64)
        h = hill(dose_um, 10.0 ** (6.0 - kin["pec50"]), self.hill_n)  # [W]
        tau = kin["tau_h"]
        ramp = 1.0 - np.exp(-t / tau)
        s = self.control(t)
        s[:, 1:] += (mech @ self.effect[1:].T) * (h * ramp)[:, None]
        # growth rate r0 * (1 + delta * h * ramp(t)), integrated in closed form
        integral = t - tau * (1.0 - np.exp(-t / tau))
        s[:, 0] += self.growth_rate * kin["delta"] * h * integral
        return s

    def add_well_noise(self, s: np.ndarray, seed_stream: Sequence[int]) -> np.ndarray:
        """Biological well-to-well variability (Gaussian, SD ``well_noise`` per component)."""
        rng = rng_for(self.seed, STREAM_WELL_NOISE, *seed_stream)
        return s + rng.normal(0.0, 1.0, s.shape) * np.asarray(self.well_noise)

    def params(self) -> dict:
        return {
            "state_names": list(STATE_NAMES), "log_n0": self.log_n0, "growth_rate_per_h": self.growth_rate,
            "ec50_base": self.ec50_base, "hill_n": self.hill_n, "tau_base_h": self.tau_base_h,
            "tau_range_h": list(self.tau_range_h), "growth_bias": self.growth_bias,
            "well_noise": list(self.well_noise), "effect": self.effect, "ec50_w": self.ec50_w,
            "tau_w": self.tau_w, "growth_w": self.growth_w,
        }
