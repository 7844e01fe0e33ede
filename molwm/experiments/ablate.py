"""``molwm ablate``: pretraining objectives side by side at an equal budget, with probes and label-efficiency
fine-tunes.

Graphs (``modality: graph``) are described below. Images and assays
(``modality: image`` / ``assay``, with a ``multimodal`` pretraining config on a
synthetic lab) pretrain that modality's encoder under each objective and probe
it, frozen, on the lab's ground truth (mechanism per compound, cell state per
well; :mod:`molwm.evaluation.lab_probes`) along the way; the same probe on an
untrained encoder and on hand-made features of the raw inputs gives the floor.

One parent MLflow run; under it, per objective and pretraining seed, a nested
pretraining run (probes every K steps, logged against wall time and samples
seen) and nested fine-tuning runs at each label fraction; then training from
scratch and random forests (Morgan bits, RDKit 2D descriptors) on exactly the
same rows. The parent gets ``ablation.csv`` (one row per encoder, dataset and
label fraction), ``ablation.md`` and the plots (probe metric vs wall time and vs
samples seen per objective; test metric vs label fraction).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from molwm.atomic import write_text_atomic
from molwm.config import ConfigError, to_dict
from molwm.objectives import OBJECTIVES
from molwm.objectives import names as objective_names
from molwm.tracking import NullTracker, Tracker
from molwm.train.finetune import FinetuneConfig
from molwm.train.pretrain import PretrainConfig
from molwm.train.pretrain_mm import MultimodalPretrainConfig


@dataclass
class FinetuneSweep:
    """Label-efficiency fine-tunes of every pretrained encoder.

    Attributes:
        datasets: Labelled cards (scaffold split).
        fractions: Shares of the training labels kept (validation and test unchanged).
        seeds: Fine-tuning seeds (split, subset and initialisation).
        base: Every other fine-tuning setting (``dataset``, ``from_model``, ``mode``,
            ``seeds`` and ``split.train_fraction`` are set by the sweep; write ``mode: scratch``
            here, which needs no model, as the sweep sets the mode of each run).
        pretrained_mode: ``full`` or ``linear_probe`` for the pretrained encoders.
        scratch: Also train the same encoder from scratch at each fraction.
        random_forests: Also fit RF on Morgan bits and on RDKit 2D descriptors at each fraction.
        rf_trees: Trees per forest.
    """

    datasets: list[str] = field(default_factory=lambda: ["solubility", "b3db_classification"])
    fractions: list[float] = field(default_factory=lambda: [0.05, 0.2, 1.0])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    base: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(dataset="solubility", mode="scratch"))
    pretrained_mode: Literal["full", "linear_probe"] = "full"
    scratch: bool = True
    random_forests: bool = True
    rf_trees: int = 300


@dataclass
class AblateConfig:
    """An ablation of pretraining objectives (``kind: ablate``).

    Attributes:
        modality: ``graph``, ``image`` or ``assay``.
        objectives: Objectives compared (registered in :mod:`molwm.objectives.registry`: the
            ``graph`` domain for graphs, ``multimodal`` for images and assays).
        seeds: Pretraining seeds per objective.
        pretrain: Graphs: the pretraining run every objective shares (set its budget:
            ``budget_seconds`` for equal wall time or ``budget_samples`` for equal data,
            and ``probes`` for the curves); ``objective``, ``seed`` and ``out_dir`` are set per run.
        multimodal: Images and assays: the multimodal pretraining run every objective shares
            (``modalities``, a budget and lab ``probes`` set likewise).
        finetune: Label-efficiency sweep of the graph encoders (``null``: skip; graphs only).
        out_dir: Where runs and the report go.
        experiment: MLflow experiment.
        run_name: Name of the parent run.
    """

    kind: Literal["ablate"] = "ablate"
    modality: Literal["graph", "image", "assay"] = "graph"
    objectives: list[str] = field(default_factory=lambda: ["jepa", "generative", "contrastive"])
    seeds: list[int] = field(default_factory=lambda: [0])
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    multimodal: MultimodalPretrainConfig | None = None
    finetune: FinetuneSweep | None = field(default_factory=FinetuneSweep)
    out_dir: str = "outputs/ablate"
    experiment: str = "molwm-ablate"
    run_name: str | None = None

    def validate(self) -> None:
        domain = "graph" if self.modality == "graph" else "multimodal"
        # an objective that pairs modalities cannot train on one modality shown alone
        known = [n for n in objective_names(domain) if set(OBJECTIVES[(domain, n)].needs) <= {self.modality}
                 or domain == "graph"]
        unknown = [o for o in self.objectives if o not in known]
        if unknown or not self.objectives:
            raise ConfigError(f"objectives: unknown {unknown} for modality {self.modality} (known: {sorted(known)})")
        run = self.pretrain if self.modality == "graph" else self.multimodal
        if run is None:
            raise ConfigError(f"modality {self.modality}: set `multimodal:` (the pretraining run every objective "
                              "shares: data.lab, modalities, budget, probes)")
        if not (run.budget_seconds or run.budget_samples or run.max_steps):
            raise ConfigError("pretrain: set budget_seconds (equal wall time), budget_samples (equal data) "
                              "or max_steps, so every objective gets the same budget")
        if self.modality != "graph":
            if self.finetune is not None:
                raise ConfigError(f"modality {self.modality}: set finetune: null (label-efficiency fine-tunes "
                                  "are graph property tasks; the lab probes measure these encoders)")
            if run.probes is None or run.probes.modality != self.modality:
                raise ConfigError(f"multimodal.probes: set probes with modality: {self.modality}")


@dataclass
class AblateResult:
    """The table, the per-run probe histories, and the report files."""

    table: pd.DataFrame
    runs: list[dict]
    files: list[Path]
    run_id: str | None


def _pretrain(config: AblateConfig, objective: str, seed: int, tracker: Tracker, progress: bool) -> dict:
    from molwm.objectives.graph import encoder_of
    from molwm.train.loop import count_parameters
    from molwm.train.pretrain import run_pretrain

    cfg = copy.deepcopy(config.pretrain)
    cfg.objective, cfg.seed = objective, seed
    cfg.out_dir = str(Path(config.out_dir) / f"pretrain-{objective}-s{seed}")
    cfg.run_name, cfg.experiment = f"pretrain-{objective}-s{seed}", config.experiment
    result = run_pretrain(cfg, tracker, progress=progress)
    model = result.model
    hist = result.history
    last = {k: v[-1][1] for k, v in hist.items() if v}
    return {"objective": objective, "seed": seed, "checkpoint": str(result.checkpoint), "steps": result.steps,
            "wall_seconds": last.get("wall_seconds", float("nan")),
            "samples_seen": last.get("samples_seen", float("nan")),
            "params_encoder": count_parameters(encoder_of(model)),
            "params_trained": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "final": {k: v for k, v in last.items() if k.startswith(("probe.", "health."))},
            "history": {k: v for k, v in hist.items() if k.startswith(("probe.", "health.")) or
                        k in ("wall_seconds", "samples_seen", "loss")}}


def _pretrain_multimodal(config: AblateConfig, objective: str, seed: int, tracker: Tracker, progress: bool,
                         data=None) -> tuple[dict, object]:
    """One multimodal pretraining run of the ablation (on ``data`` when already built: every run
    reads the same ``multimodal.data``); returns its summary and the data."""
    from molwm.train.loop import count_parameters
    from molwm.train.pretrain_mm import build_model, run_multimodal_pretrain, shown_parameters

    cfg = copy.deepcopy(config.multimodal)
    cfg.objective, cfg.seed = objective, seed
    cfg.out_dir = str(Path(config.out_dir) / f"pretrain-{objective}-s{seed}")
    cfg.run_name, cfg.experiment = f"pretrain-{objective}-s{seed}", config.experiment
    result = run_multimodal_pretrain(cfg, tracker, progress=progress, data=data)
    model, _ = build_model(cfg, result.build.train.n_assays)
    hist = result.history
    last = {k: v[-1][1] for k, v in hist.items() if v}
    info = {"objective": objective, "seed": seed, "checkpoint": str(result.checkpoint), "steps": result.steps,
            "wall_seconds": last.get("wall_seconds", float("nan")),
            "samples_seen": last.get("samples_seen", float("nan")),
            "params_encoder": count_parameters(model.readout[config.modality]),
            "params_trained": shown_parameters(model, cfg.modalities),
            "final": {k: v for k, v in last.items() if k.startswith(("probe.", "health."))},
            "history": {k: v for k, v in hist.items() if k.startswith(("probe.", "health.")) or
                        k in ("wall_seconds", "samples_seen", "loss")}}
    return info, result.build


def _final_probes(config: AblateConfig, runs: list[dict], build):
    """Probe each run's last checkpoint once more with the DMSO sites as well (``final_probe``): the
    probes during training see only held-out samples, so they have no phenotypic-activity mAP.
    Returns the probe suite."""
    from molwm.checkpoints import load_checkpoint
    from molwm.evaluation.lab_probes import LabProbeSuite
    from molwm.train.pretrain_mm import build_model

    cfg = config.multimodal
    suite = LabProbeSuite(cfg.probes, build.heldout, cfg.data.lab, controls=build.train)
    for r in runs:
        run = copy.deepcopy(cfg)
        run.objective, run.seed = r["objective"], r["seed"]
        model, _ = build_model(run, build.train.n_assays)
        model.load_state_dict(load_checkpoint(r["checkpoint"])["model"])
        r["final_probe"] = suite(model)
    return suite


def _probe_rows(config: AblateConfig, runs: list[dict], build, progress: bool = False
                ) -> tuple[list[dict], dict[str, dict[str, float]]]:
    """Final lab probes per objective (mean ± std over seeds), and the floors: the same probe on an
    untrained encoder (each seed's initialisation), on hand-made features of the raw inputs
    (``raw_features``: CellProfiler-style per-cell features for images) and, for images, on the 25
    per-channel pixel statistics of earlier versions (``pixel_stats``)."""
    from molwm.train.pretrain_mm import build_model

    cfg = config.multimodal
    suite = _final_probes(config, runs, build)
    scores: dict[str, list[dict[str, float]]] = {}
    for r in runs:
        scores.setdefault(r["objective"], []).append(r["final_probe"])
    for seed in config.seeds:
        untrained = copy.deepcopy(cfg)
        untrained.seed = seed
        model, _ = build_model(untrained, build.train.n_assays)
        scores.setdefault("untrained", []).append(suite(model))
    scores["raw_features"] = [suite.score(*suite.raw_features(progress))]
    if config.modality == "image":
        scores["pixel_stats"] = [suite.score(suite.pixel_features())]
    rows = []
    for encoder, per_seed in scores.items():
        for key in sorted(per_seed[0]):
            vals = [d[key] for d in per_seed if key in d]
            rows.append({"encoder": encoder, "dataset": f"lab {config.modality} -> {key.split('.')[1]}",
                         "fraction": 1.0, "metric": key.split(".")[-1], "mean": float(np.mean(vals)),
                         "std": float(np.std(vals)), "n_seeds": len(vals), "split_file": "",
                         "objective": encoder, "pretrain_seed": -1})
    floors = {name: {k: float(np.mean([d[k] for d in scores[name]])) for k in scores[name][0]}
              for name in ("untrained", "raw_features", "pixel_stats") if name in scores}
    return rows, floors


def _finetune_rows(sweep: FinetuneSweep, label: str, tracker: Tracker, progress: bool, from_model: str | None,
                   encoder_cfg, out_dir: Path) -> list[dict]:
    from molwm.evaluation.metrics import primary_metric
    from molwm.train.finetune import run_finetune

    rows = []
    for ds in sweep.datasets:
        for frac in sweep.fractions:
            cfg = copy.deepcopy(sweep.base)
            cfg.dataset, cfg.seeds, cfg.split.train_fraction = ds, list(sweep.seeds), float(frac)
            cfg.from_model = from_model
            if from_model is None:  # the same encoder, randomly initialised
                cfg.mode, cfg.encoder = "scratch", copy.deepcopy(encoder_cfg)
            else:
                cfg.mode = sweep.pretrained_mode
            cfg.run_name = f"finetune-{label}-{ds}-{frac:g}"
            cfg.out_dir = str(out_dir / f"finetune-{label}-{ds}-{frac:g}")
            res = run_finetune(cfg, tracker, progress=progress)
            name, _ = primary_metric(res.task)
            rows.append({"encoder": label, "dataset": ds, "fraction": frac, "metric": name,
                         "mean": res.summary[f"test_{name}_mean"], "std": res.summary[f"test_{name}_std"],
                         "n_seeds": len(sweep.seeds), "split_file": str(res.split_file)})
    return rows


def _forest_rows(sweep: FinetuneSweep, split_files: dict[tuple[str, float], str]) -> list[dict]:
    """RF on Morgan bits and on RDKit 2D descriptors, on the fine-tunes' own split files."""
    from molwm.baselines import morgan_fingerprints, random_forest, rdkit_descriptors
    from molwm.data.batch import CachedGraphs
    from molwm.data.prepare import PrepareConfig, prepare_dataset
    from molwm.data.splits import load_splits
    from molwm.evaluation.metrics import primary_metric

    rows = []
    for ds in sweep.datasets:
        prep = prepare_dataset(PrepareConfig(dataset=ds, cache_dir=sweep.base.cache_dir, progress=False))
        graphs = CachedGraphs(prep.cache, with_labels=True)
        y = np.concatenate(graphs.labels).astype(np.float64)
        task = "classification" if "classification" in prep.card.task.type else "regression"
        name, _ = primary_metric(task)
        smiles = prep.cache.meta()["smiles"].tolist()
        pos_of = {int(r): i for i, r in enumerate(graphs.source_index)}
        feats = {"rf_morgan": morgan_fingerprints(smiles), "rf_rdkit2d": rdkit_descriptors(smiles)}
        for frac in sweep.fractions:
            splits = load_splits(split_files[(ds, frac)])
            for label, x in feats.items():
                vals = []
                for seed, part in zip(sweep.seeds, splits):
                    split = tuple(np.array([pos_of[int(r)] for r in p if int(r) in pos_of]) for p in part)
                    vals.append(random_forest(x, y, split, task, seed, sweep.rf_trees, n_jobs=1)[f"test_{name}"])
                rows.append({"encoder": label, "dataset": ds, "fraction": frac, "metric": name,
                             "mean": float(np.mean(vals)), "std": float(np.std(vals)), "n_seeds": len(vals),
                             "split_file": split_files[(ds, frac)]})
    return rows


def _graph_rows(config: AblateConfig, runs: list[dict], tracker: Tracker, progress: bool, out: Path) -> list[dict]:
    """Pretrain every graph objective (appending to ``runs``), fine-tune each encoder at every label
    fraction, then scratch and random forests on the same rows; returns the table rows."""
    rows = []
    for objective in config.objectives:
        for seed in config.seeds:
            info = _pretrain(config, objective, seed, tracker, progress)
            runs.append(info)
            if config.finetune is not None:
                for r in _finetune_rows(config.finetune, f"{objective}-s{seed}", tracker, progress,
                                        info["checkpoint"], None, out):
                    rows.append({**r, "objective": objective, "pretrain_seed": seed})
    sweep = config.finetune
    if sweep is not None and sweep.scratch:
        for r in _finetune_rows(sweep, "scratch", tracker, progress, None, config.pretrain.model.encoder, out):
            rows.append({**r, "objective": "scratch", "pretrain_seed": -1})
    if sweep is not None and sweep.random_forests and rows:
        files = {(r["dataset"], r["fraction"]): r["split_file"] for r in rows}
        rows += [{**r, "objective": r["encoder"], "pretrain_seed": -1} for r in _forest_rows(sweep, files)]
    return rows


def run_ablation(config: AblateConfig, tracker: Tracker | None = None, progress: bool = True) -> AblateResult:
    """Run every objective, its probes and fine-tunes, and the baselines; write the report."""
    from molwm.experiments.report import write_report

    config.validate()
    tracker = tracker or NullTracker()
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs: list[dict] = []
    t0 = time.perf_counter()
    with tracker.run(config.run_name or f"ablate-{config.modality}", tags={"molwm.stage": "ablate"}) as run_id:
        tracker.log_config(config)
        floors = None
        if config.modality == "graph":
            rows = _graph_rows(config, runs, tracker, progress, out)
        else:
            build = None
            for objective in config.objectives:
                for seed in config.seeds:
                    info, build = _pretrain_multimodal(config, objective, seed, tracker, progress, build)
                    runs.append(info)
            rows, floors = _probe_rows(config, runs, build, progress)
            tracker.log_metrics({f"floor.{name}.{k}": v for name, d in floors.items() for k, v in d.items()})
        table = pd.DataFrame(rows)
        files = write_report(config, runs, table, out, floors)
        for f in files:
            tracker.log_artifact(f, "report")
        tracker.log_metrics({"seconds_total": time.perf_counter() - t0})
        write_text_atomic(out / "runs.json", json.dumps({"config": to_dict(config), "runs": runs}, default=str))
    return AblateResult(table, runs, files, run_id)
