"""CellProfiler-style per-cell measurements of Cell Painting sites, aggregated as pycytominer does.

The hand-made floor image encoders are compared with (``molwm ablate``, the lab
probes). A site is segmented simply: nuclei from the DNA channel (a threshold
halfway from the background to Otsu's, then each object cut at half its own
maximum, so the outline does not move with stain gain or illumination), cells
by assigning every bright cytoplasm pixel to its nearest nucleus (a Voronoi
stand-in for CellProfiler's propagation), cytoplasm = cell minus nucleus. Per
object it measures what CellProfiler's modules name: AreaShape (area,
perimeter, form factor, eccentricity, axes), Intensity (mean, std, integrated,
mass displacement), RadialDistribution (fraction of each stain in four rings
from the nucleus centre to the cell edge), Texture (Haralick contrast, angular
second moment, entropy and homogeneity of a co-occurrence matrix at distance 3,
8 grey levels per object), Correlation (Pearson between stains inside a cell)
and Neighbors (nuclei within a distance, closest distances). A site is the
median of its cells plus its cell count (pycytominer ``aggregate``); sites are
then standardised to the negative controls of their plate (pycytominer
``normalize(method="standardize", samples=controls)``).

`cp-measure` (CellProfiler's measurements as a package) was not installed
because it pins pillow<12 through centrosome, below this project's Pillow; this
module is the closest honest equivalent, numpy/scipy only, and its numbers are
documented in docs/synthetic_lab.md (section 5b).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage
from tqdm.auto import tqdm

CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")
_CYTO = ("ER", "RNA", "AGP", "Mito")


@dataclass
class CellFeatureConfig:
    """Segmentation and measurement settings.

    Attributes:
        min_nucleus_px: Nuclei smaller than this (after the half-maximum cut) are dropped.
        cell_edge: Cytoplasm threshold, as a share of the site's 99th percentile of the
            smoothed, per-channel scaled cytoplasm signal.
        max_cell_px: Farthest a cell pixel may be from its nucleus.
        texture_levels: Grey levels of the co-occurrence matrix (per object, min to max).
        texture_distance: Pixel offset of the co-occurrence pairs (right and down).
        radial_bins: Rings of the radial distribution.
        neighbor_px: Nuclei closer than this count as neighbours.
    """

    min_nucleus_px: int = 6
    cell_edge: float = 0.25
    max_cell_px: float = 25.0
    texture_levels: int = 8
    texture_distance: int = 3
    radial_bins: int = 4
    neighbor_px: float = 20.0


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    mid = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * mid)
    between = w0 * w1 * (m0 / np.maximum(w0, 1) - (m0[-1] - m0) / np.maximum(w1, 1)) ** 2
    return float(mid[int(np.argmax(between[:-1]))])


def segment(image: np.ndarray, config: CellFeatureConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nuclei and cell label images of one site (0 = background; a cell has its nucleus's label).

    Shapes:
        image: ``[5, H, W]`` raw counts; returns two ``[H, W]`` int arrays.
    """
    c = config or CellFeatureConfig()
    img = np.asarray(image, np.float64)
    dna = ndimage.gaussian_filter(img[0], 0.7)
    bg = float(np.percentile(dna, 10))
    coarse, n = ndimage.label(dna > bg + 0.5 * (_otsu(dna) - bg))
    nuclei = np.zeros(dna.shape, np.int64)
    if n:
        peak = ndimage.maximum(dna, coarse, np.arange(n + 1))
        peak[0] = np.inf
        keep = dna > bg + 0.5 * (peak[coarse] - bg)  # each object at half its own height
        nuclei = np.where(keep, coarse, 0)
        area = np.bincount(nuclei.ravel(), minlength=n + 1)
        small = area < c.min_nucleus_px
        small[0] = True
        nuclei[small[nuclei]] = 0
    if not nuclei.any():
        return nuclei, nuclei.copy()
    sig = img[1:] - np.percentile(img[1:], 5, axis=(1, 2), keepdims=True)
    sig /= np.maximum(np.percentile(sig, 99, axis=(1, 2), keepdims=True), 1e-9)
    smooth = ndimage.gaussian_filter(sig.sum(0), 1.5)
    mask = (smooth > c.cell_edge * np.percentile(smooth, 99)) | (nuclei > 0)
    dist, (iy, ix) = ndimage.distance_transform_edt(nuclei == 0, return_indices=True)
    cells = np.where(mask & (dist <= c.max_cell_px), nuclei[iy, ix], 0)
    return nuclei, cells


def _sums(labels: np.ndarray, n: int, *weights: np.ndarray) -> list[np.ndarray]:
    flat = labels.ravel()
    return [np.bincount(flat, weights=None if w is None else w.ravel(), minlength=n + 1) for w in weights]


def _shape(labels: np.ndarray, n: int, prefix: str) -> dict[str, np.ndarray]:
    yy, xx = np.indices(labels.shape, dtype=np.float64)
    area, sy, sx, syy, sxx, sxy = _sums(labels, n, None, yy, xx, yy * yy, xx * xx, yy * xx)
    a = np.maximum(area, 1)
    cy, cx = sy / a, sx / a
    myy, mxx, mxy = syy / a - cy**2 + 1 / 12, sxx / a - cx**2 + 1 / 12, sxy / a - cy * cx
    root = np.sqrt(((myy - mxx) / 2) ** 2 + mxy**2)
    l1, l2 = (myy + mxx) / 2 + root, np.maximum((myy + mxx) / 2 - root, 0)
    pad = np.pad(labels, 1)
    h, w = labels.shape
    inner = labels > 0
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        inner &= pad[dy:dy + h, dx:dx + w] == labels
    # Cauchy-Crofton perimeter: label changes along rows, columns and both diagonals, each direction
    # weighted by pi/8 times its line spacing (1, or 1/sqrt 2 on the diagonals)
    edge = np.zeros(n + 1)
    for dy, dx, spacing in ((0, 1, 1.0), (1, 0, 1.0), (1, 1, 0.5**0.5), (1, -1, 0.5**0.5)):
        a = pad[:h + 2 - dy, :w + 2 - dx] if dx >= 0 else pad[:h + 2 - dy, -dx:]
        b = pad[dy:, dx:] if dx >= 0 else pad[dy:, :w + 2 + dx]
        diff = a != b
        weight = np.pi / 8 * spacing
        edge += weight * (np.bincount(a[diff], minlength=n + 1) + np.bincount(b[diff], minlength=n + 1))
    edge[0] = 0.0
    return {f"{prefix}_AreaShape_Area": area, f"{prefix}_AreaShape_Perimeter": edge,
            f"{prefix}_AreaShape_FormFactor": 4 * np.pi * area / np.maximum(edge, 1) ** 2,
            f"{prefix}_AreaShape_Eccentricity": np.sqrt(1 - l2 / np.maximum(l1, 1e-12)),
            f"{prefix}_AreaShape_MajorAxisLength": 4 * np.sqrt(l1),
            f"{prefix}_AreaShape_MinorAxisLength": 4 * np.sqrt(l2),
            "_cy": cy, "_cx": cx, "_inner": inner}


def _intensity(labels, n, img, names, prefix, centre=None) -> dict[str, np.ndarray]:
    out = {}
    (area,) = _sums(labels, n, None)
    a = np.maximum(area, 1)
    yy, xx = np.indices(labels.shape, dtype=np.float64)
    for ch in names:
        x = img[CHANNELS.index(ch)]
        s, s2 = _sums(labels, n, x, x * x)
        mean = s / a
        out[f"{prefix}_Intensity_MeanIntensity_{ch}"] = mean
        out[f"{prefix}_Intensity_StdIntensity_{ch}"] = np.sqrt(np.maximum(s2 / a - mean**2, 0))
        out[f"{prefix}_Intensity_IntegratedIntensity_{ch}"] = s
        if centre is not None:
            wy, wx = _sums(labels, n, x * yy, x * xx)
            tot = np.maximum(s, 1e-12)
            out[f"{prefix}_Intensity_MassDisplacement_{ch}"] = np.hypot(wy / tot - centre[0], wx / tot - centre[1])
    return out


def _texture(labels, n, img, names, prefix, c: CellFeatureConfig) -> dict[str, np.ndarray]:
    out, L, d = {}, c.texture_levels, c.texture_distance
    idx = np.arange(n + 1)
    i, j = np.meshgrid(np.arange(L), np.arange(L), indexing="ij")
    for ch in names:
        x = img[CHANNELS.index(ch)]
        lo = ndimage.minimum(x, labels, idx)
        hi = ndimage.maximum(x, labels, idx)
        q = np.clip(((x - lo[labels]) / np.maximum(hi - lo, 1e-9)[labels] * L).astype(np.int64), 0, L - 1)
        glcm = np.zeros((n + 1) * L * L)
        for a, b, qa, qb in ((labels[:, :-d], labels[:, d:], q[:, :-d], q[:, d:]),
                             (labels[:-d], labels[d:], q[:-d], q[d:])):
            same = (a == b) & (a > 0)
            glcm += np.bincount((a[same] * L + qa[same]) * L + qb[same], minlength=(n + 1) * L * L)
        p = glcm.reshape(n + 1, L, L)
        p = p + p.transpose(0, 2, 1)
        p = p / np.maximum(p.sum(axis=(1, 2), keepdims=True), 1e-12)
        out[f"{prefix}_Texture_Contrast_{ch}_{d}"] = (p * (i - j) ** 2).sum(axis=(1, 2))
        out[f"{prefix}_Texture_AngularSecondMoment_{ch}_{d}"] = (p * p).sum(axis=(1, 2))
        out[f"{prefix}_Texture_Entropy_{ch}_{d}"] = -(p * np.log2(np.maximum(p, 1e-12))).sum(axis=(1, 2))
        out[f"{prefix}_Texture_InverseDifferenceMoment_{ch}_{d}"] = (p / (1 + (i - j) ** 2)).sum(axis=(1, 2))
    return out


def _radial(cells, n, img, centre, inner, c: CellFeatureConfig) -> dict[str, np.ndarray]:
    yy, xx = np.indices(cells.shape, dtype=np.float64)
    from_centre = np.hypot(yy - centre[0][cells], xx - centre[1][cells])
    to_edge = ndimage.distance_transform_edt(inner)
    ring = np.clip((from_centre / np.maximum(from_centre + to_edge, 1e-9) * c.radial_bins).astype(np.int64),
                   0, c.radial_bins - 1)
    out = {}
    key = cells * c.radial_bins + ring
    for ch in _CYTO:
        x = img[CHANNELS.index(ch)]
        per = np.bincount(key.ravel(), weights=x.ravel(), minlength=(n + 1) * c.radial_bins).reshape(n + 1, -1)
        frac = per / np.maximum(per.sum(1, keepdims=True), 1e-12)
        for b in range(c.radial_bins):
            out[f"Cells_RadialDistribution_FracAtD_{ch}_{b + 1}of{c.radial_bins}"] = frac[:, b]
    return out


def _correlation(cells, n, img, pairs=(("ER", "Mito"), ("AGP", "Mito"), ("ER", "RNA"))) -> dict[str, np.ndarray]:
    out = {}
    (area,) = _sums(cells, n, None)
    a = np.maximum(area, 1)
    for u, v in pairs:
        x, y = img[CHANNELS.index(u)], img[CHANNELS.index(v)]
        sx, sy, sxx, syy, sxy = _sums(cells, n, x, y, x * x, y * y, x * y)
        cov = sxy / a - sx * sy / a**2
        var = np.maximum(sxx / a - (sx / a) ** 2, 1e-12) * np.maximum(syy / a - (sy / a) ** 2, 1e-12)
        out[f"Cells_Correlation_Correlation_{u}_{v}"] = cov / np.sqrt(var)
    return out


def _neighbours(cy, cx, c: CellFeatureConfig) -> dict[str, np.ndarray]:
    pts = np.stack([cy, cx], 1)
    d = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    srt = np.sort(d, axis=1)
    big = float(c.neighbor_px) * 3
    first = np.minimum(srt[:, 0] if len(pts) > 1 else np.full(len(pts), big), big)
    second = np.minimum(srt[:, 1] if len(pts) > 2 else np.full(len(pts), big), big)
    return {"Nuclei_Neighbors_NumberOfNeighbors": (d < c.neighbor_px).sum(1).astype(np.float64),
            "Nuclei_Neighbors_FirstClosestDistance": first, "Nuclei_Neighbors_SecondClosestDistance": second}


def measure_cells(image: np.ndarray, config: CellFeatureConfig | None = None) -> pd.DataFrame:
    """Per-cell measurements of one site: one row per cell (nucleus), CellProfiler-style column names.

    Shapes:
        image: ``[5, H, W]`` raw counts in :data:`CHANNELS` order.
    """
    c = config or CellFeatureConfig()
    img = np.asarray(image, np.float64)
    nuclei, cells = segment(img, c)
    n = int(nuclei.max())
    if n == 0:
        return pd.DataFrame(columns=feature_names(c))
    present = np.bincount(nuclei.ravel(), minlength=n + 1) > 0
    present[0] = False
    cyto = np.where(nuclei > 0, 0, cells)
    nuc = _shape(nuclei, n, "Nuclei")
    cel = _shape(cells, n, "Cells")
    centre = (nuc.pop("_cy"), nuc.pop("_cx"))
    nuc.pop("_inner")
    inner = cel.pop("_inner")
    cel_c = (cel.pop("_cy"), cel.pop("_cx"))
    out = {**nuc, **cel, "Cytoplasm_AreaShape_Area": _sums(cyto, n, None)[0]}
    out.update(_intensity(nuclei, n, img, ("DNA", "RNA"), "Nuclei", centre))
    out.update(_intensity(cells, n, img, CHANNELS, "Cells", cel_c))
    out.update(_intensity(cyto, n, img, _CYTO, "Cytoplasm"))
    out.update(_radial(cells, n, img, centre, inner, c))
    out.update(_texture(nuclei, n, img, ("DNA",), "Nuclei", c))
    out.update(_texture(cyto, n, img, _CYTO, "Cytoplasm", c))
    out.update(_correlation(cells, n, img))
    frame = pd.DataFrame({k: v[present] for k, v in out.items()})
    for k, v in _neighbours(centre[0][present], centre[1][present], c).items():
        frame[k] = v
    return frame[feature_names(c)]


def feature_names(config: CellFeatureConfig | None = None) -> list[str]:
    """Every per-cell column :func:`measure_cells` returns, in order."""
    c = config or CellFeatureConfig()
    img = np.zeros((5, 24, 24))
    img[:, 8:16, 8:16] = 1000.0
    img[:, 10:14, 10:14] = 3000.0
    names = _NAMES.get((c.texture_distance, c.radial_bins))
    if names is None:
        nuclei = np.zeros((24, 24), np.int64)
        nuclei[10:14, 10:14] = 1
        cells = np.zeros_like(nuclei)
        cells[8:16, 8:16] = 1
        cyto = np.where(nuclei > 0, 0, cells)
        parts = [_shape(nuclei, 1, "Nuclei"), _shape(cells, 1, "Cells"), {"Cytoplasm_AreaShape_Area": 0},
                 _intensity(nuclei, 1, img, ("DNA", "RNA"), "Nuclei", (0, 0)),
                 _intensity(cells, 1, img, CHANNELS, "Cells", (0, 0)), _intensity(cyto, 1, img, _CYTO, "Cytoplasm"),
                 _radial(cells, 1, img, (np.zeros(2), np.zeros(2)), cells > 0, c),
                 _texture(nuclei, 1, img, ("DNA",), "Nuclei", c), _texture(cyto, 1, img, _CYTO, "Cytoplasm", c),
                 _correlation(cells, 1, img), _neighbours(np.zeros(1), np.zeros(1), c)]
        names = [k for part in parts for k in part if not k.startswith("_")]
        _NAMES[(c.texture_distance, c.radial_bins)] = names
    return list(names)


_NAMES: dict[tuple[int, int], list[str]] = {}


def site_profile(image: np.ndarray, config: CellFeatureConfig | None = None) -> dict[str, float]:
    """One site: the median of every per-cell feature and ``Image_Count_Cells`` (NaN features without cells)."""
    cells = measure_cells(image, config)
    out = {"Image_Count_Cells": float(len(cells))}
    med = cells.median() if len(cells) else pd.Series(np.nan, index=cells.columns)
    out.update({k: float(v) for k, v in med.items()})
    return out


def site_profiles(images: Sequence[np.ndarray], config: CellFeatureConfig | None = None,
                  progress: bool = False) -> pd.DataFrame:
    """:func:`site_profile` of every site, one row each (``images`` may be any iterable of ``[5, H, W]``)."""
    rows = [site_profile(im, config) for im in tqdm(images, desc="cell features", unit="site", disable=not progress)]
    return pd.DataFrame(rows)


def normalize_to_controls(features: pd.DataFrame, plate: Sequence[str], is_control: Sequence[bool],
                          eps: float = 1e-6) -> pd.DataFrame:
    """pycytominer-style ``standardize`` to the negative controls, plate by plate.

    Each feature becomes ``(x - mean of the plate's controls) / SD of them``; a plate
    with fewer than two controls uses every control. Features that are constant in the
    controls everywhere are dropped; missing values (a site without cells) become 0,
    the control level.

    Args:
        features: One row per site.
        plate: Plate of each row.
        is_control: Whether each row is a negative control (DMSO).
        eps: Smallest SD divided by.

    Returns:
        The standardised features (same rows; constant columns dropped).
    """
    x = features.to_numpy(np.float64)
    plate = np.asarray(plate)
    ctl = np.asarray(is_control, bool)
    if not ctl.any():
        raise ValueError("normalize_to_controls needs at least one control row")
    out = np.empty_like(x)
    mu_all, sd_all = np.nanmean(x[ctl], 0), np.nanstd(x[ctl], 0)
    for p in np.unique(plate):
        rows = plate == p
        ref = x[rows & ctl]
        mu, sd = (np.nanmean(ref, 0), np.nanstd(ref, 0)) if len(ref) >= 2 else (mu_all, sd_all)
        sd = np.where(np.isfinite(sd) & (sd > eps), sd, np.maximum(sd_all, eps))
        out[rows] = (x[rows] - np.where(np.isfinite(mu), mu, mu_all)) / sd
    keep = np.isfinite(sd_all) & (sd_all > eps)
    out = np.nan_to_num(out[:, keep], nan=0.0, posinf=0.0, neginf=0.0)
    return pd.DataFrame(out, columns=features.columns[keep], index=features.index)
