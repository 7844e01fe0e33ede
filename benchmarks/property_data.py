"""The rows of ``benchmarks/property.py``: one :class:`BenchSet` per MoleculeACE target or packaged set.

Every method in the benchmark reads the same :class:`BenchSet`: SMILES, labels and,
per seed, the same (train, val, test) positions. Methods that need no validation rows
(forests, SVM) are fitted on ``train`` only, so every method sees the same labelled rows.

* MoleculeACE: one set per target, its own train/test split (``split`` column) and its
  ``cliff_mol`` flag; validation is a seeded random 10% of the target's train molecules
  (:func:`carve_val`). Values are ``y`` as shipped (-log10 nM), so RMSE is in pKi / pEC50.
* solubility, FreeSolv, B3DB: the packaged cards, the molecules molwm featurises (its
  cache), split as ``configs/finetune/<set>.yaml`` says (scaffold 80/10/10 by seed:
  exactly the rows ``molwm finetune`` would draw), or from a ``split.json`` in Chemprop's
  ``--splits-file`` format (source rows; ``{dataset}`` in the path is replaced).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from molwm.config import load_config
from molwm.data.batch import CachedGraphs
from molwm.data.panel import load_moleculeace_panel
from molwm.data.prepare import PrepareConfig, prepare_dataset
from molwm.data.splits import load_splits, make_split, save_splits
from molwm.train.finetune import FinetuneConfig

ROOT = Path(__file__).resolve().parent.parent
PACKAGED = ("solubility", "freesolv", "b3db_classification")
VAL_FRACTION = 0.1


@dataclass
class BenchSet:
    """One benchmark set: molecules, labels and the rows of every seed.

    Attributes:
        name: Target tag (``CHEMBL1862_Ki``) or card name.
        group: ``moleculeace`` or ``packaged``.
        task: ``regression`` or ``classification``.
        smiles: ``N`` SMILES, in position order.
        y: ``[N]`` labels (float; 0/1 for classification).
        splits: One ``(train, val, test)`` of positions per seed.
        seeds: The seeds, aligned with ``splits``.
        cliff: ``[N]`` bool, MoleculeACE's ``cliff_mol`` flag (None for packaged sets).
        card: The card molwm fine-tunes on (a name, or a card file written for a target).
        source_rows: ``[N]`` the card's source row of every position (for ``split.json``).
    """

    name: str
    group: str
    task: str
    smiles: list[str]
    y: np.ndarray
    splits: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    seeds: list[int]
    cliff: np.ndarray | None = None
    card: str = ""
    source_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def metric(self) -> str:
        """The primary test metric: RMSE (lower is better) or ROC-AUC (higher)."""
        return "roc_auc" if self.task == "classification" else "rmse"

    def split_file(self, path: Path) -> Path:
        """Write the seeds' rows as source rows (Chemprop's ``--splits-file``; molwm's ``split.file``)."""
        return save_splits([tuple(self.source_rows[p] for p in s) for s in self.splits], path)


def carve_val(train: np.ndarray, seed: int, key: str, fraction: float = VAL_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Split ``train`` into (train, val): a seeded random ``fraction`` (at least 1 row) becomes validation.

    The draw depends on the seed and on ``key`` (the target), not on the order targets are run in.
    """
    train = np.asarray(train, np.int64)
    salt = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng([seed, salt])
    n_val = max(1, round(fraction * len(train)))
    val = np.sort(rng.choice(train, n_val, replace=False))
    return np.setdiff1d(train, val), val


def moleculeace_sets(targets: list[str] | None, seeds: list[int], work: Path) -> list[BenchSet]:
    """One :class:`BenchSet` per MoleculeACE target, with a card file for molwm under ``work``.

    Args:
        targets: Target tags (None: all 30).
        seeds: Validation draws (MoleculeACE's train/test split is the same for every seed).
        work: Folder for the per-target CSV and card molwm fine-tunes on.
    """
    panel = load_moleculeace_panel(targets=targets, units="y")
    out = []
    for j, name in enumerate(panel.assays):
        rows = np.flatnonzero(panel.observed[:, j])
        smiles = [panel.smiles[i] for i in rows]
        y = panel.values[rows, j].astype(np.float64)
        part = panel.split[rows, j]
        train = np.flatnonzero(part == 1)
        test = np.flatnonzero(part == 2)
        splits = [(*carve_val(train, seed, name), test) for seed in seeds]
        card = _write_card(work / "cards", name, smiles, y)
        out.append(BenchSet(name=name, group="moleculeace", task="regression", smiles=smiles, y=y, splits=splits,
                            seeds=list(seeds), cliff=panel.cliff[rows, j].astype(bool), card=str(card),
                            source_rows=np.arange(len(rows))))
    return out


def _write_card(folder: Path, name: str, smiles: list[str], y: np.ndarray) -> Path:
    """A local regression card over ``smiles, y`` (source row i = position i), checksum pinned."""
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / f"{name}.csv"
    csv.write_text("smiles,y\n" + "".join(f"{s},{float(v)!r}\n" for s, v in zip(smiles, y)))
    digest = hashlib.sha256(csv.read_bytes()).hexdigest()
    card = folder / f"moleculeace_{name}.yaml"
    card.write_text(
        f"name: moleculeace_{name}\nsource:\n  kind: local\n  files:\n    - path: {csv.name}\n"
        f"      sha256: {digest}\ncolumns:\n  smiles: smiles\n  targets: [y]\ntask:\n  type: regression\n"
        "  metric: rmse\n  units: \"-log10(nM)\"\nlicense: MIT\n"
        f"citation: MoleculeACE (van Tilborg et al. 2022), target {name}, as shipped in MoleculeACE 3.0.0\n")
    return card


def packaged_set(dataset: str, seeds: list[int], split_file: str | None = None,
                 cache_dir: str | None = None) -> BenchSet:
    """A packaged card, its featurised molecules and the rows ``molwm finetune`` would use.

    Args:
        dataset: ``solubility``, ``freesolv`` or ``b3db_classification``.
        seeds: One split per seed (scaffold by seed, as ``configs/finetune/<dataset>.yaml``).
        split_file: A ``split.json`` of source rows instead (one entry per seed, or one for all);
            ``{dataset}`` is replaced by the dataset name.
        cache_dir: molwm's featurisation cache root.
    """
    config = load_config(FinetuneConfig, ROOT / "configs" / "finetune" / f"{dataset}.yaml", ["mode=scratch"])
    prep = prepare_dataset(PrepareConfig(dataset=dataset, progress=False, cache_dir=cache_dir))
    graphs = CachedGraphs(prep.cache, with_labels=True)
    y = np.concatenate(graphs.labels)[:, 0].astype(np.float64)  # [N]; every packaged card has one target
    smiles = prep.cache.meta()["smiles"].tolist()
    source = graphs.source_index
    task = "classification" if "classification" in prep.card.task.type else "regression"
    if split_file:
        pos_of = {int(r): i for i, r in enumerate(source)}
        loaded = load_splits(split_file.format(dataset=dataset))
        loaded = (loaded * len(seeds))[: len(seeds)]
        splits = [tuple(np.array([pos_of[int(r)] for r in p if int(r) in pos_of], np.int64) for p in s)
                  for s in loaded]
    else:
        splits = [tuple(np.asarray(p, np.int64) for p in
                        make_split(config.split.kind, smiles, tuple(config.split.fractions), seed, y))
                  for seed in seeds]
    return BenchSet(name=dataset, group="packaged", task=task, smiles=smiles, y=y, splits=splits, seeds=list(seeds),
                    card=dataset, source_rows=np.asarray(source, np.int64))


def describe(s: BenchSet) -> dict:
    """Counts of the set (first seed's rows), for the JSON and the tables."""
    train, val, test = s.splits[0]
    out = {"n": len(s.smiles), "n_train": len(train), "n_val": len(val), "n_test": len(test), "task": s.task,
           "metric": s.metric}
    if s.cliff is not None:
        out["n_test_cliff"] = int(s.cliff[test].sum())
    return out


def splits_digest(s: BenchSet) -> str:
    """SHA-256 of the rows of every seed: the same digest means the same rows."""
    rows = [[p.tolist() for p in split] for split in s.splits]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]
