"""Optimizers over action sequences and designs; they see only the core's interfaces."""

from planners.base import Planner, PlanResult
from planners.design import (
    DESIGN_OPTIMIZERS,
    CEMDesign,
    DesignOptimizer,
    DesignResult,
    GradientDesign,
    RandomDesign,
    make_design_optimizer,
)
from planners.gradient import GradientPlanner
from planners.sampling import CEMPlanner, MPPIPlanner, RandomShootingPlanner

PLANNERS = {"gradient": GradientPlanner, "cem": CEMPlanner, "mppi": MPPIPlanner, "random": RandomShootingPlanner}


def make_planner(name: str, dynamics, cost, horizon: int, **options) -> Planner:
    """A planner by name (``gradient``, ``cem``, ``mppi``, ``random``) with its options."""
    if name not in PLANNERS:
        from gndesign.errors import GndesignError

        raise GndesignError(f"unknown planner {name!r}: choose one of {', '.join(PLANNERS)}")
    return PLANNERS[name](dynamics, cost, horizon, **options)


__all__ = ["Planner", "PlanResult", "GradientPlanner", "CEMPlanner", "MPPIPlanner", "RandomShootingPlanner",
           "PLANNERS", "make_planner",
           "DesignOptimizer", "DesignResult", "GradientDesign", "CEMDesign", "RandomDesign", "DESIGN_OPTIMIZERS",
           "make_design_optimizer"]
