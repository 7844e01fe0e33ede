"""Linear probes on frozen embeddings: ridge regression per target, with missing labels.

Each target gets its own ridge fit on the rows where it is observed (features
standardised on those rows), so a sparse assay panel needs no imputation.
The penalty is chosen per target by exact leave-one-out error over a grid
(one SVD per target gives every grid point's LOO residuals in closed form,
as in scikit-learn's ``RidgeCV``), so a target with few rows is shrunk
harder than one with thousands. Used to read assay values out of the joint
embedding space and to score frozen representations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALPHAS = tuple(10.0 ** k for k in range(-4, 3))  # penalty per training row


@dataclass
class RidgeProbe:
    """Per-target ridge regressions on shared features.

    Attributes:
        weights: ``[F, T]`` coefficients on standardised features.
        bias: ``[T]`` intercepts.
        mean: ``[T, F]`` feature means of each target's training rows.
        std: ``[T, F]`` their stds.
        n_train: ``[T]`` observed training rows per target (0: never fitted, predicts NaN).
        alpha: ``[T]`` chosen penalty per target (times the number of rows).
        resid_std: ``[T]`` leave-one-out residual standard deviation on the
            training rows (a homoscedastic spread; NaN where never fitted).
        y_range: ``[T, 2]`` lowest and highest training value; predictions are
            clipped to it, so a molecule far from the training set (a linear
            read-out extrapolates without bound) never gets a value no
            training compound had, such as a pKi of 12.
    """

    weights: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n_train: np.ndarray
    alpha: np.ndarray
    resid_std: np.ndarray
    y_range: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, alphas=ALPHAS, min_rows: int = 5) -> "RidgeProbe":
        """Fit one ridge per column of ``y`` on its observed (finite) rows, penalty by LOO error.

        Shapes:
            x: ``[N, F]`` shared features, or ``[N, T, F]`` features per target
            (e.g. the predicted embedding of that assay); y: ``[N, T]`` with NaN
            where unobserved.
        """
        x = np.asarray(x)
        y = np.asarray(y, np.float64).reshape(len(x), -1)
        xs, ys = [], []
        for j in range(y.shape[1]):
            obs = np.isfinite(y[:, j])
            xs.append((x if x.ndim == 2 else x[:, j])[obs])
            ys.append(y[obs, j])
        return cls.fit_columns(xs, ys, alphas, min_rows)

    @classmethod
    def fit_columns(cls, xs: list[np.ndarray], ys: list[np.ndarray], alphas=ALPHAS,
                    min_rows: int = 5) -> "RidgeProbe":
        """Fit target ``j`` on ``xs[j] [n_j, F]`` -> ``ys[j] [n_j]`` (only its observed rows)."""
        f, t = xs[0].shape[-1], len(ys)
        weights, bias = np.zeros((f, t)), np.full(t, np.nan)
        mean, std = np.zeros((t, f)), np.ones((t, f))
        n_train, alpha, resid = np.zeros(t, np.int64), np.full(t, np.nan), np.full(t, np.nan)
        y_range = np.full((t, 2), np.nan)
        for j, (xj, yo) in enumerate(zip(xs, ys)):
            if len(yo) < min_rows:
                continue
            xj, yo = np.asarray(xj, np.float64), np.asarray(yo, np.float64)
            mean[j], std[j] = xj.mean(0), xj.std(0) + 1e-6
            xo = (xj - mean[j]) / std[j]  # standardised and centred
            ym = yo.mean()
            u, s, vt = np.linalg.svd(xo, full_matrices=False)  # [n, r], [r], [r, F]
            uty = u.T @ (yo - ym)
            best = None
            for a in alphas:
                lam = a * len(yo)
                shrink = s**2 / (s**2 + lam)  # [r]
                fitted = u @ (shrink * uty)
                hat = (u**2) @ shrink + 1.0 / len(yo)  # leverage, intercept included
                loo = (yo - ym - fitted) / np.clip(1.0 - hat, 1e-6, None)
                err = float(np.mean(loo**2))
                if best is None or err < best[0]:
                    best = (err, a, vt.T @ (s / (s**2 + lam) * uty))
            err, alpha[j], weights[:, j] = best
            bias[j], n_train[j], resid[j] = ym, len(yo), np.sqrt(err)
            y_range[j] = yo.min(), yo.max()
        return cls(weights, bias, mean, std, n_train, alpha, resid, y_range)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``[N, T]`` predictions from ``[N, F]`` or ``[N, T, F]`` features (NaN for unfitted targets)."""
        x = np.asarray(x, np.float64)
        x = x[:, None, :] if x.ndim == 2 else x  # [N, 1 or T, F]
        xs = (x - self.mean) / self.std  # [N, T, F]
        out = np.einsum("ntf,ft->nt", xs, self.weights) + self.bias
        out = np.clip(out, self.y_range[:, 0], self.y_range[:, 1])
        out[:, self.n_train == 0] = np.nan
        return out

    def to_dict(self) -> dict:
        """Plain lists, for checkpoints loaded with ``weights_only=True``."""
        return {k: np.asarray(v).tolist() for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "RidgeProbe":
        """Inverse of :meth:`to_dict`."""
        return cls(*(np.asarray(d[k], np.int64 if k == "n_train" else np.float64)
                     for k in ("weights", "bias", "mean", "std", "n_train", "alpha", "resid_std", "y_range")))
