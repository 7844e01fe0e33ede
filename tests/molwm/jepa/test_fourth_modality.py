"""A modality added from outside molwm, the way docs/architecture.md says: its own store, its own unit
and one registry line, nothing edited in molwm (after the registered ones, the real well profile
included: :mod:`molwm.jepa.modalities.profile`).

The modality is a numeric signature vector (say a transcriptomic signature): ``F`` features per sample,
each feature a token, a random subset hidden; its raw content is the feature's value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featurizers.assay import AssayNormalizer
from featurizers.molecule import GRAPH_SPEC
from molwm.data.mm_sources import MultimodalBuild
from molwm.data.multimodal import MultimodalData
from molwm.encoders.image import gather_tokens
from molwm.encoders.tokens import Tokens
from molwm.jepa.mm_masking import MultimodalMaskConfig, add_pe, sample_multimodal_masks, unseen_parameters
from molwm.jepa.modalities import (
    HiddenQuery,
    ModalityUnit,
    TokenMask,
    modality_names,
    place,
    register_modality,
    unregister_modality,
)
from molwm.kinds import load_encoder
from molwm.objectives import ObjectiveInputs, build_objective
from molwm.train.pretrain_mm import MultimodalPretrainConfig, run_multimodal_pretrain, train_step

# ---- the modality's own code: a store (data side) and a unit (model side) ------------------------------


@dataclass
class SignatureBatch:
    values: Tensor  # [Bp, F]

    def select(self, rows: Tensor) -> "SignatureBatch":
        return SignatureBatch(self.values[rows])


@dataclass
class SignatureStore:
    values: np.ndarray  # [N, F] float32, NaN rows: no signature

    def present(self) -> np.ndarray:
        return ~np.isnan(self.values).any(1)

    def subset(self, rows: np.ndarray) -> "SignatureStore":
        return SignatureStore(self.values[rows])

    def collate(self, rows: np.ndarray):
        sel = np.flatnonzero(self.subset(rows).present())
        return (SignatureBatch(torch.from_numpy(self.values[rows][sel])), sel) if len(sel) else None


@dataclass
class SignatureSettings:
    features: int = 6
    hidden_fraction: float = 0.5


class SignatureEncoder(nn.Module):
    def __init__(self, dim: int, features: int):
        super().__init__()
        self.features = features
        self.value = nn.Linear(1, dim)
        self.feature = nn.Embedding(features, dim)
        self.mix = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def positions(self, n: int) -> Tensor:
        return torch.eye(self.features).expand(n, -1, -1)  # [B, F, F] one-hot feature index

    def tokens(self, part: SignatureBatch, keep: Tensor | None) -> Tokens:
        x = self.value(part.values.unsqueeze(-1)) + self.feature.weight  # [B, F, D]
        x = x + self.mix(x.mean(1, keepdim=True))  # every token sees the signature's mean
        pos = self.positions(len(x))
        if keep is None:
            return Tokens(x=x, pad=torch.zeros(x.shape[:2], dtype=torch.bool), pos=pos)
        x, pad, _ = gather_tokens(x, keep)
        return Tokens(x=x, pad=pad, pos=gather_tokens(pos, keep)[0])


class SignatureUnit(ModalityUnit):
    name, head_name, settings = "signature", "signature_head", SignatureSettings

    def encoder(self, spec, n_assays, config):
        return SignatureEncoder(config.dim, self.options(config).features)

    def pos_dim(self, n_assays, config):
        return self.options(config).features

    def encode(self, encoder, part, rows, keep):
        sel = torch.arange(len(rows)) if keep is None else torch.nonzero(keep.any(1)).squeeze(1)
        if len(sel) == 0:
            return None, rows
        return encoder.tokens(part.select(sel), None if keep is None else keep[sel]), rows[sel]

    def sample_mask(self, part, config, grid, rng, whole, gone):
        n, f = part.values.shape
        target = rng.random((n, f)) < self.options(config).hidden_fraction
        target[np.arange(n), rng.integers(0, f, n)] = True  # at least one hidden
        keep = ~target
        keep[np.arange(n), np.argmax(target, 1)] = False
        keep[~keep.any(1), 0], target[~keep.any(1), 0] = True, False  # and one seen
        keep[whole], target[whole] = False, True
        keep[gone], target[gone] = False, False
        return TokenMask(torch.from_numpy(keep), torch.from_numpy(target))

    def query(self, index, encoder, part, mask, rows, size):
        if not bool(mask.target.any()):
            return None
        pos, qpad, _ = gather_tokens(encoder.positions(len(rows)), mask.target)
        pos, qpad = place(pos, qpad, rows, size)
        return HiddenQuery(index, pos, qpad, mask.target)

    def raw_head(self, spec, config):
        return nn.Linear(config.dim, 1)

    def raw_target(self, part, select, config):
        return part.values[select], None

    def raw_loss(self, head, h, target, weight):
        return F.mse_loss(head(h).squeeze(-1), target)


# ---- the test ------------------------------------------------------------------------------------------


@pytest.fixture
def signature_modality():
    unit = register_modality(SignatureUnit())  # the one registry line
    yield unit
    unregister_modality(unit.name)


def _with_signatures(data: MultimodalData, features: int = 6) -> MultimodalData:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(len(data), features)).astype(np.float32)
    values[::3] = np.nan  # a third of the samples have no signature
    return MultimodalData({**data.stores, "signature": SignatureStore(values)}, data.smiles, data.source,
                          data.compound, data.site)


@pytest.mark.integration
@pytest.mark.parametrize("objective", ["jepa", "generative", "contrastive_views"])
def test_a_modality_added_from_outside_trains_with_every_objective(objective, signature_modality, mm_data, mm_config):
    assert modality_names() == ("graph", "assay", "image", "profile", "signature")
    data = _with_signatures(mm_data)
    mask_config = MultimodalMaskConfig(modality_settings={"signature": {"hidden_fraction": 0.4}})
    config = MultimodalPretrainConfig(model=mm_config, mask=mask_config, objective=objective, max_steps=3)
    torch.manual_seed(0)
    model = build_objective("multimodal", objective, ObjectiveInputs(GRAPH_SPEC, mm_config, data.n_assays))
    assert "encoders.signature.value.weight" in dict(model.named_parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    b = add_pe(data.batch(np.arange(len(data))), mm_config, torch.Generator().manual_seed(0))
    masks = sample_multimodal_masks(b, mask_config, mm_config.image.grid, np.random.default_rng(0))
    assert b.part("signature").values.shape == (len(data) - len(range(0, len(data), 3)), 6)
    assert set(masks.parts) == {"graph", "assay", "image", "signature"}
    assert not (masks.part("signature").keep & masks.part("signature").target).any()
    assert "encoders.signature." not in unseen_parameters(b, masks)
    # every parameter the batch can train, the signature's encoder, queries and head included, gets a gradient
    train_step(model, optimizer, b, masks, config, 0, 3, check_grads=True)
    out = model(b, masks)
    if objective != "contrastive_views":
        assert "signature" in out.per_modality and torch.isfinite(out.per_modality["signature"])
    if objective == "generative":
        assert isinstance(model.signature_head, nn.Linear)


@pytest.mark.integration
def test_a_modality_added_from_outside_pretrains_saves_and_loads(signature_modality, mm_data, mm_config, tmp_path):
    data = _with_signatures(mm_data)
    build = MultimodalBuild(train=data, heldout=None, heldout_part=np.array([]),
                            normalizer=AssayNormalizer(columns=list(data.assay_names)).fit(data.assay_values),
                            rejects=[], synthetic=True)
    config = MultimodalPretrainConfig(model=mm_config, max_steps=4, batch_size=8, out_dir=str(tmp_path),
                                      checkpoint_every=2, modalities=["graph", "signature"])
    result = run_multimodal_pretrain(config, progress=False, data=build)
    assert result.steps == 4 and np.isfinite(result.final_loss)
    assert "loss.signature" in result.history
    encoder = load_encoder(result.checkpoint)  # the molecule encoder of a five-modality checkpoint
    assert encoder.config.dim == mm_config.dim
