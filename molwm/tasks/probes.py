"""Linear probes on frozen embeddings: ridge regression per target, with missing labels.

Each target gets its own closed-form ridge fit on the rows where it is
observed (features standardised on those rows), so a sparse assay panel
needs no imputation. Used to read assay values out of the joint embedding
space and to score frozen representations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RidgeProbe:
    """Per-target ridge regressions on shared features.

    Attributes:
        weights: ``[F, T]`` coefficients on standardised features.
        bias: ``[T]`` intercepts.
        mean: ``[F]`` feature means used for standardisation.
        std: ``[F]`` feature stds.
        n_train: ``[T]`` observed training rows per target (0: never fitted, predicts NaN).
        alpha: Ridge penalty.
        resid_std: ``[T]`` residual standard deviation on the training rows (a
            homoscedastic spread; NaN where never fitted).
    """

    weights: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n_train: np.ndarray
    alpha: float
    resid_std: np.ndarray | None = None

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, alpha: float = 1.0, min_rows: int = 5) -> "RidgeProbe":
        """Fit one ridge per column of ``y`` on its observed (finite) rows.

        Shapes:
            x: ``[N, F]``; y: ``[N, T]`` with NaN where unobserved.
        """
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64).reshape(len(x), -1)
        mean, std = x.mean(0), x.std(0) + 1e-6
        xs = (x - mean) / std
        f, t = x.shape[1], y.shape[1]
        weights, bias, n_train = np.zeros((f, t)), np.full(t, np.nan), np.zeros(t, np.int64)
        resid = np.full(t, np.nan)
        for j in range(t):
            obs = np.isfinite(y[:, j])
            n_train[j] = obs.sum()
            if n_train[j] < min_rows:
                continue
            xo, yo = xs[obs], y[obs, j]
            ym = yo.mean()
            gram = xo.T @ xo + alpha * len(xo) / max(1, f) * np.eye(f)  # penalty scales with rows
            weights[:, j] = np.linalg.solve(gram, xo.T @ (yo - ym))
            bias[j] = ym - (xo.mean(0) @ weights[:, j])
            resid[j] = float(np.std(yo - (xo @ weights[:, j] + bias[j])))
        n_train[n_train < min_rows] = 0
        return cls(weights, bias, mean, std, n_train, alpha, resid)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``[N, T]`` predictions (NaN for targets that were never fitted)."""
        xs = (np.asarray(x, np.float64) - self.mean) / self.std
        out = xs @ self.weights + self.bias
        out[:, self.n_train == 0] = np.nan
        return out

    def to_dict(self) -> dict:
        """Plain lists, for checkpoints loaded with ``weights_only=True``."""
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "RidgeProbe":
        """Inverse of :meth:`to_dict`."""
        return cls(np.asarray(d["weights"], np.float64), np.asarray(d["bias"], np.float64),
                   np.asarray(d["mean"], np.float64), np.asarray(d["std"], np.float64),
                   np.asarray(d["n_train"], np.int64), float(d["alpha"]),
                   None if d.get("resid_std") is None else np.asarray(d["resid_std"], np.float64))
