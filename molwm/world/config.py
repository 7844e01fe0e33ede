"""The world model's run config (``kind: world``): data sources, held-out drugs, network and schedule."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from molwm.config import ConfigError
from molwm.run_config import RunConfig
from molwm.world.model import WorldNetConfig


@dataclass
class WorldDataConfig:
    """Where the time courses come from and which drugs are held out.

    Attributes:
        source: ``lab`` (a synthetic lab folder made with several ``--times``), ``thunor``, or
            ``lincs`` (real cells: LINCS Cell Painting batch 2 relative cell counts, :mod:`molwm.world.lincs`).
        lab: The lab folder (``source: lab``).
        thunor_file: thunor HDF5 file (default: the one the ``thunor`` package ships).
        dataset: ``source: lincs``: the card, ``lincs_cellpainting_batch2_compact`` (shipped inside molwm,
            the default) or ``lincs_cellpainting_batch2`` (the raw files, from a mirror folder).
        data_dir: ``source: lincs``: a local mirror folder holding the raw files (also ``$MOLWM_DATA_MIRROR``).
        holdout_contexts: Cell lines (contexts) whose conditions are all held out (a new cell line).
        drugs_limit: Use only the conditions of the first N drugs (in the data's order) and the controls
            (tiny runs: tests, the demo); None: every drug.
        calibration_fraction: Share of the training drugs (by scaffold) kept out of training to calibrate
            the forecast intervals on (0: no calibration; forecasts then carry the raw ensemble spread).
        calibration: ``conformal`` (split conformal on |residual| / ensemble std) or ``zscale``.
        compound: Compound features: ``morgan+rdkit2d``, ``morgan``, ``rdkit2d``, ``none`` or ``graph:<model>``.
        split: Held-out drugs: ``scaffold`` (lab default), ``folds`` (leave drugs out), ``names``, ``none``.
        test_fraction: Held-out share for ``scaffold``.
        n_folds: Folds for ``folds``.
        fold: The held-out fold.
        holdout: Drug names for ``names``.
        max_time_h: Train only on observations up to this time (held-out late time points).
        seed: Seeds the split.
    """

    source: Literal["lab", "thunor", "lincs"] = "lab"
    lab: str = ""
    thunor_file: str | None = None
    dataset: str = "lincs_cellpainting_batch2_compact"
    data_dir: str | None = None
    holdout_contexts: list[str] = field(default_factory=list)
    drugs_limit: int | None = None
    calibration_fraction: float = 0.0
    calibration: Literal["conformal", "zscale"] = "conformal"
    compound: str = "morgan+rdkit2d"
    split: Literal["scaffold", "folds", "names", "none"] = "scaffold"
    test_fraction: float = 0.2
    n_folds: int = 9
    fold: int = 0
    holdout: list[str] = field(default_factory=list)
    max_time_h: float | None = None
    seed: int = 0


@dataclass(kw_only=True)
class WorldConfig(RunConfig):
    """A world-model training run (``kind: world``; the shared run settings are those of :class:`RunConfig`).

    Attributes:
        objective: ``jepa`` (predict the target encoder's embedding of the future observation)
            or ``raw`` (predict the raw future observation: the non-JEPA baseline).
        rollout_steps: Future observations per sampled course (teacher-forced and rolled out).
        rollout_weight: Weight of the autoregressive rollout loss.
        vicreg_weight: Weight of the anti-collapse term on the state embeddings (jepa only).
        forecast_step_h: Forecasts roll out in steps of at most this many hours (0: one jump).
        probe_rows: Training observations used to fit the read-out probes.
        max_steps: Steps in the run (courses are sampled with replacement, so ``epochs`` is unused;
            ``budget_samples`` and ``budget_seconds`` can end it earlier).
    """

    kind: Literal["world"] = "world"
    objective: Literal["jepa", "raw"] = "jepa"
    data: WorldDataConfig = field(default_factory=WorldDataConfig)
    model: WorldNetConfig = field(default_factory=WorldNetConfig)
    rollout_steps: int = 3
    rollout_weight: float = 1.0
    vicreg_weight: float = 1.0
    forecast_step_h: float = 0.0
    probe_rows: int = 20000
    max_steps: int | None = 2000
    batch_size: int = 128
    weight_decay: float = 0.01
    log_every: int = 50
    health_every: int = 200
    checkpoint_every: int = 500
    out_dir: str = "outputs/world"
    experiment: str = "molwm-world"

    def validate(self) -> None:
        super().validate()
        if not self.max_steps:
            raise ConfigError("max_steps: a world-model run needs a number of steps")
        if self.rollout_steps <= 0:
            raise ConfigError(f"rollout_steps must be positive, got {self.rollout_steps}")
        if self.data.drugs_limit is not None and self.data.drugs_limit < 1:
            raise ConfigError(f"data.drugs_limit must be at least 1 (or null for every drug), got {self.data.drugs_limit}")
        if not 0.0 <= self.data.calibration_fraction < 1.0:
            raise ConfigError(f"data.calibration_fraction must be in [0, 1), got {self.data.calibration_fraction}")
        if self.data.source == "lab" and not self.data.lab:
            raise ConfigError("data.lab: a synthetic lab folder is required for source: lab "
                              "(make one with `molwm sim generate --times 0,8,16,24,48 ...`)")
