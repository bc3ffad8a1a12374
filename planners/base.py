"""One interface for every optimizer over action sequences.

A planner minimizes ``cost(qpos [B, H+1, nq], qvel [B, H+1, nv], actions [B, H, nu]) -> [B]`` over
action sequences within the dynamics' bounds, starting from one state, and warm-starts the next
decision by shifting its previous plan one step (the last action repeated). Planners know only
the core's :class:`~gndesign.dynamics.Dynamics` and a cost function.

Every planner also plans for ``E`` independent start states at once (``qpos [E, nq]``: episodes
run in lockstep), as one batched rollout of ``E x N`` sequences per iteration. The cost then sees
its rows episode-major (all of episode 0's sequences first), so a task with per-episode context
(the swimmer's targets) can tell them apart. Each episode's optimization is the same as alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from gndesign.coarse import check_divides
from gndesign.dynamics import Dynamics
from gndesign.io import check_finite

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
    """The best plan ``[H, nu]``, its cost, the best cost after each iteration and the evaluations
    used. For ``E`` start states at once: plans ``[E, H, nu]``, costs ``[E]`` (a tensor) and the
    history of the mean best cost."""

    actions: torch.Tensor
    cost: float | torch.Tensor
    history: list[float] = field(default_factory=list)
    evaluations: int = 0


def best_so_far(actions: torch.Tensor, cost: torch.Tensor, best_a: torch.Tensor, best_c: torch.Tensor):
    """Per episode, keep the lower-cost of the best so far (``best_a [E, H, nu]``, ``best_c [E]``)
    and the best of ``actions [E, N, H, nu]`` with ``cost [E, N]`` (non-finite costs never win)."""
    cost = torch.where(torch.isfinite(cost), cost.detach(), torch.full_like(cost, float("inf")))
    c, i = cost.min(1)
    better = c < best_c
    cand = actions.detach()[torch.arange(actions.shape[0]), i]
    return torch.where(better[:, None, None], cand, best_a), torch.where(better, c, best_c)


class Planner:
    """Base class: bounds, warm start, bookkeeping. Subclasses implement :meth:`optimize`.

    Args:
        dynamics: the model to plan with.
        cost: the trajectory cost (lower is better).
        horizon: planning horizon ``H`` in control steps.
        seed: seed of the planner's own random generator.

    A model stepping ``k = dynamics.action_repeat`` control steps at once plans over
    ``H / k`` model steps (:attr:`horizon`; ``H`` must be a multiple of ``k``): the optimizers,
    the cost and the warm start see model steps, :meth:`plan` returns the plan in control steps,
    each action repeated ``k`` times (held ``k`` control steps in the environment).
    """

    name = "planner"
    #: ``guide(qpos [E, nq], qvel [E, nv], init [E, H, nu]) -> [E, H, nu]``: a plan to start from
    #: besides the warm start (a policy's, :class:`planners.policy.PolicyGuide`); None: none.
    guide: Callable | None = None

    def __init__(self, dynamics: Dynamics, cost: CostFn, horizon: int, seed: int = 0):
        if horizon <= 0:
            raise ValueError(f"horizon must be positive, got {horizon}")
        self.dynamics = dynamics
        self.cost = cost
        self.repeat = int(getattr(dynamics, "action_repeat", 1))
        self.control_horizon = horizon
        self.horizon = check_divides(self.repeat, horizon, "the planning horizon")  # in model steps
        self.low = dynamics.action_low
        self.high = dynamics.action_high
        self.generator = torch.Generator().manual_seed(seed)
        self.warm: torch.Tensor | None = None

    def reset(self) -> None:
        self.warm = None

    def clip(self, actions: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(actions, self.high), self.low)

    def uniform(self, *n: int) -> torch.Tensor:
        """``[*n, H, nu]`` uniform random sequences within bounds."""
        u = torch.rand(*n, self.horizon, self.dynamics.nu, generator=self.generator)
        return self.low + (self.high - self.low) * u

    def initial_plan(self) -> torch.Tensor:
        """The warm start (previous plan shifted) or, at the first decision, the bounds' midpoint:
        ``[H, nu]``, or ``[E, H, nu]`` after a decision for ``E`` states."""
        if self.warm is None:
            return ((self.low + self.high) / 2).expand(self.horizon, -1).clone()
        return self.warm.clone()

    def check_replan(self, replan_every: int) -> None:
        """Refuse a replanning interval (control steps) that would cut a held action short."""
        check_divides(self.repeat, replan_every, "the replanning interval")

    def advance(self, executed: int) -> None:
        """Warm start after ``executed`` control steps of the last plan (:meth:`plan` shifted one
        model step already)."""
        self.warm = self.shift(self.warm, executed // self.repeat - 1)

    @staticmethod
    def shift(plan: torch.Tensor, steps: int = 1) -> torch.Tensor:
        """Warm start for the next decision: drop the ``steps`` executed actions (``plan [..., H, nu]``),
        repeat the last one."""
        if steps <= 0:
            return plan
        steps = min(steps, plan.shape[-2] - 1)
        return torch.cat([plan[..., steps:, :], plan[..., -1:, :].expand(*plan.shape[:-2], steps, -1)], dim=-2)

    def evaluate(self, qpos: torch.Tensor, qvel: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Costs ``[E, N]`` of ``actions [E, N, H, nu]`` from states ``qpos [E, nq], qvel [E, nv]``
        (one rollout of ``E x N`` sequences, episode-major)."""
        E, N = actions.shape[:2]
        flat = actions.reshape(E * N, *actions.shape[2:])
        qs, vs = self.dynamics.rollout(qpos.repeat_interleave(N, 0), qvel.repeat_interleave(N, 0), flat)
        return self.cost(qs, vs, flat).reshape(E, N)

    def plan(self, qpos: torch.Tensor, qvel: torch.Tensor) -> PlanResult:
        """Optimize from ``qpos [nq], qvel [nv]`` (plan ``[H, nu]``) or from ``E`` states at once,
        ``qpos [E, nq], qvel [E, nv]`` (plans ``[E, H, nu]``, costs ``[E]``); remember the shifted
        plans for next time."""
        single = qpos.dim() == 1
        q, v = (qpos[None], qvel[None]) if single else (qpos, qvel)
        check_finite((q, v), f"the {self.name} planner's start state (qpos, qvel)",
                     "the environment diverged or was not reset; nothing can be planned from it")
        init = self.initial_plan()
        init = init.expand(q.shape[0], -1, -1).clone() if init.dim() == 2 else init
        if init.shape[0] != q.shape[0]:
            raise ValueError(f"the warm start is for {init.shape[0]} episode(s) but {q.shape[0]} states were "
                             "given: call reset() before planning for a different number of episodes")
        before = self.dynamics.evaluations
        result = self.optimize(q, v, init)
        result.evaluations = self.dynamics.evaluations - before
        no_cost = ~torch.isfinite(torch.as_tensor(result.cost))
        if no_cost.any():
            log.warning("%s: no action sequence had a finite cost for %d episode(s) (the model's rollouts diverge); "
                        "acting on the warm start", self.name, int(no_cost.sum()))
        bad = ~torch.isfinite(result.actions).flatten(1).all(1)
        if bad.any():
            log.warning("%s produced a non-finite plan for %d episode(s); falling back to the warm start",
                        self.name, int(bad.sum()))
            result.actions = torch.where(bad[:, None, None], init, result.actions)
        result.actions = self.clip(result.actions.detach())
        self.warm = self.shift(result.actions)
        if single:
            self.warm = self.warm[0]
            result.actions, result.cost = result.actions[0], float(result.cost[0])
        if self.repeat > 1:  # in control steps: each model step's action held for k of them
            result.actions = result.actions.repeat_interleave(self.repeat, dim=-2)
        return result

    def optimize(self, qpos: torch.Tensor, qvel: torch.Tensor, init: torch.Tensor) -> PlanResult:
        """Plans ``[E, H, nu]`` and costs ``[E]`` from ``qpos [E, nq], qvel [E, nv]`` and the
        initial plans ``init [E, H, nu]``."""
        raise NotImplementedError
