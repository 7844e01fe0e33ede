"""Hypothesis fuzzing of run configs (issue 26 item 7), like test_fuzz_readers.py does for cards: a shipped
config with one key set to a random value or dropped, random ``key=value`` overrides, and random bytes
either load or end in one ``ConfigError``/``MolwmError`` line, never another exception. Small example
counts: these run in the unit tier."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from molwm.config import ConfigError, load_config
from molwm.errors import MolwmError
from molwm.pretraining import load_pretrain_config
from molwm.train.finetune import FinetuneConfig

pytestmark = pytest.mark.unit
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ROOT = Path(__file__).resolve().parents[2]
SHIPPED = {"finetune": yaml.safe_load((ROOT / "configs/finetune/tiny.yaml").read_text()),
           "pretrain": yaml.safe_load((ROOT / "configs/pretrain/tiny.yaml").read_text()),
           "multimodal": yaml.safe_load((ROOT / "configs/pretrain/multimodal_tiny.yaml").read_text())}
NUMBERS = (st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from(["1e-3", ".nan", "-.inf", "0", "1e999", "0x10", "1_000"]))
VALUES = st.recursive(st.none() | st.booleans() | NUMBERS | st.text(max_size=12),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                    max_size=3), max_leaves=6)


def _paths(data, prefix=()):
    if isinstance(data, dict):
        for k, v in data.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))


def _load(kind: str, text: str | bytes, overrides=()):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "run.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        try:
            if kind == "finetune":
                return load_config(FinetuneConfig, path, list(overrides))
            return load_pretrain_config(path, list(overrides))
        except MolwmError as err:  # ConfigError and its kin: one line
            assert "\n" not in str(err).strip(), str(err)
            return err


@FAST
@given(kind=st.sampled_from(sorted(SHIPPED)), data=st.data(), value=VALUES, drop=st.booleans())
def test_a_config_with_a_wrong_value_or_a_missing_key_loads_or_is_one_line(kind, data, value, drop):
    config = copy.deepcopy(SHIPPED[kind])
    where = data.draw(st.sampled_from(sorted(_paths(config))))
    node = config
    for key in where[:-1]:
        node = node[key]
    if drop:
        del node[where[-1]]
    else:
        node[where[-1]] = value
    _load(kind, yaml.safe_dump(config))


@FAST
@given(kind=st.sampled_from(sorted(SHIPPED)), key=st.sampled_from(
    ["lr", "batch_size", "seeds", "encoder.dim", "model.encoder.dim", "split.fractions", "epochs", "max_steps",
     "weight_decay", "head.dropout", "grad_clip", "warmup_steps", "x.y"]), raw=st.text(max_size=20) | NUMBERS.map(str))
def test_any_override_loads_or_is_one_line(kind, key, raw):
    _load(kind, yaml.safe_dump(SHIPPED[kind]), [f"{key}={raw}"])


@FAST
@given(data=st.binary(max_size=300))
def test_a_config_of_any_bytes_loads_or_is_one_line(data):
    _load("finetune", data)


@FAST
@given(width=st.integers(2, 12), depth=st.integers(1, 12))
def test_nested_aliases_are_bounded(width, depth):
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, depth)]
    out = _load("finetune", "\n".join(lines) + "\n")
    assert isinstance(out, ConfigError)  # unknown keys, or aliases over the limit: never a blow-up
