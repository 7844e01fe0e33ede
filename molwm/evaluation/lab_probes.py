"""Frozen-encoder probes on the synthetic lab's ground truth: does an embedding carry the hidden biology?

The lab (``molwm sim generate``) keeps what produced every measurement under
``truth/``: each compound's mechanism vector (``mechanism.npy``, rows in
``compound_truth.csv`` order) and each well's cell state (``state.npy``, rows
in ``well.csv`` order). A probe reads one modality's pooled embedding (the
encoder downstream tasks use: the JEPA's EMA target, the trained encoder
otherwise) for lab samples of held-out scaffolds, which pretraining never
saw, fits a ridge map (penalty by exact leave-one-out) on the samples of half
of those compounds and reports R² on the other half (mean over the truth's
dimensions). The same samples and halves at every step and for every
objective, so the curves compare. Beside R², the metric JUMP papers report:
mAP of phenotypic consistency (compounds of one mechanism class retrieve each
other; :func:`mechanism_classes`) and, when negative-control samples are
given and compounds have replicates, of phenotypic activity (replicates
retrieve each other against DMSO); :mod:`molwm.evaluation.map_metrics`.

The hand-made floor for images is CellProfiler-style per-cell features,
aggregated per site and standardised to the DMSO sites of each plate
(:mod:`molwm.evaluation.cell_features`); the 25 per-channel pixel statistics of
earlier versions stay available as :meth:`LabProbeSuite.pixel_features`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from molwm.data.multimodal import MultimodalData
from molwm.jepa.mm_masking import add_pe
from molwm.evaluation.map_metrics import consensus, phenotypic_activity, phenotypic_consistency

MECHANISM_CLASSES = 8
"""Mechanism classes of the consistency mAP (k-means of the lab's mechanism vectors)."""
MAP_NULL_SIZE = 1000
"""Random rankings per configuration in the probes' mAP p-values (copairs' default is 10,000)."""


@dataclass
class LabProbeConfig:
    """Probes on the lab's ground truth during multimodal pretraining.

    Attributes:
        modality: Whose pooled embedding is probed (``image``, ``assay`` or ``graph``).
        targets: ``mechanism`` (per compound) and/or ``state`` (per well: dose and time applied).
        every: Steps between probe points (0: only at the end of the run).
        max_samples: Held-out samples probed (a seeded subset).
        seed: Subset and half-split seed.
        readouts: Which encoder is read: ``target`` (the one downstream tasks use: the JEPA's EMA
            target, the trained encoder otherwise; keys ``probe.<target>.<metric>``) and/or
            ``context`` (the JEPA's context encoder, seeing the whole modality; keys
            ``probe.context_<target>.<metric>``; skipped for objectives without an EMA target,
            whose context encoder is the one ``target`` reads).
    """

    modality: Literal["image", "assay", "graph"] = "image"
    targets: list[str] = field(default_factory=lambda: ["mechanism", "state"])
    every: int = 0
    max_samples: int = 3000
    seed: int = 0
    readouts: list[str] = field(default_factory=lambda: ["target"])

    def validate(self) -> None:
        from molwm.config import ConfigError

        bad = [t for t in self.targets if t not in ("mechanism", "state")]
        if bad or not self.targets:
            raise ConfigError(f"probes.targets: unknown {bad} (known: mechanism, state)")
        bad = [r for r in self.readouts if r not in ("target", "context")]
        if bad or not self.readouts:
            raise ConfigError(f"probes.readouts: unknown {bad} (known: target, context)")


def mechanism_classes(mechanism: np.ndarray, n_classes: int = MECHANISM_CLASSES, seed: int = 0) -> np.ndarray:
    """A mechanism-of-action label per compound: its k-means cluster (seeded) of the lab's mechanism vectors.

    Shapes:
        mechanism: ``[N, k]``; returns ``[N]`` ints.
    """
    from sklearn.cluster import KMeans

    n = min(n_classes, len(mechanism))
    return KMeans(n, n_init=4, random_state=seed).fit_predict(np.asarray(mechanism, np.float64))


def pixel_statistics(images: np.ndarray) -> np.ndarray:
    """Per-channel mean, SD and 10/50/90th percentiles of each site. Shapes: ``[n, C, H, W]`` -> ``[n, 5C]``."""
    flat = np.asarray(images, np.float32).reshape(len(images), images.shape[1], -1)
    stats = [flat.mean(-1), flat.std(-1)] + [np.percentile(flat, q, axis=-1) for q in (10, 50, 90)]
    return np.concatenate(stats, axis=1).astype(np.float64)


def lab_cell_profiles(lab: str | Path, sites: np.ndarray, progress: bool = False
                      ) -> tuple[np.ndarray, np.ndarray]:
    """CellProfiler-style profiles of lab sites, standardised to the DMSO sites of their plates.

    Args:
        lab: The lab folder (read through the JUMP ``load_data.csv`` reader).
        sites: Rows of ``load_data.csv``.
        progress: Show a progress bar.

    Returns:
        ``[len(sites), F]`` features (columns constant in the controls dropped), and the same
        features of the DMSO sites of those plates that are not among ``sites``.
    """
    from featurizers.image import load_site
    from molwm.data.formats import read_load_data
    from molwm.evaluation.cell_features import normalize_to_controls, site_profiles

    index = read_load_data(Path(lab) / "load_data.csv")
    frame = index.frame
    sites = np.asarray(sites, np.int64)
    plates = set(frame["plate"].iloc[sites])
    controls = np.flatnonzero(frame["is_control"].to_numpy() & frame["plate"].isin(plates).to_numpy())
    rows = np.concatenate([sites, np.setdiff1d(controls, sites)])
    paths = index.site_paths()
    profiles = site_profiles((load_site(paths[r])[0] for r in rows), progress=progress)
    normed = normalize_to_controls(profiles, frame["plate"].iloc[rows].to_numpy(),
                                   frame["is_control"].iloc[rows].to_numpy())
    out = normed.to_numpy()
    return out[: len(sites)], out[len(sites):]


def r2_scores(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-column coefficient of determination."""
    resid = ((y - pred) ** 2).sum(0)
    total = ((y - y.mean(0)) ** 2).sum(0)
    return 1.0 - resid / np.maximum(total, 1e-12)


class LabProbeSuite:
    """The probe samples of a run, prepared once; call it with a model for ``probe.<target>.r2`` values.

    Args:
        config: What to probe.
        heldout: The lab samples of held-out scaffolds (``MultimodalBuild.heldout``).
        lab: The lab folder (for ``truth/``, ``well.csv`` and ``load_data.csv``).

    Raises:
        FileNotFoundError: If the lab has no ground truth (not a synthetic lab).
        ValueError: If no held-out sample has the probed modality.
    """

    def __init__(self, config: LabProbeConfig, heldout: MultimodalData | None, lab: str | Path,
                 controls: MultimodalData | None = None):
        self.config = config
        root = self.lab = Path(lab)
        truth = root / "truth"
        if not (truth / "mechanism.npy").is_file():
            raise FileNotFoundError(f"{truth}: no ground truth (mechanism.npy); lab probes need a synthetic lab "
                                    "made by `molwm sim generate`")
        if heldout is None or heldout.site is None:
            raise ValueError("lab probes need held-out lab samples (data.lab_split must hold some scaffolds out)")
        has = {"image": heldout.image_of >= 0, "graph": heldout.graph_of >= 0,
               "assay": ~np.isnan(heldout.assay_values).all(1)}[config.modality]
        rows = np.flatnonzero(has & (heldout.site >= 0))
        if len(rows) == 0:
            raise ValueError(f"no held-out lab sample has a {config.modality}: nothing to probe")
        rng = np.random.default_rng(config.seed)
        if len(rows) > config.max_samples:
            rows = np.sort(rng.choice(rows, config.max_samples, replace=False))
        self.data, self.rows = heldout, rows
        compounds = [heldout.compound[i] for i in rows]
        ys = {}
        order = pd.read_csv(truth / "compound_truth.csv")["compound_id"].tolist()
        at = {c: i for i, c in enumerate(order)}
        mechanism = np.load(truth / "mechanism.npy")
        self.compounds = np.asarray(compounds, dtype=object)
        self.mechanism_class = mechanism_classes(mechanism)[[at[c] for c in compounds]]
        if "mechanism" in config.targets:
            ys["mechanism"] = mechanism[[at[c] for c in compounds]]
        if "state" in config.targets:
            keys = ["Metadata_Plate", "Metadata_Well"]
            sites = pd.read_csv(root / "load_data.csv", usecols=keys, dtype=str)
            wells = pd.read_csv(root / "well.csv", usecols=keys, dtype=str)
            well_at = {tuple(k): i for i, k in enumerate(wells[keys].itertuples(index=False))}
            site_rows = sites.iloc[heldout.site[rows]][keys].itertuples(index=False)
            ys["state"] = np.load(truth / "state.npy")[[well_at[tuple(k)] for k in site_rows]]
        self.targets = {k: v.astype(np.float64) for k, v in ys.items()}
        unique = sorted(set(compounds))
        first = set(np.asarray(unique)[rng.permutation(len(unique))[: len(unique) // 2]])
        self.fit = np.array([c in first for c in compounds])
        if self.fit.all() or not self.fit.any():
            raise ValueError(f"lab probes need held-out samples of at least 2 compounds, got {len(unique)}")
        # replicate groups of the activity mAP: samples of one compound at one dose and time
        ld = pd.read_csv(root / "load_data.csv", usecols=["Metadata_Plate", "Metadata_Well"], dtype=str)
        wells = pd.read_csv(root / "well.csv", dtype={"Metadata_Plate": str, "Metadata_Well": str})
        cond = {(p, w): f"{d:g}uM-{t:g}h" for p, w, d, t in
                zip(wells["Metadata_Plate"], wells["Metadata_Well"], wells["Metadata_Dose_uM"], wells["Metadata_Time_h"])}
        keys = ld.iloc[heldout.site[rows]].itertuples(index=False)
        self.replicate_group = np.array([f"{c}@{cond[tuple(k)]}" for c, k in zip(compounds, keys)], dtype=object)
        self.controls = None
        if controls is not None and controls.site is not None:
            plates = set(ld["Metadata_Plate"].iloc[heldout.site[rows]])
            on_plates = ld["Metadata_Plate"].isin(plates).to_numpy()[np.maximum(controls.site, 0)]
            ctl = np.flatnonzero((np.asarray(controls.compound, dtype=object) == "control")
                                 & (controls.image_of >= 0) & (controls.site >= 0) & on_plates)
            self.controls = (controls, ctl) if len(ctl) >= 2 and config.modality == "image" else None
        self.sites = heldout.site[rows]

    @torch.no_grad()
    def features(self, model, batch_size: int = 128, data: MultimodalData | None = None,
                 rows: np.ndarray | None = None, readout: str = "target") -> np.ndarray:
        """Pooled embeddings ``[n, D]`` of the probed modality (the model is left in its training mode);
        of ``rows`` of ``data`` when given, else of the probe samples; ``readout``: see
        :class:`LabProbeConfig`."""
        data, rows = (self.data, self.rows) if data is None else (data, rows)
        was_training = model.training
        model.eval()
        drop = tuple(m for m in ("graph", "assay", "image") if m != self.config.modality)
        out = []
        for i in range(0, len(rows), batch_size):
            b = add_pe(data.batch(rows[i:i + batch_size], drop=drop), model.config)
            z, _ = model.modality_embedding(b, self.config.modality, readout)
            out.append(z.numpy())
        model.train(was_training)
        return np.concatenate(out).astype(np.float64)

    def control_features(self, model, readout: str = "target") -> np.ndarray | None:
        """Embeddings of the negative-control sites (None without controls)."""
        if self.controls is None:
            return None
        return self.features(model, data=self.controls[0], rows=self.controls[1], readout=readout)

    def pixel_features(self) -> np.ndarray:
        """The 25 per-channel pixel statistics of the probe sites (the image floor of earlier versions)."""
        d = self.data
        return pixel_statistics(d.images[d.image_of[self.rows]])

    def raw_features(self, progress: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Hand-made features of the same samples, the no-pretraining floor, and of the DMSO sites of their
        plates (None for assays): CellProfiler-style per-cell features (site medians, standardised to each
        plate's DMSO) for images; values plus observed flags for assays. Score with ``score(*raw)``."""
        if self.config.modality == "image":
            return lab_cell_profiles(self.lab, self.sites, progress)
        if self.config.modality == "assay":
            v = self.data.assay_values[self.rows]
            return np.concatenate([np.nan_to_num(v), np.isfinite(v)], axis=1).astype(np.float64), None
        raise ValueError("raw features exist for image and assay probes")

    def retrieval(self, x: np.ndarray, controls: np.ndarray | None = None) -> dict[str, float]:
        """mAP of phenotypic consistency (compound consensus profiles, mechanism classes) and, with
        ``controls`` (the same representation of DMSO sites) and replicates, of phenotypic activity.
        Features are standardised to the controls (else to the probe samples) before cosine similarity."""
        ref = x if controls is None else controls
        mu, sd = ref.mean(0), ref.std(0)
        keep = sd > 1e-9
        z = (x[:, keep] - mu[keep]) / sd[keep]
        names, prof = consensus(z, self.compounds)
        label = dict(zip(self.compounds, self.mechanism_class))
        out = {}
        cons = phenotypic_consistency(prof, [label[n] for n in names], null_size=MAP_NULL_SIZE)
        if cons.n_groups:
            out["probe.consistency.map"] = cons.map
        if controls is not None:
            zc = (controls[:, keep] - mu[keep]) / sd[keep]
            act = phenotypic_activity(np.concatenate([z, zc]), np.concatenate([self.replicate_group,
                                      np.full(len(zc), "DMSO", dtype=object)]),
                                      np.r_[np.zeros(len(z), bool), np.ones(len(zc), bool)], null_size=MAP_NULL_SIZE)
            if act.n_groups:
                out["probe.activity.map"] = act.map
                out["probe.activity.retrieved"] = act.retrieved
        return out

    def score(self, x: np.ndarray, controls: np.ndarray | None = None) -> dict[str, float]:
        """Ridge on the fitting half, mean R² per target on the other half; and the mAPs of :meth:`retrieval`."""
        from molwm.evaluation.ridge_probes import RidgeProbe

        out = {}
        for name, y in self.targets.items():
            probe = RidgeProbe.fit(x[self.fit], y[self.fit])
            out[f"probe.{name}.r2"] = float(np.mean(r2_scores(probe.predict(x[~self.fit]), y[~self.fit])))
        out.update(self.retrieval(x, controls))
        return out

    def __call__(self, model) -> dict[str, float]:
        """Probe metrics of ``model`` (a multimodal objective module), per configured readout."""
        out = {}
        for readout in self.config.readouts:
            if readout == "context" and not hasattr(model, "targets"):
                continue  # no EMA target: the context encoder is the one the target readout reads
            scores = self.score(self.features(model, readout=readout), self.control_features(model, readout))
            prefix = "" if readout == "target" else f"{readout}_"
            out.update({k.replace("probe.", f"probe.{prefix}", 1): v for k, v in scores.items()})
        return out
