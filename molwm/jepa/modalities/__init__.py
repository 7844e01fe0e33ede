"""The registry of modalities the multimodal model knows (:class:`ModalityUnit` each).

The registry's order is the model's: encoder order, the fusion's and the
predictor's modality indices, and the order losses are reported in. Adding a
modality is a unit (its encoder, masks, queries and raw targets), a store for its
data (:class:`molwm.data.multimodal.ModalityStore`) and one :func:`register_modality` line;
``docs/architecture.md`` has the recipe and ``tests/molwm/jepa/test_fourth_modality.py`` does it.
"""

from __future__ import annotations

from molwm.config import ConfigError
from molwm.jepa.modalities.assay import AssayUnit
from molwm.jepa.modalities.base import HiddenQuery, ModalityUnit, TokenMask, place
from molwm.jepa.modalities.graph import GraphUnit
from molwm.jepa.modalities.image import ImageUnit
from molwm.jepa.modalities.profile import ProfileUnit

_UNITS: dict[str, ModalityUnit] = {}


def register_modality(unit: ModalityUnit) -> ModalityUnit:
    """Add ``unit`` after the registered ones; returns it."""
    if not unit.name or unit.name in _UNITS:
        raise ConfigError(f"modality {unit.name!r} is {'already registered' if unit.name else 'unnamed'}")
    _UNITS[unit.name] = unit
    return unit


def unregister_modality(name: str) -> None:
    """Remove a registered modality (tests that add one take it out again)."""
    _UNITS.pop(name, None)


def units() -> tuple[ModalityUnit, ...]:
    """The registered units, in registry order."""
    return tuple(_UNITS.values())


def modality_names() -> tuple[str, ...]:
    """Names of the registered modalities, in registry order."""
    return tuple(_UNITS)


def modality_index(name: str) -> int:
    """Position of ``name`` in the registry (its index in masks, the fusion and the predictor)."""
    try:
        return modality_names().index(name)
    except ValueError:
        raise ConfigError(f"unknown modality {name!r} (known: {list(_UNITS)})") from None


def unit(name: str) -> ModalityUnit:
    """The unit of modality ``name``."""
    return units()[modality_index(name)]


register_modality(GraphUnit())
register_modality(AssayUnit())
register_modality(ImageUnit())
register_modality(ProfileUnit())

__all__ = ["HiddenQuery", "ModalityUnit", "TokenMask", "modality_index", "modality_names", "place",
           "register_modality", "unit", "units", "unregister_modality"]
