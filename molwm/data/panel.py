"""A sparse compound x assay panel built from per-target long tables (MoleculeACE layout).

MoleculeACE ships one CSV per target (``smiles, exp_mean [nM], y, cliff_mol,
split``), with ``y = -log10(activity / nM)`` (500 nM gives -2.699), its own
train/test split per target and an activity-cliff flag per molecule. The
panel pivots those tables into one ``[N, A]`` grid keyed by RDKit canonical
SMILES, keeping the split and the cliff flag **per cell**: a compound can be
train in one target and test in another.

Leakage rule: a pretraining run that uses panel *values* (as a modality or an
auxiliary target) must see only train cells, i.e. ``panel.masked_to("train")``.
Structures alone carry no labels; runs that want to be strict can also drop
the compounds of :meth:`AssayPanel.compounds_in_test_any`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd

from molwm.data.registry import DatasetError, get_card
from molwm.data.sources import resolve_files

SPLIT_NONE, SPLIT_TRAIN, SPLIT_TEST = 0, 1, 2
SPLIT_NAMES = {SPLIT_NONE: "", SPLIT_TRAIN: "train", SPLIT_TEST: "test"}
_SPLIT_CODES = {"train": SPLIT_TRAIN, "test": SPLIT_TEST}
CLIFF_COLUMN, SPLIT_COLUMN = "cliff_mol", "split"
PXC50_OFFSET = 9.0  # pXC50 = -log10(M) = 9 - log10(nM) = 9 + y


@dataclass
class AssayPanel:
    """Sparse compound x assay activity grid with per-cell split and cliff flags.

    Attributes:
        smiles: RDKit canonical SMILES, one per row, sorted.
        assays: Assay names (the card's file tags, e.g. ``CHEMBL1862_Ki``).
        values: Activity, NaN where unmeasured (mean of repeats where a
            compound was measured more than once in one assay).
        observed: True where ``values`` holds a measurement.
        split: ``SPLIT_NONE`` (0, unmeasured), ``SPLIT_TRAIN`` (1) or
            ``SPLIT_TEST`` (2), as shipped by the source for that target.
        cliff: The source's ``cliff_mol`` flag for that compound in that assay.
        n_measurements: Rows averaged into each cell (0 where unmeasured).
        units: ``pXC50`` (-log10 M, i.e. pKi / pEC50) or ``y`` (-log10 nM as shipped).
        source: Card name, distribution and version, per-assay file sha256.
        rejects: One dict per unusable row: ``assay``, ``file``, ``row``
            (0-based data row, header excluded), ``smiles``, ``reason``.
        duplicates: One dict per cell with repeats: ``assay``, ``smiles``,
            ``count``, ``rows``, ``split`` (test wins when repeats disagree).

    Shapes:
        values, observed, split, cliff, n_measurements: ``[N, A]``.
    """

    smiles: list[str]
    assays: list[str]
    values: np.ndarray  # float32 [N, A]
    observed: np.ndarray  # bool [N, A]
    split: np.ndarray  # uint8 [N, A]
    cliff: np.ndarray  # bool [N, A]
    n_measurements: np.ndarray  # uint16 [N, A]
    units: str = "pXC50"
    source: dict = field(default_factory=dict)
    rejects: list[dict] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        """``(N, A)``."""
        return len(self.smiles), len(self.assays)

    def train_mask(self) -> np.ndarray:
        """``[N, A]`` bool: measured cells in the source's train split."""
        return self.split == SPLIT_TRAIN

    def test_mask(self) -> np.ndarray:
        """``[N, A]`` bool: measured cells in the source's test split."""
        return self.split == SPLIT_TEST

    def compounds_in_test_any(self) -> np.ndarray:
        """``[N]`` bool: compounds with a test measurement in at least one assay."""
        return self.test_mask().any(axis=1)

    def summary(self) -> dict:
        """Size, density and per-assay counts (JSON-serialisable)."""
        n, a = self.shape
        train, test = self.train_mask(), self.test_mask()
        per_assay = {
            name: {
                "n": int(self.observed[:, j].sum()),
                "train": int(train[:, j].sum()),
                "test": int(test[:, j].sum()),
                "cliff": int(self.cliff[:, j].sum()),
                "test_cliff": int((self.cliff[:, j] & test[:, j]).sum()),
            }
            for j, name in enumerate(self.assays)
        }
        n_cells = int(self.observed.sum())
        return {
            "n_compounds": n,
            "n_assays": a,
            "n_cells": n_cells,
            "density": n_cells / (n * a) if n and a else 0.0,
            "n_train_cells": int(train.sum()),
            "n_test_cells": int(test.sum()),
            "n_compounds_in_test_any": int(self.compounds_in_test_any().sum()),
            "n_rejects": len(self.rejects),
            "n_duplicate_cells": len(self.duplicates),
            "units": self.units,
            "per_assay": per_assay,
        }

    def frame(self) -> pd.DataFrame:
        """Long table of measured cells: ``smiles, assay, value, split, cliff, n_measurements``."""
        rows, cols = np.nonzero(self.observed)
        return pd.DataFrame({
            "smiles": np.asarray(self.smiles, dtype=object)[rows],
            "assay": np.asarray(self.assays, dtype=object)[cols],
            "value": self.values[rows, cols],
            "split": np.asarray([SPLIT_NAMES[int(c)] for c in self.split[rows, cols]], dtype=object),
            "cliff": self.cliff[rows, cols],
            "n_measurements": self.n_measurements[rows, cols],
        })

    def masked_to(self, part: Literal["train", "test"], drop_empty: bool = False) -> "AssayPanel":
        """A copy holding only the cells of one split; the others become unmeasured.

        Args:
            part: ``train`` (what a pretraining run may see) or ``test``.
            drop_empty: Also drop compounds left with no measured cell
                (row indices then no longer match this panel).

        Returns:
            A new panel; this one is unchanged.
        """
        if part not in _SPLIT_CODES:
            raise ValueError(f"part must be 'train' or 'test', got {part!r}")
        keep = self.split == _SPLIT_CODES[part]  # [N, A]
        rows = np.flatnonzero(keep.any(axis=1)) if drop_empty else np.arange(len(self.smiles))
        keep = keep[rows]
        return dataclasses.replace(
            self,
            smiles=[self.smiles[i] for i in rows],
            values=np.where(keep, self.values[rows], np.nan).astype(np.float32),
            observed=keep.copy(),
            split=np.where(keep, self.split[rows], SPLIT_NONE).astype(np.uint8),
            cliff=self.cliff[rows] & keep,
            n_measurements=np.where(keep, self.n_measurements[rows], 0).astype(np.uint16),
            source={**self.source, "masked_to": part},
            rejects=list(self.rejects),
            duplicates=[d for d in self.duplicates if d["split"] == part],
        )


def _canonical(smiles: Sequence) -> list[str | None]:
    from rdkit import Chem, rdBase

    out: list[str | None] = []
    with rdBase.BlockLogs():
        for s in smiles:
            mol = Chem.MolFromSmiles(s) if isinstance(s, str) and s.strip() else None
            out.append(Chem.MolToSmiles(mol) if mol is not None else None)
    return out


def _read_long(card, path: Path, value_col: str) -> pd.DataFrame:
    smiles_col = card.columns.smiles or "smiles"
    try:
        df = pd.read_csv(path)
    except (ValueError, OSError) as err:
        raise DatasetError(f"dataset '{card.name}': could not read {path}: {err}") from None
    missing = [c for c in (smiles_col, value_col, SPLIT_COLUMN, CLIFF_COLUMN) if c not in df.columns]
    if missing:
        raise DatasetError(
            f"dataset '{card.name}': {path} has no column(s) {missing}; columns: {list(df.columns)}")
    split = df[SPLIT_COLUMN].astype(str).str.strip().str.lower()
    bad = ~split.isin(list(_SPLIT_CODES))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DatasetError(f"dataset '{card.name}': {path} row {row}: split {df[SPLIT_COLUMN].iloc[row]!r} "
                           "is neither 'train' nor 'test'")
    return pd.DataFrame({
        "raw": df[smiles_col].to_numpy(dtype=object),
        "value": pd.to_numeric(df[value_col], errors="coerce").to_numpy(dtype=np.float64),
        "split": split.map(_SPLIT_CODES).to_numpy(dtype=np.uint8),
        "cliff": pd.to_numeric(df[CLIFF_COLUMN], errors="coerce").fillna(0).to_numpy() > 0,
        "row": np.arange(len(df)),
    })


def load_moleculeace_panel(card: str | Path = "moleculeace", targets: Sequence[str] | None = None,
                           units: Literal["pXC50", "y"] = "pXC50", verify: bool = True,
                           extra_dirs: Sequence[str | Path] = ()) -> AssayPanel:
    """Pivot a MoleculeACE-layout card (one long CSV per target) into an :class:`AssayPanel`.

    Rows whose SMILES RDKit cannot parse, or whose value is missing, go to
    ``panel.rejects`` with file and row. Repeats of one compound within one
    target are averaged (``panel.duplicates`` reports them; the cell is test
    if any repeat is test, and cliff if any repeat is).

    Args:
        card: Card name or path; its files' tags become assay names and
            ``columns.targets[0]`` is the value column (``y``).
        targets: Assay tags to keep, in this order (default: all, card order).
        units: ``pXC50`` (= 9 + y, i.e. pKi / pEC50) or ``y`` (-log10 nM, as shipped).
        verify: Check each file's SHA-256 against the card.
        extra_dirs: Extra folders to look for cards in.

    Returns:
        The panel; compounds sorted by canonical SMILES.

    Raises:
        DatasetError: Missing package or file, checksum mismatch, missing
            column, a split value other than train/test, or an unknown target.
    """
    if units not in ("pXC50", "y"):
        raise ValueError(f"units must be 'pXC50' or 'y', got {units!r}")
    card_obj = get_card(card, extra_dirs)
    if not card_obj.columns.targets:
        raise DatasetError(f"dataset '{card_obj.name}': columns.targets must name the value column (e.g. y)")
    value_col = card_obj.columns.targets[0]
    refs = {(r.tag or Path(r.path).stem): r for r in card_obj.source.files}
    names = list(refs) if targets is None else list(targets)
    unknown = [t for t in names if t not in refs]
    if len(set(names)) != len(names):
        raise DatasetError(f"dataset '{card_obj.name}': targets listed twice in {names}")
    if unknown:
        raise DatasetError(
            f"dataset '{card_obj.name}': unknown target(s) {unknown}; known: {', '.join(refs)}")
    subset = dataclasses.replace(card_obj.source, files=[refs[t] for t in names])
    sub = dataclasses.replace(card_obj, source=subset)
    resolved = resolve_files(sub, verify)

    tables = [_read_long(card_obj, path, value_col) for _, path, _ in resolved]
    # targets share many compounds: parse each distinct raw string once
    distinct = pd.unique(pd.concat([t["raw"] for t in tables], ignore_index=True))
    canon = dict(zip(distinct, _canonical(distinct.tolist())))
    parts, rejects = [], []
    for j, (name, (ref, _, _), df) in enumerate(zip(names, resolved, tables)):
        df["smiles"] = df["raw"].map(canon)
        for r in df[df["smiles"].isna() | np.isnan(df["value"])].itertuples():
            if pd.isna(r.smiles):
                reason = "unparsable SMILES" if isinstance(r.raw, str) and r.raw.strip() else "missing SMILES"
            else:
                reason = f"missing value in '{value_col}'"
            rejects.append(
                {"assay": name, "file": ref.path, "row": int(r.row), "smiles": r.raw, "reason": reason})
        parts.append(df[df["smiles"].notna() & ~np.isnan(df["value"])].assign(assay=j))
    long = pd.concat(parts, ignore_index=True)
    if units == "pXC50":
        long["value"] = long["value"] + PXC50_OFFSET
    cells = long.groupby(["smiles", "assay"], sort=True).agg(
        value=("value", "mean"), split=("split", "max"), cliff=("cliff", "any"), count=("row", "size"),
        rows=("row", list)).reset_index()
    smiles = sorted(cells["smiles"].unique())
    index = {s: i for i, s in enumerate(smiles)}
    rows = cells["smiles"].map(index).to_numpy()
    cols = cells["assay"].to_numpy()
    n, a = len(smiles), len(names)
    values = np.full((n, a), np.nan, dtype=np.float32)
    values[rows, cols] = cells["value"].to_numpy(dtype=np.float32)
    observed = np.zeros((n, a), dtype=bool)
    observed[rows, cols] = True
    split = np.zeros((n, a), dtype=np.uint8)
    split[rows, cols] = cells["split"].to_numpy(dtype=np.uint8)
    cliff = np.zeros((n, a), dtype=bool)
    cliff[rows, cols] = cells["cliff"].to_numpy(dtype=bool)
    counts = np.zeros((n, a), dtype=np.uint16)
    counts[rows, cols] = cells["count"].to_numpy()
    duplicates = [
        {"assay": names[c.assay], "smiles": c.smiles, "count": int(c.count), "rows": [int(x) for x in c.rows],
         "split": SPLIT_NAMES[int(c.split)]}
        for c in cells[cells["count"] > 1].itertuples()
    ]
    dist = card_obj.source.distribution
    source = {
        "card": card_obj.name,
        "kind": card_obj.source.kind,
        "distribution": dist,
        "version": metadata.version(dist) if card_obj.source.kind == "package" and dist else None,
        "value_column": value_col,
        "files": {name: {"path": ref.path, "sha256": digest}
                  for name, (ref, _, digest) in zip(names, resolved)},
    }
    return AssayPanel(smiles, names, values, observed, split, cliff, counts, units, source, rejects,
                      duplicates)
