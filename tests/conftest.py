"""Shared fixtures and the tier rule.

* Every test gets its own cache folder, MLflow store and working folder (``_isolated_env``).
* Every test carries exactly one tier marker, ``unit``, ``integration`` or ``cli`` (checked at collection).
* What several test files need is built once per test run, here, with ``tmp_path_factory``: the repository
  root, a tiny synthetic lab and a tiny time-course lab, and one tiny trained model of each kind (graph
  JEPA, multimodal JEPA, fine-tuned property model, world model). Tests read these; a test that changes
  one works on its own copy.
"""

from __future__ import annotations

import copy
import os
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from featurizers.molecule import featurize_arrays
from molwm.data.multimodal import AssayStore, GraphStore, ImageStore, MultimodalData
from molwm.jepa.multimodal import MultimodalJEPAConfig

# tests are tiny; one thread avoids oversubscribing a 2-core machine
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
TIERS = ("unit", "integration", "cli")


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects anything, so a filtered run checks every test too
def pytest_collection_modifyitems(config, items):
    """Exactly one tier marker per test (module-level ``pytestmark`` counts): ``-m unit`` must not run a
    test that is also marked integration, and no test may drop out of every tier."""
    wrong = []
    for item in items:
        tiers = sorted({m.name for m in item.iter_markers() if m.name in TIERS})
        if len(tiers) != 1:
            wrong.append(f"  {item.nodeid}: {' + '.join(tiers) if tiers else 'no tier marker'}")
    if wrong:
        raise pytest.UsageError(
            f"{len(wrong)} test(s) need exactly one tier marker of {', '.join(TIERS)} (a test that trains, "
            "runs several modules together or takes over ~2 s is integration, or cli if it runs the "
            "commands):\n" + "\n".join(wrong))


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """No test reads or writes the user's cache, MLflow store or card folders."""
    monkeypatch.setenv("MOLWM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("MOLWM_DATASETS", raising=False)
    # the raw public files of the mirror cards (real cells): ../shared/data beside the checkout when it exists
    mirror = REPO_ROOT.parent / "shared" / "data"
    if not os.environ.get("MOLWM_DATA_MIRROR") and mirror.is_dir():
        monkeypatch.setenv("MOLWM_DATA_MIRROR", str(mirror))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def local_csv_card(tmp_path):
    """A user-written card for a small local CSV, with a correct checksum."""
    import hashlib

    csv = tmp_path / "mini.csv"
    csv.write_text(
        "smiles,activity,name\n"
        "CCO,1.5,ethanol\n"
        "c1ccccc1O,2.0,phenol\n"
        "not_a_smiles,0.3,junk\n"
        "CC(=O)Oc1ccccc1C(=O)O,3.1,aspirin\n"
        ",0.1,blank\n"
        "C1CCNCC1,,piperidine\n"
    )
    digest = hashlib.sha256(csv.read_bytes()).hexdigest()
    card = tmp_path / "cards" / "mini.yaml"
    card.parent.mkdir()
    card.write_text(
        "name: mini\n"
        "source:\n  kind: local\n  files:\n    - path: ../mini.csv\n"
        f"      sha256: {digest}\n"
        "columns:\n  smiles: smiles\n  id: name\n  targets: [activity]\n"
        "task:\n  type: regression\n  metric: rmse\n"
        "license: CC0-1.0\n"
        "citation: made up for tests\n"
    )
    return card


# ---- a tiny multimodal table built in memory (graphs, a sparse assay panel, 5-channel sites) ----

SMILES = ["CCO", "c1ccccc1O", "CC(=O)Oc1ccccc1C(=O)O", "CCN(CC)CC", "C1CCNCC1",
          "CC(C)Cc1ccc(C(C)C(=O)O)cc1", "O=C(O)c1ccccc1", "CCCCCCCC", "Cn1cnc2c1c(=O)n(C)c(=O)n2C",
          "CC(=O)Nc1ccc(O)cc1", "c1ccc2ccccc2c1", "OCC(O)CO"]


def _tiny_data(n_assays: int = 5, size: int = 24, seed: int = 0) -> MultimodalData:
    """24 samples: every modality pattern occurs (graph only, assays only, image only, pairs, all three)."""
    rng = np.random.default_rng(seed)
    smiles = SMILES * 2
    n = len(smiles)
    arrays, _ = featurize_arrays(smiles)
    graph_of = np.arange(n)
    graph_of[[3, 7]] = -1  # assays/images without a molecule
    values = rng.normal(size=(n, n_assays)).astype(np.float32)
    values[rng.random((n, n_assays)) < 0.4] = np.nan
    values[:4] = np.nan  # graph (+ image) only
    # the image depends on the molecule, so cross-modal prediction has something to learn
    base = np.stack([np.full((5, size, size), (i % len(SMILES)) / len(SMILES), np.float32) for i in range(n)])
    images = (base + 0.1 * rng.normal(size=base.shape)).astype(np.float16)
    present = np.ones((n, 5), dtype=bool)
    present[0, 3] = False  # sample 0's site lacks the AGP channel
    image_of = np.where(np.arange(n) % 2 == 0, np.arange(n), -1)
    stores = {"graph": GraphStore(arrays, graph_of), "assay": AssayStore(values, [f"A{i}" for i in range(n_assays)]),
              "image": ImageStore(images, present, image_of)}
    return MultimodalData(stores, smiles, ["test"] * n, smiles)


def _tiny_config(dim: int = 32, size: int = 24) -> MultimodalJEPAConfig:
    """A few-thousand-parameter model for tests."""
    cfg = MultimodalJEPAConfig(dim=dim)
    cfg.graph.dim = cfg.assay.dim = cfg.image.dim = dim
    cfg.graph.layers, cfg.assay.layers, cfg.image.layers = 2, 1, 1
    cfg.image.image_size, cfg.image.patch = size, 6
    cfg.predictor.dim, cfg.predictor.layers = 32, 1
    return cfg


@pytest.fixture
def mm_data():
    """24 samples covering every modality pattern; see ``_tiny_data``."""
    return _tiny_data()


@pytest.fixture
def mm_config():
    """A tiny multimodal JEPA config (dim 32, 24-pixel sites, 6-pixel patches)."""
    return _tiny_config()


# ---- built once per test run -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root: ``configs/``, ``molwm/``, ``featurizers/``."""
    return REPO_ROOT


@contextmanager
def _own_env(folder: Path):
    """Build a shared fixture with its own cache, MLflow store and working folder: module and session
    fixtures are set up before a test's ``_isolated_env``, so they must never see the user's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOLWM_CACHE", str(folder / "cache"))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        mp.delenv("MOLWM_DATASETS", raising=False)
        mp.chdir(folder)
        yield folder


@pytest.fixture(scope="session")
def build_env():
    """``with build_env(folder):`` for a module fixture that builds something once: inside, the cache, the
    MLflow store (``sqlite:///folder/mlflow.db``) and the working folder are ``folder``'s."""
    return _own_env


@dataclass(frozen=True)
class Lab:
    """A synthetic lab on disk, the inputs it was made from, and the generator's report (``LabResult``)."""

    path: Path
    smiles: tuple[str, ...]
    doses: tuple[float, ...]
    times: tuple[float, ...]
    result: object


def _make_lab(tmp_path_factory, name: str, smiles, **kw) -> Lab:
    from molwm.sim import generate_lab

    folder = tmp_path_factory.mktemp(name)
    with _own_env(folder):
        result = generate_lab(list(smiles), folder / "lab", progress=False, **kw)
    doses, times = tuple(kw.get("doses", (10.0,))), tuple(kw.get("times", (24.0,)))  # generate_lab's defaults
    return Lab(folder / "lab", tuple(smiles), doses, times, result)


# 16 drug-like molecules with varied scaffolds: enough for a scaffold split with something on each side
LAB_SMILES = ("CC(=O)Oc1ccccc1C(=O)O", "Cn1c(=O)c2c(ncn2C)n(C)c1=O", "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
              "CC(=O)Nc1ccc(O)cc1", "CN1C(=O)CN=C(c2ccccc2)c2cc(Cl)ccc12", "CN(C)C(=N)N=C(N)N",
              "c1ccc2c(c1)cccc2O", "CCN(CC)CCOC(=O)c1ccc(N)cc1", "OC(=O)c1ccccc1O", "CC1=CC(=O)c2ccccc2C1=O",
              "Clc1ccc(cc1)C(c1ccccc1)N1CCNCC1", "COc1ccc2[nH]cc(CCN)c2c1", "NC(=O)c1cccnc1",
              "CCOC(=O)c1ccccc1", "C1CCC(CC1)N", "c1ccc(cc1)-c1ccccn1")
# six small drugs and one unparsable SMILES (the lab skips it and reports it)
WORLD_LAB_SMILES = ("CCO", "c1ccccc1O", "CC(=O)Oc1ccccc1C(=O)O", "CC(=O)Nc1ccc(O)cc1", "CCN(CC)CC",
                    "OCC(O)CO", "C1CC(")


@pytest.fixture(scope="session")
def tiny_lab(tmp_path_factory) -> Lab:
    """A synthetic lab of the 16 ``LAB_SMILES`` (seed 0, one dose, one time point, 32-pixel sites, 12 assays).
    Read it; copy it before changing anything in it."""
    return _make_lab(tmp_path_factory, "tiny-lab", LAB_SMILES, seed=0, image_size=32)


@pytest.fixture(scope="session")
def tiny_world_lab(tmp_path_factory) -> Lab:
    """A synthetic lab followed over time: ``WORLD_LAB_SMILES`` (6 valid) at 1 and 10 uM, 0, 8 and 24 h,
    32-pixel sites, 2 assays (seed 0). Read it; copy it before changing anything in it."""
    return _make_lab(tmp_path_factory, "tiny-world-lab", WORLD_LAB_SMILES, seed=0, times=(0.0, 8.0, 24.0),
                     doses=(1.0, 10.0), image_size=32, n_assays=2)


@pytest.fixture(scope="session")
def graph_pretrain_run(tmp_path_factory):
    """``configs/pretrain/tiny.yaml`` as it is (graph JEPA, MOSES[:256], 6 steps) on the CPU, untracked: the
    ``PretrainResult`` (checkpoint, history)."""
    from molwm.config import load_config
    from molwm.train.pretrain import PretrainConfig, run_pretrain

    folder = tmp_path_factory.mktemp("graph-pretrain")
    with _own_env(folder):
        cfg = load_config(PretrainConfig, REPO_ROOT / "configs/pretrain/tiny.yaml",
                          [f"out_dir={folder / 'run'}", f"cache_dir={folder / 'cache'}", "device=cpu"])
        return run_pretrain(cfg, progress=False)


@pytest.fixture(scope="session")
def finetune_run(tmp_path_factory):
    """``configs/finetune/tiny.yaml`` as it is (FreeSolv[:120] from scratch, seeds 0 and 1: a 2-member
    ensemble), untracked: the ``FinetuneResult`` (checkpoint, per-seed metrics, split file)."""
    from molwm.config import load_config
    from molwm.train.finetune import FinetuneConfig, run_finetune

    folder = tmp_path_factory.mktemp("finetune")
    with _own_env(folder):
        cfg = load_config(FinetuneConfig, REPO_ROOT / "configs/finetune/tiny.yaml",
                          [f"out_dir={folder / 'run'}", f"cache_dir={folder / 'cache'}"])
        return run_finetune(cfg, progress=False)


# a multimodal JEPA of dim 32 (1-layer encoders, 8-pixel patches) on ``tiny_lab``: 6 steps of 8 samples
TINY_MULTIMODAL = dict(kind="multimodal", data={"image_size": 32},
                       model={"dim": 32, "graph": {"dim": 32, "layers": 1}, "assay": {"dim": 32, "layers": 1},
                              "image": {"dim": 32, "layers": 1, "patch": 8, "image_size": 32},
                              "predictor": {"dim": 32, "layers": 1}},
                       batch_size=8, max_steps=6, warmup_steps=2, log_every=1, health_every=3,
                       checkpoint_every=3)


@pytest.fixture(scope="session")
def make_multimodal_config(tiny_lab):
    """``make(out_dir)``: the ``TINY_MULTIMODAL`` run on ``tiny_lab``, writing to ``out_dir``."""
    from molwm.config import from_dict
    from molwm.train.pretrain_mm import MultimodalPretrainConfig

    def make(out_dir):
        fields = copy.deepcopy(TINY_MULTIMODAL)
        fields["data"]["lab"] = str(tiny_lab.path)
        return from_dict(MultimodalPretrainConfig, {**fields, "out_dir": str(out_dir)})

    return make


@pytest.fixture(scope="session")
def multimodal_pretrain_run(tmp_path_factory, make_multimodal_config):
    """The ``TINY_MULTIMODAL`` run on ``tiny_lab``, untracked: the ``MultimodalPretrainResult``."""
    from molwm.train.pretrain_mm import run_multimodal_pretrain

    folder = tmp_path_factory.mktemp("multimodal-pretrain")
    with _own_env(folder):
        return run_multimodal_pretrain(make_multimodal_config(folder / "run"), progress=False)


# ---- world models: hand-made time courses with a known effect, and a tiny world-model config ----

TOY_TIMES = (0.0, 8.0, 16.0, 24.0, 32.0, 48.0)
TOY_DOSES = (0.1, 1.0, 10.0, 100.0)


def toy_courses(seed: int = 0, replicates: int = 4, times=TOY_TIMES):
    """2 drugs x 4 doses x ``replicates`` + 8 controls (40 conditions), one feature: log cell count.

    Controls grow at 0.8 per day; a drug slows growth by ``strength * (log10 dose + 1)``
    (phenol twice as strongly as ethanol), so the effect is a known function of drug and dose.
    """
    from molwm.world.data import TimeCourses

    rng = np.random.default_rng(seed)
    times = np.asarray(times, np.float64)
    drug = [d for d in (0, 1) for _ in TOY_DOSES for _ in range(replicates)] + [-1] * 8
    dose = [x for _ in (0, 1) for x in TOY_DOSES for _ in range(replicates)] + [0.0] * 8
    drug, dose = np.asarray(drug, np.int64), np.asarray(dose, np.float64)
    strength = np.array([0.3, 0.6])
    log_dose = np.log10(np.maximum(dose, 1e-3))
    effect = np.where(drug >= 0, strength[np.clip(drug, 0, None)] * (log_dose + 1), 0.0)
    rate = 0.8 - effect
    n = len(drug)
    obs = np.log(50.0) + rate[:, None] * times[None] / 24.0 + 0.02 * rng.normal(size=(n, len(times)))
    return TimeCourses(obs[..., None].astype(np.float32), np.tile(times, (n, 1)), drug, dose,
                       np.zeros(n, np.int64), ["ethanol", "phenol"], ["CCO", "c1ccccc1O"], ["toy"],
                       ["log_count"], [f"c{i}" for i in range(n)])


def tiny_world_config(out_dir: str, max_steps: int = 80, compound: str = "none", objective: str = "jepa",
                      dropout: float = 0.1, **kw):
    """A world model with a few thousand parameters: seconds on one thread."""
    from molwm.world.model import WorldNetConfig
    from molwm.world.train import WorldConfig, WorldDataConfig

    fields = dict(max_steps=max_steps, batch_size=32, warmup_steps=5, log_every=4, health_every=40,
                  checkpoint_every=40, out_dir=out_dir)
    fields.update(kw)
    return WorldConfig(objective=objective,
                       data=WorldDataConfig(source="lab", lab="unused: courses are passed in",
                                            compound=compound, split="none"),
                       model=WorldNetConfig(dim=16, ensemble=2, depth=1, heads=2, history=2, dropout=dropout),
                       **fields)


@pytest.fixture
def make_courses():
    """``toy_courses``: a fresh copy for each call (tests change them)."""
    return toy_courses


@pytest.fixture
def make_config():
    """``tiny_world_config``."""
    return tiny_world_config


@pytest.fixture(scope="session")
def world_run(tmp_path_factory):
    """A world model briefly trained (12 steps, Morgan compound features) on ``toy_courses()``, untracked: the
    ``WorldResult``."""
    from molwm.world.run import run_world

    folder = tmp_path_factory.mktemp("world")
    with _own_env(folder):
        return run_world(tiny_world_config(str(folder / "run"), max_steps=12, compound="morgan"),
                         courses=toy_courses(), progress=False)


@pytest.fixture(scope="session")
def forecaster(world_run):
    """``world_run``'s checkpoint loaded for forecasting and planning (tests that replace its methods
    do it with ``monkeypatch``, which puts them back)."""
    from molwm.world.forecast import WorldForecaster

    return WorldForecaster.load(world_run.checkpoint)


# ---- device audit ------------------------------------------------------------------------------------

MOLWM_PACKAGE = str(REPO_ROOT / "molwm")


class FactoryAudit(TorchFunctionMode):
    """Records tensor factories called from molwm code without a ``device`` (they would land on the CPU
    whatever device the inputs are on)."""

    FACTORIES = {torch.zeros, torch.ones, torch.empty, torch.full, torch.arange, torch.rand, torch.randn,
                 torch.randint, torch.randperm, torch.tensor, torch.as_tensor, torch.eye, torch.linspace}

    def __init__(self):
        super().__init__()
        self.hits: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.FACTORIES and "device" not in kwargs:
            ours = [f for f in traceback.extract_stack()[:-1] if f.filename.startswith(MOLWM_PACKAGE)]
            if ours:
                self.hits.append(f"torch.{func.__name__} at {ours[-1].filename}:{ours[-1].lineno}")
        return func(*args, **kwargs)


@pytest.fixture
def factory_audit():
    """:class:`FactoryAudit`: use as ``with factory_audit() as audit: ...``, then assert ``not audit.hits``."""
    return FactoryAudit


def _descriptor_targets(smiles) -> torch.Tensor:
    """``[B, K]`` standardised descriptors of ``smiles`` (per-column mean and std of these rows; NaN where
    missing): the ``batch.targets`` that descriptor objectives regress."""
    from featurizers.descriptors import compute_descriptors

    x = compute_descriptors(list(smiles)).astype(np.float64)
    with np.errstate(all="ignore"):
        z = (x - np.nanmean(x, 0)) / np.where(np.nanstd(x, 0) > 0, np.nanstd(x, 0), 1.0)
    return torch.from_numpy(np.clip(z, -6, 6).astype(np.float32))


@pytest.fixture
def descriptor_targets():
    """``targets(smiles) -> [B, K]`` standardised descriptors, for objectives that need ``batch.targets``."""
    return _descriptor_targets


@pytest.fixture
def local_card(tmp_path, monkeypatch):
    """``make(name, smiles, labels)``: a regression card ``name`` over a local CSV in ``tmp_path`` (on
    ``MOLWM_DATASETS`` for this test), with a checksum; returns the card name."""
    import hashlib

    def make(name: str, smiles, labels) -> str:
        csv = tmp_path / f"{name}.csv"
        csv.write_text("smiles,y\n" + "".join(f"{s},{y}\n" for s, y in zip(smiles, labels)))
        card = tmp_path / "cards" / f"{name}.yaml"
        card.parent.mkdir(exist_ok=True)
        card.write_text(
            f"name: {name}\nsource:\n  kind: local\n  files:\n    - path: ../{name}.csv\n"
            f"      sha256: {hashlib.sha256(csv.read_bytes()).hexdigest()}\n"
            "columns:\n  smiles: smiles\n  targets: [y]\ntask:\n  type: regression\n  metric: rmse\n"
            "license: CC0-1.0\ncitation: made up for tests\n")
        monkeypatch.setenv("MOLWM_DATASETS", str(card.parent))
        return name

    return make
