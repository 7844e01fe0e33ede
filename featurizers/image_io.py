"""Reading one Cell Painting channel file: ``.tif`` / ``.tiff`` / ``.png`` / ``.npy`` to a 2-D float32 array.

Every failure is an :class:`ImageError` naming the file and the problem (split out of
:mod:`featurizers.image`, which re-exports both names).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from featurizers.errors import FeaturizationError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".npy")
_GRAY_MODES = ("1", "L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N")



class ImageError(FeaturizationError):
    """One image file (or one site) cannot be read.

    Args:
        reason: Human-readable explanation; names the file.
        code: ``missing_file``, ``unsupported_format``, ``unreadable``,
            ``bad_shape``, ``shape_mismatch``, ``bad_dtype``, ``nan_pixels``
            or ``no_channels``.
        path: The offending file, when there is one.
    """

    def __init__(self, reason: str, code: str = "unreadable", path: str | None = None):
        super().__init__(reason, code)
        self.path = path


def read_channel(path: str | Path) -> np.ndarray:
    """Read one channel image as a 2-D float32 array.

    Args:
        path: A ``.tif``/``.tiff``/``.png`` grayscale image (8-bit, 16-bit
            ``I;16``, 32-bit integer or float) or a 2-D ``.npy`` array.

    Returns:
        The pixels, shape ``[H, W]``, float32, every value finite.

    Raises:
        ImageError: The file is missing, unreadable or truncated, not 2-D,
            not a real-valued grayscale image, or has NaN/inf pixels.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: image file not found", "missing_file", str(path))
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ImageError(f"{path}: unsupported image format '{suffix or path.name}' "
                         f"(expected one of {', '.join(IMAGE_SUFFIXES)})", "unsupported_format", str(path))
    arr = _read_npy(path) if suffix == ".npy" else _read_pil(path)
    if arr.ndim != 2:
        raise ImageError(f"{path}: expected a 2-D image, got shape {tuple(arr.shape)}",
                         "bad_shape", str(path))
    if arr.dtype.kind not in "buif":
        raise ImageError(f"{path}: pixels have dtype {arr.dtype}, expected integers or real floats",
                         "bad_dtype", str(path))
    out = arr.astype(np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        raise ImageError(f"{path}: {int(bad.sum())} of {out.size} pixels are NaN or infinite",
                         "nan_pixels", str(path))
    return out


def _read_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:  # object arrays need pickle: refuse them
        raise ImageError(f"{path}: cannot read .npy ({exc}); object arrays are not images",
                         "bad_dtype", str(path)) from None
    except (OSError, EOFError) as exc:
        raise ImageError(f"{path}: unreadable or truncated .npy file ({exc})",
                         "unreadable", str(path)) from None
    if not isinstance(arr, np.ndarray):
        raise ImageError(f"{path}: .npz archives are not images; save one 2-D array with np.save",
                         "unreadable", str(path))
    return arr


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns about corrupt EXIF before failing properly
            with Image.open(path) as im:
                frames = getattr(im, "n_frames", 1)
                if frames != 1:
                    raise ImageError(f"{path}: has {frames} frames, expected a single 2-D plane",
                                     "bad_shape", str(path))
                if im.mode not in _GRAY_MODES:
                    raise ImageError(f"{path}: not a grayscale image (PIL mode {im.mode}); "
                                     f"save each channel as its own 2-D file", "bad_shape", str(path))
                im.load()
                return np.asarray(im)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a readable image (unknown or corrupt header)",
                         "unreadable", str(path)) from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise ImageError(f"{path}: unreadable or truncated image ({exc})", "unreadable", str(path)) from None
