"""The MLflow pyfunc wrapper, so ``mlflow models serve`` answers SMILES queries over REST.

A request is a frame with a ``smiles`` column (``{"dataframe_split": ...}`` or
``{"inputs": {"smiles": [...]}}``); the answer has one row per input, in order,
with a ``status`` column. Bad SMILES are answered row by row (``status`` names
the reason); requests over the limits are refused with HTTP 400 and a message:

* ``MOLWM_MAX_MOLECULES`` molecules per request (default 1000),
* ``MOLWM_MAX_SMILES_LENGTH`` characters per SMILES (default 1000),

read from the environment when the server starts (``molwm serve`` sets them).
``molwm serve`` runs MLflow's scoring app (FastAPI) under uvicorn behind
:class:`RequestGuard`, which refuses a body over ``--max-body-mb`` before reading
it, and malformed JSON (not UTF-8, not JSON, nested too deeply) before MLflow
parses it; every error answer is one line of JSON without a traceback.
An optional request parameter ``what`` (``auto``, ``predict``, ``embed``) picks
properties or embeddings.

A world model (``molwm pretrain`` with ``kind: world``) answers forecasts
instead: a frame with ``smiles``, ``dose_uM`` and ``time_h`` (and optionally
``context``), one row per (compound, dose, time), answered with the decoded
read-outs, their ensemble spread and a ``status`` per row.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from molwm.api import load_model
from molwm.checkpoints import checked_model_folder
from molwm.errors import RequestError
# re-exported: the guard lived here before molwm.request_guard
from molwm.request_guard import MAX_JSON_DEPTH, RequestGuard, check_body, json_depth  # noqa: F401
from molwm.request_guard import MAX_INCOMPLETE_BYTES
from molwm.tracking import default_tracking_uri, download_model

DEFAULT_MAX_MOLECULES = 1000
DEFAULT_MAX_SMILES_LENGTH = 1000
DEFAULT_MAX_BODY_MB = 4.0
"""Largest request body ``molwm serve`` reads (1000 SMILES of 1000 characters are about 1 MB of JSON)."""
MODEL_PATH_ENV = "MOLWM_SERVE_MODEL"
"""Environment variable naming the local model folder :func:`create_app` serves."""

_log = logging.getLogger(__name__)


def _refuse(message: str) -> MlflowException:
    """An error the scoring server turns into HTTP 400 with this message (no traceback)."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _limit(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


class MolwmPyfunc(mlflow.pyfunc.PythonModel):
    """Loads the molwm checkpoint stored as the ``checkpoint`` artifact (logged from code by
    :mod:`molwm.packaging`; models logged before that, as a pickle of this class, still load)."""

    def load_context(self, context) -> None:
        self.model = load_model(context.artifacts["checkpoint"])  # a molecule model or a world model
        self.max_molecules = _limit("MOLWM_MAX_MOLECULES", DEFAULT_MAX_MOLECULES)
        self.max_smiles_length = _limit("MOLWM_MAX_SMILES_LENGTH", DEFAULT_MAX_SMILES_LENGTH)
        if hasattr(self.model, "max_smiles_length"):  # the molecule family checks lengths itself too
            self.model.max_smiles_length = self.max_smiles_length

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """Check the request against the limits, then let the model answer one row per request row
        (``answer``, which every served family has; :func:`molwm.api.load_model`)."""
        frame = _as_frame(model_input)
        if len(frame) > self.max_molecules:
            raise _refuse(f"request has {len(frame)} molecules, over the limit of {self.max_molecules} per "
                          f"request: split it (or start the server with a higher --max-molecules)")
        for i, s in enumerate(frame["smiles"].tolist()):
            if isinstance(s, str) and len(s) > self.max_smiles_length:
                raise _refuse(f"row {i}: SMILES has {len(s)} characters, over the limit of "
                              f"{self.max_smiles_length} (--max-smiles-length)")
        try:
            out = self.model.answer(frame, params)
        except RequestError as err:
            raise _refuse(str(err)) from None
        except Exception as err:  # never a traceback to the client
            raise MlflowException(f"molwm could not answer this request: {type(err).__name__}: {err}") from None
        # missing values as None, so the server writes JSON null (NaN is not JSON)
        return out.astype(object).where(out.notna(), None)


def _as_frame(model_input) -> pd.DataFrame:
    if isinstance(model_input, pd.DataFrame):
        if "smiles" not in model_input.columns:
            raise _refuse(f"input needs a 'smiles' column (got {', '.join(map(str, model_input.columns))})")
        cells = model_input["smiles"].tolist()
        if len(cells) == 1 and isinstance(cells[0], (list, tuple, np.ndarray)):
            # {"smiles": [...]} given to pyfunc.predict arrives as one row holding the list
            return pd.DataFrame({"smiles": list(cells[0])})
        return model_input
    if isinstance(model_input, dict) and "smiles" in model_input:
        return pd.DataFrame({"smiles": list(model_input["smiles"])})
    if isinstance(model_input, (list, tuple)):
        return pd.DataFrame({"smiles": list(model_input)})
    raise _refuse("input must be a table with a 'smiles' column")


# ---- the server: MLflow's scoring app behind molwm's request guard -----------------------------------


class _Served:
    """What MLflow's scoring app calls: ``predict(data, params)`` on a :class:`MolwmPyfunc` molwm built."""

    def __init__(self, pyfunc: MolwmPyfunc):
        self.pyfunc = pyfunc

    def predict(self, data, params=None):
        return self.pyfunc.predict(None, data, params)


def served_model(folder: str | Path) -> mlflow.pyfunc.PyFuncModel:
    """The model in a logged model ``folder``, rebuilt by molwm's own loader, never by MLflow's.

    MLflow's loader would run the folder's stored ``pyfunc_model.py`` (or unpickle ``python_model.pkl``):
    code anyone with write access to the registry can change. Here the folder's checkpoint is read with
    ``weights_only=True`` and its stored code must equal the installed molwm's
    (:func:`molwm.checkpoints.checked_model_folder`); the ``MLmodel`` file gives only the request schema.

    Raises:
        CheckpointError: If the folder's stored code differs from molwm's, or it holds no readable checkpoint.
    """
    from types import SimpleNamespace

    from mlflow.models import Model

    checkpoint = checked_model_folder(folder)
    pyfunc = MolwmPyfunc()
    pyfunc.load_context(SimpleNamespace(artifacts={"checkpoint": str(checkpoint)}))
    meta = Model.load(str(Path(folder) / "MLmodel"))
    return mlflow.pyfunc.PyFuncModel(model_meta=meta, model_impl=_Served(pyfunc))


def create_app():
    """The ASGI app ``molwm serve`` runs (a uvicorn factory): MLflow's scoring server for the model folder
    in ``MOLWM_SERVE_MODEL`` behind :class:`RequestGuard` (``MOLWM_MAX_BODY_MB``), with
    ``MOLWM_SERVE_THREADS`` torch threads per worker process (default 1)."""
    from mlflow.pyfunc import scoring_server

    torch.set_num_threads(_limit("MOLWM_SERVE_THREADS", 1))
    model = served_model(os.environ[MODEL_PATH_ENV])
    max_mb = float(os.environ.get("MOLWM_MAX_BODY_MB") or DEFAULT_MAX_BODY_MB)
    return RequestGuard(scoring_server.init(model), max_body_bytes=int(max_mb * 2**20))


def serve_command(host: str = "127.0.0.1", port: int = 5000, workers: int | None = None,
                  access_log: bool = False) -> list[str]:
    """The uvicorn command line ``molwm serve`` runs (the model folder and limits go in its environment).

    No access log unless ``access_log``: a line per request on the server's output stalls the server once
    a pipe nobody reads is full (64 KB, about 1,000 requests), which is how a served model froze under
    load (docs/reliability.md). A request head up to 1 MB is read whole (``--h11-max-incomplete-event-size``),
    so the guard answers an oversized one with 431 rather than uvicorn closing the connection on it; answers
    carry no ``server`` header (like the hidden ``/version``, it would name the software to attackers)."""
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "molwm.serving:create_app", "--host", host,
           "--port", str(port), "--workers", str(workers or 1), "--timeout-keep-alive", "5",
           "--h11-max-incomplete-event-size", str(MAX_INCOMPLETE_BYTES), "--no-server-header"]
    return cmd if access_log else cmd + ["--no-access-log"]


def serve_env(model_path: Path, max_molecules: int, max_smiles_length: int, max_body_mb: float, tracking_uri: str,
              threads: int = 1) -> dict:
    """Environment for the server: the model folder, molwm's limits and the tracking store."""
    return dict(os.environ, MOLWM_MAX_MOLECULES=str(max_molecules), MOLWM_MAX_SMILES_LENGTH=str(max_smiles_length),
                MOLWM_MAX_BODY_MB=str(max_body_mb), MOLWM_SERVE_THREADS=str(threads),
                MLFLOW_TRACKING_URI=tracking_uri, **{MODEL_PATH_ENV: str(model_path)})


def serve(model_uri: str, host: str = "127.0.0.1", port: int = 5000, max_molecules: int = DEFAULT_MAX_MOLECULES,
          max_smiles_length: int = DEFAULT_MAX_SMILES_LENGTH, workers: int | None = None,
          tracking_uri: str | None = None, max_body_mb: float = DEFAULT_MAX_BODY_MB, threads: int = 1,
          access_log: bool = False, announce=None) -> int:
    """Serve ``model_uri`` over REST in the foreground with molwm's limits (MLflow's scoring server behind
    :class:`RequestGuard`, run by uvicorn); its exit code. ``announce()``, when given, is called once the
    model folder has passed its checks, before the server starts.

    Raises:
        StoreError: If the store cannot resolve ``model_uri``.
        CheckpointError: If the model's stored code is not the installed molwm's, or it has no checkpoint.
    """
    store = tracking_uri or default_tracking_uri()
    local = Path(model_uri) if Path(model_uri).is_dir() else download_model(model_uri, store)
    checked_model_folder(local, model_uri)  # refused here, in one line, before a server starts
    if announce is not None:
        announce()
    # its own process group, so stopping molwm (Ctrl-C or SIGTERM to its PID) stops the uvicorn workers too
    proc = subprocess.Popen(serve_command(host, port, workers, access_log), start_new_session=True,
                            env=serve_env(local, max_molecules, max_smiles_length, max_body_mb, store, threads))

    stopped = []

    def stop(*_):
        stopped.append(True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            try:
                code = proc.wait()
                return 0 if stopped else code
            except KeyboardInterrupt:
                stop()
    finally:
        signal.signal(signal.SIGTERM, previous)
