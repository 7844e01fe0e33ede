"""Every registered model kind saves, loads, answers queries and serves (issue 16, item 8).

One tiny checkpoint per kind in :data:`molwm.kinds.KINDS` is built once per test run (the shared
fixtures of ``tests/conftest.py`` where one already makes that kind, a few steps of the real run
function otherwise). Each kind then goes through ``molwm.api.load_model``, ``molwm.kinds.load_encoder``,
``tracker.log_model`` (logged from code: no pickle) and ``molwm.serving.served_model(...).predict``
(what ``molwm serve`` runs), whose
answer must be the direct API's. A new kind must come with a builder here (the first test fails without).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from molwm.api import load_model
from molwm.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from molwm.encoders.graph import GraphEncoder
from molwm.kinds import KINDS, load_encoder
from molwm.predictors.interface import Predictor
from molwm.query import MoleculeModel
from molwm.world.forecast import WorldForecaster

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
BAD = "not a smiles"
QUERY = ["CCO", "c1ccccc1O", BAD, "CC(=O)Nc1ccc(O)cc1"]
"""Molecule queries: three valid SMILES around an invalid one."""
WORLD_REQUEST = pd.DataFrame({"smiles": ["CCO", "c1ccccc1O", "CCO"], "dose_uM": [1.0, 10.0, 0.0],
                              "time_h": [24.0, 8.0, 24.0]})
"""A world-model request: two compounds, three doses (one vehicle control), two times."""
PREDICTS = {"property_model", "stacked_property_model", "multimodal_jepa"}
"""The kinds that answer ``predict`` (fine-tuned heads; the multimodal JEPA's assay probe)."""


# ---- one tiny checkpoint per kind ---------------------------------------------------------------------


def _graph_pretrain(shared, folder: Path) -> Path:
    """``configs/pretrain/tiny.yaml`` with the generative objective, 3 steps, on the shared run's cache."""
    from molwm.config import load_config
    from molwm.train.pretrain import PretrainConfig, run_pretrain

    cache = load_checkpoint(shared["graph_pretrain_run"].checkpoint)["config"]["cache_dir"]  # MOSES[:256] featurized
    cfg = load_config(PretrainConfig, REPO_ROOT / "configs/pretrain/tiny.yaml",
                      [f"out_dir={folder / 'run'}", f"cache_dir={cache}", "device=cpu", "objective=generative",
                       "max_steps=3"])
    return run_pretrain(cfg, progress=False).checkpoint


def _multimodal(objective: str):
    def build(shared, folder: Path) -> Path:
        """The shared tiny multimodal run with ``objective``, 3 steps, on the shared run's data."""
        from molwm.train.pretrain_mm import run_multimodal_pretrain

        cfg = dataclasses.replace(shared["make_multimodal_config"](folder / "run"), objective=objective, max_steps=3)
        return run_multimodal_pretrain(cfg, progress=False, data=shared["multimodal_pretrain_run"].build).checkpoint

    return build


def _profile_pairing(shared, folder: Path) -> Path:
    """The CLOOME-style molecule-profile model: ``configs/pretrain/profiles_tiny.yaml`` (the compact LINCS plate), 3 steps."""
    from molwm.pretraining import load_pretrain_config
    from molwm.train.pretrain_mm import run_multimodal_pretrain

    cfg = load_pretrain_config(REPO_ROOT / "configs/pretrain/profiles_tiny.yaml",
                               ["objective=contrastive_profile", "max_steps=3", f"out_dir={folder / 'run'}"])
    return run_multimodal_pretrain(cfg, progress=False).checkpoint


def _image_world(shared, folder: Path) -> Path:
    """An image-level world model of 2 steps on the shared time-course lab (32 px sites)."""
    from molwm.config import from_dict
    from molwm.world.image_run import run_image_world
    from molwm.world.images import ImageWorldConfig

    cfg = from_dict(ImageWorldConfig, {
        "data": {"lab": str(shared["tiny_world_lab"].path), "compound": "morgan"},
        "image": {"dim": 32, "layers": 1, "heads": 2, "patch": 8, "image_size": 32},
        "model": {"dim": 32, "history": 1, "depth": 1, "heads": 2, "ensemble": 2},
        "max_steps": 2, "batch_size": 8, "warmup_steps": 1, "rollout_steps": 2, "log_every": 1,
        "out_dir": str(folder / "run")})
    return run_image_world(cfg, progress=False).checkpoint


def _stack(shared, folder: Path) -> Path:
    """``configs/finetune/tiny.yaml`` as ``mode=stack`` from the tiny graph JEPA: every member, small forests."""
    from molwm.config import load_config
    from molwm.train.finetune import FinetuneConfig, run_finetune

    cfg = load_config(FinetuneConfig, REPO_ROOT / "configs/finetune/tiny.yaml",
                      ["mode=stack", f"from_model={shared['graph_pretrain_run'].checkpoint}", f"out_dir={folder / 'run'}",
                       "epochs=2", "stack.rf_trees=20", "tabular.n_estimators=20", "tabular.n_jobs=1"])
    return run_finetune(cfg, progress=False).checkpoint


BUILDERS = {
    "graph_jepa": lambda shared, folder: shared["graph_pretrain_run"].checkpoint,
    "graph_pretrain": _graph_pretrain,
    "multimodal_jepa": lambda shared, folder: shared["multimodal_pretrain_run"].checkpoint,
    "multimodal_generative": _multimodal("generative"),
    "multimodal_contrastive": _multimodal("contrastive"),
    "multimodal_contrastive_views": _multimodal("contrastive_views"),
    "multimodal_contrastive_profile": _profile_pairing,
    "property_model": lambda shared, folder: shared["finetune_run"].checkpoint,
    "stacked_property_model": _stack,
    "world_model": lambda shared, folder: shared["world_run"].checkpoint,
    "image_world_model": _image_world,
}
"""Kind name -> ``(shared fixtures, folder) -> checkpoint path``."""


@pytest.fixture(scope="session")
def kind_checkpoints(tmp_path_factory, build_env, graph_pretrain_run, finetune_run, multimodal_pretrain_run,
                     make_multimodal_config, world_run, tiny_world_lab) -> dict[str, Path]:
    """Kind name -> a tiny checkpoint of that kind, for every registered kind that has a builder."""
    shared = {"graph_pretrain_run": graph_pretrain_run, "finetune_run": finetune_run, "world_run": world_run,
              "multimodal_pretrain_run": multimodal_pretrain_run, "make_multimodal_config": make_multimodal_config,
              "tiny_world_lab": tiny_world_lab}
    out = {}
    for name in sorted(set(KINDS) & set(BUILDERS)):
        folder = tmp_path_factory.mktemp(f"kind-{name}")
        with build_env(folder):
            out[name] = Path(BUILDERS[name](shared, folder))
    return out


def _checkpoint(kind_checkpoints, kind: str) -> Path:
    if kind not in kind_checkpoints:
        pytest.fail(f"model kind {kind!r} is registered but tests/molwm/test_model_kinds.py has no builder for it")
    return kind_checkpoints[kind]


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---- the registry and the checkpoints -----------------------------------------------------------------


def test_every_registered_kind_has_a_builder():
    assert sorted(set(KINDS) - set(BUILDERS)) == [], "a new model kind must come with a round trip here"
    assert sorted(set(BUILDERS) - set(KINDS)) == [], "a builder for a kind that is no longer registered"


def test_each_checkpoint_is_of_the_kind_it_was_built_for(kind_checkpoints):
    assert sorted(kind_checkpoints) == sorted(KINDS)
    built = {name: load_checkpoint(path)["kind"] for name, path in kind_checkpoints.items()}
    assert built == {name: name for name in kind_checkpoints}
    assert len({_sha(p) for p in kind_checkpoints.values()}) == len(kind_checkpoints)  # all different files


def _refused_unserved(kind: str, path: Path) -> bool:
    """For a kind that is not served: ``load_model`` and packaging refuse it in one line naming the file."""
    if KINDS[kind].served:
        return False
    from molwm.packaging import package_for

    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ": .* is not served") as err:
        load_model(path)
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="is not served"):
        package_for(kind)
    return True


DRIVER_KEYS = {"model", "step", "format", "resume"}
"""What the training driver adds to every checkpoint beside the kind's own record."""


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_writes_exactly_its_record_and_reads_it_back(kind, kind_checkpoints):
    """One owner per kind: the metadata a checkpoint carries is its kind's record, field for field."""
    from molwm.kinds.graph import GraphCheckpoint
    from molwm.kinds.multimodal import MultimodalCheckpoint
    from molwm.kinds.world import ImageWorldCheckpoint, WorldCheckpoint

    state = load_checkpoint(_checkpoint(kind_checkpoints, kind))
    record = {"graph": GraphCheckpoint, "multimodal": MultimodalCheckpoint, "world": WorldCheckpoint,
              "image_world": ImageWorldCheckpoint}.get(KINDS[kind].stage)
    if record is None:  # the property model: one builder (kinds/property.property_state), read by property_parts
        assert set(state) - DRIVER_KEYS >= {"kind", "config", "members", "scalers", "targets", "task", "uncertainty"}
        return
    written = record.read(state).to_state()
    assert set(state) - DRIVER_KEYS == set(written)
    assert all(written[k] == state[k] for k in written if k not in ("initial", "probes"))  # nested arrays: by key
    assert written["kind"] == kind


# ---- load and query -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_load_model_gives_the_family_handle_and_answers(kind, kind_checkpoints):
    path = _checkpoint(kind_checkpoints, kind)
    if _refused_unserved(kind, path):
        return
    model = load_model(path)
    if KINDS[kind].family == "world":
        assert isinstance(model, WorldForecaster)
        forecast = model.forecast(["CCO", "c1ccccc1O"], [1.0, 10.0], [8.0, 24.0])
        frame = forecast.frame()
        assert len(frame) == 2 * 2 * 2 and forecast.readouts and not forecast.rejects
        values = frame.drop(columns=[c for c in ("compound", "uncertainty") if c in frame]).to_numpy(np.float64)
        assert np.isfinite(values).all()
        rows = model.forecast_rows(["CCO", "c1ccccc1O", BAD], [1.0, 10.0, 1.0], [24.0, 8.0, 24.0])
        assert rows["status"].tolist()[:2] == ["ok", "ok"] and rows["status"].iloc[2].startswith("invalid_smiles")
        assert rows["uncertainty"].iloc[0].endswith("90% intervals)")  # REST rows name their interval method
        readouts = [c for c in rows.columns if c not in ("smiles", "dose_uM", "time_h", "status", "uncertainty")]
        assert readouts and np.isfinite(rows.loc[:1, readouts].to_numpy(np.float64)).all()
        assert rows.loc[2, readouts].isna().all()
        return
    assert isinstance(model, MoleculeModel)
    emb, status = model.embed(QUERY, with_status=True)
    assert emb.shape == (len(QUERY), model.embedding_dim)
    ok = [s != BAD for s in QUERY]
    assert [s == "ok" for s in status] == ok
    assert np.isfinite(emb[ok]).all() and np.isnan(emb[2]).all()
    assert not np.allclose(emb[0], emb[1])  # the rows depend on the molecule
    assert model.can_predict == (kind in PREDICTS)
    if model.can_predict:
        assert isinstance(model.predictor, Predictor)  # one protocol behind every kind's predictions
        assert model.predictor.dim == model.embedding_dim and list(model.predictor.targets) == list(model.targets)
        frame = model.predict(QUERY)
        assert frame["smiles"].tolist() == QUERY and frame["status"].tolist() == status
        assert model.targets
        # an assay probe leaves an assay with under 5 training cells unfitted (NaN); every other value is finite
        fitted = np.ones(len(model.targets), bool) if model.joint is None else model.joint.probe.n_train > 0
        assert fitted.sum() >= len(model.targets) // 2
        values = frame[model.targets].to_numpy(np.float64)
        assert np.isfinite(values[ok][:, fitted]).all() and np.isnan(values[ok][:, ~fitted]).all()
        assert np.isnan(values[2]).all()
    else:
        with pytest.raises(ValueError, match="no property heads"):
            model.predict(QUERY)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_load_encoder_gives_the_graph_encoder_queries_use(kind, kind_checkpoints):
    path = _checkpoint(kind_checkpoints, kind)
    if KINDS[kind].encoder is None:
        with pytest.raises(CheckpointError, match=re.escape(str(path)) + ": a .* has no graph encoder to load"):
            load_encoder(path)
        return
    encoder = load_encoder(path)
    assert isinstance(encoder, GraphEncoder) and not encoder.training
    queried = load_model(path).encoder  # what embeddings come from: the same weights fine-tuning starts from
    mine, theirs = encoder.state_dict(), queried.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


# ---- log from code and serve --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kinds_store(tmp_path_factory) -> str:
    """One temporary SQLite MLflow store for every kind's model (creating a store takes seconds)."""
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path_factory.mktemp('kinds-store') / 'mlflow.db'}"
    MlflowClient(store).search_experiments()  # creates the tables once
    return store


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_logged_model_serves_what_the_api_answers(kind, kind_checkpoints, kinds_store, monkeypatch):

    from molwm.packaging import package_for
    from molwm import serving
    from molwm.tracking import download_model, make_tracker

    path = _checkpoint(kind_checkpoints, kind)
    if _refused_unserved(kind, path):
        return
    monkeypatch.setenv("MLFLOW_TRACKING_URI", kinds_store)
    store = kinds_store
    tracker = make_tracker(True, experiment="model-kinds")
    assert tracker.tracking_uri == store
    package = package_for(kind)
    with tracker.run(f"log-{kind}"):
        uri = tracker.log_model(path, package, name="model")
    local = download_model(uri, store)
    assert not list(local.rglob("*.pkl")) and (local / "pyfunc_model.py").is_file()
    logged = list(local.rglob("*.pt"))
    assert [_sha(p) for p in logged] == [_sha(path)]  # the checkpoint itself, unchanged
    served_model = serving.served_model(local)  # what `molwm serve` runs: molwm's loader, not MLflow's
    assert served_model.metadata.get_input_schema().input_names() == [c for c, _, _ in package.inputs]
    direct = load_model(path)
    assert type(load_model(uri, store)) is type(direct)  # the logged model loads back by its URI too
    if KINDS[kind].encoder is not None:
        assert isinstance(load_encoder(uri, store), GraphEncoder)
    if KINDS[kind].family == "world":
        served = served_model.predict(WORLD_REQUEST)
        assert len(served) == len(WORLD_REQUEST) and served["status"].tolist() == ["ok"] * len(WORLD_REQUEST)
        want = direct.forecast_rows(WORLD_REQUEST["smiles"].tolist(), WORLD_REQUEST["dose_uM"].tolist(),
                                    WORLD_REQUEST["time_h"].tolist())
        pd.testing.assert_frame_equal(served.reset_index(drop=True).astype(want.dtypes.to_dict()), want)
        return
    request = pd.DataFrame({"smiles": QUERY})
    for what in ("auto", "embed"):
        served = served_model.predict(request, params={"what": what})
        want = direct.predict_frame(request, what)
        assert len(served) == len(QUERY) and served["status"].tolist() == want["status"].tolist()
        numbers = want.select_dtypes("number").columns
        assert len(numbers) and all(v is None for v in served.loc[2, numbers])  # the bad row: JSON null, not NaN
        pd.testing.assert_frame_equal(served.reset_index(drop=True).astype(want.dtypes.to_dict()), want)


# ---- old-layout, damaged and foreign checkpoints -------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_an_incomplete_checkpoint_is_one_clear_error(kind, tmp_path):
    path = save_checkpoint({"kind": kind, "config": {}}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="incomplete or damaged" if KINDS[kind].served else "is not served") as err:
        load_model(path)
    message = str(err.value)
    assert str(path) in message and KINDS[kind].description in message and "\n" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no chained traceback


def test_weights_that_do_not_fit_their_config_are_one_clear_error(kind_checkpoints, tmp_path):
    state = load_checkpoint(_checkpoint(kind_checkpoints, "graph_jepa"))
    state["config"]["model"]["encoder"]["dim"] = 2 * state["config"]["model"]["encoder"]["dim"]
    path = save_checkpoint(state, tmp_path / "misfit.pt")
    for load in (load_model, load_encoder):
        with pytest.raises(CheckpointError, match=r"incomplete or damaged graph JEPA .*\(RuntimeError: "):
            load(path)


def test_a_truncated_or_foreign_file_is_one_clear_error(kind_checkpoints, tmp_path):
    data = _checkpoint(kind_checkpoints, "graph_jepa").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {truncated} is unreadable")):
        load_model(truncated)
    old = tmp_path / "no-format.pt"  # the layout before the format key
    torch.save({"kind": "graph_jepa", "config": {}, "model": {}}, old)
    for load in (load_model, load_encoder):
        with pytest.raises(CheckpointError, match=re.escape(f"{old} is not a molwm checkpoint")):
            load(old)
    with pytest.raises(CheckpointError, match="no model at"):
        load_model(tmp_path / "missing.pt")


@pytest.mark.parametrize("kind", ["graph_vae", None])
def test_an_unknown_kind_names_the_known_ones(kind, tmp_path):
    state = {"config": {}} if kind is None else {"kind": kind, "config": {}}
    path = save_checkpoint(state, tmp_path / "foreign.pt")
    for load in (load_model, load_encoder):
        with pytest.raises(CheckpointError, match=f"checkpoint kind {kind!r}") as err:
            load(path)
        assert str(path) in str(err.value)
        assert f"molwm knows {', '.join(sorted(KINDS))})" in str(err.value)
