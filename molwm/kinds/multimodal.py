"""Multimodal pretraining checkpoints (``multimodal_<objective>``), and the JEPA seen from the graph side.

A multimodal checkpoint answers graph-only questions: the molecule's joint
embedding (the fusion's global token with only the graph visible), and the
assay panel predicted by the per-assay ridge probes fitted at the end of
pretraining (on the graph embedding, the joint embedding and the predictor's
forecast of that assay's token), in the panel's own units. The spread reported
with each assay value is the probe's residual standard deviation on its
training cells: one number per assay, not per molecule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from featurizers.assay import AssayNormalizer
from featurizers.molecule import GRAPH_SPEC
from molwm.config import from_dict
from molwm.data.batch import GraphBatch
from molwm.data.multimodal import MultimodalBatch
from molwm.encoders.graph import GraphEncoder, GraphEncoderConfig
from molwm.jepa.multimodal import MultimodalJEPA, MultimodalJEPAConfig
from molwm.kinds.base import ModelKind, MoleculeParts, State, strip_prefix
from molwm.evaluation.ridge_probes import RidgeProbe
from molwm.uncertainty.calibration import z_of


@dataclass
class MultimodalCheckpoint:
    """What a multimodal pretraining checkpoint records beside its weights (written by the multimodal
    pretraining task, read here): the fields that rebuild its model and its read-outs.

    Attributes:
        objective: The pretraining objective (it picks the kind).
        config: The run's config as a dict.
        assay_names: The assay vocabulary (the probe's columns).
        normalizer: The assays' normalisation.
        synthetic: True when the run's cells came from the synthetic lab.
        image_stats: Per-channel image statistics, or None.
        profile_stats: The well profiles' standardisation, or None (and for runs from before profiles).
        probe: The per-assay ridge probe fitted at the end of pretraining, or None.
    """

    objective: str
    config: dict
    assay_names: list[str]
    normalizer: dict
    synthetic: bool = False
    image_stats: dict | None = None
    profile_stats: dict | None = None
    probe: dict | None = None

    def to_state(self) -> State:
        """The checkpoint's metadata (the driver adds the weights and the loop's state)."""
        return {"kind": kind_for(self.objective), "config": self.config, "spec": GRAPH_SPEC.to_dict(),
                "assay_names": list(self.assay_names), "normalizer": self.normalizer, "synthetic": bool(self.synthetic),
                "image_stats": self.image_stats, "profile_stats": self.profile_stats, "probe": self.probe}

    @classmethod
    def read(cls, state: State) -> "MultimodalCheckpoint":
        """From a checkpoint dict (older checkpoints lack the later keys: their defaults)."""
        return cls(state["kind"][len("multimodal_"):], state["config"], list(state["assay_names"]),
                   state["normalizer"], bool(state.get("synthetic", False)), state.get("image_stats"),
                   state.get("profile_stats"), state.get("probe"))


class JointGraphModel:
    """A multimodal JEPA seen from the graph side.

    Args:
        state: A ``multimodal_jepa`` checkpoint dict.
    """

    def __init__(self, state: State):
        record = MultimodalCheckpoint.read(state)
        config = from_dict(MultimodalJEPAConfig, record.config["model"])
        self.assay_names: list[str] = record.assay_names
        self.model = MultimodalJEPA(GRAPH_SPEC, max(1, len(self.assay_names)), config)
        self.model.load_state_dict(state["model"])
        self.model.eval()
        self.graph_config = config.graph
        self.probe = RidgeProbe.from_dict(record.probe) if record.probe else None
        self.normalizer = AssayNormalizer.from_dict(record.normalizer) if self.assay_names else None
        self.synthetic = record.synthetic

    @property
    def dim(self) -> int:
        """Width of the joint embedding."""
        return self.model.config.dim

    def _wrap(self, batch: GraphBatch) -> MultimodalBatch:
        n = batch.num_graphs
        return MultimodalBatch(size=n, index=torch.arange(n)).put("graph", batch, torch.arange(n))

    @torch.no_grad()
    def embed(self, batch: GraphBatch) -> torch.Tensor:
        """Joint embeddings from the graph alone: ``[B, D]``."""
        return self.model.embed(self._wrap(batch))

    @torch.no_grad()
    def predict_assays(self, batch: GraphBatch) -> tuple[np.ndarray, np.ndarray]:
        """Predicted assay values in panel units and the joint embeddings: ``([B, A], [B, D])``."""
        if self.probe is None:
            raise ValueError("this multimodal model has no assay probe (it was pretrained without assay data)")
        shared, per = self.model.assay_readout(self._wrap(batch))  # [B, 2D], [B, A, D]
        feats = torch.cat([shared.unsqueeze(1).expand(-1, per.shape[1], -1), per], dim=2).numpy()
        joint = shared[:, self.dim:].numpy()
        return self.normalizer.inverse_transform(self.probe.predict(feats)), joint

    def spread(self) -> np.ndarray:
        """``[A]`` probe residual std on its training cells, in panel units."""
        if self.probe is None or self.probe.resid_std is None:
            return np.full(len(self.assay_names), np.nan)
        return self.probe.resid_std * np.asarray(self.normalizer.std, np.float64)

    # ---- the predictor protocol (molwm.predictors.interface.Predictor): the assay read-out ----------
    @property
    def targets(self) -> list[str]:
        """The assays it reads out."""
        return self.assay_names

    @property
    def can_predict(self) -> bool:
        """True when pretraining fitted an assay probe."""
        return self.probe is not None

    @property
    def n_outputs(self) -> int:
        """One read-out."""
        return 1

    @property
    def wants_embedding(self) -> bool:
        return False

    def predict(self, batch: GraphBatch, smiles, embed: bool) -> tuple[np.ndarray, np.ndarray]:
        """``(assay values [1, B, A], joint embeddings [B, D])``."""
        values, joint = self.predict_assays(batch)
        return values[None], joint

    def frame(self, smiles: list, preds: np.ndarray, status: list[str], emb) -> pd.DataFrame:
        """Assay values with ``<assay>_probe_rmse`` (one number per assay, named for what it is) and a 90%
        interval of value ± 1.645 x that."""
        spread, z = self.spread(), z_of(0.9)
        columns: dict[str, object] = {"smiles": smiles}
        for j, name in enumerate(self.assay_names):
            mean = preds[0, :, j]
            std = np.where(np.isnan(mean), np.nan, spread[j])
            columns[name], columns[f"{name}_probe_rmse"] = mean, std
            columns[f"{name}_lo"], columns[f"{name}_hi"] = mean - z * std, mean + z * std
        columns["uncertainty"] = ("linear probe on the joint embedding: <assay>_probe_rmse is its residual std "
                                  "on its training cells, one value per assay (not per molecule); "
                                  "_lo/_hi = value ± 1.645 x that (90%, uncalibrated)")
        return pd.DataFrame(columns)


def multimodal_encoder(state: State) -> GraphEncoder:
    """The graph encoder of a multimodal run: the EMA target (JEPA) or the trained one (other objectives)."""
    cfg = from_dict(GraphEncoderConfig, state["config"]["model"]["graph"])
    prefix = "targets.graph." if state["kind"] == MULTIMODAL_JEPA.name else "encoders.graph."
    encoder = GraphEncoder(GRAPH_SPEC, cfg)
    encoder.load_state_dict(strip_prefix(state["model"], prefix))
    return encoder.eval()


def jepa_parts(state: State) -> MoleculeParts:
    """The joint model: embeddings are joint embeddings; predictions are the probe's assay values."""
    joint = JointGraphModel(state)
    return MoleculeParts(encoder=joint.model.targets["graph"], targets=list(joint.assay_names),
                         task="regression" if joint.probe is not None else None, joint=joint)


def encoder_parts(state: State) -> MoleculeParts:
    """The graph encoder alone (the non-JEPA objectives fit no assay probe)."""
    return MoleculeParts(encoder=multimodal_encoder(state))


def kind_for(objective: str) -> str:
    """The kind a multimodal run with ``objective`` writes."""
    return f"multimodal_{objective}"


MULTIMODAL_JEPA = ModelKind("multimodal_jepa", "molecule", "multimodal JEPA (graphs, assays, images)",
                            multimodal_encoder, jepa_parts, stage="multimodal")
MULTIMODAL_OTHERS = tuple(
    ModelKind(kind_for(objective), "molecule", f"multimodal encoders pretrained with the {objective} objective",
              multimodal_encoder, encoder_parts, stage="multimodal")
    for objective in ("contrastive", "generative", "contrastive_views", "contrastive_profile"))
