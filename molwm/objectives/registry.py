"""One registry for every pretraining objective, graph and multimodal alike.

An objective is a module class (or a factory) registered under a domain and a
name, with an optional settings dataclass read from the run config's
``objective_settings`` mapping (unknown keys fail with their dotted path)::

    @register("graph", "descriptors", settings=DescriptorSettings)
    class DescriptorGraph(nn.Module):
        def __init__(self, inputs: ObjectiveInputs, settings: DescriptorSettings): ...

Every objective module has the same surface: ``forward(batch, masks, generator=None)``
returning its output dataclass (built by keyword), ``embed(batch)``, ``ema_update(m)``,
``momentum_at(step, total)``, and ``untrained_parameters(batch, masks)``: the parameter-name
prefixes that a batch may rightly leave without a gradient (checked on step one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

from torch import nn

from featurizers.spec import GraphSpec
from molwm.config import ConfigError, from_dict

Domain = Literal["graph", "multimodal"]


@dataclass
class ObjectiveInputs:
    """What every objective is built from.

    Attributes:
        spec: The graph featurizer's spec (atom and bond category sizes).
        model: The model config shared by every objective of the domain (``JEPAConfig`` for graphs,
            ``MultimodalJEPAConfig`` for multimodal runs): same encoders, same capacity.
        n_assays: Assay vocabulary size (multimodal).
        n_targets: Width of the per-molecule targets of objectives that need them (the kept
            descriptors of :class:`molwm.data.descriptors.DescriptorStats`).
    """

    spec: GraphSpec
    model: Any
    n_assays: int = 1
    n_targets: int = 0


@dataclass(frozen=True)
class ObjectiveSpec:
    """A registered objective.

    Attributes:
        domain: ``graph`` or ``multimodal``.
        name: The ``objective:`` value of a config.
        build: ``(inputs, settings) -> nn.Module``.
        settings: Its settings dataclass (None: it has none).
        description: First line of its docstring.
        needs: Modalities every sample must show (e.g. the CLOOME-style model pairs graphs with images).
    """

    domain: str
    name: str
    build: Callable[[ObjectiveInputs, Any], nn.Module]
    settings: type | None
    description: str
    needs: tuple[str, ...] = ()


OBJECTIVES: dict[tuple[str, str], ObjectiveSpec] = {}
"""``(domain, name) -> ObjectiveSpec``."""


def register(domain: Domain, name: str, settings: type | None = None, needs: tuple[str, ...] = ()):
    """Class (or factory) decorator adding an objective to :data:`OBJECTIVES`."""

    def add(builder):
        if (domain, name) in OBJECTIVES:
            raise ValueError(f"objective {domain}/{name} is registered twice")
        doc = (builder.__doc__ or "").strip().splitlines()
        OBJECTIVES[(domain, name)] = ObjectiveSpec(domain, name, builder, settings, doc[0] if doc else "", needs)
        return builder

    return add


def names(domain: Domain) -> list[str]:
    """Registered objective names of ``domain``, sorted."""
    return sorted(n for d, n in OBJECTIVES if d == domain)


def objective_spec(domain: Domain, name: str) -> ObjectiveSpec:
    """The registered objective, or a ConfigError naming the known ones."""
    if (domain, name) not in OBJECTIVES:
        raise ConfigError(f"objective: unknown {domain} objective {name!r} (known: {', '.join(names(domain))})")
    return OBJECTIVES[(domain, name)]


def objective_settings(domain: Domain, name: str, given: Mapping | None) -> Any:
    """The typed settings of an objective from a config's ``objective_settings`` mapping.

    Raises:
        ConfigError: On a key the objective does not take (dotted path), or settings given to an
            objective that has none.
    """
    spec = objective_spec(domain, name)
    given = dict(given or {})
    if spec.settings is None:
        if given:
            raise ConfigError(f"objective_settings: the {domain} objective {name!r} takes no settings "
                              f"(got {', '.join(given)})")
        return None
    return from_dict(spec.settings, given, "objective_settings")


def build_objective(domain: Domain, name: str, inputs: ObjectiveInputs, settings: Mapping | None = None) -> nn.Module:
    """The pretraining module of objective ``name`` in ``domain``."""
    return objective_spec(domain, name).build(inputs, objective_settings(domain, name, settings))
