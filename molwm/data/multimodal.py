"""Multimodal samples and the typed batch that carries them.

A sample is one compound (or one imaged well of it) with any subset of the
modalities: its molecular graph, its assay panel (observed cells only), a
Cell Painting site, or any other registered modality. Each modality's data
sits in a *store* (:class:`ModalityStore`: which samples have it, and how to
collate them); a batch is a mapping from modality name to that modality's
batch, for the samples that have it, plus the row map back to the batch
(``batch.rows("graph")``); a missing modality is absent, never zeros.

The model side of a modality (encoder, masks, queries, raw targets) is its unit
in :mod:`molwm.jepa.modalities`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

from featurizers.graphs import GraphArrays
from molwm.data.batch import GraphBatch

MODALITIES = ("graph", "assay", "image", "profile")
"""The built-in modalities, in their registry order (:func:`molwm.jepa.modalities.modality_names` has
the registered ones, these first)."""


@dataclass
class AssayBatch:
    """Observed measurements of a batch, one padded row per compound.

    Attributes:
        ids: ``[B, T]`` long assay ids (0 where padded).
        values: ``[B, T]`` float normalised values (0 where padded).
        pad: ``[B, T]`` bool, True where there is no measurement.
    """

    ids: Tensor
    values: Tensor
    pad: Tensor

    @classmethod
    def from_dense(cls, values: Tensor, observed: Tensor) -> "AssayBatch":
        """Build from a dense panel ``values [B, A]`` + ``observed [B, A]``; keeps assay order."""
        b, a = observed.shape
        t = max(1, int(observed.sum(1).max()) if b else 1)
        order = torch.argsort((~observed).to(torch.int8), dim=1, stable=True)[:, :t]  # observed first
        ids = order
        vals = torch.gather(torch.nan_to_num(values, nan=0.0), 1, order)
        pad = ~torch.gather(observed, 1, order)
        return cls(ids=ids.masked_fill(pad, 0), values=vals.masked_fill(pad, 0.0), pad=pad)

    def select(self, rows: Tensor) -> "AssayBatch":
        """Rows ``rows`` of the batch."""
        return AssayBatch(self.ids[rows], self.values[rows], self.pad[rows])


@dataclass
class ImageBatch:
    """Cell Painting sites.

    Attributes:
        pixels: ``[B, C, H, W]`` float normalised pixels (absent channels are zeros).
        present: ``[B, C]`` bool, which channels were imaged; encoders read this.
    """

    pixels: Tensor
    present: Tensor

    def select(self, rows: Tensor) -> "ImageBatch":
        """Rows ``rows`` of the batch."""
        return ImageBatch(self.pixels[rows], self.present[rows])


class ModalityStore(Protocol):
    """One modality's data for ``N`` samples (what :class:`MultimodalData` holds per modality)."""

    def present(self) -> np.ndarray:
        """``[N]`` bool: samples that have this modality."""

    def subset(self, rows: np.ndarray) -> "ModalityStore":
        """The store of samples ``rows`` (shared arrays stay shared)."""

    def collate(self, rows: np.ndarray) -> tuple[Any, np.ndarray] | None:
        """The batch of samples ``rows`` that have the modality and their positions in ``rows``
        (ascending); None if none has it."""


@dataclass
class GraphStore:
    """Molecular graphs: ``graphs`` plus ``of [N]`` (row in ``graphs`` or -1)."""

    graphs: GraphArrays
    of: np.ndarray

    def present(self) -> np.ndarray:
        return self.of >= 0

    def subset(self, rows: np.ndarray) -> "GraphStore":
        return GraphStore(self.graphs, self.of[rows])

    def collate(self, rows: np.ndarray) -> tuple[GraphBatch, np.ndarray] | None:
        g = self.of[rows]
        if not (g >= 0).any():
            return None
        sel = np.flatnonzero(g >= 0)
        return GraphBatch.from_arrays(self.graphs, g[sel]), sel


@dataclass
class AssayStore:
    """Assay panels: ``values [N, A]`` normalised, NaN where unmeasured; ``names`` the ``A`` assays."""

    values: np.ndarray
    names: list[str]

    def present(self) -> np.ndarray:
        return ~np.isnan(self.values).all(1)

    def subset(self, rows: np.ndarray) -> "AssayStore":
        return AssayStore(self.values[rows], self.names)

    def collate(self, rows: np.ndarray) -> tuple[AssayBatch, np.ndarray] | None:
        vals = self.values[rows]
        obs = ~np.isnan(vals)
        if not obs.any():
            return None
        sel = np.flatnonzero(obs.any(1))
        return AssayBatch.from_dense(torch.from_numpy(vals[sel]), torch.from_numpy(obs[sel])), sel


@dataclass
class ImageStore:
    """Sites: ``images [Ni, C, H, W]`` float16, ``channels [Ni, C]`` imaged channels, ``of [N]`` (row or -1)."""

    images: np.ndarray
    channels: np.ndarray
    of: np.ndarray

    def present(self) -> np.ndarray:
        return self.of >= 0

    def subset(self, rows: np.ndarray) -> "ImageStore":
        return ImageStore(self.images, self.channels, self.of[rows])

    def collate(self, rows: np.ndarray) -> tuple[ImageBatch, np.ndarray] | None:
        im = self.of[rows]
        if not (im >= 0).any():
            return None
        sel = np.flatnonzero(im >= 0)
        return ImageBatch(torch.from_numpy(self.images[im[sel]].astype(np.float32)),
                          torch.from_numpy(self.channels[im[sel]])), sel


@dataclass
class MultimodalBatch:
    """``B`` samples; each modality for the samples that have it.

    Attributes:
        size: ``B``.
        index: ``[B]`` long sample ids in the source data.
        parts: Modality name -> its batch (graphs, panels, sites, ...), for the samples that have it.
        part_rows: Modality name -> ``[Bm]`` long batch rows of those samples (ascending).
    """

    size: int
    index: Tensor
    parts: dict[str, Any] = field(default_factory=dict)
    part_rows: dict[str, Tensor] = field(default_factory=dict)

    def part(self, modality: str) -> Any:
        """The batch of ``modality`` (None if no sample has it)."""
        return self.parts.get(modality)

    def rows(self, modality: str) -> Tensor:
        """Batch rows that have ``modality``."""
        rows = self.part_rows.get(modality)
        return rows if rows is not None else torch.zeros(0, dtype=torch.long, device=self.index.device)

    def put(self, modality: str, part: Any, rows: Tensor) -> "MultimodalBatch":
        """Add ``modality``'s batch for batch rows ``rows``; returns self."""
        self.parts[modality], self.part_rows[modality] = part, rows
        return self

    def present(self, names: Sequence[str] = MODALITIES) -> Tensor:
        """``[B, M]`` bool presence of each modality (in the order of ``names``)."""
        out = torch.zeros(self.size, len(names), dtype=torch.bool)
        for j, m in enumerate(names):
            out[self.rows(m), j] = True
        return out

    # the built-in modalities by name, for readers of one of them
    @property
    def graph(self) -> GraphBatch | None:
        return self.part("graph")

    @property
    def graph_rows(self) -> Tensor:
        return self.rows("graph")

    @property
    def assay(self) -> AssayBatch | None:
        return self.part("assay")

    @property
    def assay_rows(self) -> Tensor:
        return self.rows("assay")

    @property
    def image(self) -> ImageBatch | None:
        return self.part("image")

    @property
    def image_rows(self) -> Tensor:
        return self.rows("image")


@dataclass
class MultimodalData:
    """An in-memory multimodal table, one row per sample.

    Attributes:
        stores: Modality name -> its data (:class:`ModalityStore`), e.g. ``graph``
            (:class:`GraphStore`), ``assay`` (:class:`AssayStore`), ``image`` (:class:`ImageStore`).
        smiles: ``N`` SMILES (None where the sample has no molecule).
        source: ``N`` short source names (``sim``, ``moleculeace``, ...).
        compound: ``N`` compound keys (rows with the same key are the same compound).
        site: ``[N]`` int64 row of the lab's ``load_data.csv`` each sample's image came
            from (-1: no lab site); links samples to the lab's ground truth. None: unknown.
    """

    stores: dict[str, ModalityStore]
    smiles: list
    source: list[str]
    compound: list[str]
    site: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.smiles)

    # the built-in stores' arrays, for readers of one modality
    @property
    def graphs(self) -> GraphArrays:
        return self.stores["graph"].graphs

    @property
    def graph_of(self) -> np.ndarray:
        """``[N]`` int64 row in ``graphs`` or -1 (no graph)."""
        return self.stores["graph"].of

    @property
    def assay_values(self) -> np.ndarray:
        """``[N, A]`` float32 normalised values, NaN where unmeasured."""
        return self.stores["assay"].values

    @property
    def assay_names(self) -> list[str]:
        return self.stores["assay"].names

    @property
    def images(self) -> np.ndarray:
        """``[Ni, C, H, W]`` float16 normalised sites (``image_of`` maps samples to them)."""
        return self.stores["image"].images

    @property
    def image_present(self) -> np.ndarray:
        """``[Ni, C]`` bool imaged channels."""
        return self.stores["image"].channels

    @property
    def image_of(self) -> np.ndarray:
        """``[N]`` int64 row in ``images`` or -1."""
        return self.stores["image"].of

    @property
    def n_assays(self) -> int:
        return len(self.assay_names) if "assay" in self.stores else 0

    def counts(self) -> dict[str, int]:
        """Samples per modality and per source."""
        out = {"samples": len(self)}
        names = {"graph": "with_graph", "assay": "with_assays", "image": "with_image"}
        for m, store in self.stores.items():
            out[names.get(m, f"with_{m}")] = int(store.present().sum())
        if "assay" in self.stores:
            out["assay_values"] = int((~np.isnan(self.assay_values)).sum())
        for s in sorted(set(self.source)):
            out[f"source.{s}"] = sum(1 for x in self.source if x == s)
        return out

    def present(self, modalities: Sequence[str]) -> np.ndarray:
        """``[N]`` bool: samples that have at least one of ``modalities``."""
        out = np.zeros(len(self), dtype=bool)
        for m in modalities:
            if m in self.stores:
                out |= self.stores[m].present()
        return out

    def subset(self, rows: Sequence[int] | np.ndarray) -> "MultimodalData":
        """A view-like copy holding samples ``rows`` (graphs and images shared, maps re-indexed)."""
        rows = np.asarray(rows, dtype=np.int64)
        return MultimodalData(
            stores={m: store.subset(rows) for m, store in self.stores.items()},
            smiles=[self.smiles[i] for i in rows], source=[self.source[i] for i in rows],
            compound=[self.compound[i] for i in rows], site=None if self.site is None else self.site[rows],
        )

    def batch(self, rows: Sequence[int] | np.ndarray, drop: Sequence[str] = ()) -> MultimodalBatch:
        """Collate samples ``rows`` (in that order); modalities in ``drop`` are left out."""
        rows = np.asarray(rows, dtype=np.int64)
        out = MultimodalBatch(size=len(rows), index=torch.from_numpy(rows.copy()))
        for m, store in self.stores.items():
            got = None if m in drop else store.collate(rows)
            if got is not None:
                out.put(m, got[0], torch.from_numpy(got[1]))
        return out
