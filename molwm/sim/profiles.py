"""CellProfiler-like per-well features, measured from the rendered images.

Most features are measured from pixels with a deliberately simple pipeline
(Otsu thresholds, connected components, masked means, a high-pass texture
energy), so segmentation errors (touching nuclei merged, dim cells missed)
are part of the data, as in real profiles. A few shape and correlation
features that would need real per-object segmentation come from the cell
state plus Gaussian noise instead; :data:`STATE_FEATURES` lists them.
Intensities are raw camera counts divided by 65535, as CellProfiler reports
them for 16-bit images. See docs/synthetic_lab.md.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from molwm.sim.render import CHANNELS, RenderParams

_CYTO = ("ER", "RNA", "AGP", "Mito")

IMAGE_FEATURES: tuple[str, ...] = (
    "Cells_Count",
    "Nuclei_AreaShape_Area",
    "Cells_AreaShape_Area",
    "Nuclei_Intensity_MeanIntensity_DNA",
    "Nuclei_Intensity_IntegratedIntensity_DNA",
    "Nuclei_Intensity_MeanIntensity_RNA",
    *(f"Cells_Intensity_MeanIntensity_{c}" for c in CHANNELS),
    *(f"Cytoplasm_Intensity_MeanIntensity_{c}" for c in _CYTO),
    *(f"Cytoplasm_Texture_Contrast_{c}_3" for c in _CYTO),
)
"""Features measured from the pixels of each site."""

STATE_FEATURES: tuple[tuple[str, float, tuple[float, ...], float, tuple[float, float]], ...] = (
    # name, intercept, weights on the six state components, noise SD, clip range
    ("Nuclei_AreaShape_FormFactor", 0.85, (0.0, 0.0, -0.05, 0.0, 0.0, -0.03), 0.02, (0.0, 1.0)),
    ("Cells_AreaShape_Eccentricity", 0.60, (0.0, 0.08, 0.0, 0.0, 0.05, 0.0), 0.03, (0.0, 1.0)),
    ("Cells_Granularity_1_Mito", 1.00, (0.0, 0.0, 0.0, 0.0, 0.20, 0.50), 0.10, (0.0, np.inf)),
    ("Cells_Correlation_Correlation_ER_Mito", 0.60, (0.0, 0.0, 0.0, 0.15, -0.15, 0.0), 0.03, (-1.0, 1.0)),
    # 2.5 neighbours at the 24 h control density (log_count = log 20), more when cells are many or large
    ("Cells_Neighbors_NumberOfNeighbors_Adjacent", -3.5, (2.0, 1.5, 0.0, 0.0, 0.0, 0.0), 0.30, (0.0, np.inf)),
)
"""Features computed as ``clip(intercept + weights . state + N(0, sd), lo, hi)``, not from pixels."""

FEATURES: tuple[str, ...] = IMAGE_FEATURES + tuple(f[0] for f in STATE_FEATURES)
"""Every feature column of ``profiles.parquet``, in order."""

_MIN_NUCLEUS_PX = 6
_CELL_EDGE = 0.25


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a set of values (maximises between-class variance)."""
    values = np.asarray(values, np.float64).ravel()
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def measure_site(image: np.ndarray, params: RenderParams | None = None) -> dict[str, float]:
    """Measure the pixel features of one site.

    Args:
        image: Raw camera image (uint16), channels in :data:`CHANNELS` order.
        params: Renderer constants (only the channel levels are used, to weigh
            channels when finding cells).

    Returns:
        ``{feature: value}`` for :data:`IMAGE_FEATURES`.

    Shapes:
        image: ``[5, H, W]``.
    """
    p = params or RenderParams()
    img = np.asarray(image, np.float64)
    dna, scaled = img[0], img / 65535.0
    nuclei = ndimage.binary_opening(dna > otsu_threshold(dna))
    labels, n_obj = ndimage.label(nuclei)
    if n_obj:
        sizes = np.bincount(labels.ravel())[1:]
        keep = np.concatenate([[False], sizes >= _MIN_NUCLEUS_PX])
        nuclei = keep[labels]
        count = int(keep.sum())
    else:
        count = 0
    # cells: smoothed sum of the cytoplasmic channels, each relative to its level above background
    bg = np.percentile(img[1:], 5, axis=(1, 2))[:, None, None]
    rel = (img[1:] - bg) / np.asarray(p.levels[1:])[:, None, None]
    smooth = ndimage.gaussian_filter(rel.sum(axis=0), 1.5)
    # a quarter of the brightest cytoplasm: unlike Otsu, stays at the cell edge when cells crowd
    cells = (smooth > _CELL_EDGE * np.percentile(smooth, 99)) | nuclei
    cyto = cells & ~nuclei
    highpass = img[1:] - ndimage.gaussian_filter(img[1:], (0, 1.5, 1.5))

    def mean(x, mask):
        return float(x[mask].mean()) if mask.any() else float("nan")

    per = max(count, 1)
    out = {
        "Cells_Count": float(count),
        "Nuclei_AreaShape_Area": float(nuclei.sum()) / per if count else float("nan"),
        "Cells_AreaShape_Area": float(cells.sum()) / per if count else float("nan"),
        "Nuclei_Intensity_MeanIntensity_DNA": mean(scaled[0], nuclei),
        "Nuclei_Intensity_IntegratedIntensity_DNA": (float(scaled[0][nuclei].sum()) / per if count
                                                     else float("nan")),
        "Nuclei_Intensity_MeanIntensity_RNA": mean(scaled[2], nuclei),
    }
    for c, name in enumerate(CHANNELS):
        out[f"Cells_Intensity_MeanIntensity_{name}"] = mean(scaled[c], cells)
    for j, name in enumerate(_CYTO):
        out[f"Cytoplasm_Intensity_MeanIntensity_{name}"] = mean(scaled[j + 1], cyto)
    for j, name in enumerate(_CYTO):
        level = img[j + 1][cyto].mean() if cyto.any() else float("nan")
        out[f"Cytoplasm_Texture_Contrast_{name}_3"] = mean(highpass[j] ** 2, cyto) / level**2
    return out


def aggregate_sites(sites: Sequence[dict[str, float]]) -> dict[str, float]:
    """One well from its sites: ``Cells_Count`` is summed, every other feature averaged (NaN-aware)."""
    out = {}
    for name in IMAGE_FEATURES:
        vals = np.array([s[name] for s in sites], np.float64)
        if name == "Cells_Count":
            out[name] = float(vals.sum())
        else:
            out[name] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    return out


def state_features(state: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    """The state-derived features of one well. Shapes: state ``[6]``."""
    s = np.asarray(state, np.float64)
    noise = rng.standard_normal(len(STATE_FEATURES))
    return {
        name: float(np.clip(b + np.dot(w, s) + sd * e, lo, hi))
        for (name, b, w, sd, (lo, hi)), e in zip(STATE_FEATURES, noise)
    }


def params() -> dict:
    """How each feature is made, for ``truth/params.json``."""
    return {
        "image_features": list(IMAGE_FEATURES),
        "state_features": [{"name": n, "intercept": b, "weights": list(w), "noise_sd": sd,
                            "clip": [lo, hi if np.isfinite(hi) else None]}
                           for n, b, w, sd, (lo, hi) in STATE_FEATURES],
        "min_nucleus_px": _MIN_NUCLEUS_PX,
        "cell_edge_fraction_of_p99": _CELL_EDGE,
        "aggregation": "Cells_Count summed over sites, other image features averaged",
    }
