"""The one token layout every modality meets the JEPA in."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Tokens:
    """A padded batch of tokens.

    Attributes:
        x: ``[B, T, D]`` token embeddings.
        pad: ``[B, T]`` bool, True where there is no token.
        pos: ``[B, T, P]`` positional code (graph: random-walk + Laplacian codes).
    """

    x: Tensor
    pad: Tensor
    pos: Tensor

    def pooled(self) -> Tensor:
        """Mean over real tokens: ``[B, D]``."""
        keep = (~self.pad).unsqueeze(-1).to(self.x.dtype)  # [B, T, 1]
        return (self.x * keep).sum(1) / keep.sum(1).clamp(min=1.0)
