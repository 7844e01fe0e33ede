"""Where molwm keeps its files; standard library only, so listing datasets does not import torch."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$MOLWM_CACHE``, else ``~/.cache/molwm``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("MOLWM_CACHE", "~/.cache/molwm")).expanduser()
