"""Surface detail of a synthetic site that owes nothing to the compound or the cell state.

Real plates differ in ways the biology does not: the stain is stronger on one
plate or in one well than another, the illumination falls off towards the
corners and tilts across the field, a site is slightly out of focus, debris and
autofluorescent texture sit in the background, wells are seeded with more or
fewer cells, cells clump, and the camera adds noise. :class:`NuisanceParams`
holds the size of each effect at full strength (``level = 1``, named ``high``);
a level in [0, 1] scales them all. Every draw comes from its own random stream
keyed by plate, well and site, never by the state, so the same state at two
nuisance draws is the same biology under different surfaces (tested).
Equations and constants: docs/synthetic_lab.md, section 4b.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

NUISANCE_LEVELS = {"none": 0.0, "low": 0.4, "high": 1.0}
"""Named nuisance levels."""


def parse_nuisance(value: str | float | None) -> float | None:
    """A nuisance level from a name (``legacy``, ``none``, ``low``, ``high``) or a number in [0, 1].

    Returns:
        None for ``legacy`` / None (the renderer of earlier versions: phenotype in channel
        intensities, no nuisance), else the level.

    Raises:
        ValueError: An unknown name or a number outside [0, 1].
    """
    if value is None or (isinstance(value, str) and value.strip().lower() == "legacy"):
        return None
    if isinstance(value, str):
        name = value.strip().lower()
        if name in NUISANCE_LEVELS:
            return NUISANCE_LEVELS[name]
        try:
            value = float(name)
        except ValueError:
            raise ValueError(f"nuisance must be legacy, none, low, high or a number in [0, 1], got {value!r}") \
                from None
    level = float(value)
    if not 0.0 <= level <= 1.0 or not np.isfinite(level):
        raise ValueError(f"nuisance level must be in [0, 1], got {level}")
    return level


@dataclass
class NuisanceParams:
    """Sizes of the nuisance effects at level 1 (each is multiplied by the level).

    Args:
        plate_gain_sd: Extra log-normal SD of the per-plate, per-channel stain gain.
        well_gain_sd: Log-normal SD of the per-well, per-channel stain gain.
        vignetting: Largest fall-off of illumination at the corners (fraction), drawn U(0, v) per site.
        gradient: Largest linear illumination tilt across the field (fraction), U(-g, g), random direction.
        blur_px: Largest focus blur (Gaussian SD, pixels), drawn U(0, b) per site.
        background_sd: Log-normal SD of the per-site, per-channel background level.
        background_texture: Amplitude of smooth background texture, as a fraction of the background.
        debris_per_site: Expected debris particles per 96x96 site (Poisson).
        debris_brightness: Debris peak brightness as a fraction of the channel's control level (U(0.3, 1) x).
        density_sd: Log-normal SD of the per-well seeding density (expected cell count).
        clustering: Share of cells placed in clumps around a few colony centres instead of uniformly.
        read_noise: Extra camera read noise SD.
        offset_sd: SD of the per-site camera offset.
    """

    plate_gain_sd: float = 0.4
    well_gain_sd: float = 0.3
    vignetting: float = 0.5
    gradient: float = 0.4
    blur_px: float = 0.8
    background_sd: float = 0.3
    background_texture: float = 0.5
    debris_per_site: float = 4.0
    debris_brightness: float = 1.0
    density_sd: float = 0.15
    clustering: float = 0.5
    read_noise: float = 9.0
    offset_sd: float = 10.0

    def params(self) -> dict:
        return asdict(self)


def plate_gain(rng: np.random.Generator, level: float, base_sd: float, n_channels: int,
               p: NuisanceParams) -> np.ndarray:
    """Per-channel stain gain of one plate (the renderer's own batch effect plus the nuisance). Shapes: ``[C]``."""
    return np.exp(rng.normal(0.0, np.hypot(base_sd, level * p.plate_gain_sd), n_channels))


@dataclass
class WellNuisance:
    """What one well's surface adds: a stain gain per channel and a seeding-density factor."""

    gain: np.ndarray
    density: float


def draw_well(rng: np.random.Generator, level: float, n_channels: int, p: NuisanceParams) -> WellNuisance:
    """Per-well stain gain ``[C]`` and seeding-density factor."""
    gain = np.exp(rng.normal(0.0, level * p.well_gain_sd, n_channels))
    return WellNuisance(gain, float(np.exp(rng.normal(0.0, level * p.density_sd))))


@lru_cache(maxsize=8)
def _radius2(size: int) -> np.ndarray:
    g = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    return (g[:, None] ** 2 + g[None, :] ** 2) / 2.0  # 1 at the corners


def _smooth_field(rng: np.random.Generator, n: int, size: int, sigma: float) -> np.ndarray:
    """Unit-SD smooth Gaussian fields ``[n, size, size]``."""
    white = rng.standard_normal((n, size, size))
    field = ndimage.gaussian_filter(white, (0, sigma, sigma), mode="wrap")
    return field / np.maximum(field.std(axis=(1, 2), keepdims=True), 1e-12)


def cluster_centres(rng: np.random.Generator, n: int, size: int, level: float, p: NuisanceParams) -> np.ndarray:
    """Candidate cell centres ``[n, 2]``: uniform, with a share ``level * clustering`` in clumps
    (Gaussian, SD size/8, around 1-3 colony centres)."""
    pts = rng.uniform(0.0, size, (n, 2))
    share = level * p.clustering
    clumped = rng.uniform(0.0, 1.0, n) < share
    if clumped.any():
        colonies = rng.uniform(0.15 * size, 0.85 * size, (int(rng.integers(1, 4)), 2))
        which = rng.integers(0, len(colonies), int(clumped.sum()))
        pts[clumped] = np.mod(colonies[which] + rng.normal(0.0, size / 8.0, (len(which), 2)), size)
    return pts


def apply_site(signal: np.ndarray, rng: np.random.Generator, level: float, levels: np.ndarray,
               background: np.ndarray, p: NuisanceParams) -> tuple[np.ndarray, np.ndarray]:
    """Blur, illumination and background of one site, before the camera.

    Args:
        signal: Photons from the cells per channel, already times stain levels and gains.
        rng: The site's nuisance generator.
        level: Nuisance level in [0, 1].
        levels: Control peak photons per channel (sets the debris brightness).
        background: Autofluorescence photons per channel at no nuisance.
        p: Nuisance sizes.

    Returns:
        Expected photons per pixel, and the extra camera read noise and offset ``[2]``.

    Shapes:
        signal: ``[C, H, W]``; levels, background: ``[C]``.
    """
    c, size, _ = signal.shape
    img = signal
    blur = rng.uniform(0.0, level * p.blur_px)
    if blur > 0.05:
        img = ndimage.gaussian_filter(img, (0, blur, blur), mode="nearest")
    # debris: small bright blobs in one to three channels, blurred like everything else
    n_debris = rng.poisson(level * p.debris_per_site * (size / 96.0) ** 2)
    bg = background * np.exp(rng.normal(0.0, level * p.background_sd, c))
    texture = 1.0 + level * p.background_texture * _smooth_field(rng, c, size, size / 12.0)
    extra = bg[:, None, None] * np.clip(texture, 0.0, None)
    if n_debris:
        yy, xx = np.mgrid[0:size, 0:size]
        for _ in range(n_debris):
            y, x = rng.uniform(0.0, size, 2)
            sd = rng.uniform(0.7, 2.0) + blur
            blob = np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2.0 * sd * sd))
            chans = rng.uniform(0.0, 1.0, c) < 0.5
            chans[rng.integers(0, c)] = True
            bright = rng.uniform(0.3, 1.0) * p.debris_brightness * levels
            extra = extra + (chans * bright)[:, None, None] * blob[None]
    # illumination: vignetting times a linear tilt, shared by the channels up to +-20%
    vig = rng.uniform(0.0, level * p.vignetting) * rng.uniform(0.8, 1.2, c)
    tilt = rng.uniform(-1.0, 1.0) * level * p.gradient
    phi = rng.uniform(0.0, 2.0 * np.pi)
    g = (np.arange(size) + 0.5) / size - 0.5
    ramp = 1.0 + tilt * (g[:, None] * np.sin(phi) + g[None, :] * np.cos(phi))
    illum = (1.0 - vig[:, None, None] * _radius2(size)[None]) * ramp[None]
    camera = np.array([level * p.read_noise, rng.normal(0.0, level * p.offset_sd)])
    return (img + extra) * np.clip(illum, 0.05, None), camera
