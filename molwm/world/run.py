"""``run_world``: train a world model end to end, with checkpoints, resume, probes and MLflow outputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from molwm.config import from_dict
from molwm.models.world import WORLD_MODEL
from molwm.packaging import package_for
from molwm.tracking import NullTracker, Tracker
from molwm.train.common import plot_curves
from molwm.checkpoints import load_resume_checkpoint, save_checkpoint
from molwm.train.loop import LoopSchedule, count_parameters, drop_logged, flush, restore, run_steps
from molwm.world.data import TimeCourses
from molwm.world.model import WorldNet
from molwm.world.train import (WorldBuild, WorldConfig, build_world_data, fit_probes, initial_states, sample_batch,
                               train_step, world_health)

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


def build_net(config: WorldConfig, build: WorldBuild) -> WorldNet:
    """The network sized for ``build``'s windows, observations, compounds and vocabularies."""
    torch.manual_seed(config.seed)
    c = build.courses
    return WorldNet(build.train.windows.shape[-1], len(c.obs_names), build.drug_features.shape[1], len(c.drugs),
                    len(c.contexts), config.model)


def _state(net, optimizer, config: WorldConfig, step: int, run_id, history, pending, build: WorldBuild,
           probes: dict | None = None) -> dict:
    c = build.courses
    return {
        "kind": WORLD_MODEL.name, "config": asdict(config), "step": step, "run_id": run_id or "",
        "model": net.state_dict(), "optimizer": optimizer.state_dict(),
        "obs_norm": build.obs_norm.to_dict(), "comp_norm": build.comp_norm.to_dict(),
        "drugs": list(c.drugs), "smiles": [s or "" for s in c.smiles], "contexts": list(c.contexts),
        "obs_names": list(c.obs_names), "truth_names": list(c.truth_names),
        "known_drugs": build.train_drugs.tolist(), "drug_features": build.drug_features.tolist(),
        "initial": initial_states(build), "synthetic": bool(c.synthetic), "probes": probes or {},
        "window_dim": int(build.train.windows.shape[-1]),
        "history": {k: [list(p) for p in v] for k, v in history.items()},
        "pending": [[k, float(v), int(s)] for k, v, s in pending],
    }


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
    tracker = tracker or NullTracker()
    state = None
    if resume is not None:
        state = load_resume_checkpoint(resume)
        config = from_dict(WorldConfig, state["config"])
    config.validate()
    if config.threads:
        torch.set_num_threads(config.threads)
    build = build_world_data(config, courses)
    net = build_net(config, build)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=config.lr,
                                  weight_decay=config.weight_decay)
    start, run_id, history, pending = restore(state, net, optimizer)
    ckpt = Path(config.out_dir) / "last.pt"
    c = build.courses
    tags = {"molwm.stage": "world", "objective": config.objective, "data.source": config.data.source,
            "molwm.synthetic": str(c.synthetic).lower()}
    with tracker.run(config.run_name or f"world-{config.data.source}-{config.objective}", tags=tags,
                     run_id=run_id) as active_id:
        run_id = active_id
        if state is None:
            tracker.log_config(config)
            summary = {f"courses.{k}": v for k, v in c.summary().items() if not isinstance(v, bool)}
            tracker.log_params({**summary, "courses.train_conditions": len(build.train_rows),
                                "courses.test_conditions": len(build.test_rows),
                                "courses.test_drugs": int(build.test_drugs.sum()), "params": count_parameters(net)})
            unmapped = {d: why for d, why in c.mapping.items() if why.startswith("unmapped")}
            tracker.log_dict({"mapping": c.mapping, "unmapped": sorted(unmapped),
                              "held_out_drugs": [d for d, t in zip(c.drugs, build.test_drugs) if t]}, "drugs.json")
        drop_logged(tracker, pending)
        flush(tracker, pending)
        schedule = LoopSchedule(config.max_steps, config.batch_size, config.log_every, config.health_every,
                                config.checkpoint_every, ckpt, rate_name="courses_per_s", dedupe=state is not None)
        horizon, members = config.rollout_steps, config.model.ensemble
        done, last = run_steps(
            schedule, start, tracker, history, pending,
            batch_fn=lambda step: sample_batch(build.train, config.batch_size, horizon, config.seed, step,
                                               config.model.id_dropout, members),
            step_fn=lambda step, b: train_step(net, optimizer, b, config, step),
            health_fn=lambda b: world_health(net, b),
            state_fn=lambda nxt: _state(net, optimizer, config, nxt, run_id, history, pending, build),
            progress=progress, stop_after=stop_after, desc=f"world ({config.objective})")
        if done < config.max_steps:
            return WorldResult(run_id, None, ckpt, done, last, history, build, net)
        probes = fit_probes(net, build.train, config)
        save_checkpoint(_state(net, optimizer, config, config.max_steps, run_id, history, pending, build, probes),
                        ckpt)
        model_uri = _log_outputs(tracker, history, ckpt, config, build, net)
    return WorldResult(run_id, model_uri, ckpt, config.max_steps, last, history, build, net)


def _log_outputs(tracker: Tracker, history, ckpt: Path, config: WorldConfig, build: WorldBuild, net) -> str | None:
    from molwm.tracking import temporary_artifact_dir
    from molwm.world.evaluate import evaluate_heldout

    with temporary_artifact_dir() as d:
        for name, keys, log_y in [
            ("loss_curve.png", ["loss", "loss.teacher_forced", "loss.rollout", "loss.vicreg"], True),
            ("embedding_health.png", ["health.std_mean", "health.std_min", "health.rankme"], False),
        ]:
            path = plot_curves(history, keys, d / name, f"world model ({config.objective})", log_y)
            if path is not None:
                tracker.log_artifact(path, "plots")
        if len(build.test_rows):
            report = evaluate_heldout(ckpt, build, plot_dir=d)
            tracker.log_metrics({f"test.{k}": v for k, v in report.metrics.items() if np.isfinite(v)})
            tracker.log_dict(report.to_dict(), "heldout.json")
            for path in report.plots:
                tracker.log_artifact(path, "plots")
    return tracker.log_model(ckpt, package_for(WORLD_MODEL.name), name="world_model",
                             registered_name=config.register_name)
