"""Multimodal samples and the typed batch that carries them.

A sample is one compound (or one imaged well of it) with any subset of three
modalities: its molecular graph, its assay panel (observed cells only) and a
Cell Painting site. A batch holds each modality only for the samples that
have it, plus the row map back to the batch (``graph_rows`` etc.); a missing
modality is absent, never zeros.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from featurizers.graphs import GraphArrays
from molwm.data.batch import GraphBatch

MODALITIES = ("graph", "assay", "image")


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


@dataclass
class MultimodalBatch:
    """``B`` samples; each modality for the samples that have it.

    Attributes:
        size: ``B``.
        index: ``[B]`` long sample ids in the source data.
        graph: Graphs of samples ``graph_rows`` (ascending), or None.
        graph_rows: ``[Bg]`` long.
        assay: Panels of samples ``assay_rows`` (ascending), or None.
        assay_rows: ``[Ba]`` long.
        image: Sites of samples ``image_rows`` (ascending), or None.
        image_rows: ``[Bi]`` long.
    """

    size: int
    index: Tensor
    graph: GraphBatch | None = None
    graph_rows: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    assay: AssayBatch | None = None
    assay_rows: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    image: ImageBatch | None = None
    image_rows: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    def rows(self, modality: str) -> Tensor:
        """Batch rows that have ``modality``."""
        return getattr(self, f"{modality}_rows")

    def present(self) -> Tensor:
        """``[B, M]`` bool presence of each modality (order of ``MODALITIES``)."""
        out = torch.zeros(self.size, len(MODALITIES), dtype=torch.bool)
        for j, m in enumerate(MODALITIES):
            out[self.rows(m), j] = True
        return out


@dataclass
class MultimodalData:
    """An in-memory multimodal table, one row per sample.

    Attributes:
        graphs: Featurized molecules; ``graph_of`` maps samples to them.
        graph_of: ``[N]`` int64 row in ``graphs`` or -1 (no graph).
        assay_values: ``[N, A]`` float32 normalised values, NaN where unmeasured.
        assay_names: ``A`` assay names (the assay vocabulary).
        images: ``[Ni, C, H, W]`` float16 normalised sites; ``image_of`` maps samples to them.
        image_present: ``[Ni, C]`` bool imaged channels.
        image_of: ``[N]`` int64 row in ``images`` or -1.
        smiles: ``N`` SMILES (None where the sample has no molecule).
        source: ``N`` short source names (``sim``, ``moleculeace``, ...).
        compound: ``N`` compound keys (rows with the same key are the same compound).
        site: ``[N]`` int64 row of the lab's ``load_data.csv`` each sample's image came
            from (-1: no lab site); links samples to the lab's ground truth. None: unknown.
    """

    graphs: GraphArrays
    graph_of: np.ndarray
    assay_values: np.ndarray
    assay_names: list[str]
    images: np.ndarray
    image_present: np.ndarray
    image_of: np.ndarray
    smiles: list
    source: list[str]
    compound: list[str]
    site: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.graph_of)

    @property
    def n_assays(self) -> int:
        return len(self.assay_names)

    def counts(self) -> dict[str, int]:
        """Samples per modality and per source."""
        out = {
            "samples": len(self),
            "with_graph": int((self.graph_of >= 0).sum()),
            "with_assays": int((~np.isnan(self.assay_values)).any(1).sum()),
            "with_image": int((self.image_of >= 0).sum()),
            "assay_values": int((~np.isnan(self.assay_values)).sum()),
        }
        for s in sorted(set(self.source)):
            out[f"source.{s}"] = sum(1 for x in self.source if x == s)
        return out

    def present(self, modalities: Sequence[str]) -> np.ndarray:
        """``[N]`` bool: samples that have at least one of ``modalities``."""
        has = {"graph": self.graph_of >= 0, "assay": ~np.isnan(self.assay_values).all(1),
               "image": self.image_of >= 0}
        out = np.zeros(len(self), dtype=bool)
        for m in modalities:
            out |= has[m]
        return out

    def subset(self, rows: Sequence[int] | np.ndarray) -> "MultimodalData":
        """A view-like copy holding samples ``rows`` (graphs and images shared, maps re-indexed)."""
        rows = np.asarray(rows, dtype=np.int64)
        return MultimodalData(
            graphs=self.graphs, graph_of=self.graph_of[rows], assay_values=self.assay_values[rows],
            assay_names=self.assay_names, images=self.images, image_present=self.image_present,
            image_of=self.image_of[rows], smiles=[self.smiles[i] for i in rows],
            source=[self.source[i] for i in rows], compound=[self.compound[i] for i in rows],
            site=None if self.site is None else self.site[rows],
        )

    def batch(self, rows: Sequence[int] | np.ndarray, drop: Sequence[str] = ()) -> MultimodalBatch:
        """Collate samples ``rows`` (in that order); modalities in ``drop`` are left out."""
        rows = np.asarray(rows, dtype=np.int64)
        out = MultimodalBatch(size=len(rows), index=torch.from_numpy(rows.copy()))
        g = self.graph_of[rows]
        if "graph" not in drop and (g >= 0).any():
            sel = np.flatnonzero(g >= 0)
            out.graph = GraphBatch.from_arrays(self.graphs, g[sel])
            out.graph_rows = torch.from_numpy(sel)
        vals = self.assay_values[rows]
        obs = ~np.isnan(vals)
        if "assay" not in drop and obs.any():
            sel = np.flatnonzero(obs.any(1))
            out.assay = AssayBatch.from_dense(torch.from_numpy(vals[sel]), torch.from_numpy(obs[sel]))
            out.assay_rows = torch.from_numpy(sel)
        im = self.image_of[rows]
        if "image" not in drop and (im >= 0).any():
            sel = np.flatnonzero(im >= 0)
            out.image = ImageBatch(torch.from_numpy(self.images[im[sel]].astype(np.float32)),
                                   torch.from_numpy(self.image_present[im[sel]]))
            out.image_rows = torch.from_numpy(sel)
        return out
