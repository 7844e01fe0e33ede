"""Writing the lab's JSON and image files (the layouts of docs/data_layouts.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from molwm.sim.render import CHANNELS

FORMATS = {"tiff": ".tiff", "npy": ".npy"}
"""Image formats and their file suffixes."""


def jsonable(obj):
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(jsonable(obj), indent=2, sort_keys=False) + "\n")


def write_site(folder: Path, stem: str, image: np.ndarray, fmt: str) -> list[str]:
    from PIL import Image

    names = []
    for c, ch in enumerate(CHANNELS):
        name = f"{stem}_{ch}{FORMATS[fmt]}"
        if fmt == "npy":
            np.save(folder / name, image[c])
        else:
            Image.fromarray(np.ascontiguousarray(image[c])).save(folder / name, format="TIFF")
        names.append(name)
    return names
