"""Featurizers: raw inputs (SMILES, tables, images) to tensors. No training code here.

This package never imports :mod:`molwm` (a test enforces it).
"""

from featurizers.assay import AssayArrays, AssayError, AssayNormalizer, assay_arrays
from featurizers.errors import FeaturizationError, Reject, count_reject_codes, read_rejects, write_rejects
from featurizers.graphs import GraphArrays, MolGraph
from featurizers.molecule import (
    GRAPH_SPEC,
    featurize_arrays,
    featurize_smiles,
    mol_to_graph,
)
from featurizers.image import (
    CHANNELS,
    ChannelStats,
    ImageError,
    ImageSpec,
    SiteBatch,
    featurize_sites,
    load_site,
    read_channel,
)
from featurizers.spec import CategoricalFeature, GraphSpec

__all__ = [
    "CHANNELS",
    "GRAPH_SPEC",
    "AssayArrays",
    "AssayError",
    "AssayNormalizer",
    "ChannelStats",
    "ImageError",
    "ImageSpec",
    "SiteBatch",
    "assay_arrays",
    "featurize_sites",
    "load_site",
    "read_channel",
    "CategoricalFeature",
    "FeaturizationError",
    "GraphArrays",
    "GraphSpec",
    "MolGraph",
    "Reject",
    "count_reject_codes",
    "featurize_arrays",
    "featurize_smiles",
    "mol_to_graph",
    "read_rejects",
    "write_rejects",
]
