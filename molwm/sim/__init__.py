"""The synthetic lab: documented simulated assays, cell states, images and profiles.

No public multimodal imaging or time-course data ships with molwm, so this
package derives a hidden mechanism vector from real molecules' structures and
simulates every modality from it, writing the real on-disk layouts
(docs/data_layouts.md) with the ground truth alongside. The model, its
parameters and its limits are documented in docs/synthetic_lab.md.

The names below are imported on first use (the simulator pulls in RDKit and
torch), so ``molwm.sim.cli`` and ``molwm --help`` stay fast.
"""

from __future__ import annotations

from molwm.lazy import lazy_exports

_EXPORTS = {
    "STATE_NAMES": "molwm.sim.biology",
    "AssayPanel": "molwm.sim.biology",
    "CellModel": "molwm.sim.biology",
    "simulate_assays": "molwm.sim.biology",
    "LabResult": "molwm.sim.lab",
    "SimError": "molwm.sim.lab",
    "generate_lab": "molwm.sim.lab",
    "layout_plates": "molwm.sim.lab",
    "load_smiles_for_lab": "molwm.sim.lab",
    "MechanismModel": "molwm.sim.mechanism",
    "compute_mechanisms": "molwm.sim.mechanism",
    "FEATURES": "molwm.sim.profiles",
    "measure_site": "molwm.sim.profiles",
    "CHANNELS": "molwm.sim.render",
    "RenderParams": "molwm.sim.render",
    "render_site": "molwm.sim.render",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
