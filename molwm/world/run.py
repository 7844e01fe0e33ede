"""``run_world``: train a world model end to end, with checkpoints, resume, probes and MLflow outputs.

The world task of the training driver (:mod:`molwm.train.driver`): resume, devices,
the optimiser (with weight-decay groups), the step-one gradient check, budgets and
checkpoints come from the driver, as for graph and multimodal pretraining.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from molwm.config import to_dict
from molwm.kinds.world import WORLD_MODEL, WorldCheckpoint
from molwm.packaging import package_for
from molwm.tracking import Tracker, temporary_artifact_dir
from molwm.train import driver
from molwm.train.common import HEALTH_KEYS, log_training_plots
from molwm.train.loop import count_parameters
from molwm.world.config import WorldConfig
from molwm.world.data import TimeCourses
from molwm.world.evaluate import evaluate_heldout
from molwm.world.model import WorldNet
from molwm.world.train import (WorldBatch, WorldBuild, build_world_data, fit_probes, initial_states,
                               sample_batch, world_health, world_losses)


@dataclass
class WorldResult:
    """What a world-model run left behind."""

    run_id: str | None
    model_uri: str | None
    checkpoint: Path
    steps: int
    final_loss: float
    history: dict[str, list[tuple[int, float]]]
    build: WorldBuild
    net: WorldNet


def build_net(config: WorldConfig, build: WorldBuild, seed: bool = True) -> WorldNet:
    """The network sized for ``build``'s windows, observations, compounds and vocabularies
    (initialised from ``config.seed`` unless ``seed`` is False: the driver seeds it)."""
    if seed:
        torch.manual_seed(config.seed)
    c = build.courses
    return WorldNet(build.train.windows.shape[-1], len(c.obs_names), build.drug_features.shape[1], len(c.drugs),
                    len(c.contexts), config.model)


class WorldTask:
    """World-model training as a task of the training driver (see :class:`molwm.train.driver.Task`).

    Args:
        config: The run.
        courses: Time courses to use instead of reading ``config.data`` (tests, benchmarks).
    """

    rate_name = "courses_per_s"
    distributed = False

    def __init__(self, config: WorldConfig, courses: TimeCourses | None = None):
        self.config, self.courses = config, courses
        self.desc = f"world ({config.objective})"
        self.run_name = f"world-{config.data.source}-{config.objective}"
        self.build: WorldBuild | None = None
        self.probes: dict = {}
        self.calibration: dict | None = None

    def prepare(self, ctx, progress: bool) -> None:
        self.build = build_world_data(self.config, self.courses)

    def total_steps(self, world_size: int) -> int:
        c = self.config
        return min(c.max_steps, -(-c.budget_samples // c.batch_size)) if c.budget_samples else c.max_steps

    def samples_per_step(self, world_size: int) -> int:
        return self.config.batch_size

    def build_model(self) -> WorldNet:
        return build_net(self.config, self.build, seed=False)

    def batch(self, step: int, ctx) -> WorldBatch:
        c = self.config
        return sample_batch(self.build.train, c.batch_size, c.rollout_steps, c.seed, step, c.model.id_dropout,
                            c.model.ensemble)

    def loss(self, model, batch, step: int) -> driver.StepLoss:
        loss, metrics = world_losses(model, batch, self.config)
        return driver.StepLoss(loss, metrics)

    def untrained_parameters(self, model, batch) -> tuple[str, ...]:
        return model.untrained_parameters(self.config.objective)

    def health(self, model, batch) -> dict[str, float]:
        return world_health(model, batch)

    def state(self, model) -> dict:
        build, c = self.build, self.build.courses
        return WorldCheckpoint(
            to_dict(self.config), build.obs_norm.to_dict(), build.comp_norm.to_dict(), list(c.drugs),
            [s or "" for s in c.smiles], list(c.contexts), list(c.obs_names), list(c.truth_names),
            build.train_drugs.tolist(), build.drug_features.tolist(), initial_states(build), bool(c.synthetic),
            self.probes, int(build.train.windows.shape[-1]), self.calibration or None).to_state()

    def tags(self) -> dict[str, str]:
        c = self.config
        return {"molwm.stage": "world", "objective": c.objective, "data.source": c.data.source,
                "molwm.synthetic": str(self.build.courses.synthetic).lower()}

    def log_start(self, tracker: Tracker, model, ctx, total: int) -> None:
        build, c = self.build, self.build.courses
        summary = {f"courses.{k}": v for k, v in c.summary().items() if not isinstance(v, bool)}
        tracker.log_params({**summary, "courses.train_conditions": len(build.train_rows),
                            "courses.test_conditions": len(build.test_rows),
                            "courses.test_drugs": int(build.test_drugs.sum()), "params": count_parameters(model)})
        unmapped = {d: why for d, why in c.mapping.items() if why.startswith("unmapped")}
        tracker.log_dict({"mapping": c.mapping, "unmapped": sorted(unmapped),
                          "held_out_drugs": [d for d, t in zip(c.drugs, build.test_drugs) if t]}, "drugs.json")
        if self.config.data.source == "lincs":  # wells that did not join a structure: counted, listed
            from molwm.data.formats.lincs import load_lincs_wells

            rejects = load_lincs_wells(self.config.data.dataset, self.config.data.data_dir).rejects
            tracker.log_metrics({"data.rejected_wells": float(len(rejects))})
            tracker.log_dict({"rejected_wells": len(rejects),
                              "reasons": rejects["reason"].value_counts().to_dict() if len(rejects) else {}},
                             "rejects.json")

    def probe(self, model):
        return None

    def finish(self, model, tracker: Tracker, history, checkpoint: Path, save) -> str | None:
        self.probes = fit_probes(model, self.build.train, self.config)
        save()
        if self.build.val is not None and self.build.val.n:  # intervals calibrated on drugs kept out of training
            from molwm.world.evaluate import calibration_on
            from molwm.world.forecast import WorldForecaster

            fc = WorldForecaster.load(checkpoint)
            self.calibration = calibration_on(fc, self.build.val, self.config.data.calibration)
            tracker.log_dict(self.calibration, "calibration.json")
            save()
        return _log_outputs(tracker, history, checkpoint, self.config, self.build, model)


def run_world(config: WorldConfig, tracker: Tracker | None = None, resume: str | Path | None = None,
              progress: bool = True, stop_after: int | None = None,
              courses: TimeCourses | None = None) -> WorldResult:
    """Train a world model; returns where the run and the model are.

    Args:
        config: The run (ignored when resuming: the checkpoint's config wins).
        tracker: Where to log; default logs nothing.
        resume: Checkpoint to continue from.
        progress: Show progress bars.
        stop_after: Stop (as if interrupted) at this step, without end-of-run outputs.
        courses: Use these time courses instead of reading ``config.data`` (tests, benchmarks).
    """
    config, state = driver.resumed_config(WorldConfig, config, resume)
    task = WorldTask(config, courses)
    run = driver.drive(task, tracker, state, progress, stop_after)
    return WorldResult(run.run_id, run.model_uri, run.checkpoint, run.steps, run.final_loss, run.history,
                       task.build, run.model)


def _log_outputs(tracker: Tracker, history, ckpt: Path, config: WorldConfig, build: WorldBuild, net) -> str | None:
    log_training_plots(tracker, history, f"world model ({config.objective})",
                       ["loss", "loss.teacher_forced", "loss.rollout", "loss.vicreg"], HEALTH_KEYS[:3])
    with temporary_artifact_dir() as d:
        if len(build.test_rows):
            report = evaluate_heldout(ckpt, build, plot_dir=d)
            tracker.log_metrics({f"test.{k}": v for k, v in report.metrics.items() if np.isfinite(v)})
            tracker.log_dict(report.to_dict(), "heldout.json")
            for path in report.plots:
                tracker.log_artifact(path, "plots")
    return tracker.log_model(ckpt, package_for(WORLD_MODEL.name), name="world_model",
                             registered_name=config.register_name)
