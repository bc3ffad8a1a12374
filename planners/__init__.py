"""Optimizers over action sequences and designs; they see only the core's interfaces."""

from planners.base import Planner, PlanResult
from planners.design import (
    DESIGN_OPTIMIZERS,
    CEMDesign,
    DesignOptimizer,
    DesignResult,
    GradientDesign,
    RandomDesign,
    design_options,
    make_design_optimizer,
)
from planners.gradient import GradientPlanner
from planners.options import DESIGN_OPTION_TYPES, PLANNER_OPTION_TYPES, parse_options
from planners.sampling import CEMPlanner, MPPIPlanner, RandomShootingPlanner

PLANNERS = {"gradient": GradientPlanner, "cem": CEMPlanner, "mppi": MPPIPlanner, "random": RandomShootingPlanner}


def planner_options(name: str, options: dict | None = None) -> dict:
    """``options`` of planner ``name`` checked (:mod:`planners.options`: typed, range-checked,
    unknown keys refused with the known ones listed) and converted to their types."""
    if name not in PLANNERS:
        from gndesign.errors import GndesignError

        raise GndesignError(f"unknown planner {name!r}: choose one of {', '.join(PLANNERS)}")
    checked = parse_options(PLANNER_OPTION_TYPES[name], options or {}, "planner")
    return {k: getattr(checked, k) for k in options or {}}


def make_planner(name: str, dynamics, cost, horizon: int, seed: int = 0, **options) -> Planner:
    """A planner by name (``gradient``, ``cem``, ``mppi``, ``random``) with its options (checked
    by :func:`planner_options`)."""
    checked = planner_options(name, options)
    return PLANNERS[name](dynamics, cost, horizon, seed=seed, **checked)


__all__ = ["Planner", "PlanResult", "GradientPlanner", "CEMPlanner", "MPPIPlanner", "RandomShootingPlanner",
           "PLANNERS", "make_planner", "planner_options", "design_options", "PLANNER_OPTION_TYPES",
           "DESIGN_OPTION_TYPES",
           "DesignOptimizer", "DesignResult", "GradientDesign", "CEMDesign", "RandomDesign", "DESIGN_OPTIMIZERS",
           "make_design_optimizer"]
