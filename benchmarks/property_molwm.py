"""molwm's rows of ``benchmarks/property.py``: fine-tuned from a pretrained model, and the same network from scratch.

Both go through the library's Python API (:func:`molwm.train.finetune.run_finetune`), one
call per seed on that seed's rows (given as ``split.file``), then the saved one-member
model predicts the test molecules (:func:`molwm.api.load_model`), so cliff RMSE can be
scored on them. Settings: ``configs/finetune/<set>.yaml`` for the packaged sets and
``configs/finetune/solubility.yaml``'s for the MoleculeACE targets (60 epochs at most,
early stopping on validation, patience 15), plus any ``key=value`` overrides. Scratch
uses the pretrained model's encoder sizes, so the two rows differ only in the start.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from molwm.api import load_model
from molwm.config import load_config
from molwm.data.splits import save_splits
from molwm.kinds import load_encoder
from molwm.train.finetune import FinetuneConfig, run_finetune

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["epochs=3", "patience=2"]


def base_yaml(s) -> Path:
    """The fine-tuning config a set starts from."""
    name = s.name if s.group == "packaged" else "solubility"
    return ROOT / "configs" / "finetune" / f"{name}.yaml"


def encoder_config(uri: str):
    """The pretrained model's encoder config (scratch is built the same size)."""
    return load_encoder(uri).config


def finetune(s, k: int, mode: str, from_uri: str | None, work: Path, overrides: list[str], tracker=None,
             encoder=None) -> tuple[np.ndarray, float]:
    """:func:`finetune_frame`'s test predictions (the first value column) and seconds."""
    frame, seconds = finetune_frame(s, k, mode, from_uri, work, overrides, tracker, encoder)
    return frame[frame.columns[1]].to_numpy(np.float64), seconds


def finetune_frame(s, k: int, mode: str, from_uri: str | None, work: Path, overrides: list[str], tracker=None,
                   encoder=None):
    """Fine-tune seed ``k`` of set ``s`` with molwm; its query answer on the test rows and the fine-tuning seconds.

    Args:
        s: The :class:`property_data.BenchSet`.
        k: Seed index.
        mode: ``full`` or ``stack`` (from ``from_uri``), or ``scratch``.
        from_uri: Pretrained model URI (``molwm:base``, a checkpoint, ``runs:/...``); None for scratch.
        work: Folder for the split file and the checkpoint.
        overrides: ``FinetuneConfig`` ``key=value`` overrides (e.g. ``epochs=30``).
        tracker: molwm tracker (default: none).
        encoder: Encoder config for scratch (default: the config file's).
    """
    seed = s.seeds[k]
    folder = work / s.name / mode / f"seed{seed}"
    split = save_splits([tuple(s.source_rows[p] for p in s.splits[k])], folder / "rows.json")  # this seed's rows
    items = [f"dataset={s.card}", f"mode={mode}", f"seeds=[{seed}]", f"split.file={split}", f"out_dir={folder}",
             f"run_name=bench-{s.name}-{mode}-seed{seed}", *overrides]
    if mode != "scratch":
        items.append(f"from_model={from_uri}")
    config = load_config(FinetuneConfig, base_yaml(s), items)
    if mode == "scratch" and encoder is not None:
        config = dataclasses.replace(config, encoder=encoder)
    t0 = time.perf_counter()
    result = run_finetune(config, tracker, progress=False)
    seconds = time.perf_counter() - t0
    test = s.splits[k][2]
    return load_model(result.checkpoint).predict([s.smiles[i] for i in test]), seconds

