"""The image ablation's variants (issue 18, part 3): an image encoder without per-token LayerNorm, lab probes
that read the context encoder as well as the EMA target, and the larger-mask config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featurizers.molecule import GRAPH_SPEC
from molwm.encoders.image import ImageEncoder, ImageEncoderConfig
from molwm.jepa.mm_masking import add_pe
from molwm.jepa.multimodal import MultimodalJEPA
from molwm.objectives import ObjectiveInputs, build_objective


@pytest.mark.unit
def test_token_norm_off_keeps_each_token_s_scale_and_on_is_the_default():
    torch.manual_seed(0)
    x, present = 3.0 * torch.randn(2, 5, 24, 24), torch.ones(2, 5, dtype=torch.bool)
    on = ImageEncoder(ImageEncoderConfig(dim=32, layers=1, image_size=24, patch=6)).eval()
    assert ImageEncoderConfig().token_norm and "out_norm.weight" in on.state_dict()
    off = ImageEncoder(ImageEncoderConfig(dim=32, layers=1, image_size=24, patch=6, token_norm=False)).eval()
    assert "out_norm.weight" not in off.state_dict()
    missing, unexpected = off.load_state_dict(on.state_dict(), strict=False)
    assert not missing and set(unexpected) == {"out_norm.weight", "out_norm.bias"}
    a, b = on.tokens(x, present).x, off.tokens(x, present).x
    assert torch.allclose(a.std(-1, unbiased=False), torch.ones(2, 16), atol=1e-3)  # LayerNorm's unit scale
    assert not torch.allclose(b.std(-1, unbiased=False), torch.ones(2, 16), atol=0.05)
    # the same weights otherwise: the variant is the norm and nothing else
    assert torch.allclose(torch.nn.functional.layer_norm(b, (32,)), a, atol=1e-4)


@pytest.mark.unit
def test_jepa_targets_follow_the_image_encoder_s_token_norm(mm_data, mm_config):
    batch = add_pe(mm_data.batch(np.arange(len(mm_data)), drop=("graph", "assay")), mm_config)
    torch.manual_seed(0)
    normed, _ = MultimodalJEPA(GRAPH_SPEC, mm_data.n_assays, mm_config).target_tokens(batch, "image")
    mm_config.image.token_norm = False
    torch.manual_seed(0)
    raw, pad = MultimodalJEPA(GRAPH_SPEC, mm_data.n_assays, mm_config).target_tokens(batch, "image")
    assert torch.allclose(normed[~pad].mean(-1), torch.zeros(1), atol=1e-4)
    assert raw[~pad].mean(-1).abs().max() > 1e-2  # not layer-normalised per token


@pytest.mark.integration  # builds the tiny lab's multimodal data and probes two small models
def test_context_readout_reads_the_context_encoder_and_only_where_it_differs(tiny_lab, tmp_path):
    from molwm.data.mm_sources import MultimodalDataConfig, build_multimodal_data
    from molwm.jepa.multimodal import MultimodalJEPAConfig
    from molwm.evaluation.lab_probes import LabProbeConfig, LabProbeSuite

    build = build_multimodal_data(MultimodalDataConfig(lab=str(tiny_lab.path), lab_split=[0.5, 0.25, 0.25],
                                                       image_size=32), progress=False)
    cfg = MultimodalJEPAConfig(dim=32)
    cfg.graph.dim = cfg.assay.dim = cfg.image.dim = 32
    cfg.image.layers, cfg.image.image_size, cfg.image.patch = 1, 32, 8
    cfg.predictor.dim, cfg.predictor.layers = 32, 1
    suite = LabProbeSuite(LabProbeConfig(modality="image", targets=["state"], readouts=["target", "context"]),
                          build.heldout, tiny_lab.path)
    torch.manual_seed(0)
    jepa = build_objective("multimodal", "jepa", ObjectiveInputs(GRAPH_SPEC, cfg, build.train.n_assays))
    with torch.no_grad():  # the context encoder moves away from its EMA copy, as training does
        for p in jepa.encoders["image"].parameters():
            p.add_(0.5 * torch.randn_like(p))
    target, context = suite.features(jepa), suite.features(jepa, readout="context")
    assert target.shape == context.shape and not np.allclose(target, context)
    scores = suite(jepa)
    expected = {**suite.score(target), **{k.replace("probe.", "probe.context_", 1): v
                                          for k, v in suite.score(context).items()}}
    assert {"probe.state.r2", "probe.context_state.r2", "probe.context_consistency.map"} <= set(scores)
    np.testing.assert_equal(scores, expected)  # (R² is NaN on this 8-site probe; NaN == NaN here)
    assert scores["probe.consistency.map"] != scores["probe.context_consistency.map"]
    generative = build_objective("multimodal", "generative", ObjectiveInputs(GRAPH_SPEC, cfg, build.train.n_assays))
    scores = suite(generative)  # no EMA target: its only encoder is the one the target readout reads
    assert "probe.state.r2" in scores and not any(k.startswith("probe.context_") for k in scores)


@pytest.mark.unit
def test_probe_readouts_are_checked():
    from molwm.config import ConfigError
    from molwm.evaluation.lab_probes import LabProbeConfig

    with pytest.raises(ConfigError, match="readouts"):
        LabProbeConfig(readouts=["predictor"]).validate()


@pytest.mark.unit
@pytest.mark.parametrize("name", ["image_large_masks", "image_no_token_norm"])
def test_variant_configs_differ_from_image_yaml_only_where_they_say(repo_root, name):
    from molwm.config import load_config, to_dict
    from molwm.experiments.ablate import AblateConfig

    base = to_dict(load_config(AblateConfig, repo_root / "configs/ablate/image.yaml"))
    variant = to_dict(load_config(AblateConfig, repo_root / f"configs/ablate/{name}.yaml"))
    assert variant["multimodal"]["probes"].pop("readouts") == ["target", "context"]
    base["multimodal"]["probes"].pop("readouts")
    if name == "image_large_masks":
        assert variant["multimodal"]["mask"].pop("image_block_scale") == [0.3, 0.4]
        base["multimodal"]["mask"].pop("image_block_scale")
    else:
        assert variant["multimodal"]["model"]["image"].pop("token_norm") is False
        base["multimodal"]["model"]["image"].pop("token_norm")
    variant.pop("out_dir"), base.pop("out_dir")
    assert variant == base
