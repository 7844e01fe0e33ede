"""Build multimodal training data from real layouts: an imaging experiment, assay panels, molecules.

Sources, any combination:

* ``lab``: a folder in the layout of ``docs/data_layouts.md`` (JUMP-style
  ``load_data.csv`` + ``well.csv`` + ``compound.csv`` + images, and an
  ``assays.csv`` panel). ``molwm sim generate`` writes one; a real Cell
  Painting subset in the same layout reads the same way. Each imaged site
  is one sample (graph of its compound, the compound's assays, the image);
  control wells are image-only samples. Compounds are split by scaffold:
  pretraining sees the first part only, the rest is held out for evaluation.
* ``moleculeace``: MoleculeACE's 30-target ChEMBL panel, training cells only
  (MoleculeACE's own test cells are never seen in pretraining).
* ``graphs``: graph-only molecules from a dataset card (e.g. MOSES).
* ``profiles``: a real well-profile card (CellProfiler features per well, with dose and time):
  one sample per well, its compound's scaffold decides whether it is pretrained on or held out
  (:mod:`molwm.data.mm_profiles`).

Assay values are standardised per assay with statistics of the pretraining
rows only. Inputs that cannot be used (unparsable SMILES, unreadable images)
are returned as rejects with their source and row, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featurizers.assay import AssayNormalizer
from featurizers.image import CHANNELS, ChannelStats, featurize_sites
from featurizers.molecule import featurize_arrays
from molwm.data.mm_profiles import ProfileSource, load_profile_source
from molwm.data.multimodal import AssayStore, GraphStore, ImageStore, MultimodalData


@dataclass
class MultimodalDataConfig:
    """Where the multimodal samples come from.

    Attributes:
        lab: Folder in the ``docs/data_layouts.md`` layout (None: no imaging).
        lab_split: Scaffold split fractions of the lab's compounds
            (pretraining uses the first part).
        split_seed: Seed of that split.
        moleculeace: Add MoleculeACE's panel (training cells only).
        moleculeace_targets: A subset of its targets (None: all 30).
        graphs: Dataset card of graph-only molecules (None: none).
        graphs_limit: First N molecules of it.
        image_size: Crop side the image encoder takes.
        max_sites: Use at most this many lab sites (None: all).
        images: Read the lab's images (false: its sites become image-less samples,
            e.g. for a run that shows only assays; nothing is read from ``images/``).
        profiles: A well-profile card (e.g. ``cell_injury_profiles_compact``; None: none).
        profile_split: Scaffold split fractions of its compounds (pretraining uses the first part).
        profile_seed: Seed of that split.
        profile_controls: Pretrain on its DMSO wells too (profile-only samples).
    """

    lab: str | None = None
    lab_split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    split_seed: int = 0
    moleculeace: bool = False
    moleculeace_targets: list[str] | None = None
    graphs: str | None = None
    graphs_limit: int = 10_000
    image_size: int = 96
    max_sites: int | None = None
    images: bool = True
    profiles: str | None = None
    profile_split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    profile_seed: int = 0
    profile_controls: bool = True

    def validate(self) -> None:
        from molwm.config import ConfigError

        if self.lab is None and not self.moleculeace and self.graphs is None and self.profiles is None:
            raise ConfigError("no multimodal source: set data.lab, data.moleculeace, data.graphs or data.profiles")


@dataclass
class MultimodalBuild:
    """Training data plus what was held out and rejected.

    Attributes:
        train: Pretraining samples.
        heldout: Lab samples of held-out scaffolds (``part`` says val or test); None without a lab.
        heldout_part: ``[Nh]`` array of ``"val"``/``"test"``.
        normalizer: Per-assay standardisation fitted on ``train``.
        rejects: One dict per unusable input: source, row, input, reason.
        synthetic: True if any source is marked synthetic.
        image_stats: Per-channel intensity scaling fitted on the training sites (None without images).
        profiles: The profile wells, split and standardised (None without ``data.profiles``).
    """

    train: MultimodalData
    heldout: MultimodalData | None
    heldout_part: np.ndarray
    normalizer: AssayNormalizer
    rejects: list[dict]
    synthetic: bool
    image_stats: ChannelStats | None = None
    profiles: ProfileSource | None = None


@dataclass
class _Rows:
    smiles: list = field(default_factory=list)
    assays: list = field(default_factory=list)  # per row: dict assay -> raw value
    image: list = field(default_factory=list)  # per row: site row in the image array or -1
    source: list = field(default_factory=list)
    compound: list = field(default_factory=list)
    site: list = field(default_factory=list)  # per row: load_data.csv row or -1
    profile: list = field(default_factory=list)  # per row: well row in the profile source or -1

    def add(self, smiles, assays, image, source, compound, site=-1, profile=-1):
        self.site.append(site)
        self.profile.append(profile)
        self.smiles.append(smiles)
        self.assays.append(assays)
        self.image.append(image)
        self.source.append(source)
        self.compound.append(compound)


def _lab_rows(config: MultimodalDataConfig, rejects: list[dict], progress: bool):
    from molwm.data.formats import read_load_data, read_multitask_csv
    from molwm.data.splits import scaffold_split

    root = Path(config.lab)
    index = read_load_data(root / "load_data.csv")
    frame = index.frame
    if config.max_sites is not None:
        frame = frame.iloc[: config.max_sites]
    # raw intensities; scaled below with statistics of the training sites (per-site scaling would
    # erase the between-well intensity differences that make up a phenotype)
    image_row = np.full(len(frame), -1, dtype=np.int64)
    sites = None
    if config.images:
        sites = featurize_sites(index.site_paths()[: len(frame)], size=config.image_size, progress=progress,
                                normalize=None)
        for r in sites.rejects:
            rejects.append({"source": "lab/images", "row": r.index, "input": r.smiles, "reason": r.reason})
        image_row[sites.index] = np.arange(len(sites))
    panel = {}
    assay_names: list[str] = []
    if (root / "assays.csv").is_file():
        table = read_multitask_csv(root / "assays.csv")
        assay_names = list(table.tasks)
        for cid, vals, obs in zip(table.ids, table.values, table.observed):
            panel[cid] = {a: float(v) for a, v, o in zip(assay_names, vals, obs) if o}
    # scaffold split of the lab's compounds (controls have no compound)
    compounds = sorted({c for c, ctl in zip(frame["compound_id"], frame["is_control"]) if not ctl})
    smiles_of = dict(zip(frame["compound_id"], frame["smiles"]))
    parts = scaffold_split([smiles_of[c] or "" for c in compounds], config.lab_split, config.split_seed)
    part_of = {}
    for name, idx in zip(("train", "val", "test"), parts):
        part_of.update({compounds[i]: name for i in idx})
    train, held, held_part = _Rows(), _Rows(), []
    for k, (cid, smi, ctl) in enumerate(zip(frame["compound_id"], frame["smiles"], frame["is_control"])):
        if ctl:
            train.add(None, {}, image_row[k], "lab-control", "control", k)
            continue
        rows = train if part_of[cid] == "train" else held
        rows.add(smi, panel.get(cid, {}), image_row[k], "lab", cid, k)
        if rows is held:
            held_part.append(part_of[cid])
    return train, held, np.array(held_part), sites, assay_names, index.synthetic


def build_multimodal_data(config: MultimodalDataConfig, progress: bool = True,
                          profile_parts: Mapping[str, str] | None = None) -> MultimodalBuild:
    """Read every configured source into one :class:`MultimodalData` (plus held-out lab and profile samples).

    Args:
        profile_parts: Compound id -> ``train``/``val``/``test`` for ``data.profiles``, replacing its scaffold
            split (e.g. cross-validation folds).
    """
    rejects: list[dict] = []
    train, held, held_part, sites, assay_names, synthetic = _Rows(), _Rows(), np.array([]), None, [], False
    if config.lab is not None:
        train, held, held_part, sites, assay_names, synthetic = _lab_rows(config, rejects, progress)
    profiles = None
    if config.profiles is not None:  # before the panels, so their held-out compounds are never pretrained on
        profiles = load_profile_source(config.profiles, config.profile_split, config.profile_seed,
                                       config.profile_controls, rejects, profile_parts)
        held_part = np.concatenate([held_part.astype(str), profiles.part[profiles.part != "train"]])
        for i, (smi, cid, part) in enumerate(zip(profiles.smiles, profiles.compound, profiles.part)):
            (train if part == "train" else held).add(smi, {}, -1, config.profiles, cid, profile=i)
    if config.moleculeace:
        _add_moleculeace(config, train, held, assay_names, rejects)
    if config.graphs is not None:
        _add_graphs(config, train, rejects)
    images = np.zeros((0, len(CHANNELS), 1, 1), np.float16)
    present = np.zeros((0, len(CHANNELS)), bool)
    stats = None
    if sites is not None and len(sites):
        train_sites = np.asarray([i for i in train.image if i >= 0], dtype=np.int64)
        stats = ChannelStats.fit(sites.images[train_sites], sites.present[train_sites])
        images, present = stats.apply(sites.images, sites.present, dtype=np.float16), sites.present
    raw = _panel(train, assay_names)
    normalizer = AssayNormalizer(columns=list(assay_names)).fit(raw)  # no assays: fitted on no columns
    train_data = _data(train, assay_names, normalizer, images, present, rejects, "train", profiles)
    held_data = (_data(held, assay_names, normalizer, images, present, rejects, "heldout", profiles)
                 if held.smiles else None)
    return MultimodalBuild(train_data, held_data, held_part, normalizer, rejects, synthetic, stats, profiles)


def _add_moleculeace(config, train: _Rows, held: _Rows, assay_names: list[str], rejects: list[dict]) -> None:
    from molwm.data.panel import load_moleculeace_panel

    panel = load_moleculeace_panel(targets=config.moleculeace_targets).masked_to("train", drop_empty=True)
    for r in panel.rejects:
        rejects.append({"source": f"moleculeace/{r['assay']}", "row": r["row"], "input": r["smiles"],
                        "reason": r["reason"]})
    heldout = {s for s in held.smiles if s}
    assay_names.extend(a for a in panel.assays if a not in assay_names)
    for smi, vals, obs in zip(panel.smiles, panel.values, panel.observed):
        if smi in heldout:  # never pretrain on a held-out lab compound's measurements
            continue
        train.add(smi, {a: float(v) for a, v, o in zip(panel.assays, vals, obs) if o}, -1, "moleculeace", smi)


def _add_graphs(config, train: _Rows, rejects: list[dict]) -> None:
    from molwm.data.registry import get_card
    from molwm.data.sources import load_table

    table = load_table(get_card(config.graphs), limit=config.graphs_limit)
    for smi in table.smiles:
        train.add(smi, {}, -1, config.graphs, smi if isinstance(smi, str) else "")


def _panel(rows: _Rows, assay_names: list[str]) -> np.ndarray:
    col = {a: j for j, a in enumerate(assay_names)}
    values = np.full((len(rows.smiles), len(assay_names)), np.nan, dtype=np.float32)
    for i, d in enumerate(rows.assays):
        for a, v in d.items():
            values[i, col[a]] = v
    return values


def _data(rows: _Rows, assay_names, normalizer, images, present, rejects, what: str,
          profiles: ProfileSource | None = None) -> MultimodalData:
    has = [i for i, s in enumerate(rows.smiles) if isinstance(s, str) and s]
    arrays, bad = featurize_arrays([rows.smiles[i] for i in has])
    graph_of = np.full(len(rows.smiles), -1, dtype=np.int64)
    graph_of[np.asarray(has, dtype=np.int64)[arrays.index]] = np.arange(len(arrays))
    for r in bad:
        i = has[r.index]
        rejects.append({"source": f"{rows.source[i]} ({what})", "row": i, "input": r.smiles, "reason": r.reason})
    values = _panel(rows, assay_names)
    if assay_names:
        values = normalizer.transform(values).astype(np.float32)
    stores = {"graph": GraphStore(arrays, graph_of), "assay": AssayStore(values, list(assay_names)),
              "image": ImageStore(images, present, np.asarray(rows.image, dtype=np.int64))}
    if profiles is not None:
        stores["profile"] = profiles.store(np.asarray(rows.profile, dtype=np.int64))
    return MultimodalData(stores, list(rows.smiles), list(rows.source), list(rows.compound),
                          np.asarray(rows.site, dtype=np.int64))


def graphs_only(smiles: list) -> MultimodalData:
    """A graph-only :class:`MultimodalData` for a list of SMILES (unparsable ones get no graph)."""
    rows = _Rows()
    for s in smiles:
        rows.add(s, {}, -1, "query", s if isinstance(s, str) else "")
    empty = np.zeros((0, len(CHANNELS), 1, 1), np.float16)
    return _data(rows, [], None, empty, np.zeros((0, len(CHANNELS)), bool), [], "query")
