"""``molwm finetune --search N``: choose fine-tuning hyper-parameters with Optuna on validation rows only.

Each trial fine-tunes the first seed with sampled settings (a nested MLflow run, no model
logged) and is scored by that seed's validation metric; test rows are never read to choose.
The best settings are then refit on every seed, as a normal fine-tune nested in the search run,
and that model is the one logged and registered. The trials' table goes to MLflow as
``search_trials.csv``, with a plot of the validation metric per trial.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from molwm.config import ConfigError
from molwm.evaluation.metrics import primary_metric
from molwm.tracking import NullTracker, Tracker, temporary_artifact_dir
from molwm.train.finetune import FinetuneConfig, FinetuneResult, run_finetune


@dataclass
class SearchResult:
    """The search's trials and the refit with the best settings.

    Attributes:
        best: The chosen settings (dotted keys).
        best_value: Their validation metric (first seed).
        trials: One dict per trial: number, settings, validation metric.
        refit: The fine-tune on every seed with the best settings.
    """

    best: dict[str, Any]
    best_value: float
    trials: list[dict[str, Any]]
    refit: FinetuneResult


def sample_settings(trial, config: FinetuneConfig) -> dict[str, Any]:
    """The search space: rates, head width and dropout, weight decay; for ``full`` the encoder's rate and
    staged unfreezing; descriptor inputs for network heads; the forest's leaf size for ``tabular``; for
    ``stack`` the settings of its networks (scored by the stack's out-of-fold validation metric)."""
    if config.mode == "tabular":
        return {"tabular.min_samples_leaf": [trial.suggest_int("tabular.min_samples_leaf", 1, 8)],
                "tabular.max_features": [trial.suggest_float("tabular.max_features", 0.05, 0.5)]}
    out = {"lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
           "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True),
           "head.hidden": trial.suggest_categorical("head.hidden", [128, 256, 512]),
           "head.dropout": trial.suggest_float("head.dropout", 0.0, 0.3)}
    if config.mode == "stack":  # its networks' settings; a trial is scored by the stack's out-of-fold validation
        out["stack.base_descriptors"] = trial.suggest_categorical("stack.base_descriptors", [False, True])
    else:
        out["extra.descriptors"] = trial.suggest_categorical("extra.descriptors", [False, True])
    if config.mode in ("full", "stack"):
        out["encoder_lr_ratio"] = trial.suggest_float("encoder_lr_ratio", 0.05, 1.0, log=True)
        out["freeze_epochs"] = trial.suggest_categorical(
            "freeze_epochs", sorted({0, min(5, config.epochs - 1), min(10, config.epochs - 1)}))
    return out


def with_settings(config: FinetuneConfig, settings: dict[str, Any], **top: Any) -> FinetuneConfig:
    """A copy of ``config`` with dotted ``settings`` (one level deep) and top-level ``top`` set."""
    out = copy.deepcopy(config)
    for key, value in {**settings, **top}.items():
        holder, _, name = key.rpartition(".")
        setattr(getattr(out, holder) if holder else out, name, value)
    out.validate()
    return out


def search_finetune(config: FinetuneConfig, n_trials: int, tracker: Tracker | None = None,
                    progress: bool = True) -> SearchResult:
    """Optuna (TPE, seeded by the first seed) over :func:`sample_settings`, then the refit on every seed."""
    import optuna

    if n_trials < 1:
        raise ConfigError(f"--search needs at least one trial, got {n_trials}")
    tracker = tracker or NullTracker()
    metric, higher = primary_metric("classification" if _is_classification(config) else "regression")
    key = f"val_{metric}_mean"
    trials: list[dict[str, Any]] = []
    out = Path(config.out_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if higher else "minimize",
                                sampler=optuna.samplers.TPESampler(seed=config.seeds[0]))
    with tracker.run(config.run_name or f"finetune-search-{config.dataset}",
                     tags={"molwm.stage": "finetune-search", "dataset": config.dataset}):
        tracker.log_params({"search.trials": n_trials, "search.metric": key})

        def objective(trial) -> float:
            settings = sample_settings(trial, config)
            cfg = with_settings(config, settings, seeds=config.seeds[:1], out_dir=str(out / f"trial-{trial.number}"),
                                run_name=f"trial-{trial.number}", register_name=None, alias=None)
            result = run_finetune(cfg, tracker, progress=False, nested=True, log_model=False)
            value = float(result.summary[key])
            trials.append({"trial": trial.number, **settings, key: value})
            if progress:
                print(f"trial {trial.number}: {key} {value:.4f}  {settings}", flush=True)
            return value

        study.optimize(objective, n_trials=n_trials)
        best = next(t for t in trials if t["trial"] == study.best_trial.number)
        settings = {k: v for k, v in best.items() if k not in ("trial", key)}
        tracker.log_params({f"search.best.{k}": v for k, v in settings.items()})
        tracker.log_metrics({f"search.best.{key}": float(study.best_value)})
        _log_trials(tracker, trials, key)
        refit = run_finetune(with_settings(config, settings, out_dir=str(out / "best"),
                                           run_name=f"refit-{config.dataset}"), tracker, progress, nested=True)
    return SearchResult(settings, float(study.best_value), trials, refit)


def _is_classification(config: FinetuneConfig) -> bool:
    from molwm.data.registry import get_card

    return "classification" in get_card(config.dataset).task.type


def _log_trials(tracker: Tracker, trials: list[dict[str, Any]], key: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    with temporary_artifact_dir() as d:
        frame = pd.DataFrame(trials)
        frame.to_csv(d / "search_trials.csv", index=False)
        tracker.log_artifact(d / "search_trials.csv")
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(frame["trial"], frame[key], "o-")
        ax.set(xlabel="trial", ylabel=key, title="hyper-parameter search (validation rows)")
        fig.tight_layout()
        fig.savefig(d / "search_trials.png", dpi=120)
        plt.close(fig)
        tracker.log_artifact(d / "search_trials.png", "plots")
