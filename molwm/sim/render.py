"""Cell Painting-like five-channel images rendered from a cell state.

One field of view ("site") is drawn from the six-component state of
:mod:`molwm.sim.biology`: cells are placed uniformly at random; each has a
soft-edged elliptical nucleus (DNA), nucleoli (RNA), a perinuclear ER cloud,
an actin/membrane rim (AGP) and a mitochondrial cytoplasm (Mito); band-limited
noise adds texture; photon shot noise and camera read noise finish the image.
Every cell is drawn as a small patch and all patches are added into the image
at once (``np.bincount``), so there is no Python loop over pixels or cells.
Equations and constants: docs/synthetic_lab.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np

from molwm.sim import nuisance as nz

CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")
"""Cell Painting channel order, as in docs/data_layouts.md."""

_LN2 = float(np.log(2.0))
_REF_SIZE = 96  # the state's log_count is cells per 96x96 field
STATE_CLIP = 2.0  # |log fold| of cell and nucleus area used for drawing


@dataclass
class RenderParams:
    """Constants of the renderer (all in pixels or photons).

    Args:
        image_size: Height and width of a site.
        nucleus_radius_px: Nucleus radius at the control state (half-maximum contour).
        cell_radius_px: Cell radius at the control state.
        levels: Peak photons per channel at the control state, in :data:`CHANNELS` order.
        background: Autofluorescence photons per pixel, per channel.
        camera_offset: Camera baseline added to every pixel.
        read_noise: SD of camera read noise.
        texture_amp: Relative amplitude of cytoplasmic texture at the control state.
        texture_band_px: Wavelength band of the texture noise (min, max).
        cell_cv: Log-normal SD of per-cell size and per-cell, per-channel brightness.
        plate_gain_sd: Log-normal SD of the per-plate, per-channel gain (batch effect).
        n_nucleoli: Nucleoli per nucleus.
        max_cells: Cap on cells per site (keeps extreme states cheap).
        nuisance: None (``legacy``, the default): the renderer of earlier versions, the phenotype
            partly in channel intensities and no nuisance. A level in [0, 1] (``none`` 0, ``low``
            0.4, ``high`` 1): the phenotype only in morphology and arrangement (every cell carries
            a fixed amount of each stain), plus surface detail of that strength
            (:mod:`molwm.sim.nuisance`).
        nuisance_params: Sizes of the nuisance effects at level 1.
    """

    image_size: int = 96
    nucleus_radius_px: float = 3.5
    cell_radius_px: float = 9.0
    levels: tuple[float, ...] = (1800.0, 700.0, 500.0, 650.0, 800.0)
    background: tuple[float, ...] = (40.0, 30.0, 30.0, 30.0, 30.0)
    camera_offset: float = 100.0
    read_noise: float = 3.0
    texture_amp: float = 0.35
    texture_band_px: tuple[float, float] = (2.0, 6.0)
    cell_cv: float = 0.15
    plate_gain_sd: float = 0.05
    n_nucleoli: int = 2
    max_cells: int = 1000
    nuisance: float | None = None
    nuisance_params: nz.NuisanceParams = field(default_factory=nz.NuisanceParams)

    def __post_init__(self):
        if self.nuisance is not None and not 0.0 <= self.nuisance <= 1.0:
            raise ValueError(f"nuisance must be None or in [0, 1], got {self.nuisance}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16 pixels, got {self.image_size}")
        for name in ("levels", "background"):
            if len(getattr(self, name)) != len(CHANNELS):
                raise ValueError(f"{name} needs one value per channel {CHANNELS}")

    def params(self) -> dict:
        out = asdict(self)
        if self.nuisance is None:  # the legacy renderer draws no nuisance
            out.pop("nuisance_params")
        return out


@lru_cache(maxsize=8)
def _band_mask(size: int, lo_px: float, hi_px: float) -> np.ndarray:
    """Radial band-pass mask over ``rfft2`` frequencies: wavelengths in [lo_px, hi_px]."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f = np.sqrt(fy**2 + fx**2)
    return ((f >= 1.0 / hi_px) & (f <= 1.0 / lo_px)).astype(np.float64)


def texture_fields(rng: np.random.Generator, n: int, size: int, band_px: tuple[float, float]) -> np.ndarray:
    """Unit-variance band-limited Gaussian noise fields. Shapes: returns ``[n, size, size]``."""
    white = rng.standard_normal((n, size, size))
    field = np.fft.irfft2(np.fft.rfft2(white) * _band_mask(size, *band_px), s=(size, size))
    return field / np.maximum(field.std(axis=(1, 2), keepdims=True), 1e-12)


def plate_gains(rng: np.random.Generator, params: RenderParams) -> np.ndarray:
    """Per-channel gain of one plate. Shapes: returns ``[5]``."""
    return np.exp(rng.normal(0.0, params.plate_gain_sd, len(CHANNELS)))


def _ellipse_rho2(dy, dx, a, b, theta):
    """Squared elliptical radius (1 on the ellipse). Shapes: dy, dx ``[n, P, P]``; a, b, theta ``[n]``."""
    c = np.cos(theta).astype(np.float32)[:, None, None]
    s = np.sin(theta).astype(np.float32)[:, None, None]
    u = (dx * c + dy * s) * (1.0 / a).astype(np.float32)[:, None, None]
    v = (dy * c - dx * s) * (1.0 / b).astype(np.float32)[:, None, None]
    return u * u + v * v


def _cell_patches(rng, n, state, p: RenderParams):
    """Per-cell channel patches.

    Shapes:
        returns integer centres ``[n, 2]``, patches ``[5, n, P, P]`` and the half width (P = 2 * half + 1).
    """
    size = p.image_size
    centre = rng.uniform(0.0, size, (n, 2))
    r_n = p.nucleus_radius_px * np.exp(state[2] / 2.0 + rng.normal(0.0, p.cell_cv, n))
    asp_n = np.sqrt(rng.uniform(1.0, 1.5, n))
    theta_n = rng.uniform(0.0, np.pi, n)
    r_c = np.maximum(p.cell_radius_px * np.exp(state[1] / 2.0 + rng.normal(0.0, p.cell_cv, n)), 1.3 * r_n)
    asp_c = np.sqrt(rng.uniform(1.0, 1.6, n))
    theta_c = rng.uniform(0.0, np.pi, n)
    shift = rng.uniform(0.0, 0.3, n) * r_c
    ang = rng.uniform(0.0, 2.0 * np.pi, n)
    # the cytoplasm profile is below 3% of its peak beyond 2.2 major semi-axes
    half = min(int(np.ceil(np.max(2.2 * r_c * asp_c + shift))), size)

    whole = np.floor(centre).astype(np.int64)
    frac = (centre - whole).astype(np.float32)  # float32 patches: half the memory traffic
    g = np.arange(-half, half + 1, dtype=np.float32)
    dy = g[None, :, None] - frac[:, 0, None, None]  # [n, P, 1]
    dx = g[None, None, :] - frac[:, 1, None, None]  # [n, 1, P]
    dy, dx = np.broadcast_arrays(dy, dx)  # [n, P, P] each

    nucleus = np.exp(-_LN2 * _ellipse_rho2(dy, dx, r_n * asp_n, r_n / asp_n, theta_n) ** 2)  # flat top
    oy = (shift * np.sin(ang)).astype(np.float32)[:, None, None]
    ox = (shift * np.cos(ang)).astype(np.float32)[:, None, None]
    cyto_rho2 = _ellipse_rho2(dy - oy, dx - ox, r_c * asp_c, r_c / asp_c, theta_c)
    cyto = np.exp(-_LN2 * cyto_rho2)
    er = np.exp(-_LN2 * cyto_rho2 / 0.36) * (1.0 - 0.8 * nucleus)
    rim = np.exp(-(((np.sqrt(cyto_rho2) - 1.0) / 0.25) ** 2))
    agp = rim + 0.3 * cyto
    mito = cyto * (1.0 - 0.6 * nucleus)

    nucleoli = np.zeros_like(nucleus)
    inv_2s2 = (1.0 / (2.0 * (0.25 * r_n) ** 2)).astype(np.float32)[:, None, None]
    for _ in range(p.n_nucleoli):  # a couple of spots per nucleus, vectorised over cells
        rad = rng.uniform(0.0, 0.45, n) * r_n
        phi = rng.uniform(0.0, 2.0 * np.pi, n)
        sy = (rad * np.sin(phi)).astype(np.float32)[:, None, None]
        sx = (rad * np.cos(phi)).astype(np.float32)[:, None, None]
        nucleoli += np.exp(-((dy - sy) ** 2 + (dx - sx) ** 2) * inv_2s2)
    rna = 1.5 * nucleoli * nucleus + 0.3 * nucleus + 0.35 * cyto
    patches = np.stack([nucleus, er, rna, agp, mito])  # [5, n, P, P]
    patches *= np.exp(rng.normal(0.0, p.cell_cv, (5, n, 1, 1))).astype(np.float32)  # cell-to-cell brightness
    return whole, patches, half


def _spaced(cands: np.ndarray, n: int, d_min: float) -> np.ndarray:
    """``n`` of the candidate centres, greedily keeping those at least ``d_min`` from every kept one
    (then any, if too few are far enough apart). Shapes: cands ``[m, 2]``; returns ``[n, 2]``."""
    kept = np.empty((n, 2))
    k = 0
    rest = []
    for pt in cands:
        if k == n:
            break
        if k == 0 or np.min(np.sum((kept[:k] - pt) ** 2, axis=1)) >= d_min * d_min:
            kept[k] = pt
            k += 1
        else:
            rest.append(pt)
    if k < n:
        kept[k:] = np.asarray(rest[: n - k]).reshape(-1, 2)
    return kept


def _norm(patch: np.ndarray, total: float) -> np.ndarray:
    """Scale every cell's patch ``[n, P, P]`` to the same integral."""
    return patch * (total / np.maximum(patch.sum(axis=(1, 2), keepdims=True), 1e-12))


def _morph_patches(rng, centre, state, p: RenderParams):
    """Per-cell patches of the morphology renderer: each cell carries a fixed amount of every stain;
    the state moves sizes and where the stain sits in the cell (docs/synthetic_lab.md, section 4b).

    Shapes:
        centre: ``[n, 2]``; returns integer centres ``[n, 2]``, patches ``[5, n, P, P]``, half width.
    """
    n, size = len(centre), p.image_size
    r_n = p.nucleus_radius_px * np.exp(state[2] / 2.0 + rng.normal(0.0, p.cell_cv, n))
    asp_n = np.sqrt(rng.uniform(1.0, 1.5, n))
    theta_n = rng.uniform(0.0, np.pi, n)
    r_c = np.maximum(p.cell_radius_px * np.exp(state[1] / 2.0 + rng.normal(0.0, p.cell_cv, n)), 1.3 * r_n)
    asp_c = np.sqrt(rng.uniform(1.0, 1.6, n))
    theta_c = rng.uniform(0.0, np.pi, n)
    shift = rng.uniform(0.0, 0.3, n) * r_c
    ang = rng.uniform(0.0, 2.0 * np.pi, n)
    half = min(int(np.ceil(np.max(2.2 * r_c * asp_c + shift))), size)
    whole = np.floor(centre).astype(np.int64)
    frac = (centre - whole).astype(np.float32)
    g = np.arange(-half, half + 1, dtype=np.float32)
    dy, dx = np.broadcast_arrays(g[None, :, None] - frac[:, 0, None, None], g[None, None, :] - frac[:, 1, None, None])

    nucleus = np.exp(-_LN2 * _ellipse_rho2(dy, dx, r_n * asp_n, r_n / asp_n, theta_n) ** 2)
    oy = (shift * np.sin(ang)).astype(np.float32)[:, None, None]
    ox = (shift * np.cos(ang)).astype(np.float32)[:, None, None]
    rho2 = _ellipse_rho2(dy - oy, dx - ox, r_c * asp_c, r_c / asp_c, theta_c)
    cyto = np.exp(-_LN2 * rho2)
    # s_3: ER spreads out from the nucleus (or packs around it); nucleoli grow with it
    w_er = float(np.clip(0.6 * np.exp(state[3] / 2.0), 0.25, 1.5))
    er = np.exp(-_LN2 * rho2 / w_er**2) * (1.0 - 0.8 * nucleus)
    # s_4: mitochondria disperse towards the periphery (or cluster); the actin rim thickens
    w_mito = float(np.clip(0.8 * np.exp(state[4] / 2.0), 0.3, 1.8))
    mito = np.exp(-_LN2 * rho2 / w_mito**2) * (1.0 - 0.6 * nucleus)
    rim_w = float(np.clip(0.25 * np.exp(state[4] / 2.0), 0.08, 0.8))
    agp = np.exp(-(((np.sqrt(rho2) - 1.0) / rim_w) ** 2)) + 0.3 * cyto
    spot = float(np.clip(0.25 * np.exp(state[3] / 2.0), 0.1, 0.6))
    inv_2s2 = (1.0 / (2.0 * (spot * r_n) ** 2)).astype(np.float32)[:, None, None]
    nucleoli = np.zeros_like(nucleus)
    for _ in range(p.n_nucleoli):
        rad = rng.uniform(0.0, 0.45, n) * r_n
        phi = rng.uniform(0.0, 2.0 * np.pi, n)
        sy = (rad * np.sin(phi)).astype(np.float32)[:, None, None]
        sx = (rad * np.cos(phi)).astype(np.float32)[:, None, None]
        nucleoli += np.exp(-((dy - sy) ** 2 + (dx - sx) ** 2) * inv_2s2)
    rna = 1.5 * nucleoli * nucleus + 0.3 * nucleus + 0.35 * cyto
    area_n, area_c = np.pi * p.nucleus_radius_px**2, np.pi * p.cell_radius_px**2
    patches = np.stack([_norm(nucleus, 0.8 * area_n), _norm(er, 0.35 * area_c), _norm(rna, 0.2 * area_c),
                        _norm(agp, 0.5 * area_c), _norm(mito, 0.6 * area_c)])
    patches *= np.exp(rng.normal(0.0, p.cell_cv, (5, n, 1, 1))).astype(np.float32)
    return whole, patches, half


def _add_patches(whole, patches, half, size) -> np.ndarray:
    """Sum the cell patches into a ``[5, size, size]`` image (one ``bincount`` per channel)."""
    img = np.zeros((len(CHANNELS), size, size))
    width = size + 2 * half
    g = np.arange(2 * half + 1)
    rows = whole[:, 0, None, None] + g[None, :, None]
    cols = whole[:, 1, None, None] + g[None, None, :]
    idx = (rows * width + cols).ravel()
    for c in range(len(CHANNELS)):
        padded = np.bincount(idx, weights=patches[c].ravel(), minlength=width * width)
        img[c] = padded.reshape(width, width)[half:half + size, half:half + size]
    return img


def render_site_morphology(state: np.ndarray, rng: np.random.Generator, nuisance_rng: np.random.Generator,
                           params: RenderParams, gain: np.ndarray | None = None,
                           well: nz.WellNuisance | None = None) -> np.ndarray:
    """Render one site with the phenotype in morphology and the surface from ``nuisance_rng``.

    Args:
        state: Cell state.
        rng: The site's biological generator (cell shapes, texture, shot noise).
        nuisance_rng: The site's nuisance generator (positions, blur, illumination, debris, camera).
        params: Renderer constants; ``params.nuisance`` is the level.
        gain: Per-channel plate gain (default 1).
        well: The well's stain gain and seeding density (default: none).

    Returns:
        The raw camera image ``[5, H, W]``, uint16.
    """
    p, level = params, float(params.nuisance or 0.0)
    state = np.asarray(state, np.float64).copy()
    state[1:3] = np.clip(state[1:3], -STATE_CLIP, STATE_CLIP)
    size = p.image_size
    gain = np.ones(len(CHANNELS)) if gain is None else np.asarray(gain, np.float64)
    if well is not None:
        gain = gain * well.gain
    density = 1.0 if well is None else well.density
    expected = np.exp(min(state[0], 20.0)) * (size / _REF_SIZE) ** 2 * density
    n = int(min(rng.poisson(expected), p.max_cells))
    img = np.zeros((len(CHANNELS), size, size))
    if n:
        cands = nz.cluster_centres(nuisance_rng, 3 * n, size, level, p.nuisance_params)
        centre = _spaced(cands, n, p.cell_radius_px * np.exp(state[1] / 2.0))  # cells keep their distance
        img = _add_patches(*_morph_patches(rng, centre, state, p), size)
    tex = texture_fields(rng, len(CHANNELS) - 1, size, p.texture_band_px)
    img[1:] *= np.clip(1.0 + p.texture_amp * np.exp(state[5]) * tex, 0.0, None)
    signal = img * (np.asarray(p.levels) * gain)[:, None, None]
    photons, (read_extra, offset) = nz.apply_site(signal, nuisance_rng, level, np.asarray(p.levels),
                                                  np.asarray(p.background), p.nuisance_params)
    counts = rng.poisson(photons).astype(np.float64)
    counts += p.camera_offset + offset + rng.normal(0.0, np.hypot(p.read_noise, read_extra), counts.shape)
    return np.clip(np.rint(counts), 0, 65535).astype(np.uint16)


def render_site(state: np.ndarray, rng: np.random.Generator, params: RenderParams | None = None,
                gain: np.ndarray | None = None, nuisance_rng: np.random.Generator | None = None,
                well: nz.WellNuisance | None = None) -> np.ndarray:
    """Render one site of a well from its cell state.

    Args:
        state: Cell state (see :data:`molwm.sim.biology.STATE_NAMES`).
        rng: Generator for this site (cell placement and noise).
        params: Renderer constants (defaults: :class:`RenderParams`).
        gain: Per-channel plate gain (default 1).
        nuisance_rng: The site's nuisance generator, used when ``params.nuisance`` is set
            (default: a generator spawned from ``rng``).
        well: The well's nuisance (stain gain, seeding density), when ``params.nuisance`` is set.

    Returns:
        The raw camera image, uint16.

    Shapes:
        state: ``[6]``; gain: ``[5]``; returns ``[5, H, W]`` in :data:`CHANNELS` order.
    """
    p = params or RenderParams()
    if p.nuisance is not None:
        nuisance_rng = nuisance_rng if nuisance_rng is not None else rng.spawn(1)[0]
        return render_site_morphology(state, rng, nuisance_rng, p, gain, well)
    # sizes are clipped so that an extreme state cannot make patches huge
    state = np.asarray(state, np.float64).copy()
    state[1:3] = np.clip(state[1:3], -STATE_CLIP, STATE_CLIP)
    size = p.image_size
    gain = np.ones(len(CHANNELS)) if gain is None else np.asarray(gain, np.float64)
    expected = np.exp(min(state[0], 20.0)) * (size / _REF_SIZE) ** 2
    n = int(min(rng.poisson(expected), p.max_cells))
    img = np.zeros((len(CHANNELS), size, size))
    if n:
        img = _add_patches(*_cell_patches(rng, n, state, p), size)
    # cytoplasmic texture in every channel but DNA
    tex = texture_fields(rng, len(CHANNELS) - 1, size, p.texture_band_px)  # [4, H, W]
    amp = p.texture_amp * np.exp(state[5])
    img[1:] *= np.clip(1.0 + amp * tex, 0.0, None)
    level = np.asarray(p.levels) * gain * np.exp([-state[2] / 2.0, state[3], state[3], state[4], state[4]])
    photons = img * level[:, None, None] + np.asarray(p.background)[:, None, None]
    counts = rng.poisson(photons).astype(np.float64)
    counts += p.camera_offset + rng.normal(0.0, p.read_noise, counts.shape)
    return np.clip(np.rint(counts), 0, 65535).astype(np.uint16)
