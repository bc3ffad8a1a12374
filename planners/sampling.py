"""Sampling-based planners (no gradients): CEM, MPPI and random shooting.

They run on any dynamics; on ground-truth MuJoCo they are the oracle.
"""

from __future__ import annotations

import torch

from planners.base import CostFn, Planner, PlanResult


def _best(actions: torch.Tensor, cost: torch.Tensor, best_a: torch.Tensor, best_c: float):
    cost = torch.where(torch.isfinite(cost), cost, torch.full_like(cost, float("inf")))
    c, i = cost.min(0)
    return (actions[i].clone(), float(c)) if float(c) < best_c else (best_a, best_c)


def cem_refit(samples: torch.Tensor, cost: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, elites: int,
              alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """CEM's update: refit ``mean``, ``std`` (shaped like one sample) to the ``elites`` lowest-cost
    ``samples [N, ...]`` (non-finite costs last), smoothed by ``alpha`` towards the old values."""
    elite = samples[torch.argsort(torch.nan_to_num(cost, nan=float("inf")))[:elites]]
    return alpha * mean + (1 - alpha) * elite.mean(0), alpha * std + (1 - alpha) * elite.std(0)


class CEMPlanner(Planner):
    """Cross-entropy method: sample around a Gaussian, refit it to the elites, repeat.

    Args:
        population: sequences sampled per iteration (the current mean is always one of them).
        elites: how many of the best refit the distribution.
        iterations: refits per decision.
        init_std: initial standard deviation as a fraction of the action range.
        alpha: smoothing of the refit (0: take the elites' statistics as they are).
    """

    name = "cem"

    def __init__(self, dynamics, cost: CostFn, horizon: int, population: int = 256, elites: int = 32,
                 iterations: int = 4, init_std: float = 0.5, alpha: float = 0.1, seed: int = 0):
        super().__init__(dynamics, cost, horizon, seed)
        if not 0 < elites <= population:
            raise ValueError("need 0 < elites <= population")
        self.population, self.elites, self.iterations = population, elites, iterations
        self.init_std, self.alpha = init_std, alpha

    @torch.no_grad()
    def optimize(self, qpos, qvel, init) -> PlanResult:
        mean = init.clone()
        std = self.init_std * (self.high - self.low) * torch.ones_like(mean)
        best_a, best_c, history = mean.clone(), float("inf"), []
        for _ in range(self.iterations):
            eps = torch.randn(self.population - 1, *mean.shape, generator=self.generator)
            samples = torch.cat([mean[None], self.clip(mean + std * eps)], dim=0)
            cost = self.evaluate(qpos, qvel, samples)
            best_a, best_c = _best(samples, cost, best_a, best_c)
            mean, std = cem_refit(samples, cost, mean, std, self.elites, self.alpha)
            history.append(best_c)
        return PlanResult(best_a, best_c, history)


class MPPIPlanner(Planner):
    """Model-predictive path integral control: exponentially cost-weighted average of samples.

    Args:
        samples: sequences per iteration; temperature: lambda of the weights
        ``exp(-(cost - min) / (lambda * cost spread))`` (scale-free); noise: std as a fraction of
        the action range; iterations: updates per decision.
    """

    name = "mppi"

    def __init__(self, dynamics, cost: CostFn, horizon: int, samples: int = 256, temperature: float = 0.1,
                 noise: float = 0.3, iterations: int = 4, seed: int = 0):
        super().__init__(dynamics, cost, horizon, seed)
        self.samples, self.temperature, self.noise, self.iterations = samples, temperature, noise, iterations

    @torch.no_grad()
    def optimize(self, qpos, qvel, init) -> PlanResult:
        mean = init.clone()
        std = self.noise * (self.high - self.low)
        best_a, best_c, history = mean.clone(), float("inf"), []
        for _ in range(self.iterations):
            eps = torch.randn(self.samples - 1, *mean.shape, generator=self.generator)
            samples = torch.cat([mean[None], self.clip(mean + std * eps)], dim=0)
            cost = self.evaluate(qpos, qvel, samples)
            best_a, best_c = _best(samples, cost, best_a, best_c)
            finite = torch.isfinite(cost)
            if not finite.any():  # nothing to learn from: keep the mean
                history.append(best_c)
                continue
            c = torch.where(finite, cost, torch.full_like(cost, float("inf")))
            spread = (c[finite].max() - c[finite].min()).clamp_min(1e-9)
            w = torch.softmax(-(c - c[finite].min()) / (self.temperature * spread), dim=0)
            mean = (w[:, None, None] * samples).sum(0)
            history.append(best_c)
        # MPPI acts with the weighted mean; score it too so the returned cost is the plan's own.
        mc = self.evaluate(qpos, qvel, mean[None])
        best_a, best_c = _best(mean[None], mc, best_a, best_c)
        return PlanResult(best_a, best_c, history)


class RandomShootingPlanner(Planner):
    """The simplest baseline: the best of uniform random sequences (plus the warm start)."""

    name = "random"

    def __init__(self, dynamics, cost: CostFn, horizon: int, samples: int = 1024, seed: int = 0):
        super().__init__(dynamics, cost, horizon, seed)
        self.samples = samples

    @torch.no_grad()
    def optimize(self, qpos, qvel, init) -> PlanResult:
        samples = torch.cat([init[None], self.uniform(self.samples - 1)], dim=0)
        cost = self.evaluate(qpos, qvel, samples)
        best_a, best_c = _best(samples, cost, init, float("inf"))
        return PlanResult(best_a, best_c, [best_c])

