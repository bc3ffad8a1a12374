"""Sampling-based planners (no gradients): CEM, MPPI and random shooting.

They run on any dynamics; on ground-truth MuJoCo they are the oracle.
"""

from __future__ import annotations

import torch

from planners.base import CostFn, Planner, PlanResult, best_so_far


def cem_refit(samples: torch.Tensor, cost: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, elites: int,
              alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """CEM's update: refit ``mean``, ``std`` to the ``elites`` lowest-cost ``samples`` (non-finite
    costs last), smoothed by ``alpha`` towards the old values. ``samples [*batch, N, *shape]``,
    ``cost [*batch, N]``, ``mean``/``std [*batch, *shape]``: one refit per batch entry."""
    d = cost.dim() - 1
    idx = torch.argsort(torch.nan_to_num(cost, nan=float("inf")), dim=d)[..., :elites]
    elite = torch.take_along_dim(samples, idx.reshape(idx.shape + (1,) * (samples.dim() - cost.dim())), dim=d)
    return alpha * mean + (1 - alpha) * elite.mean(d), alpha * std + (1 - alpha) * elite.std(d)


def _around(mean: torch.Tensor, std: torch.Tensor, n: int, planner: Planner,
            guide: torch.Tensor | None = None) -> torch.Tensor:
    """``[E, n, H, nu]``: each episode's ``mean`` followed by ``n - 1`` clipped Gaussian samples around it;
    a ``guide [E, H, nu]`` (a policy's plan) replaces the first of those samples."""
    eps = torch.randn(mean.shape[0], n - 1, *mean.shape[1:], generator=planner.generator)
    samples = torch.cat([mean[:, None], planner.clip(mean[:, None] + std[:, None] * eps)], dim=1)
    if guide is not None and n > 1:
        samples[:, 1] = guide
    return samples


def _guide(planner: Planner, qpos, qvel, init) -> torch.Tensor | None:
    return planner.guide(qpos, qvel, init) if planner.guide is not None else None


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
        best_a, best_c, history = mean.clone(), torch.full((mean.shape[0],), float("inf")), []
        guide = _guide(self, qpos, qvel, init)
        for i in range(self.iterations):
            samples = _around(mean, std, self.population, self, guide if i == 0 else None)
            cost = self.evaluate(qpos, qvel, samples)
            best_a, best_c = best_so_far(samples, cost, best_a, best_c)
            mean, std = cem_refit(samples, cost, mean, std, self.elites, self.alpha)
            history.append(float(best_c.mean()))
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
        std = (self.noise * (self.high - self.low)).expand_as(mean)
        best_a, best_c, history = mean.clone(), torch.full((mean.shape[0],), float("inf")), []
        inf = torch.tensor(float("inf"))
        guide = _guide(self, qpos, qvel, init)
        for i in range(self.iterations):
            samples = _around(mean, std, self.samples, self, guide if i == 0 else None)
            cost = self.evaluate(qpos, qvel, samples)
            best_a, best_c = best_so_far(samples, cost, best_a, best_c)
            finite = torch.isfinite(cost)
            lo = torch.where(finite, cost, inf).min(1).values
            hi = torch.where(finite, cost, -inf).max(1).values
            spread = (hi - lo).clamp_min(1e-9)
            w = torch.softmax(-(torch.where(finite, cost, inf) - lo[:, None]) / (self.temperature * spread[:, None]), 1)
            # an episode with no finite cost has nothing to learn from: it keeps its mean
            ok = finite.any(1)
            mean = torch.where(ok[:, None, None], (w.nan_to_num(0.0)[..., None, None] * samples).sum(1), mean)
            history.append(float(best_c.mean()))
        # MPPI acts with the weighted mean; score it too so the returned cost is the plan's own.
        best_a, best_c = best_so_far(mean[:, None], self.evaluate(qpos, qvel, mean[:, None]), best_a, best_c)
        return PlanResult(best_a, best_c, history)


class RandomShootingPlanner(Planner):
    """The simplest baseline: the best of uniform random sequences (plus the warm start)."""

    name = "random"

    def __init__(self, dynamics, cost: CostFn, horizon: int, samples: int = 1024, seed: int = 0):
        super().__init__(dynamics, cost, horizon, seed)
        self.samples = samples

    @torch.no_grad()
    def optimize(self, qpos, qvel, init) -> PlanResult:
        samples = torch.cat([init[:, None], self.uniform(init.shape[0], self.samples - 1)], dim=1)
        best_a, best_c = best_so_far(samples, self.evaluate(qpos, qvel, samples), init,
                                     torch.full((init.shape[0],), float("inf")))
        return PlanResult(best_a, best_c, [float(best_c.mean())])
