"""Model-predictive control: replan every k control steps, act in the real environment.

The loop sees the environment through a small protocol (``reset() -> (qpos, qvel)``,
``step(action) -> (reward, qpos, qvel)``), so it runs the same on dm_control, gymnasium wrappers
or a learned model; ``envs.control.DmControlEnvironment`` is the ground-truth one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import torch
from tqdm import tqdm

from planners.base import Planner


class Environment(Protocol):
    def reset(self) -> tuple[torch.Tensor, torch.Tensor]: ...

    def step(self, action: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]: ...


@dataclass
class EpisodeRecord:
    """What one MPC episode did: per-step rewards and actions, per-decision latency and model
    evaluations, and the planner's predicted cost at each decision."""

    rewards: list[float] = field(default_factory=list)
    actions: list[list[float]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    evaluations: list[int] = field(default_factory=list)
    planned_costs: list[float] = field(default_factory=list)

    @property
    def total_return(self) -> float:
        return float(sum(self.rewards))

    def summary(self) -> dict:
        n = max(len(self.latencies), 1)
        return {"return": self.total_return, "steps": len(self.rewards), "decisions": len(self.latencies),
                "mean_latency_s": sum(self.latencies) / n, "mean_evaluations": sum(self.evaluations) / n}


def run_mpc(env: Environment, planner: Planner, steps: int, replan_every: int = 1,
            progress: bool = False, on_step=None) -> EpisodeRecord:
    """Run one episode of ``steps`` control steps, replanning every ``replan_every`` steps.

    Between decisions the plan is executed open loop; the next decision warm-starts from the
    plan shifted by the steps executed. ``on_step(t)`` is called after each step (e.g. to render).
    """
    if replan_every < 1:
        raise ValueError("replan_every must be >= 1")
    record = EpisodeRecord()
    qpos, qvel = env.reset()
    planner.reset()
    plan, k = None, 0
    for t in tqdm(range(steps), disable=not progress, desc=f"mpc ({planner.name})", unit="step"):
        if plan is None or k >= replan_every:
            if plan is not None:
                for _ in range(k - 1):  # plan() shifted once already
                    planner.warm = planner.shift(planner.warm)
            start = time.perf_counter()
            result = planner.plan(qpos, qvel)
            record.latencies.append(time.perf_counter() - start)
            record.evaluations.append(result.evaluations)
            record.planned_costs.append(result.cost)
            plan, k = result.actions, 0
        action = plan[k]
        k += 1
        reward, qpos, qvel = env.step(action)
        record.rewards.append(float(reward))
        record.actions.append(action.tolist())
        if on_step is not None:
            on_step(t)
    return record
