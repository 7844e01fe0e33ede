"""Forecasting baselines for a time-course feature (log cell count) at a target time.

Every baseline has the signature ``f(train, test, cutoff_h, target_h) -> [N_test]``:
predict feature 0 of each test condition at ``target_h`` from what the test
condition showed up to ``cutoff_h`` (test observations after the cutoff are
never read) plus whatever the training conditions show. ``target_h`` is one
time for all test conditions or one per condition (``[N_test]``), e.g. each
well's last time point from :func:`last_observed`. Predictions are NaN where
a baseline cannot make one (nothing observed by the cutoff, an unseen drug).

* :func:`persistence`: the last value at or before the cutoff.
* :func:`mean_growth` / :func:`control_growth`: plus the mean change from
  cutoff to target of the training wells of the same cell line (all of them,
  or vehicle controls only).
* :func:`hill_rate`: plus a growth rate (slope of log count over the last
  ``window_h`` before the cutoff, the drug-induced proliferation rate idea)
  modelled per (drug, cell line) as a 4-parameter Hill curve of log dose.
"""

from __future__ import annotations

import warnings

import numpy as np

from molwm.world.data import CourseError, TimeCourses, value_at


def _targets(courses: TimeCourses, target_h) -> np.ndarray:
    """``target_h`` (scalar or ``[N]``) as an ``[N]`` float array; a clear error for a wrong length."""
    t = np.asarray(target_h, float)
    if t.ndim and t.shape != (courses.n,):
        raise CourseError(f"target times have shape {t.shape}; expected a scalar or ({courses.n},)")
    return np.broadcast_to(t, (courses.n,)).copy()


def _rows(courses: TimeCourses):
    """Per condition, its observed (times, values) of feature 0, in time order."""
    m = courses.mask
    for i in range(courses.n):
        t, y = courses.times[i, m[i]], courses.obs[i, m[i], 0].astype(float)
        order = np.argsort(t, kind="stable")
        yield t[order], y[order]


def interp_at(courses: TimeCourses, hours) -> np.ndarray:
    """Feature 0 of each condition interpolated linearly in time; NaN outside its observed span.

    Args:
        courses: The conditions.
        hours: One time, or one per condition.

    Shapes:
        hours: scalar or ``[N]``; returns ``[N]``.
    """
    at = _targets(courses, hours)
    out = np.full(courses.n, np.nan)
    for i, (t, y) in enumerate(_rows(courses)):
        if len(t) and t[0] - 1e-6 <= at[i] <= t[-1] + 1e-6:
            out[i] = np.interp(at[i], t, y)
    return out


def interp_grid(courses: TimeCourses, grid: np.ndarray) -> np.ndarray:
    """Feature 0 of every condition interpolated at every time of ``grid``; NaN outside each span.

    Shapes:
        grid: ``[K]``; returns ``[N, K]``.
    """
    grid = np.asarray(grid, float)
    out = np.full((courses.n, len(grid)), np.nan)
    for i, (t, y) in enumerate(_rows(courses)):
        if len(t):
            inside = (grid >= t[0] - 1e-6) & (grid <= t[-1] + 1e-6)
            out[i, inside] = np.interp(grid[inside], t, y)
    return out


def window_rate(courses: TimeCourses, end_h: float, window_h: float = 24.0,
                min_points: int = 3) -> np.ndarray:
    """Least-squares slope of feature 0 over ``[end_h - window_h, end_h]`` per condition (per hour).

    NaN where fewer than ``min_points`` observations fall in the window.

    Shapes:
        Returns ``[N]``.
    """
    out = np.full(courses.n, np.nan)
    for i, (t, y) in enumerate(_rows(courses)):
        pick = (t >= end_h - window_h - 1e-6) & (t <= end_h + 1e-6)
        if pick.sum() >= min_points and np.ptp(t[pick]) > 0:
            out[i] = np.polyfit(t[pick], y[pick], 1)[0]
    return out


def observed_at(courses: TimeCourses, target_h,
                tol_h: float = 3.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The observation nearest to ``target_h`` within ``tol_h`` hours, per condition.

    Returns:
        ``(values [N], ok [N] bool, times [N])``: feature 0 and the time it was
        observed; ``ok`` is False (values and times NaN) where nothing lies within ``tol_h``.
    """
    at = _targets(courses, target_h)
    gap = np.where(courses.mask, np.abs(courses.times - at[:, None]), np.inf)
    slot = gap.argmin(axis=1)
    rows = np.arange(courses.n)
    ok = gap[rows, slot] <= tol_h
    values = np.where(ok, courses.obs[rows, slot, 0], np.nan)
    return values, ok, np.where(ok, courses.times[rows, slot], np.nan)


def last_observed(courses: TimeCourses) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each condition's last observation: ``(values [N], ok [N], times [N])`` as in :func:`observed_at`."""
    t = np.where(courses.mask, courses.times, -np.inf)
    return observed_at(courses, t.max(axis=1), tol_h=0.0)


def persistence(train: TimeCourses, test: TimeCourses, cutoff_h: float, target_h) -> np.ndarray:
    """The last value observed at or before the cutoff (``train`` is unused). Returns ``[N_test]``."""
    slot, ok = value_at(test, cutoff_h)
    return np.where(ok, test.obs[np.arange(test.n), slot, 0], np.nan).astype(float)


def _start(test: TimeCourses, cutoff_h: float) -> np.ndarray:
    """Test values at the cutoff, interpolated; the last one before it where the well stops early."""
    seen = test.until(cutoff_h)
    start = interp_at(seen, cutoff_h)
    return np.where(np.isfinite(start), start, persistence(seen, seen, cutoff_h, cutoff_h))


def mean_growth(train: TimeCourses, test: TimeCourses, cutoff_h: float, target_h,
                extrapolate_window_h: float | None = None, controls_only: bool = False) -> np.ndarray:
    """Test value at the cutoff plus the cell line's mean training change from cutoff to target.

    Each training well's change is ``y(target) - y(cutoff)``, both interpolated
    linearly in time (wells not covering both times are left out). Where no
    training well of that cell line reaches the target (e.g. training data
    truncated at the cutoff) and ``extrapolate_window_h`` is set, the change is
    instead the cell line's mean :func:`window_rate` over the last
    ``extrapolate_window_h`` hours before the cutoff times ``target - cutoff``.

    Args:
        train: Training conditions (full courses).
        test: Test conditions (only their values up to the cutoff are read).
        cutoff_h: Last time the test conditions are seen.
        target_h: Time to predict, scalar or ``[N_test]``.
        extrapolate_window_h: See above; None leaves such predictions NaN.
        controls_only: Average over training vehicle controls only.

    Shapes:
        Returns ``[N_test]``.
    """
    target = _targets(test, target_h)
    start = _start(test, cutoff_h)
    pool = train.subset(np.flatnonzero(train.drug < 0)) if controls_only else train
    base = interp_at(pool, cutoff_h)
    rate = (window_rate(pool.until(cutoff_h), cutoff_h, extrapolate_window_h)
            if extrapolate_window_h else np.full(pool.n, np.nan))
    grid = np.unique(target[np.isfinite(target)])
    delta = interp_grid(pool, grid) - base[:, None]  # [N_pool, K]
    pred = np.full(test.n, np.nan)
    for k, tgt in enumerate(grid):
        for c in np.unique(test.context):
            rows = (target == tgt) & (test.context == c)
            mine = pool.context == c
            if not rows.any() or not mine.any():
                continue
            d = delta[mine, k][np.isfinite(delta[mine, k])]
            if len(d):
                pred[rows] = start[rows] + d.mean()
            elif np.isfinite(rate[mine]).any():
                pred[rows] = start[rows] + np.nanmean(rate[mine]) * (tgt - cutoff_h)
    return pred


def control_growth(train: TimeCourses, test: TimeCourses, cutoff_h: float, target_h,
                   extrapolate_window_h: float | None = None) -> np.ndarray:
    """:func:`mean_growth` over the training vehicle controls only. Returns ``[N_test]``."""
    return mean_growth(train, test, cutoff_h, target_h, extrapolate_window_h, controls_only=True)


def hill(log_dose: np.ndarray, top: float, bottom: float, log_ec50: float, slope: float) -> np.ndarray:
    """4-parameter Hill curve in log10 dose: ``top`` at low dose, ``bottom`` at high dose."""
    return bottom + (top - bottom) / (1.0 + 10.0 ** (slope * (log_dose - log_ec50)))


def fit_hill(dose_uM: np.ndarray, rate: np.ndarray):
    """Fit :func:`hill` to rates at doses; returns a callable ``dose -> rate`` and whether the fit held.

    Falls back to the mean rate (constant) with fewer than 4 distinct doses or a failed fit.
    """
    from scipy.optimize import curve_fit

    keep = np.isfinite(rate) & (dose_uM > 0)
    x, y = np.log10(dose_uM[keep]), rate[keep]
    mean = float(y.mean()) if len(y) else float("nan")
    flat = (lambda d: np.full(np.shape(d), mean)), False
    if len(np.unique(x)) < 4:
        return flat
    span = max(float(np.ptp(y)), 1e-3)
    # top, bottom within the observed rates +- their range; EC50 within 2 decades of the doses
    lo = [y.min() - span, y.min() - span, x.min() - 2, 0.1]
    hi = [y.max() + span, y.max() + span, x.max() + 2, 10.0]
    p0 = [float(y[x <= np.median(x)].mean()), float(y[x > np.median(x)].mean()), float(np.median(x)), 1.0]
    p0 = list(np.clip(p0, lo, hi))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = curve_fit(hill, x, y, p0=p0, bounds=(lo, hi), maxfev=5000)
    except (RuntimeError, ValueError):
        return flat
    if not np.all(np.isfinite(params)):
        return flat
    return (lambda d: hill(np.log10(np.maximum(np.asarray(d, float), 1e-12)), *params)), True


def hill_rate(train: TimeCourses, test: TimeCourses, cutoff_h: float, target_h,
              window_h: float = 24.0) -> np.ndarray:
    """Test value at the cutoff plus a dose-response growth rate times ``target - cutoff``.

    Rates are :func:`window_rate` slopes over ``[cutoff - window_h, cutoff]``. Per
    (drug, cell line), the training wells' rates are fitted by :func:`fit_hill`
    in log dose; test wells of that pair take the fitted rate at their dose.
    Vehicle controls take their cell line's mean control rate. Drugs (or drug,
    cell line pairs) absent from training give NaN.

    Shapes:
        Returns ``[N_test]``.
    """
    target = _targets(test, target_h)
    start = _start(test, cutoff_h)
    rates = window_rate(train.until(cutoff_h), cutoff_h, window_h)
    pred_rate = np.full(test.n, np.nan)
    for d, c in {(int(a), int(b)) for a, b in zip(test.drug, test.context)}:
        rows = (test.drug == d) & (test.context == c)
        mine = (train.drug == d) & (train.context == c) & np.isfinite(rates)
        if not mine.any():
            continue
        if d < 0:
            pred_rate[rows] = rates[mine].mean()
        else:
            curve, _ = fit_hill(train.dose[mine], rates[mine])
            pred_rate[rows] = curve(test.dose[rows])
    return start + pred_rate * (target - cutoff_h)


BASELINES = {"persistence": persistence, "mean_growth": mean_growth, "control_growth": control_growth,
             "hill_rate": hill_rate}


def leave_drugs_out_folds(courses: TimeCourses, n_folds: int,
                          seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Partition the drugs into ``n_folds`` groups; each fold tests on one group's wells.

    Vehicle controls are always in train. Every drug is tested in exactly one fold.

    Returns:
        ``[(train_rows, test_rows)]`` of row indices, one pair per fold.
    """
    drugs = np.unique(courses.drug[courses.drug >= 0])
    if not 2 <= n_folds <= len(drugs):
        raise CourseError(f"n_folds must be between 2 and the number of drugs ({len(drugs)}), got {n_folds}")
    order = np.random.default_rng(seed).permutation(drugs)
    folds = []
    for group in np.array_split(order, n_folds):
        test = np.isin(courses.drug, group)
        folds.append((np.flatnonzero(~test), np.flatnonzero(test)))
    return folds


def rmse(pred: np.ndarray, obs: np.ndarray) -> tuple[float, int]:
    """Root-mean-square error over entries where both are finite: ``(rmse, count)``."""
    pred, obs = np.asarray(pred, float), np.asarray(obs, float)
    ok = np.isfinite(pred) & np.isfinite(obs)
    if not ok.any():
        return float("nan"), 0
    return float(np.sqrt(np.mean((pred[ok] - obs[ok]) ** 2))), int(ok.sum())
