"""Assay and image encoders: sets are order-free, absent channels are ignored, not faked."""

from __future__ import annotations

import pytest
import torch

from molwm.data.multimodal import AssayBatch
from molwm.encoders.assay import AssayEncoder
from molwm.encoders.image import ImageEncoder, ImageEncoderConfig, gather_tokens, sincos_2d

pytestmark = pytest.mark.unit


def test_assay_batch_keeps_only_observed_cells():
    values = torch.tensor([[1.0, float("nan"), 2.0], [float("nan"), float("nan"), 3.0]])
    b = AssayBatch.from_dense(values, ~torch.isnan(values))
    assert b.ids.tolist() == [[0, 2], [2, 0]]
    assert b.pad.tolist() == [[False, False], [False, True]]
    assert b.values[0].tolist() == [1.0, 2.0]


def test_assay_encoder_is_permutation_equivariant():
    torch.manual_seed(0)
    enc = AssayEncoder(6).eval()
    ids, vals = torch.tensor([[0, 3, 5]]), torch.tensor([[0.5, -1.0, 2.0]])
    pad = torch.zeros(1, 3, dtype=torch.bool)
    a = enc.tokens(AssayBatch(ids, vals, pad)).x
    perm = torch.tensor([2, 0, 1])
    b = enc.tokens(AssayBatch(ids[:, perm], vals[:, perm], pad)).x
    assert torch.allclose(a[:, perm], b, atol=1e-5)


def test_assay_encoder_context_ignores_hidden_values():
    torch.manual_seed(0)
    enc = AssayEncoder(4).eval()
    ids, pad = torch.tensor([[0, 1, 2]]), torch.zeros(1, 3, dtype=torch.bool)
    keep = torch.tensor([[True, False, True]])
    a = enc.tokens(AssayBatch(ids, torch.tensor([[1.0, 5.0, 2.0]]), pad), keep)
    b = enc.tokens(AssayBatch(ids, torch.tensor([[1.0, -9.0, 2.0]]), pad), keep)
    assert torch.allclose(a.x, b.x) and a.pad.tolist() == [[False, True, False]]


def test_image_encoder_ignores_an_absent_channel():
    torch.manual_seed(0)
    enc = ImageEncoder(ImageEncoderConfig(dim=32, layers=1, image_size=24, patch=6)).eval()
    x = torch.randn(2, 5, 24, 24)
    present = torch.tensor([[True, True, True, False, True]] * 2)
    y = x.clone()
    y[:, 3] = 100.0  # whatever is in the absent plane must not matter
    assert torch.allclose(enc.tokens(x, present).x, enc.tokens(y, present).x, atol=1e-5)
    # and a present channel does matter
    assert not torch.allclose(enc.tokens(x, torch.ones(2, 5, dtype=torch.bool)).x,
                              enc.tokens(y, torch.ones(2, 5, dtype=torch.bool)).x)


@pytest.mark.parametrize("channels", [1, 3, 5])
def test_image_encoder_works_with_one_to_five_channels(channels):
    enc = ImageEncoder(ImageEncoderConfig(dim=32, layers=1, image_size=24, patch=6))
    present = torch.zeros(2, 5, dtype=torch.bool)
    present[:, :channels] = True
    t = enc.tokens(torch.randn(2, 5, 24, 24), present)
    assert t.x.shape == (2, 16, 32) and torch.isfinite(t.x).all()


def test_image_context_sees_only_kept_patches():
    torch.manual_seed(0)
    enc = ImageEncoder(ImageEncoderConfig(dim=32, layers=1, image_size=24, patch=6)).eval()
    x, present = torch.randn(1, 5, 24, 24), torch.ones(1, 5, dtype=torch.bool)
    keep = torch.zeros(1, 16, dtype=torch.bool)
    keep[0, :4] = True  # the top row of patches
    y = x.clone()
    y[:, :, 6:] = 0.0  # change every pixel outside it
    a, b = enc.tokens(x, present, keep), enc.tokens(y, present, keep)
    assert a.x.shape == (1, 4, 32) and torch.allclose(a.x, b.x, atol=1e-5)
    assert torch.equal(a.pos, sincos_2d(4, 16)[:4].unsqueeze(0))


def test_gather_tokens_packs_in_position_order():
    x = torch.arange(8.0).reshape(1, 4, 2).repeat(2, 1, 1)
    keep = torch.tensor([[False, True, False, True], [True, False, False, False]])
    packed, pad, index = gather_tokens(x, keep)
    assert index.tolist() == [[1, 3], [0, 0]] and pad.tolist() == [[False, False], [False, True]]
    assert packed[0, :, 0].tolist() == [2.0, 6.0]
