"""World model: action-conditioned forecasting of cell states in latent space, and latent planning.

See docs/world_model.md. Main entry points (imported lazily, so ``molwm --help`` stays fast):
:class:`WorldForecaster`, :class:`PlanResult` (``molwm.world.plan.plan``), :func:`run_world`, :class:`WorldConfig`,
:class:`TimeCourses`, :func:`load_lab_courses`, :func:`load_thunor`.
"""

from __future__ import annotations

from molwm.lazy import lazy_exports

_EXPORTS = {
    "WorldForecaster": "molwm.world.forecast",
    "Forecast": "molwm.world.forecast",
    "ForecastError": "molwm.world.forecast",
    "PlanResult": "molwm.world.plan",
    "run_world": "molwm.world.run",
    "WorldConfig": "molwm.world.config",
    "TimeCourses": "molwm.world.data",
    "CourseError": "molwm.world.data",
    "load_lab_courses": "molwm.world.data",
    "load_thunor": "molwm.world.thunor",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
