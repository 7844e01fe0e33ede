"""Property tests: arbitrary input gives results or clear errors, never a traceback, and loses nothing.

Featurizer batches (counts conserved, a reason per reject), config files (a config or a
ConfigError), graph queries (a status per row) and the REST pyfunc (an answer per row, or
a refusal with a message: missing column, too many molecules, over-long SMILES).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurizers.molecule import featurize_arrays, featurize_smiles
from molwm.config import ConfigError, load_config

pytestmark = pytest.mark.unit
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# SMILES-ish text: organic-subset letters, bonds, rings, brackets, charges, and arbitrary unicode
smiles_alphabet = st.sampled_from(list("CNOSPFIBrcnos()[]=#@+-123456789%./\\ ") + ["Cl", "Br", "[nH]", "\u00e9", "\x00"])
smiles_like = st.lists(smiles_alphabet, max_size=40).map("".join)
anything = st.one_of(smiles_like, st.text(max_size=60), st.none(), st.floats(allow_nan=True), st.integers())


@FAST
@given(st.lists(anything, max_size=25))
def test_featurizer_batch_never_raises_and_conserves_counts(inputs):
    graphs, rejects = featurize_smiles(inputs)
    assert len(graphs) + len(rejects) == len(inputs)
    seen = sorted([g.index for g in graphs] + [r.index for r in rejects])
    assert seen == list(range(len(inputs)))  # every input accounted for exactly once
    for r in rejects:
        assert r.code and r.reason  # a readable reason for each
    arrays, rejects2 = featurize_arrays(inputs)
    assert len(arrays) + len(rejects2) == len(inputs)


yaml_text = st.one_of(
    st.text(max_size=200),
    st.lists(st.tuples(st.sampled_from(["batch_size", "lr", "model", "epochs", "mask", "max_steps", "bogus",
                                        "model.encoder", "objective", "probes"]),
                       st.one_of(st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=8),
                                 st.lists(st.integers(), max_size=3), st.none())),
             max_size=6).map(lambda kv: "\n".join(f"{k}: {v!r}" for k, v in kv)),
)


@FAST
@given(yaml_text)
def test_config_loading_gives_a_config_or_a_config_error(tmp_path, text):
    from molwm.train.pretrain import PretrainConfig

    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        cfg = load_config(PretrainConfig, path)
    except ConfigError as err:
        assert str(err)  # a message, naming what is wrong
    else:
        assert cfg.batch_size > 0


@FAST
@given(st.lists(st.one_of(smiles_like, st.text(max_size=30), st.none(), st.just(float("nan"))), min_size=1,
                max_size=12))
def test_query_embed_answers_every_row(tiny_world_model, inputs):
    emb, status = tiny_world_model.embed(inputs, with_status=True)
    assert len(status) == len(inputs) and emb.shape[0] == len(inputs)
    ok = np.array([s == "ok" for s in status])
    assert np.isfinite(emb[ok]).all() and (np.isnan(emb[~ok]).all() if (~ok).any() else True)


@pytest.fixture(scope="module")
def tiny_world_model():
    import torch

    from featurizers.molecule import GRAPH_SPEC
    from molwm.encoders.graph import GraphEncoder, GraphEncoderConfig
    from molwm.query import WorldModel

    torch.manual_seed(0)
    return WorldModel(encoder=GraphEncoder(GRAPH_SPEC, GraphEncoderConfig(dim=16, layers=1, rw_steps=2, lap_k=2)))


rest_frames = st.one_of(
    st.dictionaries(st.sampled_from(["smiles", "SMILES", "mol", "x"]),
                    st.lists(st.one_of(smiles_like, st.none(), st.floats(allow_nan=True)), min_size=1, max_size=5),
                    min_size=1, max_size=2),
)


@FAST
@given(rest_frames)
def test_pyfunc_answers_or_refuses_with_a_message(tiny_world_model, columns):
    from mlflow.exceptions import MlflowException

    from molwm.serving import MolwmPyfunc

    n = max(len(v) for v in columns.values())
    frame = pd.DataFrame({k: (v + [None] * n)[:n] for k, v in columns.items()})
    model = MolwmPyfunc()
    model.model, model.world = tiny_world_model, None
    model.max_molecules, model.max_smiles_length = 3, 20
    try:
        out = model.predict(None, frame)
    except MlflowException as err:
        assert err.message and "Traceback" not in err.message
        return
    assert len(out) == len(frame) and "status" in out.columns
    for v in out.drop(columns=[c for c in out.columns if c in ("smiles", "status")]).to_numpy().ravel():
        assert v is None or (isinstance(v, float) and math.isfinite(v)) or not isinstance(v, float)
