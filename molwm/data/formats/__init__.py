"""Readers for real data layouts (JUMP load_data CSV, CellProfiler profiles, Tox21-style tables).

The layouts are described in docs/data_layouts.md; the simulator writes the
same layouts, so these readers load real and synthetic data alike.
"""

from molwm.data.formats.common import FormatError
from molwm.data.formats.jump import ImageIndex, read_load_data
from molwm.data.formats.multitask import MultitaskTable, read_multitask_csv
from molwm.data.formats.profiles import ProfileTable, read_profiles

__all__ = [
    "FormatError",
    "ImageIndex",
    "MultitaskTable",
    "ProfileTable",
    "read_load_data",
    "read_multitask_csv",
    "read_profiles",
]
