"""One interface for every optimizer over action sequences.

A planner minimizes ``cost(qpos [B, H+1, nq], qvel [B, H+1, nv], actions [B, H, nu]) -> [B]`` over
action sequences within the dynamics' bounds, starting from one state, and warm-starts the next
decision by shifting its previous plan one step (the last action repeated). Planners know only
the core's :class:`~gndesign.dynamics.Dynamics` and a cost function.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from gndesign.dynamics import Dynamics

log = logging.getLogger(__name__)
CostFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Squash:
    """``x = mid + half * tanh(z)``: unconstrained ``z`` onto the open box ``(low, high)``."""

    def __init__(self, low: torch.Tensor, high: torch.Tensor, margin: float = 1e-4):
        self.mid, self.half, self.margin = (high + low) / 2, (high - low) / 2, margin

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.mid + self.half * torch.tanh(z)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        u = ((x - self.mid) / self.half).clamp(-1 + self.margin, 1 - self.margin)
        return torch.atanh(u)


@dataclass
class PlanResult:
    """The best plan ``[H, nu]``, its cost, the cost after each iteration and the evaluations used."""

    actions: torch.Tensor
    cost: float
    history: list[float] = field(default_factory=list)
    evaluations: int = 0


class Planner:
    """Base class: bounds, warm start, bookkeeping. Subclasses implement :meth:`optimize`.

    Args:
        dynamics: the model to plan with.
        cost: the trajectory cost (lower is better).
        horizon: planning horizon ``H`` in control steps.
        seed: seed of the planner's own random generator.
    """

    name = "planner"

    def __init__(self, dynamics: Dynamics, cost: CostFn, horizon: int, seed: int = 0):
        if horizon <= 0:
            raise ValueError(f"horizon must be positive, got {horizon}")
        self.dynamics = dynamics
        self.cost = cost
        self.horizon = horizon
        self.low = dynamics.action_low
        self.high = dynamics.action_high
        self.generator = torch.Generator().manual_seed(seed)
        self.warm: torch.Tensor | None = None

    def reset(self) -> None:
        self.warm = None

    def clip(self, actions: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(actions, self.high), self.low)

    def uniform(self, n: int) -> torch.Tensor:
        """``[n, H, nu]`` uniform random sequences within bounds."""
        u = torch.rand(n, self.horizon, self.dynamics.nu, generator=self.generator)
        return self.low + (self.high - self.low) * u

    def initial_plan(self) -> torch.Tensor:
        """The warm start (previous plan shifted) or, at the first decision, the bounds' midpoint."""
        if self.warm is None:
            return ((self.low + self.high) / 2).expand(self.horizon, -1).clone()
        return self.warm.clone()

    @staticmethod
    def shift(plan: torch.Tensor) -> torch.Tensor:
        """Warm start for the next decision: drop the executed action, repeat the last one."""
        return torch.cat([plan[1:], plan[-1:]], dim=0)

    def evaluate(self, qpos: torch.Tensor, qvel: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Costs ``[N]`` of ``actions [N, H, nu]`` from one state ``qpos [nq], qvel [nv]``."""
        N = actions.shape[0]
        qs, vs = self.dynamics.rollout(qpos.expand(N, -1), qvel.expand(N, -1), actions)
        return self.cost(qs, vs, actions)

    def plan(self, qpos: torch.Tensor, qvel: torch.Tensor) -> PlanResult:
        """Optimize from state ``qpos [nq], qvel [nv]``; remember the shifted plan for next time."""
        before = self.dynamics.evaluations
        result = self.optimize(qpos, qvel, self.initial_plan())
        result.evaluations = self.dynamics.evaluations - before
        if not torch.isfinite(result.actions).all():
            log.warning("%s produced a non-finite plan; falling back to the warm start", self.name)
            result.actions = self.initial_plan()
        result.actions = self.clip(result.actions)
        self.warm = self.shift(result.actions.detach())
        return result

    def optimize(self, qpos: torch.Tensor, qvel: torch.Tensor, init: torch.Tensor) -> PlanResult:
        raise NotImplementedError
