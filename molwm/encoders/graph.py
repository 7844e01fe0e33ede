"""Molecular-graph encoder: GINE message passing over categorical atom/bond features.

Layers are ``gine`` (local message passing only) or ``gps`` (GraphGPS-style:
the same local GINE update plus multi-head attention across all atoms of the
molecule, then a feed-forward block); chosen by measurement, see
``docs/benchmarks.md``.

Built from the featurizer's :class:`~featurizers.spec.GraphSpec` (one embedding
table per declared column), with a structural positional code per atom
(random-walk return probabilities + Laplacian eigenvectors) so that a JEPA
predictor can say *which* hidden atoms it is predicting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch_geometric.nn import GINEConv
from torch_geometric.utils import subgraph, to_dense_batch

from featurizers.spec import GraphSpec
from molwm.config import ConfigError, check_ranges
from molwm.encoders.tokens import Tokens


@dataclass
class GraphEncoderConfig:
    """Size of the graph encoder.

    Attributes:
        dim: Token width ``D``.
        layers: Message-passing layers.
        dropout: Dropout inside each layer's MLP.
        rw_steps: Random-walk steps in the positional code.
        lap_k: Laplacian eigenvectors in the positional code.
        layer: ``gine`` or ``gps`` (local GINE + global attention per molecule).
        heads: Attention heads of ``gps`` layers.
    """

    dim: int = 128
    layers: int = 4
    dropout: float = 0.0
    rw_steps: int = 8
    lap_k: int = 8
    layer: Literal["gine", "gps"] = "gine"
    heads: int = 4

    def validate(self) -> None:
        """Called by the config loader: sizes at least 1, and attention needs ``dim`` divisible by ``heads``."""
        check_ranges(self, at_least_one=("dim", "layers", "heads"), not_negative=("rw_steps", "lap_k"),
                     fraction=("dropout",))
        if self.layer == "gps" and self.dim % self.heads:
            raise ConfigError(f"'dim' {self.dim} is not divisible by 'heads' {self.heads} (gps layers)")

    @property
    def pe_dim(self) -> int:
        return self.rw_steps + self.lap_k

    def prepare(self, batch, generator: torch.Generator | None = None):
        """Fill ``batch.pe``, the positional code this encoder reads (its ``rw_steps`` and ``lap_k``);
        ``generator`` draws the Laplacian eigenvectors' random signs (training), None keeps them
        canonical. The one place positional codes are computed for a graph encoder; returns ``batch``."""
        batch.pe = structural_pe(batch.edge_index, batch.batch, batch.num_graphs, self.rw_steps, self.lap_k,
                                 generator)
        return batch


def structural_pe(edge_index: Tensor, batch: Tensor, num_graphs: int, rw_steps: int = 8, lap_k: int = 8,
                  generator: torch.Generator | None = None) -> Tensor:
    """Per-atom positional code: random-walk return probabilities and Laplacian eigenvectors.

    Both come from one batched eigendecomposition (float64) of the normalised
    Laplacian ``L = I - S`` of each molecule, ``S = D^-1/2 A D^-1/2``: the
    eigenvectors after the trivial one are the Laplacian code, and since the
    walk matrix ``P = D^-1 A`` is similar to ``S`` through a diagonal matrix,
    ``diag(P^k) = diag(S^k) = (U * U) @ (1 - mu)^k``.

    Args:
        edge_index: ``[2, E]`` both directions of every bond.
        batch: ``[N]`` molecule id of each atom (atoms of a molecule contiguous).
        num_graphs: ``B``.
        rw_steps: ``k`` in ``diag(P^1..P^k)``.
        lap_k: Eigenvectors of the normalised Laplacian after the trivial one;
            zero-padded for molecules with fewer atoms.
        generator: If given, each eigenvector's sign is flipped at random
            (eigenvectors are defined up to sign; training sees both). The signs are
            drawn on the generator's device and moved to the batch's.

    Training calls this on the CPU at collate time and moves the result; it also
    runs on a batch already on a GPU (the code lands on the batch's device).

    Shapes:
        Returns ``[N, rw_steps + lap_k]`` float.
    """
    n = batch.numel()
    dev = batch.device
    if n == 0 or not (rw_steps or lap_k):
        return torch.zeros(n, rw_steps + lap_k, device=dev)
    counts = torch.bincount(batch, minlength=num_graphs)  # [B]
    m = int(counts.max())
    starts = torch.cumsum(counts, 0) - counts  # [B] first atom of each molecule
    local = torch.arange(n, device=dev) - starts[batch]  # [N] position inside its molecule
    mask = torch.arange(m, device=dev).unsqueeze(0) < counts.unsqueeze(1)  # [B, M]
    adj = torch.zeros(num_graphs, m, m, dtype=torch.float64, device=dev)
    src, dst = edge_index
    adj[batch[src], local[src], local[dst]] = 1.0
    deg = adj.sum(-1)  # [B, M]
    inv_sqrt = torch.where(deg > 0, deg.clamp(min=1).rsqrt(), torch.zeros_like(deg))
    eye = torch.eye(m, dtype=torch.float64, device=dev)
    lap = eye - inv_sqrt.unsqueeze(-1) * adj * inv_sqrt.unsqueeze(-2)
    # padding rows get eigenvalue 3, outside the spectrum [0, 2], so they sort last and never mix
    # with a molecule's own eigenvectors (bipartite molecules have eigenvalue 2)
    lap = lap + torch.diag_embed((~mask).to(torch.float64) * 2)
    mu, vecs = torch.linalg.eigh(lap)  # ascending; [B, M], [B, M, M]
    parts = []
    if rw_steps:
        k = torch.arange(1, rw_steps + 1, dtype=torch.float64, device=dev)  # [k]
        powers = (1 - mu).unsqueeze(-1) ** k  # [B, M, k]
        parts.append((vecs * vecs) @ powers)  # [B, M, rw_steps]
    if lap_k:
        lv = vecs[:, :, 1 : lap_k + 1]
        if lv.shape[-1] < lap_k:
            lv = torch.nn.functional.pad(lv, (0, lap_k - lv.shape[-1]))
        if generator is not None:
            signs = torch.randint(0, 2, (num_graphs, 1, lap_k), generator=generator, device=generator.device)
            signs = signs.to(lv) * 2 - 1  # [B, 1, lap_k]
            lv = lv * signs
        parts.append(lv * mask.unsqueeze(-1))
    dense = torch.cat(parts, -1).to(torch.float32)  # [B, M, P]
    return dense[mask]  # [N, P]


def _distinct_rows(attr: Tensor, radix: Tensor) -> tuple[Tensor, Tensor]:
    """Distinct rows of a categorical ``[E, C]`` table and each row's index among them.

    Rows are coded as mixed-radix integers (``radix`` from the column sizes), so
    this is one ``unique`` over ``E`` integers.
    """
    codes = (attr * radix).sum(1)  # [E]; not ``attr @ radix``: CUDA has no integer matmul
    uniq, inverse = torch.unique(codes, return_inverse=True)  # [U], [E]
    return _decode(uniq, radix), inverse


def _decode(codes: Tensor, radix: Tensor) -> Tensor:
    """Inverse of ``attr @ radix`` for mixed-radix codes: ``[U] -> [U, C]``."""
    out = torch.empty(codes.numel(), radix.numel(), dtype=torch.long, device=codes.device)
    rest = codes.clone()
    for j in range(radix.numel()):
        out[:, j] = torch.div(rest, radix[j], rounding_mode="floor")
        rest = rest - out[:, j] * radix[j]
    return out


def _gine(conv: GINEConv, h: Tensor, src: Tensor, dst: Tensor, e_kinds: Tensor, kind: Tensor) -> Tensor:
    """One GINE update with ``conv``'s weights: ``nn((1 + eps) h_i + sum_j relu(h_j + lin(e_ij)))``.

    The same function as PyG's ``GINEConv.forward``, with the edge projection
    applied to the distinct bond kinds ``e_kinds [U, D]`` and gathered by ``kind [E]``.
    """
    e = conv.lin(e_kinds) if conv.lin is not None else e_kinds
    msg = h.index_select(0, src).add_(e.index_select(0, kind)).relu_()  # [E, D], in place: memory-bound
    agg = torch.zeros_like(h).index_add_(0, dst, msg)
    return conv.nn(torch.addcmul(agg, h, 1 + conv.eps))


SUM_POOL_SCALE = 20.0
"""Sum pooling is divided by this (about a drug-sized molecule's atom count) to keep unit scale."""


class CategoricalEmbedding(nn.Module):
    """Sum of one embedding table per categorical column.

    Shapes:
        ``[N, C]`` long -> ``[N, dim]``.
    """

    def __init__(self, sizes: list[int], dim: int):
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(size, dim) for size in sizes)
        self.register_buffer("_offsets", torch.tensor([0, *sizes[:-1]]).cumsum(0), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        # one fused lookup-and-sum over the stacked tables (same sum as adding C lookups)
        weight = torch.cat([t.weight for t in self.tables])  # [sum(sizes), dim]
        return nn.functional.embedding_bag(x + self._offsets, weight, mode="sum")


class GlobalAttention(nn.Module):
    """The global half of a GPS layer: attention among the atoms of each molecule, then an MLP.

    Shapes:
        ``forward(h [N, D], mol [N], num_graphs)`` returns the update ``[N, D]``.
    """

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)

    def forward(self, h: Tensor, mol: Tensor, num_graphs: int) -> Tensor:
        dense, real = to_dense_batch(self.norm(h), mol, batch_size=num_graphs)  # [B, T, D]
        out, _ = self.attn(dense, dense, dense, key_padding_mask=~real, need_weights=False)
        return out[real]


@dataclass
class HiddenAttributes:
    """Atoms (``[N]`` bool) and bonds (``[E]`` bool, or None) whose attributes an encoder must not see,
    and the learned ``[D]`` tokens that replace their embeddings."""

    atoms: Tensor
    atom_token: Tensor
    bonds: Tensor | None = None
    bond_token: Tensor | None = None


class GraphEncoder(nn.Module):
    """GINE or GPS encoder with pre-norm residual layers; atoms are tokens.

    Args:
        spec: The featurizer's spec (categorical sizes of atom and bond columns).
        config: Sizes.

    Shapes:
        ``forward`` returns node embeddings ``[N', D]`` and their molecule ids
        ``[N']`` (``N'`` = kept atoms); ``tokens`` returns :class:`Tokens`.
    """

    def __init__(self, spec: GraphSpec, config: GraphEncoderConfig | None = None):
        super().__init__()
        self.config = config = config or GraphEncoderConfig()
        d = config.dim
        self.atom_embed = CategoricalEmbedding(spec.atom_sizes, d)
        self.bond_embed = CategoricalEmbedding(spec.bond_sizes, d)
        self.pe_proj = nn.Linear(config.pe_dim, d) if config.pe_dim else None
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.attns = nn.ModuleList()
        self.ffns = nn.ModuleList()
        for _ in range(config.layers):
            mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Dropout(config.dropout), nn.Linear(2 * d, d))
            self.convs.append(GINEConv(mlp, train_eps=True, edge_dim=d))
            self.norms.append(nn.LayerNorm(d))
            if config.layer == "gps":
                self.attns.append(GlobalAttention(d, config.heads, config.dropout))
                self.ffns.append(nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.GELU(),
                                               nn.Dropout(config.dropout), nn.Linear(2 * d, d)))
        self.out_norm = nn.LayerNorm(d)
        radix = torch.ones(len(spec.bond_sizes), dtype=torch.long)
        for j in range(len(spec.bond_sizes) - 2, -1, -1):
            radix[j] = radix[j + 1] * spec.bond_sizes[j + 1]
        self.register_buffer("_bond_radix", radix, persistent=False)

    @property
    def dim(self) -> int:
        return self.config.dim

    def forward(self, batch, keep: Tensor | None = None, hide: "HiddenAttributes | None" = None
                ) -> tuple[Tensor, Tensor]:
        """Encode a PyG batch.

        Args:
            batch: The molecules.
            keep: ``[N]`` bool: encode only this subgraph (the JEPA context).
            hide: Atoms and bonds whose attributes are replaced by mask tokens
                (attribute masking: the structure stays, the content is hidden).
        """
        if batch.pe is None:  # not prepared by the caller (training draws random signs): canonical codes
            self.config.prepare(batch)
        h = self.atom_embed(batch.x)  # [N, D]
        if hide is not None:
            h = torch.where(hide.atoms[:, None], hide.atom_token.expand_as(h), h)
        if self.pe_proj is not None:
            h = h + self.pe_proj(batch.pe)
        # a batch has a few dozen distinct bond feature rows: embed (and project, per layer) those
        # once and gather, instead of running each layer's edge projection on every bond
        kinds, bond_kind = _distinct_rows(batch.edge_attr, self._bond_radix)  # [U, C], [E]
        e_kinds = self.bond_embed(kinds)  # [U, D]
        if hide is not None and hide.bonds is not None:  # one extra "kind": the bond mask token
            e_kinds = torch.cat([e_kinds, hide.bond_token[None]])
            bond_kind = torch.where(hide.bonds, torch.full_like(bond_kind, len(kinds)), bond_kind)
        edge_index, mol = batch.edge_index, batch.batch
        if keep is not None:
            edge_index, bond_kind = subgraph(keep, edge_index, bond_kind, relabel_nodes=True, num_nodes=h.shape[0])
            h, mol = h[keep], mol[keep]
        src, dst = edge_index
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            local = _gine(conv, norm(h), src, dst, e_kinds, bond_kind)
            if self.attns:
                h = h + local + self.attns[i](h, mol, batch.num_graphs)
                h = h + self.ffns[i](h)
            else:
                h = h + local
        return self.out_norm(h), mol

    def tokens(self, batch, keep: Tensor | None = None, hide: HiddenAttributes | None = None) -> Tokens:
        """Atoms as padded tokens ``Tokens(x [B,T,D], pad [B,T], pos [B,T,P])``."""
        h, mol = self.forward(batch, keep, hide)
        pe = batch.pe if keep is None else batch.pe[keep]
        x, real = to_dense_batch(h, mol, batch_size=batch.num_graphs)  # [B, T, D]
        pos, _ = to_dense_batch(pe, mol, batch_size=batch.num_graphs)  # [B, T, P]
        return Tokens(x=x, pad=~real, pos=pos)

    def embed(self, batch, pooling: str = "mean") -> Tensor:
        """Molecule embedding from atom embeddings.

        Args:
            pooling: ``mean`` (``[B, D]``), ``sum`` (sum / 20, ``[B, D]``; keeps
                molecule size, which extensive properties need) or ``mean_sum``
                (both, ``[B, 2D]``).
        """
        h, mol = self.forward(batch)
        total = torch.zeros(batch.num_graphs, h.shape[1], dtype=h.dtype, device=h.device)
        total.index_add_(0, mol, h)
        counts = torch.bincount(mol, minlength=batch.num_graphs).clamp(min=1).unsqueeze(1)
        if pooling == "mean":
            return total / counts
        if pooling == "sum":
            return total / SUM_POOL_SCALE
        if pooling == "mean_sum":
            return torch.cat([total / counts, total / SUM_POOL_SCALE], dim=1)
        raise ValueError(f"unknown pooling '{pooling}' (expected mean, sum or mean_sum)")
