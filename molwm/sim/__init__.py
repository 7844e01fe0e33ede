"""The synthetic lab: documented simulated assays, cell states, images and profiles.

No public multimodal imaging or time-course data ships with molwm, so this
package derives a hidden mechanism vector from real molecules' structures and
simulates every modality from it, writing the real on-disk layouts
(docs/data_layouts.md) with the ground truth alongside. The model, its
parameters and its limits are documented in docs/synthetic_lab.md.
"""

from molwm.sim.biology import STATE_NAMES, AssayPanel, CellModel, simulate_assays
from molwm.sim.lab import LabResult, SimError, generate_lab, layout_plates, load_smiles_for_lab
from molwm.sim.mechanism import MechanismModel, compute_mechanisms
from molwm.sim.profiles import FEATURES, measure_site
from molwm.sim.render import CHANNELS, RenderParams, render_site

__all__ = [
    "CHANNELS",
    "FEATURES",
    "STATE_NAMES",
    "AssayPanel",
    "CellModel",
    "LabResult",
    "MechanismModel",
    "RenderParams",
    "SimError",
    "compute_mechanisms",
    "generate_lab",
    "layout_plates",
    "load_smiles_for_lab",
    "measure_site",
    "render_site",
    "simulate_assays",
]
