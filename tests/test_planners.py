"""Planners solve a problem with a known optimum on differentiable and sampled dynamics."""

import numpy as np
import pytest
import torch

from gndesign.dynamics import Dynamics
from planners import make_planner
from planners.base import Planner
from planners.mpc import run_mpc


class PointMass(Dynamics):
    """A 1-D double integrator x'' = u, u in [-1, 1]: a linear system with a known optimum."""

    def __init__(self, differentiable: bool):
        super().__init__(1, 1, 1, torch.tensor([[-1.0, 1.0]]), 0.1)
        self.differentiable = differentiable

    def rollout(self, qpos, qvel, actions):
        self.check_actions(actions.detach())
        self.evaluations += actions.shape[0] * actions.shape[1]
        qs, vs = [qpos], [qvel]
        for t in range(actions.shape[1]):
            vs.append(vs[-1] + self.control_timestep * actions[:, t])
            qs.append(qs[-1] + self.control_timestep * vs[-1])
        q, v = torch.stack(qs, 1), torch.stack(vs, 1)
        return (q, v) if self.differentiable else (q.detach(), v.detach())


def quadratic_cost(target):
    """Track a constant velocity target: the optimum is reachable within the bounds."""
    def cost(qs, vs, actions):
        return ((vs[:, 1:, 0] - target) ** 2).sum(1) + 1e-3 * (actions ** 2).sum((1, 2))
    return cost


def optimum(horizon, target=0.5, dt=0.1):
    """Brute-force reference: the same cost minimized by a fine gradient solve."""
    a = torch.zeros(1, horizon, 1, requires_grad=True)
    opt = torch.optim.LBFGS([a], max_iter=200)
    dyn = PointMass(True)

    def closure():
        opt.zero_grad()
        q, v = dyn.rollout(torch.zeros(1, 1), torch.zeros(1, 1), a.clamp(-1, 1))
        c = quadratic_cost(target)(q, v, a.clamp(-1, 1)).sum()
        c.backward()
        return c

    opt.step(closure)
    return closure().item()


OPTIONS = {"gradient": {"iterations": 100, "restarts": 4, "lr": 0.2},
           "cem": {"population": 200, "elites": 20, "iterations": 8},
           "mppi": {"samples": 200, "iterations": 10, "temperature": 0.05},
           "random": {"samples": 4000}}


@pytest.mark.parametrize("name", list(OPTIONS))
@pytest.mark.parametrize("differentiable", [True, False])
def test_planner_reaches_the_known_optimum(name, differentiable):
    if name == "gradient" and not differentiable:
        with pytest.raises(ValueError, match="differentiable"):
            make_planner(name, PointMass(False), quadratic_cost(0.5), 8)
        return
    H = 8
    planner = make_planner(name, PointMass(differentiable), quadratic_cost(0.5), H, seed=0, **OPTIONS[name])
    res = planner.plan(torch.zeros(1), torch.zeros(1))
    best = optimum(H)
    zero_cost = 0.25 * H
    tol = 0.15 if name == "random" else 0.03  # random shooting only gets close
    assert res.cost <= best + tol * (zero_cost - best), (name, res.cost, best)
    assert (res.actions.abs() <= 1 + 1e-6).all()
    assert res.evaluations > 0 and res.history == sorted(res.history, reverse=True)


def test_warm_start_shifts_the_previous_plan():
    plan = torch.arange(5.0)[:, None]
    assert Planner.shift(plan).squeeze(1).tolist() == [1, 2, 3, 4, 4]
    planner = make_planner("cem", PointMass(False), quadratic_cost(0.5), 5, iterations=1, population=8, elites=2)
    res = planner.plan(torch.zeros(1), torch.zeros(1))
    assert torch.equal(planner.initial_plan(), Planner.shift(res.actions))
    planner.reset()
    assert torch.equal(planner.initial_plan(), torch.zeros(5, 1))


class PointEnv:
    """The point mass as an MPC environment with reward -(v - 0.5)^2."""

    def __init__(self):
        self.dyn = PointMass(False)

    def reset(self):
        self.q, self.v = torch.zeros(1), torch.zeros(1)
        return self.q, self.v

    def step(self, a):
        q, v = self.dyn.rollout(self.q[None], self.v[None], a[None, None])
        self.q, self.v = q[0, 1], v[0, 1]
        return -float((self.v - 0.5) ** 2), self.q, self.v


@pytest.mark.parametrize("replan_every", [1, 3])
def test_mpc_loop_records_and_beats_doing_nothing(replan_every):
    planner = make_planner("cem", PointMass(False), quadratic_cost(0.5), 6, population=64, elites=8, iterations=3)
    rec = run_mpc(PointEnv(), planner, 12, replan_every=replan_every)
    assert len(rec.rewards) == 12 and len(rec.latencies) == int(np.ceil(12 / replan_every))
    assert rec.total_return > -0.25 * 12 * 0.5  # doing nothing scores -0.25 per step
    assert all(e > 0 for e in rec.evaluations)


def test_gradient_planner_survives_nan_costs():
    calls = {"n": 0}

    def sometimes_nan(qs, vs, actions):
        calls["n"] += 1
        c = quadratic_cost(0.5)(qs, vs, actions)
        return torch.where(torch.arange(c.shape[0]) == 1, torch.full_like(c, float("nan")), c) if calls["n"] < 5 else c

    planner = make_planner("gradient", PointMass(True), sometimes_nan, 6, iterations=20, restarts=3)
    res = planner.plan(torch.zeros(1), torch.zeros(1))
    assert torch.isfinite(res.actions).all() and np.isfinite(res.cost)


def per_episode_cost(targets):
    """The quadratic cost with one velocity target per episode, rows episode-major."""
    def cost(qs, vs, actions):
        t = targets.repeat_interleave(qs.shape[0] // len(targets))
        return ((vs[:, 1:, 0] - t[:, None]) ** 2).sum(1) + 1e-3 * (actions ** 2).sum((1, 2))
    return cost


def test_lockstep_gradient_plans_equal_separate_plans():
    """Without random restarts the gradient planner is deterministic: planning three states at
    once gives each the plan it gets alone (Adam is elementwise, best-so-far is per episode)."""
    q0 = torch.tensor([[0.0], [0.3], [-0.2]])
    v0 = torch.tensor([[0.0], [0.4], [-0.6]])
    opts = {"iterations": 15, "restarts": 1, "lr": 0.2}
    together = make_planner("gradient", PointMass(True), quadratic_cost(0.5), 6, **opts).plan(q0, v0)
    assert together.actions.shape == (3, 6, 1) and together.cost.shape == (3,)
    for e in range(3):
        alone = make_planner("gradient", PointMass(True), quadratic_cost(0.5), 6, **opts).plan(q0[e], v0[e])
        assert torch.allclose(together.actions[e], alone.actions, atol=1e-6)
        assert float(together.cost[e]) == pytest.approx(alone.cost, rel=1e-6)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_lockstep_planners_solve_each_episode_with_its_own_context(name):
    """Each episode of a lockstep batch reaches the optimum of its own cost (targets +0.5 and -0.5:
    mixing the episodes' rows would pull both plans to the wrong sign)."""
    differentiable = name == "gradient"
    targets = torch.tensor([0.5, -0.5])
    planner = make_planner(name, PointMass(differentiable), per_episode_cost(targets), 8, seed=0, **OPTIONS[name])
    res = planner.plan(torch.zeros(2, 1), torch.zeros(2, 1))
    best, zero_cost = optimum(8), 0.25 * 8  # the problem is symmetric in the target's sign
    tol = 0.15 if name == "random" else 0.03
    for e in range(2):
        assert float(res.cost[e]) <= best + tol * (zero_cost - best), (name, e, res.cost)
        assert float(res.actions[e, 0, 0]) * float(targets[e]) > 0  # accelerate towards its own target
    assert planner.warm.shape == (2, 8, 1)
    with pytest.raises(ValueError, match="reset"):
        planner.plan(torch.zeros(3, 1), torch.zeros(3, 1))


class PointBatch:
    """``E`` point-mass environments in lockstep."""

    def __init__(self, E):
        self.envs = [PointEnv() for _ in range(E)]

    def reset(self):
        states = [env.reset() for env in self.envs]
        return torch.stack([q for q, _ in states]), torch.stack([v for _, v in states])

    def step(self, actions):
        out = [env.step(a) for env, a in zip(self.envs, actions, strict=True)]
        return [r for r, _, _ in out], torch.stack([o[1] for o in out]), torch.stack([o[2] for o in out])


def test_lockstep_mpc_records_every_episode():
    from planners.mpc import run_mpc_lockstep

    planner = make_planner("cem", PointMass(False), quadratic_cost(0.5), 6, population=64, elites=8, iterations=3)
    recs = run_mpc_lockstep(PointBatch(3), planner, 12, replan_every=3)
    assert len(recs) == 3
    for rec in recs:
        assert len(rec.rewards) == 12 and len(rec.latencies) == 4 and rec.batch == 3
        assert rec.total_return > -0.25 * 12 * 0.5
        # each episode's share: population x horizon x iterations per decision
        assert rec.evaluations == [64 * 6 * 3] * 4
    assert recs[0].latencies == recs[2].latencies  # one decision for all of them


def test_shift_by_several_steps():
    plan = torch.arange(10.0).reshape(2, 5, 1)
    assert Planner.shift(plan, 2)[1].squeeze(1).tolist() == [7, 8, 9, 9, 9]
    assert torch.equal(Planner.shift(plan, 0), plan)
