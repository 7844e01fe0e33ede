"""``molwm pretrain`` from Python: one config schema per kind of run, picked by the ``kind:`` key.

>>> from molwm.pretraining import load_pretrain_config, pretrain
>>> config = load_pretrain_config("configs/world/lab_tiny.yaml", ["max_steps=10"])   # doctest: +SKIP
>>> result = pretrain(config)                                                       # doctest: +SKIP

* ``kind: graph`` (the default when the key is absent): graph pretraining, :mod:`molwm.train.pretrain`;
* ``kind: multimodal``: the multimodal JEPA and its baselines, :mod:`molwm.train.pretrain_mm`;
* ``kind: world``: a world model, :mod:`molwm.world.run`.

A resumed run's kind is read from its checkpoint (through the model-kind registry).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

from molwm.checkpoints import load_resume_checkpoint
from molwm.config import ConfigError, apply_overrides, from_dict, load_config, read_yaml
from molwm.kinds import kind_of, rebuild
from molwm.tracking import Tracker
from molwm.train.pretrain import PretrainConfig, run_pretrain
from molwm.train.pretrain_mm import MultimodalPretrainConfig, run_multimodal_pretrain
from molwm.world.config import WorldConfig
from molwm.world.image_run import run_image_world
from molwm.world.images import ImageWorldConfig
from molwm.world.run import run_world

SCHEMAS: dict[str, tuple[type, Any]] = {
    "graph": (PretrainConfig, run_pretrain),
    "multimodal": (MultimodalPretrainConfig, run_multimodal_pretrain),
    "world": (WorldConfig, run_world),
    "image_world": (ImageWorldConfig, run_image_world),
}
"""Run kind -> (config schema, the function that runs it)."""


def config_kind(path: str | Path | None = None, overrides: Sequence[str] = ()) -> str:
    """The ``kind:`` of a pretraining YAML after overrides (``graph`` when absent).

    Raises:
        ConfigError: Naming the known kinds, for any other value.
    """
    data = apply_overrides(read_yaml(path) if path else {}, overrides)
    kind = data.get("kind", "graph")
    if not isinstance(kind, str) or kind not in SCHEMAS:
        raise ConfigError(f"{path or 'config'}: unknown kind {kind!r} for pretraining "
                          f"(known: {', '.join(SCHEMAS)})")
    return kind


def _resume_state(checkpoint: str | Path) -> dict:
    with warnings.catch_warnings():  # the run itself warns when it falls back to the previous checkpoint
        warnings.simplefilter("ignore")
        return load_resume_checkpoint(checkpoint)


def _stage(state: dict, checkpoint: str | Path) -> str:
    stage = kind_of(state, checkpoint).stage
    if stage not in SCHEMAS:
        raise ConfigError(f"{checkpoint}: a {stage} checkpoint cannot be resumed by pretraining")
    return stage


def resumed_kind(checkpoint: str | Path) -> str:
    """The run kind of a checkpoint to resume (its model kind's training stage)."""
    return _stage(_resume_state(checkpoint), checkpoint)


def resumed_pretrain_config(checkpoint: str | Path):
    """``(run kind, typed config)`` of a checkpoint to resume: the config it was trained with (it wins
    inside the run; its experiment is where the resumed run logs)."""
    state = _resume_state(checkpoint)
    kind = _stage(state, checkpoint)
    return kind, rebuild(kind_of(state, checkpoint), lambda s: from_dict(SCHEMAS[kind][0], s["config"]), state,
                         checkpoint)


def load_pretrain_config(path: str | Path | None = None, overrides: Sequence[str] = ()):
    """The typed config of the pretraining YAML ``path`` (schema chosen by its ``kind:``)."""
    return load_config(SCHEMAS[config_kind(path, overrides)][0], path, overrides)


def pretrain(config, tracker: Tracker | None = None, resume: str | Path | None = None, progress: bool = True):
    """Run the pretraining ``config`` describes (or resume ``resume``: its checkpoint's config wins)."""
    kind = resumed_kind(resume) if resume else next(k for k, (cls, _) in SCHEMAS.items() if type(config) is cls)
    return SCHEMAS[kind][1](config, tracker, resume=resume, progress=progress)
