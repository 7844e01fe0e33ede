"""Cell Painting sites: image files to ``[C, H, W]`` float32 arrays, every bad file reported.

A *site* is one field of view, imaged once per channel (:data:`CHANNELS`, in
that order). :func:`load_site` stacks its channel files; a channel that was
not imaged (a ``None`` path) becomes a plane of zeros with ``present=False``.
Those zeros are placeholders only: encoders must read ``present`` and never
treat an absent plane as data.

Single-site calls raise :class:`ImageError` (a :class:`FeaturizationError`
naming the file and the problem); the batch call :func:`featurize_sites` turns
each bad site into a :class:`Reject` and never raises.
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from featurizers.errors import Reject
from featurizers.image_io import IMAGE_SUFFIXES, ImageError, read_channel  # noqa: F401 (re-exported)

CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")
"""Cell Painting channels, in array order (see docs/data_layouts.md)."""

@dataclass(frozen=True)
class ImageSpec:
    """What the site featurizer produces.

    Attributes:
        channels: Channel names, in the order of the ``C`` axis.
        size: Height and width of every site (square), or None for the files'
            native size.
        dtype: Pixel dtype of the arrays.
        normalize: Per-channel normalisation applied (:func:`normalize_site`),
            or None for raw intensities.
        version: Bumped whenever the featurization logic changes.
    """

    channels: tuple[str, ...] = CHANNELS
    size: int | None = None
    dtype: str = "float32"
    normalize: str | None = "percentile"
    version: str = "1"

    def to_dict(self) -> dict:
        """Plain-dict form, suitable for JSON and MLflow params."""
        return asdict(self)


def _fit(img: np.ndarray, size: int, top: int, left: int) -> np.ndarray:
    """Crop ``img[..., H, W]`` to ``size`` from (top, left), zero-padding axes shorter than ``size``."""
    out = img[..., max(top, 0):max(top, 0) + size, max(left, 0):max(left, 0) + size]
    ph, pw = size - out.shape[-2], size - out.shape[-1]
    if ph or pw:
        pad = [(0, 0)] * (img.ndim - 2) + [(ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)]
        out = np.pad(out, pad)
    return out


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """Central ``size x size`` window; axes shorter than ``size`` are zero-padded evenly.

    Shapes:
        img: ``[..., H, W]`` -> ``[..., size, size]``
    """
    h, w = img.shape[-2:]
    return _fit(img, size, (h - size) // 2, (w - size) // 2)


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``size x size`` window at a position drawn from ``rng`` (zero-padded if too small).

    Args:
        img: Array whose last two axes are height and width.
        size: Output height and width.
        rng: Source of the window position (seed it for determinism).

    Shapes:
        img: ``[..., H, W]`` -> ``[..., size, size]``
    """
    h, w = img.shape[-2:]
    top = int(rng.integers(0, h - size + 1)) if h > size else (h - size) // 2
    left = int(rng.integers(0, w - size + 1)) if w > size else (w - size) // 2
    return _fit(img, size, top, left)


def normalize_site(img: np.ndarray, present: np.ndarray, method: str = "percentile",
                   low: float = 1.0, high: float = 99.0, clip: tuple[float, float] | None = (0.0, 1.0)
                   ) -> np.ndarray:
    """Per-channel robust scaling; deterministic, absent channels stay zero.

    ``percentile``: ``(x - p_low) / (p_high - p_low)``, clipped to ``clip``.
    ``zscore``: ``(x - mean) / std`` (no clipping unless ``clip`` is given
    explicitly). A constant channel becomes all zeros.

    Args:
        img: Raw intensities.
        present: Which channels hold data.
        method: ``"percentile"`` (default) or ``"zscore"``.
        low: Lower percentile (``percentile`` only).
        high: Upper percentile (``percentile`` only).
        clip: Output range for ``percentile``; None to keep outliers.

    Shapes:
        img: ``[C, H, W]``; present: ``[C]``; returns ``[C, H, W]`` float32.
    """
    if method not in ("percentile", "zscore"):
        raise ValueError(f"unknown normalisation '{method}' (expected 'percentile' or 'zscore')")
    out = np.zeros(img.shape, np.float32)
    for c in np.flatnonzero(present):
        x = img[c].astype(np.float64)
        if method == "percentile":
            lo, hi = np.percentile(x, [low, high])
            y = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
            if clip is not None:
                y = np.clip(y, *clip)
        else:
            std = x.std()
            y = (x - x.mean()) / std if std > 0 else np.zeros_like(x)
        out[c] = y
    return out


def load_site(paths: Sequence[str | Path | None], size: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Read one site's channel files into a stack.

    Args:
        paths: One entry per channel (normally in :data:`CHANNELS` order);
            None (or an empty string) marks a channel that was not imaged.
        size: If given, center-crop (or zero-pad) every plane to ``size x size``.

    Returns:
        ``(img, present)``. Absent channels are zero planes with
        ``present[c] == False``: encoders must use ``present``, never the zeros.

    Shapes:
        img: ``[C, H, W]`` float32 (``[C, size, size]`` if ``size``);
        present: ``[C]`` bool.

    Raises:
        ImageError: A file cannot be read (see :func:`read_channel`), the
            channels differ in shape (``shape_mismatch``, naming both files),
            or no channel is present (``no_channels``).
    """
    planes: list[np.ndarray | None] = []
    first: tuple[str, tuple[int, ...]] | None = None
    for p in paths:
        if p is None or (isinstance(p, str) and not p.strip()):
            planes.append(None)
            continue
        plane = read_channel(p)
        if first is None:
            first = (str(p), plane.shape)
        elif plane.shape != first[1]:
            raise ImageError(f"channel shapes differ within a site: {first[0]} is {first[1]} "
                             f"but {p} is {plane.shape}", "shape_mismatch", str(p))
        planes.append(plane)
    if first is None:
        raise ImageError("site has no channel files (every path is missing)", "no_channels")
    present = np.array([p is not None for p in planes], np.bool_)  # [C]
    img = np.stack([p if p is not None else np.zeros(first[1], np.float32) for p in planes])  # [C, H, W]
    if size is not None:
        img = center_crop(img, size)  # [C, size, size]
    return img, present


@dataclass
class SiteBatch:
    """The result of :func:`featurize_sites`.

    Attributes:
        images: Accepted sites, input order.
        present: Which channels each accepted site holds.
        index: Input position of each row of ``images``.
        rejects: One :class:`Reject` per bad site; ``smiles`` holds the first
            offending path (``""`` when no file is to blame).

    Shapes:
        images: ``[N, C, H, W]`` float32; present: ``[N, C]`` bool; index: ``[N]`` int64.
    """

    images: np.ndarray
    present: np.ndarray
    index: np.ndarray
    rejects: list[Reject] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.index)


def _load_chunk(args) -> tuple[list[int], list[np.ndarray], list[np.ndarray], list[Reject]]:
    sites, offset, size, normalize = args
    idx, imgs, pres, rejects = [], [], [], []
    for k, paths in enumerate(sites):
        try:
            img, present = load_site(paths, None)
            if normalize is not None:
                img = normalize_site(img, present, normalize)
            if size is not None:
                img = center_crop(img, size)
        except ImageError as exc:
            rejects.append(Reject(offset + k, exc.path or "", exc.reason, exc.code))
            continue
        idx.append(offset + k)
        imgs.append(img)
        pres.append(present)
    return idx, imgs, pres, rejects


def featurize_sites(sites: Sequence[Sequence[str | Path | None]], size: int | None, n_jobs: int = 0,
                    progress: bool = True, normalize: str | None = "percentile", chunk_size: int = 64
                    ) -> SiteBatch:
    """Load many sites; a bad site becomes a :class:`Reject`, never an exception.

    Each site is normalised on its full field of view (:func:`normalize_site`),
    then center-cropped (or zero-padded) to ``size``.

    Args:
        sites: One list of channel paths per site (None = channel absent).
        size: Output height and width; None keeps the native size, and sites
            whose size differs from the first good one are rejected (``bad_shape``).
        n_jobs: Processes; 1 runs here, <= 0 uses every core. Inputs of one
            chunk always run here.
        progress: Show a progress bar.
        normalize: ``"percentile"``, ``"zscore"`` or None for raw intensities.
        chunk_size: Sites per unit of work.

    Returns:
        A :class:`SiteBatch`; ``len(batch) + len(batch.rejects) == len(sites)``.

    Shapes:
        images: ``[N, C, H, W]``; present: ``[N, C]``; index: ``[N]``.
    """
    from tqdm.auto import tqdm

    from featurizers.molecule import resolve_n_jobs

    sites = list(sites)
    n_jobs = resolve_n_jobs(n_jobs)
    tasks = [(sites[a:a + chunk_size], a, size, normalize) for a in range(0, len(sites), chunk_size)]
    idx, imgs, pres, rejects = [], [], [], []
    bar = tqdm(total=len(sites), desc="images", unit="site", disable=not progress)

    def take(result):
        i, im, pr, rj = result
        idx.extend(i)
        imgs.extend(im)
        pres.extend(pr)
        rejects.extend(rj)
        bar.update(len(i) + len(rj))

    if n_jobs == 1 or len(tasks) <= 1:
        for task in tasks:
            take(_load_chunk(task))
    else:
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(min(n_jobs, len(tasks))) as pool:
            for result in pool.imap(_load_chunk, tasks):
                take(result)
    bar.close()
    n_channels = max((len(s) for s in sites), default=len(CHANNELS))
    if size is None and imgs:  # native size: the first good site sets it
        keep = []
        for i, im in zip(idx, imgs):
            ok = im.shape == imgs[0].shape
            keep.append(ok)
            if not ok:
                rejects.append(Reject(i, str(next((p for p in sites[i] if p), "")),
                                      f"site is {im.shape[1:]} but the first site is {imgs[0].shape[1:]}; "
                                      f"pass size= to crop every site alike", "bad_shape"))
        idx, imgs, pres = ([x for x, k in zip(col, keep) if k] for col in (idx, imgs, pres))
    hw = (size, size) if size is not None else (imgs[0].shape[1:] if imgs else (0, 0))
    return SiteBatch(
        images=np.stack(imgs) if imgs else np.zeros((0, n_channels, *hw), np.float32),  # [N, C, H, W]
        present=np.stack(pres) if pres else np.zeros((0, n_channels), np.bool_),  # [N, C]
        index=np.asarray(idx, np.int64),
        rejects=sorted(rejects, key=lambda r: r.index),
    )


@dataclass
class ChannelStats:
    """Per-channel intensity statistics fitted on training sites, applied to every site.

    Unlike per-site scaling, this keeps differences *between* sites (a brighter
    mitochondria channel, more nuclei), which is what a phenotype is; real
    Cell Painting pipelines normalise against plate or control statistics
    for the same reason.

    Attributes:
        mean: ``[C]`` mean intensity over the present pixels of the training sites.
        std: ``[C]`` their standard deviation (1 where a channel was never present).
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, images: np.ndarray, present: np.ndarray, chunk: int = 512) -> "ChannelStats":
        """Fit on ``images [N, C, H, W]`` (raw intensities) with ``present [N, C]``; reads
        ``chunk`` sites at a time, so memory does not grow with ``N``."""
        c = images.shape[1]
        total, sq, count = np.zeros(c), np.zeros(c), np.zeros(c)
        for i in range(0, len(images), chunk):
            x = images[i:i + chunk].astype(np.float64)  # [n, C, H, W]
            w = present[i:i + chunk].astype(np.float64)[:, :, None, None]
            total += (x * w).sum((0, 2, 3))
            sq += (x * x * w).sum((0, 2, 3))
            count += w.sum((0, 2, 3)) * x.shape[2] * x.shape[3]
        mean, std = np.zeros(c), np.ones(c)
        seen = count > 0
        mean[seen] = total[seen] / count[seen]
        std[seen] = np.sqrt(np.maximum(sq[seen] / count[seen] - mean[seen] ** 2, 0.0))
        return cls(mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32))

    def apply(self, images: np.ndarray, present: np.ndarray, dtype=np.float32, chunk: int = 512) -> np.ndarray:
        """``(x - mean) / std`` per channel; absent channels stay zero. Returns ``[N, C, H, W]`` of ``dtype``,
        computed ``chunk`` sites at a time (no full-size float32 temporaries)."""
        out = np.empty(images.shape, dtype=dtype)
        mean, std = self.mean[None, :, None, None], self.std[None, :, None, None]
        for i in range(0, len(images), chunk):
            x = (images[i:i + chunk].astype(np.float32) - mean) / std
            x[~present[i:i + chunk]] = 0.0
            out[i:i + chunk] = x
        return out

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}
