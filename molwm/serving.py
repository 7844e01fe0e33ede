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
import json
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
from molwm.tracking import default_tracking_uri, download_model
from molwm.world.forecast import WorldForecaster

DEFAULT_MAX_MOLECULES = 1000
DEFAULT_MAX_SMILES_LENGTH = 1000
DEFAULT_MAX_BODY_MB = 4.0
"""Largest request body ``molwm serve`` reads (1000 SMILES of 1000 characters are about 1 MB of JSON)."""
MAX_JSON_DEPTH = 32
"""Deepest JSON nesting a request may have (a request needs 3 levels: the object, ``inputs``, the list)."""
MAX_MESSAGE = 500
"""Longest error message sent back (characters)."""
INPUT_KEYS = ("inputs", "dataframe_split", "dataframe_records", "instances")
"""MLflow's JSON request layouts: a request has exactly one of these keys."""
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
        loaded = load_model(context.artifacts["checkpoint"])
        if isinstance(loaded, WorldForecaster):
            self.world, self.model = loaded, None
        else:
            self.world, self.model = None, loaded
        self.max_molecules = _limit("MOLWM_MAX_MOLECULES", DEFAULT_MAX_MOLECULES)
        self.max_smiles_length = _limit("MOLWM_MAX_SMILES_LENGTH", DEFAULT_MAX_SMILES_LENGTH)
        if self.model is not None:
            self.model.max_smiles_length = self.max_smiles_length

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """Check the request against the limits, then answer one row per molecule."""
        frame = _as_frame(model_input)
        if len(frame) > self.max_molecules:
            raise _refuse(f"request has {len(frame)} molecules, over the limit of {self.max_molecules} per "
                          f"request: split it (or start the server with a higher --max-molecules)")
        for i, s in enumerate(frame["smiles"].tolist()):
            if isinstance(s, str) and len(s) > self.max_smiles_length:
                raise _refuse(f"row {i}: SMILES has {len(s)} characters, over the limit of "
                              f"{self.max_smiles_length} (--max-smiles-length)")
        if self.world is not None:
            return _forecast_rows(self.world, frame)
        what = (params or {}).get("what", "auto")
        if what not in ("auto", "predict", "embed"):
            raise _refuse(f"parameter 'what' must be auto, predict or embed, got {what!r}")
        if what == "predict" and not self.model.can_predict:
            raise _refuse("this model is a pretrained encoder without property heads: ask for what=embed")
        try:
            out = self.model.predict_frame(frame, what)
        except Exception as err:  # never a traceback to the client
            raise MlflowException(f"molwm could not answer this request: {type(err).__name__}: {err}") from None
        # missing values as None, so the server writes JSON null (NaN is not JSON)
        return out.astype(object).where(out.notna(), None)


def _forecast_rows(world, frame: pd.DataFrame) -> pd.DataFrame:
    """A world model's answer: one forecast per request row (``smiles``, ``dose_uM``, ``time_h``)."""
    missing = [c for c in ("dose_uM", "time_h") if c not in frame.columns]
    if missing:
        raise _refuse(f"a world model needs columns smiles, dose_uM, time_h (missing: {', '.join(missing)})")
    try:
        out = world.forecast_rows(frame["smiles"].tolist(), frame["dose_uM"].tolist(), frame["time_h"].tolist(),
                                  frame["context"].tolist() if "context" in frame.columns else None)
    except ValueError as err:
        raise _refuse(str(err)) from None
    except Exception as err:  # never a traceback to the client
        raise MlflowException(f"molwm could not answer this request: {type(err).__name__}: {err}") from None
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


class RequestGuard:
    """ASGI middleware in front of MLflow's scoring app: bounds and checks a request before MLflow parses
    it, and turns every error answer into one line of JSON without a traceback.

    Before parsing: a body over ``max_body_bytes`` is refused with HTTP 413 (by its ``Content-Length``
    header before a byte is read, or while it streams in); a request without a content type gets 415; a
    JSON body that is not UTF-8, not JSON, not an object or nested more than ``max_depth`` levels gets 400.
    After: error answers keep their status, lose MLflow's ``stack_trace`` and echo of the input, and their
    message becomes one line; an exception escaping the app is logged here and answered with a one-line 500.

    Args:
        app: The ASGI app guarded (``mlflow.pyfunc.scoring_server.init(model)``).
        max_body_bytes: Largest request body accepted.
        max_depth: Deepest JSON nesting accepted (a request needs 3: object, ``inputs``, list).
    """

    def __init__(self, app, max_body_bytes: int, max_depth: int = MAX_JSON_DEPTH):
        self.app, self.max_body_bytes, self.max_depth = app, max_body_bytes, max_depth

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") != "/invocations" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        limit_mb = self.max_body_bytes / 2**20
        length = headers.get("content-length", "").strip()
        if length and (not length.isdigit() or int(length) > self.max_body_bytes):
            await _answer(send, 413, f"request body of {length} bytes is over the limit of {limit_mb:g} MB "
                                     f"(molwm serve --max-body-mb)")
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await _answer(send, 413, f"request body is over the limit of {limit_mb:g} MB "
                                         f"(molwm serve --max-body-mb)")
                return
            if not message.get("more_body", False):
                break
        problem = check_body(bytes(body), headers.get("content-type", ""), self.max_depth)
        if problem:
            await _answer(send, 415 if problem.startswith("content type") else 400, problem)
            return
        replayed = []

        async def replay():
            if not replayed:
                replayed.append(True)
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        started, held = {}, bytearray()

        async def one_line_errors(message):
            if message["type"] == "http.response.start":
                started.update(message)
                if message["status"] < 400:
                    await send(message)
                return
            if message["type"] == "http.response.body" and started.get("status", 200) >= 400:
                held.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    await _answer(send, started["status"], _error_text(bytes(held)))
                return
            await send(message)

        try:
            await self.app(scope, replay, one_line_errors)
        except Exception:  # the app answered 500 already (Starlette), or never answered: log, one line
            _log.exception("molwm serve: unexpected error answering a request")
            if not started:
                await _answer(send, 500, "molwm could not answer this request (the server log has the error)")


def check_body(body: bytes, content_type: str, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """What is wrong with a request body before MLflow parses it, in one line; ``None`` when nothing is.

    Only JSON bodies are looked into (CSV and Parquet go to MLflow's own parsers, which answer 400)."""
    mime = content_type.split(";")[0].strip().lower()
    if not mime:
        return "content type missing: send Content-Type: application/json (or text/csv, application/vnd.apache.parquet)"
    if mime != "application/json":
        return None  # MLflow answers 415 for a type it does not read, 400 for a body its parser rejects
    if not body.strip():
        return 'request body is empty: send a JSON object such as {"inputs": {"smiles": ["CCO"]}}'
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"request body is not valid UTF-8 ({err.reason} at byte {err.start})"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        return f"request body is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"
    except RecursionError:
        return f"request body is JSON nested too deeply (at most {max_depth} levels)"
    if not isinstance(data, dict):
        return (f'request body must be a JSON object such as {{"inputs": {{"smiles": ["CCO"]}}}}, '
                f"got {type(data).__name__}")
    depth = json_depth(data)
    if depth > max_depth:
        return f"request body is JSON nested {depth} levels deep (at most {max_depth})"
    keys = [k for k in INPUT_KEYS if k in data]
    if len(keys) != 1:
        return (f"request body needs exactly one of {', '.join(INPUT_KEYS)} (got "
                f"{', '.join(map(repr, data)) or 'an empty object'})")
    for i, cell in enumerate(_cells(data[keys[0]], keys[0], "smiles")):
        if not isinstance(cell, str):
            shown = "" if cell is None else " " + json.dumps(cell)[:40]
            return f"row {i}: smiles must be a string, got {_json_type(cell)}{shown}"
    return None


def _cells(payload, key: str, column: str) -> list:
    """The values of ``column`` in a request payload under ``key`` (MLflow's four JSON layouts); what is
    not in one of them is left to MLflow's parser."""
    if key in ("inputs", "instances") and isinstance(payload, dict):
        payload = payload.get(column, [])
        return payload if isinstance(payload, list) else [payload]
    if key == "dataframe_split" and isinstance(payload, dict):
        columns, rows = payload.get("columns"), payload.get("data")
        if isinstance(columns, list) and column in columns and isinstance(rows, list):
            j = columns.index(column)
            return [r[j] if isinstance(r, list) and len(r) > j else None for r in rows]
        return []
    if isinstance(payload, list):  # records: dataframe_records, or inputs / instances as a list of rows
        return [r[column] for r in payload if isinstance(r, dict) and column in r]
    return []


def _json_type(value) -> str:
    if value is None:
        return "null"
    return {bool: "true/false", int: "a number", float: "a number", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__)


def json_depth(data) -> int:
    """Nesting depth of parsed JSON (a scalar is 0, ``[]`` is 1), without recursion."""
    deepest, todo = 0, [(data, 1)]
    while todo:
        node, depth = todo.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        todo.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


def _error_text(body: bytes) -> str:
    """The one-line message of an error answer from MLflow (its JSON ``message`` or its plain text)."""
    text = body.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            text = data["message"]
    except ValueError:
        pass
    # MLflow prefixes a refusal with the whole input ("Failed to predict data '...'. \nError: ..."): drop it
    # and a schema error with the data and schema ("Failed to enforce schema of data '...' ... Error: ...")
    if text.startswith(("Failed to predict data", "Failed to enforce schema")) and "Error: " in text:
        text = text.rsplit("Error: ", 1)[1]
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


async def _answer(send, status: int, message: str) -> None:
    code = {400: "BAD_REQUEST", 413: "REQUEST_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}.get(
        status, "INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST")
    body = json.dumps({"error_code": code, "message": " ".join(message.split())}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app():
    """The ASGI app ``molwm serve`` runs (a uvicorn factory): MLflow's scoring server for the model folder
    in ``MOLWM_SERVE_MODEL`` behind :class:`RequestGuard` (``MOLWM_MAX_BODY_MB``), with
    ``MOLWM_SERVE_THREADS`` torch threads per worker process (default 1)."""
    from mlflow.pyfunc import scoring_server

    torch.set_num_threads(_limit("MOLWM_SERVE_THREADS", 1))
    model = scoring_server.load_model_with_mlflow_config(os.environ[MODEL_PATH_ENV])
    max_mb = float(os.environ.get("MOLWM_MAX_BODY_MB") or DEFAULT_MAX_BODY_MB)
    return RequestGuard(scoring_server.init(model), max_body_bytes=int(max_mb * 2**20))


def serve_command(host: str = "127.0.0.1", port: int = 5000, workers: int | None = None,
                  access_log: bool = False) -> list[str]:
    """The uvicorn command line ``molwm serve`` runs (the model folder and limits go in its environment).

    No access log unless ``access_log``: a line per request on the server's output stalls the server once
    a pipe nobody reads is full (64 KB, about 1,000 requests), which is how a served model froze under
    load (docs/reliability.md)."""
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "molwm.serving:create_app", "--host", host,
           "--port", str(port), "--workers", str(workers or 1), "--timeout-keep-alive", "5"]
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
          access_log: bool = False) -> int:
    """Serve ``model_uri`` over REST in the foreground with molwm's limits (MLflow's scoring server behind
    :class:`RequestGuard`, run by uvicorn); its exit code.

    Raises:
        StoreError: If the store cannot resolve ``model_uri``.
    """
    store = tracking_uri or default_tracking_uri()
    local = Path(model_uri) if Path(model_uri).is_dir() else download_model(model_uri, store)
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
