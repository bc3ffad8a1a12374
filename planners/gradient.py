"""Gradient-based planning: Adam on action sequences through a differentiable rollout."""

from __future__ import annotations

import logging

import torch

from planners.base import CostFn, Planner, PlanResult, Squash, best_so_far

log = logging.getLogger(__name__)


class GradientPlanner(Planner):
    """First-order trajectory optimization with K restarts in one batch.

    Actions live in an unconstrained space squashed to the bounds,
    ``a = mid + half * tanh(z)``, so every iterate is feasible. The restarts are the warm start,
    noisy copies of it and uniform random sequences; each restart's gradient is clipped, a restart
    whose cost or gradient is not finite is reset to the best plan so far (and logged), and the
    best sequence seen over all iterations is returned.

    Args:
        iterations: Adam steps per decision.
        restarts: K sequences optimized together.
        lr: Adam learning rate (in the unconstrained space).
        noise: std of the perturbations of the warm start, as a fraction of the action range.
        random_fraction: share of the restarts drawn uniformly at random.
        grad_clip: per-restart gradient norm limit.
        smoothness: cost per unit of squared change between successive actions (as fractions of
            the half range), the first against the warm start's first action (the previous plan's
            continuation): plans that do not chatter, decisions that agree.
    """

    name = "gradient"

    def __init__(self, dynamics, cost: CostFn, horizon: int, iterations: int = 20, restarts: int = 8,
                 lr: float = 0.3, noise: float = 0.3, random_fraction: float = 0.25, grad_clip: float = 10.0,
                 smoothness: float = 0.0, seed: int = 0):
        if not dynamics.differentiable:
            raise ValueError("the gradient planner needs differentiable dynamics (a learned model)")
        super().__init__(dynamics, cost, horizon, seed)
        self.iterations, self.restarts, self.lr = iterations, restarts, lr
        self.noise, self.random_fraction, self.grad_clip = noise, random_fraction, grad_clip
        self.smoothness = smoothness
        self.squash = Squash(self.low, self.high, margin=0.005)

    def chatter_cost(self, actions: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """``[E, K]``: ``smoothness`` times the summed squared changes of ``actions [E, K, H, nu]``,
        starting from ``previous [E, nu]``, in half ranges."""
        half = (self.high - self.low) / 2
        steps = torch.cat([previous[:, None, None].expand(-1, actions.shape[1], 1, -1), actions], 2)
        return self.smoothness * (((steps[:, :, 1:] - steps[:, :, :-1]) / half) ** 2).sum((2, 3))

    def starts(self, init: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        """``[E, K, H, nu]``: per episode the warm start, noisy copies of it and uniform sequences;
        with a ``guide [E, H, nu]`` (a policy's plan) that comes first and replaces one noisy copy."""
        E, K = init.shape[0], self.restarts
        n_rand = int(round(self.random_fraction * K)) if K > 1 else 0
        first = [init[:, None]] if guide is None else [guide[:, None], init[:, None]][:K]
        n_noisy = max(K - len(first) - n_rand, 0)
        n_rand = K - len(first) - n_noisy
        eps = torch.randn(E, n_noisy, *init.shape[1:], generator=self.generator) * self.noise * (self.high - self.low)
        return torch.cat([*first, self.clip(init[:, None] + eps), self.uniform(E, n_rand)], dim=1)

    def optimize(self, qpos, qvel, init) -> PlanResult:
        guide = self.guide(qpos, qvel, init) if self.guide is not None else None
        z = self.squash.inverse(self.starts(init, guide)).requires_grad_(True)
        opt = torch.optim.Adam([z], lr=self.lr)
        best_a, best_c = init.clone(), torch.full((init.shape[0],), float("inf"))
        history = []
        previous = init[:, 0]  # the last plan's action for now: successive decisions agree too
        for _ in range(self.iterations):
            a = self.squash(z)
            cost = self.evaluate(qpos, qvel, a)
            if self.smoothness:
                cost = cost + self.chatter_cost(a, previous)
            finite = torch.isfinite(cost)
            best_a, best_c = best_so_far(a, cost, best_a, best_c)
            history.append(float(best_c.mean()))
            opt.zero_grad(set_to_none=True)
            torch.where(finite, cost, torch.zeros_like(cost)).sum().backward()
            with torch.no_grad():
                g = z.grad
                bad = ~finite | ~torch.isfinite(g).all(dim=(2, 3))
                if bad.any():
                    log.warning("gradient planner: %d restart(s) non-finite; reset to the best plan", int(bad.sum()))
                    g[bad] = 0.0
                    z[bad] = self.squash.inverse(best_a)[:, None].expand_as(z)[bad]
                norm = g.flatten(2).norm(dim=2).clamp_min(1e-12)
                g.mul_((self.grad_clip / norm).clamp(max=1.0)[..., None, None])
            opt.step()
        with torch.no_grad():  # the last iterate has not been scored yet
            a = self.squash(z)
            cost = self.evaluate(qpos, qvel, a)
            if self.smoothness:
                cost = cost + self.chatter_cost(a, previous)
            best_a, best_c = best_so_far(a, cost, best_a, best_c)
        history.append(float(best_c.mean()))
        return PlanResult(best_a, best_c, history)
