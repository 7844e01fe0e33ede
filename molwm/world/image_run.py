"""``run_image_world``: the image-level world model as a task of the training driver.

``molwm pretrain --config configs/world/lab_images.yaml`` (``kind: image_world``). The task is
the world task (:class:`molwm.world.run.WorldTask`: batches, losses, health, budgets) on the
image build of :mod:`molwm.world.images`; at the end it fits the read-out probe, scores held-out
scaffolds k steps ahead against persistence (:mod:`molwm.world.image_eval`) and logs the
figures and a plot. Its checkpoints (kind ``image_world_model``, registered in :mod:`molwm.kinds`)
resume with ``molwm pretrain --resume``; no model is logged for serving (a forecast from it needs a
start site, which the forecast API does not take).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from molwm.config import to_dict
from molwm.kinds.world import ImageWorldCheckpoint
from molwm.tracking import Tracker, temporary_artifact_dir
from molwm.train import driver
from molwm.train.common import HEALTH_KEYS, log_training_plots
from molwm.world.evaluate import plot_steps_ahead
from molwm.world.image_eval import fit_image_probe, image_steps_ahead
from molwm.world.images import (
    ImageWorldBuild,
    ImageWorldConfig,
    ImageWorldNet,
    build_image_net,
    build_image_world,
)
from molwm.world.run import WorldTask

STEPS_AHEAD = (1, 2, 4)
"""Horizons of the held-out report (those the lab's time points allow)."""


@dataclass
class ImageWorldResult:
    """What an image-level world-model run left behind.

    Attributes:
        report: Held-out metrics (:func:`molwm.world.image_eval.image_steps_ahead`); empty when the run
            was stopped early or nothing was held out.
        model_uri: Always None: no model is logged for serving (see the module docstring).
    """

    run_id: str | None
    checkpoint: Path
    steps: int
    final_loss: float
    history: dict[str, list[tuple[int, float]]]
    build: ImageWorldBuild
    net: ImageWorldNet
    report: dict[str, float]
    model_uri: str | None = None


class ImageWorldTask(WorldTask):
    """The world task with sites as states.

    Args:
        config: The run.
        build: The image build to use instead of reading ``config.data`` (tests, benchmarks).
    """

    def __init__(self, config: ImageWorldConfig, build: ImageWorldBuild | None = None):
        super().__init__(config)
        self.image_build = build
        self.desc = f"image world ({config.objective})"
        self.run_name = f"world-images-{config.objective}"
        self.report: dict[str, float] = {}

    def prepare(self, ctx, progress: bool) -> None:
        if self.image_build is None:
            self.image_build = build_image_world(self.config, progress)
        self.build = self.image_build.world

    def build_model(self) -> ImageWorldNet:
        return build_image_net(self.config, self.build, seed=False)

    def state(self, model) -> dict:
        build, c = self.build, self.build.courses
        stats = self.image_build.stats
        return ImageWorldCheckpoint(
            to_dict(self.config), {"mean": stats.mean.tolist(), "std": stats.std.tolist()}, build.comp_norm.to_dict(),
            list(c.drugs), [s or "" for s in c.smiles], list(c.contexts), list(c.truth_names),
            build.train_drugs.tolist(), build.drug_features.tolist(), bool(c.synthetic), self.probes).to_state()

    def tags(self) -> dict[str, str]:
        return {**super().tags(), "molwm.stage": "world", "world.state": "images"}

    def finish(self, model, tracker: Tracker, history, checkpoint: Path, save) -> str | None:
        c = self.config
        probe = fit_image_probe(model, self.build.train, c.objective, c.probe_rows, c.seed, c.embed_batch)
        self.probes = {"truth": probe.to_dict()}
        save()
        log_training_plots(tracker, history, f"image world model ({c.objective})",
                           ["loss", "loss.teacher_forced", "loss.rollout", "loss.vicreg"], HEALTH_KEYS[:3])
        if not len(self.build.test_rows):
            return None
        kmax = int(self.build.test.mask.sum(1).max().item()) - 1
        ks = [k for k in STEPS_AHEAD if k <= kmax]
        self.report = image_steps_ahead(model, self.build.test, probe, c.objective, ks, seed=c.seed,
                                        batch=c.embed_batch)
        tracker.log_metrics({f"test.{k}": v for k, v in self.report.items() if np.isfinite(v)})
        with temporary_artifact_dir() as d:
            tracker.log_dict({"metrics": self.report}, "heldout.json")
            if ks:
                tracker.log_artifact(plot_steps_ahead(self.report, ks, Path(d) / "forecast_r2_vs_steps.png"),
                                     "plots")
        return None


def run_image_world(config: ImageWorldConfig, tracker: Tracker | None = None, resume: str | Path | None = None,
                    progress: bool = True, stop_after: int | None = None,
                    build: ImageWorldBuild | None = None) -> ImageWorldResult:
    """Train an image-level world model and score it on held-out scaffolds.

    Args:
        config: The run (ignored when resuming: the checkpoint's config wins).
        tracker: Where to log; default logs nothing.
        resume: Checkpoint to continue from.
        progress: Show progress bars.
        stop_after: Stop (as if interrupted) at this step, without end-of-run outputs.
        build: Use this image build instead of reading ``config.data`` (it must match the config).
    """
    config, state = driver.resumed_config(ImageWorldConfig, config, resume)
    task = ImageWorldTask(config, build)
    run = driver.drive(task, tracker, state, progress, stop_after)
    return ImageWorldResult(run.run_id, run.checkpoint, run.steps, run.final_loss, run.history, task.image_build,
                            run.model, task.report)
