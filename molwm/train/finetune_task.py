"""One fine-tuned network member as a task of the training driver (:mod:`molwm.train.driver`).

The driver does what it does for every task: the device, AdamW, clipping and the NaN guard,
the step-one gradient check, budgets (``max_steps``, ``budget_samples``, ``budget_seconds``),
logging, embedding health, rolling checkpoints and exact resume. The member task says what
is particular to fine-tuning: one seeded permutation of the training rows per epoch, the
head's and the encoder's learning rates (``encoder_lr_ratio``), staged unfreezing
(``freeze_epochs``), validation at the end of each epoch with early stopping (``patience``),
and keeping the best epoch's weights.

Fine-tuning keeps one random stream per member (dropout flows on from the seed, as it
always has: ``reseed_steps = False``), so the driver saves that stream and the member's loop
state (data order, best weights, patience) in the checkpoint's resume block. A member's
rolling checkpoint (``<out_dir>/members/seed-<seed>/last.pt``) is itself a one-member
``property_model`` at its current weights, so it loads like any model.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featurizers.molecule import GRAPH_SPEC
from molwm.config import ConfigError, to_dict
from molwm.data.batch import GraphBatch
from molwm.encoders.graph import GraphEncoder
from molwm.jepa.health import embedding_health
from molwm.kinds.property import member_state, property_state
from molwm.predictors.extras import FeatureScaler
from molwm.predictors.heads import PropertyModel
from molwm.evaluation.metrics import masked_loss, primary_metric, task_metrics
from molwm.tracking import Tracker
from molwm.train.driver import StepLoss, drive
from molwm.train.finetune_steps import (
    LabelledGraphs,
    fold_standardisation,
    head_config,
    log_member,
    predict_rows,
    score_member,
    set_encoder_trainable,
    target_scaler,
)


@dataclass
class MemberBatch:
    """One step's training rows: cache positions, their graphs (None for a linear probe, which reads
    cached embeddings), extra features and cached embeddings where they apply."""

    rows: np.ndarray
    graph: GraphBatch | None
    extra: torch.Tensor | None
    cached: torch.Tensor | None


class FinetuneMemberTask:
    """The driver task of one network member (``config`` is a ``FinetuneConfig``; see the module docstring).

    After :func:`molwm.train.driver.drive` finishes it, :attr:`result` is ``(model, metrics, scaler)``.
    """

    rate_name = "molecules_per_s"
    distributed = False
    nested = True  # a seed's run sits under the fine-tune's run
    reseed_steps = False  # one stream per member: dropout and PE signs flow on from the seed

    def __init__(self, config, data: LabelledGraphs, split, task: str, n_tasks: int, seed: int,
                 pretrained: GraphEncoder | None, names: list[str], tags: dict[str, str] | None = None,
                 resumed: dict | None = None):
        out_dir = self.checkpoint_path(config, seed).parent
        self.config = dataclasses.replace(config, seed=seed, seeds=[seed], out_dir=str(out_dir),
                                          run_name=f"seed-{seed}")
        self.desc, self.run_name = f"seed {seed}", f"seed-{seed}"
        self.data, self.split, self.task, self.n_tasks, self.seed = data, split, task, n_tasks, seed
        self.pretrained, self.names, self._tags = pretrained, names, dict(tags or {})
        train = split[0]
        self.mean, self.std = target_scaler(data.y, train, task)
        self.y_scaled = torch.from_numpy(((data.y - self.mean) / self.std).astype(np.float32))
        self.frozen = config.mode == "linear_probe"
        self.staged = config.mode == "full" and config.freeze_epochs > 0
        n, bs = len(train), config.batch_size
        # a last batch of one molecule is skipped (batch norm needs two), except on cached embeddings
        self.per_epoch = sum(1 for i in range(0, n, bs) if self.frozen or min(bs, n - i) >= 2)
        if self.per_epoch == 0:
            raise ConfigError(f"seed {seed}: {n} training row(s) are too few to fine-tune on")
        self.metric, self.higher = primary_metric(task)
        self.extra = self.cached = None
        self.feat_mean = self.feat_std = None
        # the loop's own state, saved in the resume block
        self.rng = np.random.default_rng([seed, 17])
        self.gen = torch.Generator().manual_seed(seed)
        self.epoch, self.order, self.losses, self.steps_done = -1, None, [], 0
        self.best, self.best_state, self.best_epoch, self.bad = None, None, -1, 0
        self.curves: dict[str, list[tuple[int, float]]] = {}
        self.result = None
        # a member that had finished (or stopped early) is resumed at its end: only the outputs are redone
        done = (resumed or {}).get("resume", {}).get("task", {}).get("done", False)
        self.done_at = int(resumed["step"]) if done else None

    # ---- what the driver asks
    def prepare(self, ctx, progress: bool) -> None:
        """The data is read already (one cache for every member)."""

    @staticmethod
    def checkpoint_path(config, seed: int) -> Path:
        """Where the member of ``seed`` of a fine-tune with ``config`` keeps its rolling checkpoint."""
        return Path(config.out_dir) / "members" / f"seed-{seed}" / "last.pt"

    def total_steps(self, world_size: int) -> int:
        if self.done_at is not None:
            return self.done_at
        steps = self.config.max_steps or self.config.epochs * self.per_epoch
        if self.config.budget_samples:
            steps = min(steps, -(-self.config.budget_samples // self.config.batch_size))
        return steps

    def samples_per_step(self, world_size: int) -> int:
        return self.config.batch_size

    def build_model(self) -> torch.nn.Module:
        cfg, train = self.config, self.split[0]
        encoder = copy.deepcopy(self.pretrained) if self.pretrained is not None else GraphEncoder(GRAPH_SPEC,
                                                                                                  cfg.encoder)
        model = PropertyModel(encoder, self.n_tasks, head_config(cfg.mode, cfg.head), cfg.extra)
        if model.extra is not None:  # standardised with this member's training rows
            model.extra_scaler = FeatureScaler.fit(self.data.extra[train])
            self.extra = torch.from_numpy(model.extra_scaler.transform(self.data.extra))
        if self.frozen:
            set_encoder_trainable(model, False)
            model.encoder.eval()
            with torch.no_grad():
                rows = np.arange(len(self.data.graphs))
                cached = torch.cat([model.embed(self.data.batch(rows[i: i + 256])) for i in range(0, len(rows), 256)])
            # standardised with train statistics; folded into the head after training
            self.feat_mean, self.feat_std = cached[train].mean(0), cached[train].std(0).clamp(min=1e-6)
            self.cached = (cached - self.feat_mean) / self.feat_std
        return model

    def param_groups(self, model: PropertyModel) -> list[dict[str, Any]]:
        """The head at ``lr``; in ``full`` mode the encoder at ``lr * encoder_lr_ratio``; a linear probe's
        head alone; ``scratch`` everything at ``lr``. Every group has the config's weight decay."""
        if self.frozen:
            return [{"params": list(model.head.parameters())}]
        if self.config.mode == "full":
            return [{"params": list(model.head.parameters())},
                    {"params": list(model.encoder.parameters()), "lr_ratio": self.config.encoder_lr_ratio}]
        return [{"params": list(model.parameters())}]

    def batch(self, step: int, ctx) -> MemberBatch:
        epoch, i = divmod(step, self.per_epoch)
        while self.epoch < epoch:  # one permutation per epoch, drawn in order
            self.order, self.epoch = self.rng.permutation(self.split[0]), self.epoch + 1
        bs = self.config.batch_size
        rows = self.order[i * bs: (i + 1) * bs]
        extra = None if self.extra is None else self.extra[rows]
        if self.frozen:
            return MemberBatch(rows, None, extra, self.cached[rows])
        return MemberBatch(rows, self.data.batch(rows, self.gen), extra, None)

    def _head_only(self, step: int) -> bool:
        return self.staged and step // self.per_epoch < self.config.freeze_epochs

    def loss(self, model, batch: MemberBatch, step: int) -> StepLoss:
        epoch = step // self.per_epoch
        if step % self.per_epoch == 0:
            self.losses = []
            if self.staged and epoch == self.config.freeze_epochs:
                self.bad = 0  # the unfrozen stage gets its own patience
        if self.staged:  # every step, so a run resumed inside a stage is in the right one
            set_encoder_trainable(model, not self._head_only(step))
        if self.frozen or self._head_only(step):
            model.encoder.eval()
        out = model.head(batch.cached) if self.frozen else model(batch.graph, batch.extra)
        loss = masked_loss(out, self.y_scaled[batch.rows].to(out.device), self.task)
        self.losses.append(float(loss.detach()))
        return StepLoss(loss, {"loss": loss})

    def after_step(self, model, step: int) -> tuple[dict[str, float], bool]:
        """At an epoch's end: the validation metric, the best weights so far, early stopping."""
        self.steps_done = step + 1
        epoch, i = divmod(step, self.per_epoch)
        if i != self.per_epoch - 1:
            return {}, False
        val = self.split[1]
        pred = predict_rows(model, self.data, val, self.task, (self.mean, self.std), self.cached, self.extra)
        score = task_metrics(self.task, self.data.y[val], pred)[self.metric]
        train_loss = float(np.mean(self.losses)) if self.losses else float("nan")
        self.curves.setdefault("train_loss", []).append((epoch, train_loss))
        self.curves.setdefault(f"val_{self.metric}", []).append((epoch, score))
        stop = False
        if (self.best is None or (score > self.best if self.higher else score < self.best)) and np.isfinite(score):
            self.best, self.best_state, self.best_epoch, self.bad = score, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            self.bad += 1
            stop = self.bad >= self.config.patience and not self._head_only(step)  # head-only runs to its end
            if stop:
                self.done_at = step + 1  # in this step's checkpoint: a resume does not train past the stop
        return {"epoch": float(epoch), "train_loss": train_loss, f"val_{self.metric}": score}, stop

    def health(self, model, batch: MemberBatch) -> dict[str, float]:
        with torch.no_grad():
            if batch.cached is not None:
                return embedding_health(batch.cached)
            was = model.training
            model.eval()
            z = model.embed(batch.graph)
            model.train(was)
            return embedding_health(z)

    def untrained_parameters(self, model, batch) -> tuple[str, ...]:
        """None: every trainable parameter of encoder and head gets a gradient on the first step (frozen
        parameters are not checked)."""
        return ()

    def probe(self, model):
        return None

    def tags(self) -> dict[str, str]:
        return {**self._tags, "seed": str(self.seed)}

    def log_start(self, tracker: Tracker, model, ctx, total: int) -> None:
        tracker.log_params({"seed": self.seed, "n_train": len(self.split[0]), "n_val": len(self.split[1]),
                            "n_test": len(self.split[2])})

    def state(self, model) -> dict[str, Any]:
        """A one-member ``property_model`` at the current weights (a linear probe's standardisation folded in)."""
        member = model
        if self.frozen:
            member = copy.deepcopy(model)
            fold_standardisation(member.head, self.feat_mean, self.feat_std)
        cfg = self.config
        return property_state(config=to_dict(cfg), encoder_config=model.encoder.config,
                              head_config=head_config(cfg.mode, cfg.head), extra=cfg.extra, member_kind="network",
                              task=self.task, targets=list(self.names), seeds=[self.seed],
                              members=[member_state(member)], scalers=[(self.mean, self.std)], metrics=[],
                              uncertainty=None)

    def loop_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "order": None if self.order is None else torch.from_numpy(self.order.copy()),
                "rng": _rng_state(self.rng), "gen": self.gen.get_state(), "losses": list(self.losses),
                "best": self.best, "best_state": self.best_state, "best_epoch": self.best_epoch, "bad": self.bad,
                "curves": {k: [list(p) for p in v] for k, v in self.curves.items()}, "done": self.done_at is not None,
                "steps_done": self.steps_done}

    def load_loop_state(self, state: dict[str, Any]) -> None:
        self.epoch, self.losses, self.steps_done = int(state["epoch"]), list(state["losses"]), int(state["steps_done"])
        self.order = None if state["order"] is None else state["order"].numpy()
        self.rng.bit_generator.state = _rng_from(state["rng"])
        self.gen.set_state(state["gen"])
        self.best, self.best_state, self.best_epoch, self.bad = (state["best"], state["best_state"],
                                                                 int(state["best_epoch"]), int(state["bad"]))
        self.curves = {k: [tuple(p) for p in v] for k, v in state["curves"].items()}

    def finish(self, model, tracker: Tracker, history, checkpoint: Path, save) -> str | None:
        """The best epoch's weights, scored on validation and test rows, plots logged; no model is logged
        (the ensemble is, by :func:`molwm.train.finetune.run_finetune`)."""
        set_encoder_trainable(model, not self.frozen)
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        scaler = (self.mean, self.std)
        metrics = score_member(model, self.data, self.split, self.task, scaler, self.cached, self.extra)
        metrics["best_epoch"] = self.best_epoch
        if self.frozen:
            fold_standardisation(model.head, self.feat_mean, self.feat_std)
        log_member(self.config, tracker, self.data, self.split, self.task, self.seed, self.names, metrics, model,
                   scaler, self.curves)
        self.result = (model, metrics, scaler)
        self.done_at = self.steps_done
        save()  # marked done: a resumed fine-tune redoes only this member's outputs
        return None


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """A numpy generator's state with its 128-bit integers as strings (plain data for ``weights_only``)."""
    st = rng.bit_generator.state
    return {"bit_generator": st["bit_generator"], "state": {k: str(v) for k, v in st["state"].items()},
            "has_uint32": int(st["has_uint32"]), "uinteger": int(st["uinteger"])}


def _rng_from(saved: dict[str, Any]) -> dict[str, Any]:
    return {**saved, "state": {k: int(v) for k, v in saved["state"].items()}}


def train_member(config, data: LabelledGraphs, split, task: str, n_tasks: int, seed: int,
                 pretrained: GraphEncoder | None, tracker: Tracker, names: list[str], progress: bool = True,
                 tags: dict[str, str] | None = None, stop_after: int | None = None, state: dict | None = None):
    """Train one network member through the driver; returns ``(model, metrics, scaler)``.

    ``full`` mode with ``freeze_epochs > 0`` trains the head alone on the frozen encoder first,
    then everything, the encoder at ``lr * encoder_lr_ratio`` (staged unfreezing). ``state``
    resumes the member from its rolling checkpoint; ``stop_after`` stops it there (as if
    interrupted; the result is then None).
    """
    member = FinetuneMemberTask(config, data, split, task, n_tasks, seed, pretrained, names, tags, resumed=state)
    drive(member, tracker, state=state, progress=progress, stop_after=stop_after)
    return member.result
