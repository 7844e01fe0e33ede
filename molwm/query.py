"""Load a trained molwm model and query it for candidate compounds.

``WorldModel.load(uri)`` accepts a local checkpoint or an MLflow model URI
(``runs:/...``, ``models:/name@alias``, ``models:/name/version``). Every
method takes SMILES lists of any length, batches internally, keeps input
order, and returns one row per input with a ``status`` column (``ok`` or the
reject reason): a bad SMILES never fails the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from featurizers.molecule import GRAPH_SPEC, featurize_arrays
from molwm.config import from_dict
from molwm.data.batch import GraphBatch
from molwm.encoders.graph import GraphEncoder, GraphEncoderConfig, structural_pe
from molwm.tasks.heads import HeadConfig, PropertyModel
from molwm.tracking import resolve_model_path
from molwm.train.common import load_checkpoint


@dataclass
class WorldModel:
    """A loaded model: an encoder, and property heads if it was fine-tuned.

    Attributes:
        encoder: The graph encoder used for embeddings.
        members: Fine-tuned models (one per seed; a deep ensemble), possibly empty.
        task: ``regression``, ``classification`` or None.
        targets: Property names.
        scalers: Per member ``(mean, std)`` to undo target scaling.
        source: Where it was loaded from.
    """

    encoder: GraphEncoder
    members: list[PropertyModel] = field(default_factory=list)
    task: str | None = None
    targets: list[str] = field(default_factory=list)
    scalers: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    source: str = ""
    batch_size: int = 512

    @classmethod
    def load(cls, uri: str | Path) -> "WorldModel":
        """Load from a checkpoint path or an MLflow model URI."""
        path = resolve_model_path(uri)
        state = load_checkpoint(path)
        kind = state.get("kind")
        if kind == "graph_jepa":
            from molwm.train.finetune import load_pretrained_encoder

            return cls(encoder=load_pretrained_encoder(str(path)).eval(), source=str(uri))
        if kind != "property_model":
            raise ValueError(f"{uri}: unknown model kind {kind!r}")
        enc_cfg = from_dict(GraphEncoderConfig, state["encoder_config"])
        head_cfg = from_dict(HeadConfig, state["head_config"])
        members = []
        for weights in state["members"]:
            m = PropertyModel(GraphEncoder(GRAPH_SPEC, enc_cfg), len(state["targets"]), head_cfg)
            m.load_state_dict(weights)
            members.append(m.eval())
        scalers = [(np.asarray(a), np.asarray(b)) for a, b in state["scalers"]]
        return cls(members[0].encoder, members, state["task"], list(state["targets"]), scalers, str(uri))

    def _batches(self, smiles: Sequence[str]):
        """Yield ``(positions, GraphBatch)`` for the valid SMILES; return statuses for all."""
        status = ["ok"] * len(smiles)
        arrays, rejects = featurize_arrays(list(smiles))
        for r in rejects:
            status[r.index] = r.reason
        cfg = self.encoder.config
        out = []
        for i in range(0, len(arrays), self.batch_size):
            rows = np.arange(i, min(i + self.batch_size, len(arrays)))
            b = GraphBatch.from_arrays(arrays, rows)
            b.pe = structural_pe(b.edge_index, b.batch, b.num_graphs, cfg.rw_steps, cfg.lap_k)
            out.append((np.asarray(arrays.index)[rows], b))
        return out, status

    @torch.no_grad()
    def embed(self, smiles: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Embeddings (NaN rows for rejected inputs) and a status per input.

        A pretrained encoder gives mean-pooled ``[N, D]``; a fine-tuned model
        gives the pooled features its heads read (``[N, 2D]`` for ``mean_sum``).
        """
        batches, status = self._batches(smiles)
        embed = self.members[0].embed if self.members else self.encoder.embed
        emb = None
        for pos, b in batches:
            out = embed(b).numpy()
            if emb is None:
                emb = np.full((len(smiles), out.shape[1]), np.nan, dtype=np.float32)
            emb[pos] = out
        if emb is None:
            emb = np.full((len(smiles), self.encoder.dim), np.nan, dtype=np.float32)
        return emb, status

    @torch.no_grad()
    def predict(self, smiles: Sequence[str]) -> pd.DataFrame:
        """Every property with the ensemble mean and std (``<name>_std``), plus ``status``."""
        if not self.members:
            raise ValueError("this model has no property heads (it is a pretrained encoder): use embed()")
        batches, status = self._batches(smiles)
        preds = np.full((len(self.members), len(smiles), len(self.targets)), np.nan)
        for pos, b in batches:
            for k, (m, (mean, std)) in enumerate(zip(self.members, self.scalers)):
                out = m(b).numpy()
                preds[k, pos] = 1 / (1 + np.exp(-out)) if self.task == "classification" else out * std + mean
        frame = pd.DataFrame({"smiles": list(smiles)})
        for j, name in enumerate(self.targets):
            frame[name] = preds[:, :, j].mean(0)
            frame[f"{name}_std"] = preds[:, :, j].std(0)
        frame["uncertainty"] = f"deep ensemble of {len(self.members)} seeds (std across members)"
        frame["status"] = status
        return frame

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """For serving: a frame with a ``smiles`` column in, properties or embeddings out."""
        smiles = frame["smiles"].tolist()
        if self.members:
            return self.predict(smiles)
        emb, status = self.embed(smiles)
        out = pd.DataFrame(emb, columns=[f"emb_{i}" for i in range(emb.shape[1])])
        out.insert(0, "smiles", smiles)
        out["status"] = status
        return out
