"""The image-level world model: the synthetic lab followed over time with its *sites* as the state.

The profile-level world model (:mod:`molwm.world.train`) reads 24 engineered profile features per
well; here the state encoder is the channel-aware ViT of :mod:`molwm.encoders.image` over the
well's site, pooled into the world model's ``K`` state tokens. Everything else is the world
model's own: the conditions, held-out scaffolds, actions and times (:func:`build_world_data`),
the ensemble of action-conditioned predictors, the EMA target, the batches and the losses
(:func:`molwm.world.train.world_losses`). The two objectives:

* ``jepa`` (the latent forecaster): predict the EMA target encoder's state tokens of the site
  observed at ``t'`` (a different well of the same condition: its cells, positions and surface
  nuisance are drawn anew);
* ``raw`` (the pixel-space forecaster): the same encoder, predictors, data and steps, but the
  predicted state goes through a pixel head that must output the future site's normalised
  pixels (the site exactly as the encoder reads it).

Sites are scaled per channel with statistics of the training conditions' sites (as multimodal
pretraining does, :class:`featurizers.image.ChannelStats`), never per site.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from einops import rearrange
from torch import Tensor, nn

from featurizers.image import ChannelStats, featurize_sites
from molwm.config import ConfigError
from molwm.encoders.image import ImageEncoder, ImageEncoderConfig
from molwm.kinds.world import IMAGE_WORLD_MODEL
from molwm.world.config import WorldConfig
from molwm.world.data import CourseError, lab_courses_and_wells
from molwm.world.model import WorldNet, WorldNetConfig
from molwm.world.prepare import WorldData
from molwm.world.train import WorldBuild, build_world_data

IMAGE_WORLD_KIND = IMAGE_WORLD_MODEL.name
"""The checkpoint kind of this model (:data:`molwm.kinds.world.IMAGE_WORLD_MODEL`)."""


@dataclass(kw_only=True)
class ImageWorldConfig(WorldConfig):
    """An image-level world-model run (``kind: image_world``): a :class:`WorldConfig` on a lab's sites.

    Attributes:
        image: The ViT's sizes (``dim`` must equal ``model.dim``; ``image_size`` is the crop side).
        site: Which site of each well is its observation (``Metadata_Site``; the lab writes 1, 2, ...).
        embed_batch: Sites per forward pass when embedding for probes and evaluation.
    """

    kind: Literal["image_world"] = "image_world"
    image: ImageEncoderConfig = field(default_factory=lambda: ImageEncoderConfig(dim=64, layers=2, heads=4,
                                                                                 patch=8, image_size=48))
    model: WorldNetConfig = field(default_factory=lambda: WorldNetConfig(history=1))
    site: int = 1
    embed_batch: int = 256
    probe_rows: int = 4000
    out_dir: str = "outputs/world/images"

    def validate(self) -> None:
        super().validate()
        self.image.validate()
        if self.data.source != "lab":
            raise ConfigError("data.source: the image-level world model reads a synthetic lab's sites (source: lab)")
        if self.image.dim != self.model.dim:
            raise ConfigError(f"image.dim ({self.image.dim}) must equal model.dim ({self.model.dim})")
        if self.model.history != 1:
            raise ConfigError(f"model.history must be 1 for images (one site per state), got {self.model.history}")


class ImageStateEncoder(nn.Module):
    """Site ``[B, C, S, S]`` -> state tokens ``[B, K, D]``: the ViT's mean patch token, projected to ``K`` tokens.

    Every channel slot counts as imaged (the lab writes all five).
    """

    def __init__(self, image: ImageEncoderConfig, config: WorldNetConfig):
        super().__init__()
        self.vit = ImageEncoder(image)
        self.k, self.d = config.state_tokens, config.dim
        self.pool = nn.Linear(image.dim, self.k * self.d)
        self.norm = nn.LayerNorm(self.d)

    def forward(self, pixels: Tensor) -> Tensor:
        present = torch.ones(len(pixels), pixels.shape[1], dtype=torch.bool, device=pixels.device)
        tokens = self.vit.tokens(pixels, present).x.mean(1)  # [B, D]
        return self.norm(self.pool(tokens).view(len(pixels), self.k, self.d))  # [B, K, D]


class PixelHead(nn.Module):
    """Predicted state ``[B, K*D]`` -> a site ``[B, C, S, S]``: one token per patch, then its pixels."""

    def __init__(self, image: ImageEncoderConfig, config: WorldNetConfig):
        super().__init__()
        self.image = image
        d = config.dim
        self.tokens = nn.Linear(config.state_tokens * d, image.n_patches * d)
        self.pixels = nn.Sequential(nn.GELU(), nn.Linear(d, image.channels * image.patch ** 2))

    def forward(self, state: Tensor) -> Tensor:
        g, p = self.image.grid, self.image.patch
        t = self.tokens(state).view(len(state), g * g, -1)  # [B, Np, D]
        x = self.pixels(t)  # [B, Np, C*p*p]
        return rearrange(x, "b (h w) (c p1 p2) -> b c (h p1) (w p2)", h=g, w=g, p1=p, p2=p)  # [B, C, S, S]


class ImageWorldNet(WorldNet):
    """The world model of :class:`WorldNet` with :class:`ImageStateEncoder` states and a :class:`PixelHead`.

    Args:
        image: ViT sizes.
        compound_dim: Width of compound features.
        n_drugs, n_contexts: Identity vocabulary sizes.
        config: Sizes of the predictors and states.
    """

    def __init__(self, image: ImageEncoderConfig, compound_dim: int, n_drugs: int, n_contexts: int,
                 config: WorldNetConfig):
        super().__init__(0, 0, compound_dim, n_drugs, n_contexts, config,
                         encoder=ImageStateEncoder(image, config), raw_head=PixelHead(image, config))


def build_image_net(config: ImageWorldConfig, build: WorldBuild, seed: bool = True) -> ImageWorldNet:
    """The network for ``build`` (initialised from ``config.seed`` unless ``seed`` is False: the driver seeds it)."""
    if seed:
        torch.manual_seed(config.seed)
    c = build.courses
    return ImageWorldNet(config.image, build.drug_features.shape[1], len(c.drugs), len(c.contexts), config.model)


# ---------------------------------------------------------------- data


@dataclass
class ImageWorldBuild:
    """The world model's build with sites as observations.

    Attributes:
        world: The :class:`WorldBuild` of the same conditions, split and actions; its ``train`` and
            ``test`` hold sites as ``windows`` and ``obs`` (``[N, T, C, S, S]``, the same tensor).
        stats: Per-channel scaling fitted on the training conditions' sites.
        lab: The lab folder.
        rejects: Sites that could not be read (their slots count as unobserved).
    """

    world: WorldBuild
    stats: ChannelStats
    lab: Path
    rejects: list = field(default_factory=list)


def slot_sites(lab: str | Path, wells: np.ndarray, site: int = 1) -> list[list[str] | None]:
    """Per slot of ``wells [N, T]`` (rows of ``well.csv``, -1: none), the channel paths of its site
    (``None`` where the well was not imaged at that site), row-major over ``[N, T]``."""
    from molwm.data.formats import read_load_data

    root = Path(lab)
    index = read_load_data(root / "load_data.csv")
    frame = index.frame
    paths = index.site_paths()
    well_csv = pd.read_csv(root / "well.csv", usecols=["Metadata_Plate", "Metadata_Well"], dtype=str)
    at = {(p, w): i for i, (p, w, s) in enumerate(zip(frame["plate"], frame["well"], frame["site"])) if s == site}
    keys = list(zip(well_csv["Metadata_Plate"], well_csv["Metadata_Well"]))
    return [paths[at[keys[w]]] if w >= 0 and keys[w] in at else None for w in wells.reshape(-1)]


def build_image_world(config: ImageWorldConfig, progress: bool = False) -> ImageWorldBuild:
    """Conditions, split and actions as for the profile-level model, with each slot's site as its observation."""
    courses, wells = lab_courses_and_wells(config.data.lab)
    world = build_world_data(config, courses)
    n, t = wells.shape
    paths = slot_sites(config.data.lab, wells, config.site)
    want = [i for i, p in enumerate(paths) if p is not None]
    if not want:
        raise CourseError(f"{config.data.lab}: no site {config.site} of any course's wells "
                          "(was the lab generated with --no-images?)")
    size = config.image.image_size
    sites = featurize_sites([paths[i] for i in want], size=size, progress=progress, normalize=None)
    flat = np.zeros((n * t, config.image.channels, size, size), np.float32)
    seen = np.zeros(n * t, bool)
    got = np.asarray(want, np.int64)[np.asarray(sites.index, np.int64)]
    seen[got] = True
    train_slots = np.zeros((n, t), bool)
    train_slots[world.train_rows] = True
    fit = train_slots.reshape(-1)[got]
    stats = ChannelStats.fit(sites.images[fit], sites.present[fit])
    flat[got] = stats.apply(sites.images, sites.present)
    images = torch.from_numpy(flat.reshape(n, t, *flat.shape[1:]))  # [N, T, C, S, S]
    seen = torch.from_numpy(seen.reshape(n, t))
    return ImageWorldBuild(replace(world, train=_with_sites(world.train, images[world.train_rows],
                                                            seen[world.train_rows]),
                                   test=_with_sites(world.test, images[world.test_rows], seen[world.test_rows])),
                           stats, Path(config.data.lab), list(sites.rejects))


def _with_sites(data: WorldData, sites: Tensor, seen: Tensor) -> WorldData:
    """``data`` with ``sites [N, T, C, S, S]`` as windows and observations, slots without a site unobserved."""
    return WorldData(windows=sites, obs=sites, times=data.times, mask=data.mask & seen, action=data.action,
                     truth=data.truth, courses=data.courses)
