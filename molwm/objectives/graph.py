"""Graph pretraining objectives: JEPA, attribute-masking generative, GraphCL-style contrastive.

Each is registered in :mod:`molwm.objectives.registry` under the ``graph`` domain; the
settings of an objective come from the run config's ``objective_settings``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molwm.data.batch import GraphBatch
from molwm.encoders.graph import GraphEncoder, HiddenAttributes
from molwm.jepa.masking import GraphMasks
from molwm.jepa.model import GraphJEPA, JEPAOutput
from molwm.objectives.registry import ObjectiveInputs, register


@dataclass
class GenerativeSettings:
    """Settings of the attribute-masking objective.

    Attributes:
        bond_weight: Weight of the bond-attribute loss (bonds touching hidden atoms).
        head_hidden: Hidden width of the attribute heads (0: linear heads).
    """

    bond_weight: float = 0.5
    head_hidden: int = 0


@dataclass
class ContrastiveSettings:
    """Settings of the GraphCL-style objective.

    Attributes:
        view_mask_fraction: Share of atoms whose attributes the second view masks.
        temperature: InfoNCE temperature.
        projection_dim: Width of the projection head.
    """

    view_mask_fraction: float = 0.25
    temperature: float = 0.1
    projection_dim: int = 128


def _pool(h: Tensor, mol: Tensor, n: int) -> Tensor:
    total = torch.zeros(n, h.shape[1], dtype=h.dtype, device=h.device).index_add_(0, mol, h)
    return total / torch.bincount(mol, minlength=n).clamp(min=1).unsqueeze(1).to(h.dtype)


def _hidden_atoms(batch: GraphBatch, masks: GraphMasks) -> Tensor:
    """``[N]`` bool on the batch's device: True for the masks' hidden atoms."""
    atoms = torch.zeros(batch.x.shape[0], dtype=torch.bool, device=batch.x.device)
    atoms[masks.target_idx] = True
    return atoms


def _head(d: int, out: int, hidden: int) -> nn.Module:
    return nn.Linear(d, out) if hidden <= 0 else nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, out))


class _NoTarget(nn.Module):
    """Shared surface of objectives without an EMA target encoder: the trained encoder is the one
    downstream tasks read, plus a learned atom mask token."""

    encoder_prefix = "encoder."

    def __init__(self, inputs: ObjectiveInputs, settings):
        super().__init__()
        self.config, self.objective = inputs.model, settings
        self.encoder = GraphEncoder(inputs.spec, inputs.model.encoder)
        self.atom_token = nn.Parameter(torch.randn(inputs.model.encoder.dim) * 0.02)

    def untrained_parameters(self, batch: GraphBatch, masks: GraphMasks) -> tuple[str, ...]:
        """Parameter prefixes a batch may leave without a gradient: none."""
        return ()

    def ema_update(self, momentum: float) -> None:  # nothing to average
        return None

    def momentum_at(self, step: int, total_steps: int) -> float:
        return 0.0

    @torch.no_grad()
    def embed(self, batch: GraphBatch) -> Tensor:
        """Molecule embeddings ``[B, D]`` of the trained encoder (no input hidden)."""
        self.encoder.eval()
        return self.encoder.embed(batch)


@register("graph", "generative", settings=GenerativeSettings)
class GenerativeGraph(_NoTarget):
    """Attribute masking: hidden atoms (and their bonds) become mask tokens; heads predict their raw categories.

    The targets are ``batch.x`` / ``batch.edge_attr`` rows of the hidden atoms and bonds,
    read before the encoder replaces them, so they are the raw input, never an embedding.
    """

    def __init__(self, inputs: ObjectiveInputs, settings: GenerativeSettings):
        super().__init__(inputs, settings)
        spec, objective = inputs.spec, settings
        d = inputs.model.encoder.dim
        self.bond_token = nn.Parameter(torch.randn(d) * 0.02)
        self.atom_heads = nn.ModuleList(_head(d, n, objective.head_hidden) for n in spec.atom_sizes)
        self.bond_heads = nn.ModuleList(_head(d, n, objective.head_hidden) for n in spec.bond_sizes)

    def targets(self, batch: GraphBatch, masks: GraphMasks) -> tuple[Tensor, Tensor, Tensor]:
        """Hidden atoms' raw attributes ``[Nt, Ca]``, hidden bonds ``[Eh]`` (bool over edges) and their attributes."""
        atoms = _hidden_atoms(batch, masks)
        src, dst = batch.edge_index
        bonds = atoms[src] | atoms[dst]
        return batch.x[masks.target_idx].clone(), bonds, batch.edge_attr[bonds].clone()

    def forward(self, batch: GraphBatch, masks: GraphMasks, generator: torch.Generator | None = None) -> JEPAOutput:
        x_t, bonds, e_t = self.targets(batch, masks)
        atoms = _hidden_atoms(batch, masks)
        hide = HiddenAttributes(atoms, self.atom_token, bonds, self.bond_token)
        h, mol = self.encoder(batch, hide=hide)
        ht = h[masks.target_idx]
        atom_loss = torch.stack([F.cross_entropy(head(ht), x_t[:, j]) for j, head in enumerate(self.atom_heads)]).mean()
        src, dst = batch.edge_index
        he = h[src[bonds]] + h[dst[bonds]]
        if len(he):
            bond_loss = torch.stack([F.cross_entropy(head(he), e_t[:, j])
                                     for j, head in enumerate(self.bond_heads)]).mean()
        else:
            bond_loss = h.sum() * 0.0
        with torch.no_grad():
            acc = (self.atom_heads[0](ht).argmax(1) == x_t[:, 0]).float().mean() if len(ht) else h.new_tensor(0.0)
        loss = atom_loss + self.objective.bond_weight * bond_loss
        empty = h.new_zeros(0, h.shape[1])
        return JEPAOutput(loss=loss, pred_loss=atom_loss, reg=h.sum().detach() * 0.0, pred=empty, target=empty,
                          context_embedding=_pool(h, mol, batch.num_graphs),
                          extra={"bond_loss": float(bond_loss.detach()), "atom_type_accuracy": float(acc)})


@register("graph", "contrastive", settings=ContrastiveSettings)
class ContrastiveGraph(_NoTarget):
    """GraphCL-style: view 1 drops the hidden atom blocks (a subgraph), view 2 masks the attributes of
    random atoms; a projection head and symmetric InfoNCE over the batch."""

    def __init__(self, inputs: ObjectiveInputs, settings: ContrastiveSettings):
        super().__init__(inputs, settings)
        d = inputs.model.encoder.dim
        self.projection = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, settings.projection_dim))

    def forward(self, batch: GraphBatch, masks: GraphMasks, generator: torch.Generator | None = None) -> JEPAOutput:
        n = batch.num_graphs
        h1, mol1 = self.encoder(batch, keep=masks.keep)
        z1 = _pool(h1, mol1, n)
        # drawn where the generator lives (training passes a CPU one), then moved: a GPU run sees the
        # same views as a CPU run
        where = generator.device if generator is not None else torch.device("cpu")
        draw = torch.rand(batch.x.shape[0], generator=generator, device=where).to(batch.x.device)  # [N]
        h2, mol2 = self.encoder(batch, hide=HiddenAttributes(draw < self.objective.view_mask_fraction,
                                                             self.atom_token))
        z2 = _pool(h2, mol2, n)
        p1 = F.normalize(self.projection(z1), dim=1)
        p2 = F.normalize(self.projection(z2), dim=1)
        logits = p1 @ p2.T / self.objective.temperature  # [B, B]
        labels = torch.arange(n, device=logits.device)
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
        with torch.no_grad():
            acc = (logits.argmax(1) == labels).float().mean()
        empty = z1.new_zeros(0, z1.shape[1])
        return JEPAOutput(loss=loss, pred_loss=loss, reg=loss.detach() * 0.0, pred=empty, target=empty,
                          context_embedding=z1, extra={"view_match_accuracy": float(acc)})


@register("graph", "jepa")
def graph_jepa(inputs: ObjectiveInputs, settings: None = None) -> GraphJEPA:
    """Predict the EMA target encoder's embeddings of hidden atom blocks (settings live in ``model``)."""
    return GraphJEPA(inputs.spec, inputs.model)


def encoder_of(model: nn.Module) -> GraphEncoder:
    """The encoder downstream tasks read: the JEPA's EMA target, otherwise the trained encoder."""
    return model.get_submodule(model.encoder_prefix.rstrip("."))


def encoder_prefix(objective: str) -> str:
    """Key prefix, in the ``state_dict`` of graph objective ``objective``, of the encoder downstream
    tasks read (checkpoints name the objective, not the class)."""
    return GraphJEPA.encoder_prefix if objective == "jepa" else _NoTarget.encoder_prefix
