"""Real well profiles as multimodal samples: one sample per well (its compound's graph, its profile, dose, time).

The profile set is a card read by :func:`molwm.data.profile_cards.load_profile_set` (the cell-injury screen,
the LINCS plate SQ00015054, raw or compact). Its features are published already normalised to each
plate's DMSO wells and feature-selected upstream; here each feature is only standardised with the mean and
standard deviation of the pretraining wells, then clipped to ``+-CLIP`` (a few upstream z-scores run into
the hundreds and would dominate a squared error).

Compounds are split by scaffold (``profile_split``, ``profile_seed``): pretraining sees the first part's
wells, the others are held out (never pretrained on). DMSO wells have no compound: they are profile-only
pretraining samples. A well that cannot be used (a treated well without a structure, dose or time, or with
non-finite features) is a reject with its row and reason, as are the wells the card's reader rejected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from molwm.data.profile_cards import load_profile_set
from molwm.data.profile_store import ProfileStore, dose_code
from molwm.data.splits import scaffold_split

CLIP = 10.0
"""Standardised feature values are clipped to ``[-CLIP, CLIP]``."""


@dataclass
class ProfileSource:
    """The usable wells of a profile card, split and standardised.

    Attributes:
        card: The card's name.
        values: ``[Np, F]`` float32 standardised features.
        dose_log: ``[Np]`` ``log10(dose / uM)`` (0 for DMSO).
        time_h: ``[Np]`` hours.
        control: ``[Np]`` bool DMSO wells.
        smiles: ``Np`` SMILES (None for DMSO wells).
        compound: ``Np`` compound keys (``control`` for DMSO wells).
        part: ``[Np]`` ``train``/``val``/``test`` (DMSO wells: ``train``).
        label: ``Np`` class labels (injury class, MoA) as published.
        mean: ``[F]`` training-well means; std: ``[F]`` training-well standard deviations.
        feature_names: ``F`` names.
    """

    card: str
    values: np.ndarray
    dose_log: np.ndarray
    time_h: np.ndarray
    control: np.ndarray
    smiles: list
    compound: list[str]
    part: np.ndarray
    label: list[str]
    mean: np.ndarray
    std: np.ndarray
    feature_names: list[str]

    def __len__(self) -> int:
        return len(self.values)

    def store(self, of: np.ndarray) -> ProfileStore:
        """The store of samples whose profile row is ``of [N]`` (-1: none)."""
        return ProfileStore(self.values, self.dose_log, self.time_h, self.control, np.asarray(of, np.int64))

    def stats(self) -> dict:
        """What a checkpoint keeps to standardise new profiles the same way."""
        return {"card": self.card, "features": list(self.feature_names), "mean": self.mean.tolist(),
                "std": self.std.tolist(), "clip": CLIP}


def plain_smiles(smiles: str) -> str:
    """SMILES without a ChemAxon extension (``... |&1:3,r|``, as the Repurposing Hub writes stereo groups)."""
    head, _, rest = smiles.strip().partition(" ")
    return head if rest.startswith("|") else smiles.strip()


def usable_wells(wells, controls: bool) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """``(rows kept, [(row, reason) of the others])`` of a :class:`ProfileWells`."""
    w = wells.wells
    finite = np.isfinite(wells.features).all(1)
    keep, bad = [], []
    for i, (smi, dose, time, ctl) in enumerate(zip(w["smiles"], w["dose_uM"], w["time_h"], w["is_control"])):
        if not finite[i]:
            reason = "non-finite feature values"
        elif not np.isfinite(time):
            reason = "no time"
        elif ctl:
            reason = "" if controls else None
        elif not isinstance(smi, str) or not smi.strip():
            reason = "no structure"
        elif not (np.isfinite(dose) and dose > 0):
            reason = "no dose"
        else:
            reason = ""
        if reason == "":
            keep.append(i)
        elif reason is not None:  # DMSO wells left out on purpose are not rejects
            bad.append((i, reason))
    return np.asarray(keep, np.int64), bad


def load_profile_source(card: str, split: list[float], seed: int, controls: bool, rejects: list[dict],
                        parts: Mapping[str, str] | None = None) -> ProfileSource:
    """Read ``card``, keep its usable wells (the others go to ``rejects``), split by scaffold, standardise.

    Args:
        parts: Compound id -> ``train``/``val``/``test``, replacing the scaffold split (cross-validation
            folds); a compound it does not name is held out (``test``).
    """
    wells = load_profile_set(card)
    for r in wells.rejects.itertuples(index=False):
        rejects.append({"source": f"{card} (reader)", "row": f"{r.plate}/{r.well}", "input": str(r.file),
                        "reason": str(r.reason)})
    keep, bad = usable_wells(wells, controls)
    w = wells.wells
    for i, reason in bad:
        rejects.append({"source": card, "row": int(i), "input": f"{w['plate'].iloc[i]}/{w['well'].iloc[i]}",
                        "reason": reason})
    w = w.iloc[keep].reset_index(drop=True)
    x = wells.features[keep].astype(np.float64)  # [Np, F]
    control = w["is_control"].to_numpy(bool)
    compounds = sorted(set(w.loc[~control, "compound_id"]))
    smiles_of = dict(zip(w.loc[~control, "compound_id"], w.loc[~control, "smiles"]))
    if parts is None:
        split_idx = scaffold_split([smiles_of[c] for c in compounds], split, seed)
        part_of = {compounds[i]: name for name, idx in zip(("train", "val", "test"), split_idx) for i in idx}
    else:
        part_of = {c: parts.get(c, "test") for c in compounds}
    part = np.array(["train" if c else part_of[cid] for cid, c in zip(w["compound_id"], control)])
    train = part == "train"
    mean = x[train].mean(0)
    std = x[train].std(0)
    std = np.where(std > 1e-6, std, 1.0)
    values = np.clip((x - mean) / std, -CLIP, CLIP).astype(np.float32)
    return ProfileSource(card=card, values=values, dose_log=dose_code(w["dose_uM"].to_numpy(float)),
                         time_h=w["time_h"].to_numpy(np.float32), control=control,
                         smiles=[None if c else plain_smiles(s) for s, c in zip(w["smiles"], control)],
                         compound=["control" if c else cid for cid, c in zip(w["compound_id"], control)],
                         part=part, label=list(w["label"].astype(str)), mean=mean.astype(np.float32),
                         std=std.astype(np.float32), feature_names=list(wells.feature_names))
