"""Gradient-boosted trees kept in their library's own text format, so a stacked model loads without pickle.

LightGBM is the stack's booster (``benchmarks/gbm_choice.py`` measured it beside CatBoost: CatBoost
was slightly better on validation on 3 of 5 sets at 9.5x the fit time; figures in docs/benchmarks.md). A fitted booster is stored as the library's model text
(LightGBM's ``model_to_string``, CatBoost's JSON export) with its SHA-256; :meth:`BoostedTrees.from_state`
checks the digest and that the library parses the text before anything predicts with it.
Both fit on each member's training rows with early stopping on its validation rows.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass

import numpy as np

from molwm.checkpoints import CheckpointError

LIBRARIES = ("lightgbm", "catboost")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class BoostedTrees:
    """A fitted booster (one target) as text.

    Attributes:
        library: ``lightgbm`` or ``catboost``.
        text: The library's own model text.
        task: ``regression`` or ``classification`` (predictions are then P(class 1)).
    """

    library: str
    text: str
    task: str

    def __post_init__(self) -> None:
        self._model = _parse(self.library, self.text)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``[n]`` predictions (probabilities for classification) for rows ``x [n, F]``."""
        x = np.asarray(x, np.float64)
        if self.library == "lightgbm":
            return np.asarray(self._model.predict(x), np.float64)
        if self.task == "classification":
            return np.asarray(self._model.predict(x, prediction_type="Probability")[:, 1], np.float64)
        return np.asarray(self._model.predict(x), np.float64)

    def to_state(self) -> dict:
        """Plain strings (loads under ``torch.load(weights_only=True)``)."""
        return {"library": self.library, "text": self.text, "task": self.task, "sha256": _digest(self.text)}

    @classmethod
    def from_state(cls, state: dict) -> "BoostedTrees":
        """Rebuild, refusing text whose digest differs from the stored one.

        Raises:
            CheckpointError: On a digest mismatch, an unknown library, or text the library cannot parse.
        """
        if state.get("library") not in LIBRARIES:
            raise CheckpointError(f"boosted member: unknown library {state.get('library')!r}")
        if _digest(state["text"]) != state.get("sha256"):
            raise CheckpointError("boosted member: model text does not match its stored sha256 (the checkpoint "
                                  "was changed)")
        try:
            return cls(state["library"], state["text"], state["task"])
        except Exception as err:  # noqa: BLE001 - the library's own parse errors, reported in one line
            raise CheckpointError(f"boosted member: {state['library']} cannot read the stored model "
                                  f"({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None


def _parse(library: str, text: str):
    if library == "lightgbm":
        import lightgbm as lgb

        return lgb.Booster(model_str=text)
    from catboost import CatBoost

    with tempfile.TemporaryDirectory() as d:  # CatBoost reads JSON models from files only
        path = os.path.join(d, "model.json")
        with open(path, "w") as f:
            f.write(text)
        model = CatBoost()
        model.load_model(path, format="json")
    return model


def fit_lightgbm(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, task: str, seed: int,
                 n_estimators: int = 2000, learning_rate: float = 0.03, num_leaves: int = 31,
                 threads: int = 1) -> BoostedTrees:
    """LightGBM on rows ``x`` (NaN allowed), early-stopped (100 rounds) on the validation rows."""
    import lightgbm as lgb

    params = {"objective": "binary" if task == "classification" else "regression", "learning_rate": learning_rate,
              "num_leaves": num_leaves, "min_data_in_leaf": 5, "feature_fraction": 0.3, "bagging_fraction": 0.8,
              "bagging_freq": 1, "lambda_l2": 1.0, "seed": seed, "num_threads": threads, "verbosity": -1,
              "deterministic": True, "force_row_wise": True}
    train = lgb.Dataset(np.asarray(x, np.float64), label=np.asarray(y, np.float64), free_raw_data=True)
    val = lgb.Dataset(np.asarray(x_val, np.float64), label=np.asarray(y_val, np.float64), reference=train)
    booster = lgb.train(params, train, num_boost_round=n_estimators, valid_sets=[val],
                        callbacks=[lgb.early_stopping(100, verbose=False)])
    return BoostedTrees("lightgbm", booster.model_to_string(num_iteration=booster.best_iteration), task)


def fit_catboost(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, task: str, seed: int,
                 n_estimators: int = 2000, learning_rate: float = 0.05, threads: int = 1) -> BoostedTrees:
    """CatBoost (depth 6) on rows ``x``, early-stopped (100 rounds) on the validation rows."""
    from catboost import CatBoostClassifier, CatBoostRegressor

    kind = CatBoostClassifier if task == "classification" else CatBoostRegressor
    model = kind(iterations=n_estimators, learning_rate=learning_rate, depth=6, random_seed=seed,
                 thread_count=threads, verbose=False, od_type="Iter", od_wait=100, use_best_model=True,
                 allow_writing_files=False)
    y, y_val = (np.asarray(y).astype(int), np.asarray(y_val).astype(int)) if task == "classification" else (y, y_val)
    model.fit(np.asarray(x, np.float64), y, eval_set=(np.asarray(x_val, np.float64), y_val))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.json")
        model.save_model(path, format="json")
        with open(path) as f:
            text = f.read()
    return BoostedTrees("catboost", text, task)
