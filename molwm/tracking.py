"""Experiment tracking: the only module that talks to MLflow for logging.

Library code takes a :class:`Tracker` and never imports mlflow itself. Two
implementations share one interface:

* :class:`MLflowTracker` logs to an MLflow store. The default store is a
  local SQLite file, ``sqlite:///mlflow.db`` in the working directory, unless
  ``MLFLOW_TRACKING_URI`` says otherwise (e.g. a team server).
* :class:`NullTracker` keeps everything in memory, for tests and for runs
  with ``--no-track``.

Example:
    >>> tracker = MLflowTracker(experiment="molwm-data")
    >>> with tracker.run("prepare-moses", tags={"dataset": "moses"}):
    ...     tracker.log_metrics({"n_ok": 1000})
"""

from __future__ import annotations

import contextlib
import json
import os

import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite file in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def flatten(data: Mapping, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to dotted keys (``{"a": {"b": 1}} -> {"a.b": 1}``)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


class Tracker:
    """Interface shared by every tracker; the base class does nothing."""

    run_id: str | None = None

    @contextlib.contextmanager
    def run(self, name: str | None = None, tags: Mapping[str, str] | None = None, nested: bool = False,
            run_id: str | None = None) -> Iterator[str | None]:
        """Open a run (nested under the active one if ``nested``), or reopen ``run_id``; yields its id."""
        yield None

    def log_model(self, checkpoint: str | Path, name: str = "model", registered_name: str | None = None,
                  alias: str | None = None) -> str | None:
        """Log a molwm checkpoint as an MLflow pyfunc model; returns its model URI."""
        return None

    def last_step(self, key: str) -> int:
        """Highest step already logged for metric ``key`` in the active run (-1 if none)."""
        return -1

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters (nested dicts are flattened to dotted keys)."""

    def log_config(self, config: Any) -> None:
        """Log a resolved config: flattened as params, and whole as ``config.yaml``."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics, optionally at a step."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a local file into the run's artifacts."""

    def log_dict(self, data: Mapping, name: str) -> None:
        """Write a dict as JSON/YAML (by ``name``'s extension) into the artifacts."""

    def log_dataset(self, frame, name: str, source: str, digest: str, context: str = "training",
                    targets: str | None = None) -> None:
        """Record a dataset as a run input, with its content digest."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set run tags."""


class NullTracker(Tracker):
    """Records calls in memory; logs nothing anywhere. Useful in tests."""

    def __init__(self):
        self.params: dict[str, Any] = {}
        self.metrics: list[tuple[str, float, int | None]] = []
        self.artifacts: list[str] = []
        self.dicts: dict[str, Mapping] = {}
        self.datasets: list[dict] = []
        self.tags: dict[str, str] = {}

    @contextlib.contextmanager
    def run(self, name=None, tags=None, nested=False, run_id=None):
        self.tags.update(tags or {})
        yield run_id

    def log_model(self, checkpoint, name="model", registered_name=None, alias=None):
        self.artifacts.append(str(checkpoint))
        return str(Path(checkpoint).resolve())

    def log_params(self, params):
        self.params.update(flatten(params))

    def log_config(self, config):
        from molwm.config import to_dict

        data = to_dict(config)
        self.params.update(flatten(data))
        self.dicts["config.yaml"] = data

    def log_metrics(self, metrics, step=None):
        self.metrics.extend((k, float(v), step) for k, v in metrics.items())

    def log_artifact(self, path, artifact_path=None):
        self.artifacts.append(str(path))

    def log_dict(self, data, name):
        self.dicts[name] = data

    def log_dataset(self, frame, name, source, digest, context="training", targets=None):
        self.datasets.append({"name": name, "source": source, "digest": digest, "context": context})

    def set_tags(self, tags):
        self.tags.update(tags)


class MLflowTracker(Tracker):
    """Logs to MLflow.

    Args:
        experiment: Experiment name (created if missing).
        tracking_uri: Store URI; default :func:`default_tracking_uri`.
    """

    def __init__(self, experiment: str = "molwm", tracking_uri: str | None = None):
        import mlflow

        self._mlflow = mlflow
        self.experiment = experiment
        self.tracking_uri = tracking_uri or default_tracking_uri()
        mlflow.set_tracking_uri(self.tracking_uri)
        self.run_id = None

    @contextlib.contextmanager
    def run(self, name=None, tags=None, nested=False, run_id=None):
        mlflow = self._mlflow
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_experiment(self.experiment)
        kwargs = {"run_id": run_id} if run_id else {"run_name": name, "tags": dict(tags or {})}
        # a run started while another is active (e.g. pretraining inside `molwm ablate`) is its child
        nested = nested or mlflow.active_run() is not None
        with mlflow.start_run(nested=nested, **kwargs) as active:
            previous, self.run_id = self.run_id, active.info.run_id
            try:
                yield self.run_id
            finally:
                self.run_id = previous

    def log_params(self, params):
        flat = {k: ("" if v is None else v) for k, v in flatten(params).items()}
        # MLflow caps a param value at 6000 characters
        flat = {k: (str(v)[:6000]) for k, v in flat.items()}
        items = list(flat.items())
        for i in range(0, len(items), 100):
            self._mlflow.log_params(dict(items[i : i + 100]))

    def log_config(self, config):
        from molwm.config import to_dict

        data = to_dict(config)
        self.log_params(data)
        self.log_dict(data, "config.yaml")

    def log_metrics(self, metrics, step=None):
        clean = {k: float(v) for k, v in metrics.items()}
        self._mlflow.log_metrics(clean, step=step)

    def log_artifact(self, path, artifact_path=None):
        self._mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_dict(self, data, name):
        self._mlflow.log_dict(json.loads(json.dumps(data, default=str)), name)

    def log_dataset(self, frame, name, source, digest, context="training", targets=None):
        import warnings

        import mlflow.data

        with warnings.catch_warnings():  # "source can be interpreted in multiple ways": both are local files
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(frame, source=source, name=name, digest=digest[:36], targets=targets)
        self._mlflow.log_input(dataset, context=context)

    def set_tags(self, tags):
        self._mlflow.set_tags(dict(tags))

    def last_step(self, key):
        from mlflow.tracking import MlflowClient

        if not self.run_id:
            return -1
        history = MlflowClient(self.tracking_uri).get_metric_history(self.run_id, key)
        return max((m.step for m in history), default=-1)

    def log_model(self, checkpoint, name="model", registered_name=None, alias=None):
        import logging

        import mlflow.pyfunc

        from molwm import __version__
        from molwm.serving import MolwmPyfunc, input_example, model_signature
        from molwm.train.common import load_checkpoint

        kind = str(load_checkpoint(checkpoint).get("kind", ""))
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=MolwmPyfunc(),
            artifacts={"checkpoint": str(checkpoint)},
            pip_requirements=[f"molwm=={__version__}"],
            registered_model_name=registered_name,
            signature=model_signature(kind),
            input_example=input_example(kind),
        )
        if registered_name and alias:
            client = mlflow.MlflowClient(self.tracking_uri)
            version = info.registered_model_version
            client.set_registered_model_alias(registered_name, alias, str(version))
        return info.model_uri


def resolve_model_path(uri: str | Path) -> Path:
    """A local molwm checkpoint for ``uri``: a file path, or an MLflow model URI
    (``runs:/...``, ``models:/name@alias``, ``models:/name/version``) downloaded from the store.
    """
    text = str(uri)
    if "://" not in text and not text.startswith(("runs:/", "models:/")):
        return Path(text)
    import mlflow.artifacts

    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(default_tracking_uri())
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=text))
    except MlflowException as err:
        raise FileNotFoundError(f"cannot load model {text} from MLflow store {default_tracking_uri()}: "
                                f"{err.message.splitlines()[0]}") from None
    if local.is_file():
        return local
    found = sorted(local.rglob("*.pt"))
    if not found:
        raise FileNotFoundError(f"no molwm checkpoint (*.pt) inside the model at {text}")
    return found[0]


def make_tracker(track: bool = True, experiment: str = "molwm", tracking_uri: str | None = None) -> Tracker:
    """An :class:`MLflowTracker` when ``track``, else a :class:`NullTracker`."""
    return MLflowTracker(experiment, tracking_uri) if track else NullTracker()


@contextlib.contextmanager
def temporary_artifact_dir() -> Iterator[Path]:
    """A scratch folder for files that are written only to be logged."""
    with tempfile.TemporaryDirectory(prefix="molwm-artifacts-") as d:
        yield Path(d)
