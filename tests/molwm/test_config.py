"""molwm.config: typed loading, overrides, and errors that name the dotted key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from molwm.config import (ConfigError, apply_overrides, from_dict, load_config, parse_override, save_config,
                          to_dict)

pytestmark = pytest.mark.unit


@dataclass
class Optim:
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class Model:
    width: int = 64
    kind: Literal["gine", "gps"] = "gine"
    optim: Optim = field(default_factory=Optim)


@dataclass
class Run:
    name: str
    limit: int | None = None
    model: Model = field(default_factory=Model)
    tags: dict[str, str] = field(default_factory=dict)
    debug: bool = False


def test_defaults_and_nesting():
    cfg = from_dict(Run, {"name": "x", "model": {"width": 8, "optim": {"lr": 1}}})
    assert cfg.model.width == 8 and cfg.model.optim.lr == 1.0 and isinstance(cfg.model.optim.lr, float)
    assert cfg.limit is None and cfg.model.kind == "gine"


def test_unknown_key_names_dotted_path_and_suggests():
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.optim\.lrr' \(did you mean 'model\.optim\.lr'\?\)"):
        from_dict(Run, {"name": "x", "model": {"optim": {"lrr": 0.1}}})


def test_wrong_type_names_dotted_path():
    with pytest.raises(ConfigError, match=r"config key 'model\.width': expected int, got str 'wide'"):
        from_dict(Run, {"name": "x", "model": {"width": "wide"}})
    with pytest.raises(ConfigError, match=r"'model\.optim\.betas\[1\]'"):
        from_dict(Run, {"name": "x", "model": {"optim": {"betas": [0.9, "high"]}}})
    with pytest.raises(ConfigError, match=r"'model\.kind': expected 'gine' \| 'gps'"):
        from_dict(Run, {"name": "x", "model": {"kind": "gat"}})
    with pytest.raises(ConfigError, match=r"'debug': expected bool"):
        from_dict(Run, {"name": "x", "debug": "yes"})
    with pytest.raises(ConfigError, match=r"'limit': expected int.*got bool"):
        from_dict(Run, {"name": "x", "limit": True})


def test_missing_required_key():
    with pytest.raises(ConfigError, match="missing required config key 'name'"):
        from_dict(Run, {})


def test_overrides_parse_yaml_values():
    assert parse_override("model.width=128") == (["model", "width"], 128)
    assert parse_override("limit=null") == (["limit"], None)
    assert parse_override("model.optim.betas=[0.8,0.9]") == (["model", "optim", "betas"], [0.8, 0.9])
    assert parse_override("name=moses") == (["name"], "moses")
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("width")


def test_overrides_apply_and_validate(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("name: base\nmodel:\n  width: 32\n")
    cfg = load_config(Run, path, ["model.width=16", "model.optim.lr=0.5", "tags.team=chem"])
    assert cfg.model.width == 16 and cfg.model.optim.lr == 0.5 and cfg.tags == {"team": "chem"}
    with pytest.raises(ConfigError, match=r"run\.yaml: unknown config key 'model\.depth'"):
        load_config(Run, path, ["model.depth=3"])
    with pytest.raises(ConfigError, match="'width' is not a section"):
        apply_overrides({"width": 3}, ["width.x=1"])


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Run, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(Run, bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(Run, listy)


def test_save_roundtrip(tmp_path):
    cfg = from_dict(Run, {"name": "x", "limit": 5, "model": {"kind": "gps"}})
    path = save_config(cfg, tmp_path / "out" / "resolved.yaml")
    assert load_config(Run, path) == cfg
    assert to_dict(cfg)["model"]["optim"]["betas"] == [0.9, 0.999]


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Run, path)


def test_precedence_defaults_base_file_flags_overrides(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: file\nlimit: 10\nmodel: {width: 32}\n")
    cfg = load_config(Run, path, ["model.width=8"], base={"name": "base", "debug": True},
                      flags={"limit": 20, "model": {"width": 16}})
    assert (cfg.name, cfg.limit, cfg.model.width, cfg.debug) == ("file", 20, 8, True)


@pytest.mark.unit
def test_multimodal_image_size_is_set_once_consistently(repo_root):
    from molwm.train.pretrain_mm import MultimodalPretrainConfig

    path = repo_root / "configs/pretrain/multimodal_tiny.yaml"
    with pytest.raises(ConfigError, match=r"data.image_size \(64\) must equal model.image.image_size \(48\)"):
        load_config(MultimodalPretrainConfig, path, ["data.image_size=64"])
    assert load_config(MultimodalPretrainConfig, path, ["data.image_size=64", "modalities=[graph,assay]"])
