"""The one owner of molwm's checkpoint format and of model URIs.

A checkpoint is a ``torch.save`` dict of tensors and plain Python values, read
back with ``weights_only=True`` (no code runs on load). Every checkpoint has:

* ``format``: :data:`CHECKPOINT_FORMAT`;
* ``kind``: the model kind (see :mod:`molwm.kinds`, the registry that knows how
  each kind rebuilds itself from the rest of the dict);
* ``config``: the resolved config of the run that wrote it;
* the weights (``model`` or, for a fine-tuned ensemble, ``members``), ``step`` (steps
  trained) and the kind's own metadata;
* for a run that can be resumed, one separate block ``resume`` (:data:`RESUME_KEYS`:
  ``step``, ``optimizer``, ``run_id``, ``history``, ``pending``, ``elapsed``, and where
  they apply ``world_size``, the RNG state and the task's own loop state), read with
  :func:`resume_block`. Everything outside it is what rebuilds the model, so
  :func:`without_resume` gives the checkpoint to ship. Checkpoints written before the
  block existed (these keys at the top level) load and resume unchanged.

Writes are atomic (a temporary file, fsync, rename), and the replaced file is
kept as ``prev.pt``, the fallback of :func:`load_resume_checkpoint`. Model URIs
(paths, ``runs:/...``, ``models:/name@alias``, ``models:/name/version``) are
resolved here too, without changing MLflow's global tracking URI.

This is the only module that calls ``torch.load``.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from molwm.atomic import atomic_path
from molwm.errors import MolwmError
from molwm.tracking import StoreError, default_tracking_uri, download_model
from molwm.weights import is_shipped_uri, shipped_path

CHECKPOINT_FORMAT = 1
"""Version of the layout above; a checkpoint of another version is refused with a clear error."""
LEGACY_MULTIMODAL_LAYOUT = ("graph", "assay", "image")
"""The modalities every multimodal model had before its config recorded them (``model.modalities``)."""


RESUME_KEYS = ("step", "optimizer", "run_id", "history", "pending", "elapsed", "world_size")
"""The resume block's keys that checkpoints before the block kept at the top level."""


class CheckpointError(MolwmError, RuntimeError):
    """A checkpoint is missing, truncated, foreign, or of a kind molwm does not know."""


def resume_block(state: dict[str, Any]) -> dict[str, Any]:
    """What resuming ``state`` needs: its ``resume`` block, or for a checkpoint written before the
    block existed, the same keys read from the top level.

    Raises:
        CheckpointError: If the checkpoint holds no resumable run (e.g. a shipped or fine-tuned model).
    """
    if isinstance(state.get("resume"), dict):
        return state["resume"]
    if "optimizer" in state:  # the flat layout of earlier versions
        return {k: state[k] for k in RESUME_KEYS if k in state}
    raise CheckpointError("this checkpoint holds a model but no run to resume (no optimizer state)")


def without_resume(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` without what only resuming needs (the model, its config and metadata stay)."""
    if isinstance(state.get("resume"), dict):
        return {k: v for k, v in state.items() if k != "resume"}
    return {k: v for k, v in state.items() if k not in RESUME_KEYS or k == "step"}


# ---------------------------------------------------------------- write


def to_cpu(tree: Any) -> Any:
    """``tree`` (nested dicts, lists and tuples) with every tensor on the CPU.

    CPU tensors are returned as they are (no copy), so a CPU run's checkpoint is unchanged.
    """
    if isinstance(tree, torch.Tensor):
        return tree.cpu()
    if isinstance(tree, dict):
        moved = {k: to_cpu(v) for k, v in tree.items()}
        if all(moved[k] is v for k, v in tree.items()):
            return tree  # nothing to move: the very same object (a CPU run's checkpoint is unchanged)
        out = type(tree)(moved)  # keeps OrderedDict (state_dict)
        if hasattr(tree, "_metadata"):  # a state_dict's per-module versions, read by load_state_dict
            out._metadata = tree._metadata
        return out
    if isinstance(tree, (list, tuple)) and not hasattr(tree, "_fields"):
        moved = [to_cpu(v) for v in tree]
        return tree if all(m is v for m, v in zip(moved, tree)) else type(tree)(moved)
    return tree


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` atomically: to a temporary file beside it, fsync, then rename over ``path``.

    Tensors are written as CPU tensors (:func:`to_cpu`), so a checkpoint of a GPU run
    loads on a machine without one; resuming moves them back to the model's device.
    The checkpoint it replaces is kept as ``prev.pt`` beside it, the fallback of
    :func:`load_resume_checkpoint` if ``path`` is ever found damaged.

    Args:
        state: The checkpoint dict (``kind``, ``config``, weights, metadata, resume keys).
        path: Where it goes; parent folders are created.

    Returns:
        ``path``.

    Raises:
        DiskFullError: ``No space left on device while writing <path> (<size> needed)``; the
            checkpoint there before is unchanged.
    """
    path = Path(path)
    state = {**to_cpu(state), "format": CHECKPOINT_FORMAT}
    # serialised in memory first: torch reports a failed file write as "enforce fail at
    # inline_container.cc" without its cause, so a full disk would not say so
    buffer = io.BytesIO()
    torch.save(state, buffer)

    def keep_previous():
        if path.is_file():
            os.replace(path, previous_checkpoint(path))

    with atomic_path(path, needed=buffer.getbuffer().nbytes, before_replace=keep_previous) as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return path


def previous_checkpoint(path: str | Path) -> Path:
    """Where the checkpoint before ``path`` is kept."""
    return Path(path).with_name("prev.pt")


# ----------------------------------------------------------------- read


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file with ``weights_only=True`` (no arbitrary code runs).

    Raises:
        CheckpointError: Naming the file when it is missing, truncated or foreign.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, wrong file type, a pickle with code in it, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        if "weights_only" in first:  # torch's hint to retry unsafely is not advice molwm gives
            first = first.split(". In PyTorch")[0] + " (not a checkpoint, or one that would run code when read)"
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(err).__name__}: {first})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a molwm checkpoint (format {CHECKPOINT_FORMAT})")
    return with_recorded_layout(state)


def with_recorded_layout(state: dict[str, Any]) -> dict[str, Any]:
    """A multimodal run's checkpoint written before its model config named its modalities was built with
    graph, assay and image: say so, so that its model is rebuilt with those parts (and resumes) whatever
    has been registered since. Returns ``state``, changed in place."""
    config = state.get("config")
    model = config.get("model") if isinstance(config, dict) and config.get("kind") == "multimodal" else None
    if isinstance(model, dict) and model.get("modalities") is None:
        model["modalities"] = list(LEGACY_MULTIMODAL_LAYOUT)
    return state


def load_resume_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint to resume from; if it is truncated or corrupt, fall back to the previous good one.

    The returned dict has ``resumed_from_fallback`` set when the fallback was used.

    Raises:
        CheckpointError: Naming both files when neither can be read.
    """
    try:
        return load_checkpoint(path)
    except CheckpointError as err:
        prev = previous_checkpoint(path)
        if Path(path).name == prev.name or not prev.is_file():
            raise
        try:
            state = load_checkpoint(prev)
        except CheckpointError as err2:
            raise CheckpointError(f"{err}; the previous checkpoint is unusable too: {err2}") from None
        warnings.warn(f"{err}; resuming from the previous good checkpoint {prev} (step {state.get('step')})",
                      stacklevel=2)
        state["resumed_from_fallback"] = True
        return state


def is_mlflow_uri(uri: str | Path) -> bool:
    """True for ``runs:/``, ``models:/`` and other ``scheme://`` URIs (not a plain path)."""
    text = str(uri)
    return "://" in text or text.startswith(("runs:/", "models:/"))


def resolve_uri(uri: str | Path, tracking_uri: str | None = None) -> Path:
    """A local molwm checkpoint file for ``uri``.

    Args:
        uri: A file path, a model shipped in the package (``molwm:base``, :mod:`molwm.weights`), or
            an MLflow model URI (``runs:/<run>/<name>``, ``models:/name@alias``,
            ``models:/name/version``, ``models:/m-...``), downloaded from the store.
        tracking_uri: The MLflow store; default :func:`default_tracking_uri`. MLflow's global
            tracking URI is left as it was.

    Raises:
        CheckpointError: When the path does not exist, or the store cannot resolve the URI, or the
            MLflow model holds no checkpoint.
    """
    if is_shipped_uri(uri):  # molwm:base and the other models inside the package, digest checked
        return shipped_path(uri)
    if not is_mlflow_uri(uri):
        path = Path(uri)
        if path.is_dir() and (path / "MLmodel").is_file():  # a logged model folder, downloaded or exported
            return checked_model_folder(path)
        if not path.is_file():
            raise CheckpointError(f"no model at {uri} (expected a checkpoint file or an MLflow model URI)")
        return path
    store = tracking_uri or default_tracking_uri()
    try:
        local = download_model(str(uri), store)
    except StoreError as err:
        raise CheckpointError(f"cannot load model {uri} from MLflow store {store}: {err}") from None
    if local.is_file():
        return local
    return checked_model_folder(local, uri)


PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
"""The models-from-code file every molwm model is logged with (:mod:`molwm.packaging`)."""
MAX_MLMODEL_BYTES = 1 << 20
"""Largest ``MLmodel`` file read (molwm's are about 1 KB)."""


def checked_model_folder(folder: str | Path, uri: str | Path | None = None) -> Path:
    """The checkpoint inside a logged molwm model folder, after checking that the folder's stored code is
    the installed molwm's own.

    Nothing stored with the model is run or unpickled: the ``MLmodel`` file is read as plain YAML for the
    ``checkpoint`` artifact's path, and the stored models-from-code file (``pyfunc_model.py``) must be
    byte-identical to the one the installed molwm writes (:data:`PYFUNC_CODE`). Models logged before
    models-from-code (a ``python_model.pkl``) load from their checkpoint; the pickle is never read.

    Raises:
        CheckpointError: In one line, naming the folder (and both digests when the code differs).
    """
    import hashlib

    import yaml

    folder = Path(folder)
    name = uri or folder
    meta_path = folder / "MLmodel"
    if not meta_path.is_file():
        raise CheckpointError(f"{name}: not an MLflow model folder (no MLmodel file in {folder})")
    if meta_path.stat().st_size > MAX_MLMODEL_BYTES:
        size = meta_path.stat().st_size
        raise CheckpointError(f"{meta_path}: {size:,} bytes is too large for an MLmodel file")
    try:
        meta = yaml.safe_load(meta_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{meta_path}: not a readable MLmodel file ({type(err).__name__})") from None
    flavor = (meta or {}).get("flavors", {}).get("python_function") if isinstance(meta, dict) else None
    if not isinstance(flavor, dict):
        raise CheckpointError(f"{name}: {meta_path} has no python_function flavor; not a molwm model")
    stored = [p for p in (folder / PYFUNC_CODE.name, folder / "code" / PYFUNC_CODE.name) if p.is_file()]
    code_path = flavor.get("model_code_path")
    if code_path or stored:
        ours = hashlib.sha256(PYFUNC_CODE.read_bytes()).hexdigest()
        if not stored:
            named = Path(str(code_path)).name
            raise CheckpointError(f"{name}: the model names stored code ({named}) that is not molwm's "
                                  f"{PYFUNC_CODE.name}; refusing to load it")
        for path in stored:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != ours:
                raise CheckpointError(
                    f"{name}: stored code {path.name} (sha256 {digest}) differs from the installed "
                    f"molwm's (sha256 {ours}); refusing to load a model whose code was changed")
    artifact = ((flavor.get("artifacts") or {}).get("checkpoint") or {}).get("path")
    if not isinstance(artifact, str) or not artifact:
        found = sorted((folder / "artifacts").rglob("*.pt")) if (folder / "artifacts").is_dir() else []
        if not found:
            raise CheckpointError(f"no molwm checkpoint (*.pt) inside the model at {name}")
        return found[0]
    path = (folder / artifact).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise CheckpointError(f"{name}: the checkpoint artifact {artifact!r} points outside the model folder")
    if not path.is_file():
        raise CheckpointError(f"{name}: checkpoint artifact {artifact} is missing from {folder}")
    return path


def read(uri: str | Path, tracking_uri: str | None = None) -> tuple[Path, dict[str, Any]]:
    """Resolve ``uri`` (:func:`resolve_uri`) and load the checkpoint: ``(local path, state)``."""
    path = resolve_uri(uri, tracking_uri)
    return path, load_checkpoint(path)
