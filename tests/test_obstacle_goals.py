"""The obstacle scene's design goals at their limits: bin and side losses and scores, the benchmark targets."""

import dataclasses

import numpy as np
import pytest
import torch

from envs.obstacle.goals import BENCHMARK_TARGETS, BinGoal, SideGoal, get_design_goal
from envs.obstacle.scene import SceneConfig
from envs.obstacle.simulation import simulate
from gndesign.errors import ConfigError

CFG = SceneConfig()


def test_default_design_scores_low_on_the_benchmark_targets():
    cfg = dataclasses.replace(CFG, n_particles=50)
    final = simulate(cfg, cfg.default_design(), [0, 1])[:, -1]
    assert len(BENCHMARK_TARGETS) >= 5
    for x in BENCHMARK_TARGETS:
        assert BinGoal(cfg, x).score(final).max() < 0.2, x


def test_a_ramp_redirects_the_stream_into_a_far_bin():
    # A design found by a random search on MuJoCo (the full scene scores it above 0.8).
    cfg = dataclasses.replace(CFG, n_particles=50)
    final = simulate(cfg, np.array([-0.431, 0.233, -0.071, -0.358]), 0)[:, -1]
    assert BinGoal(cfg, 1.8).score(final)[0] > 0.6
    assert BinGoal(cfg, 1.8).score(simulate(cfg, cfg.default_design(), 0)[:, -1])[0] < 0.1


def _positions(xs, z=0.05):
    xs = torch.as_tensor(xs, dtype=torch.float64)
    return torch.stack([xs, torch.full_like(xs, z)], -1)


def test_bin_goal_at_its_limits():
    goal = BinGoal(CFG, 1.5)
    lo, hi = goal.region
    assert hi - lo == pytest.approx(CFG.width / 5)
    inside = _positions(np.linspace(lo + 0.2, hi - 0.2, 50))[None]
    outside = _positions(np.linspace(-2.5, 0.0, 50))[None]
    edge = _positions(np.linspace(lo + 1e-9, hi - 1e-9, 50))[None]
    assert goal.score(inside)[0] == 1.0 and goal.score(outside)[0] == 0.0 and goal.score(edge)[0] == 1.0
    l_in, l_out = goal.loss(inside).item(), goal.loss(outside).item()
    assert 0 <= l_in < 0.03 and l_out > 1.0
    # Halfway: loss between the two, monotone in the number of balls inside.
    half = torch.cat([inside[:, :25], outside[:, :25]], 1)
    assert l_in < goal.loss(half).item() < l_out and goal.score(half)[0] == 0.5
    # Far balls still get a gradient towards the bin.
    far = outside.clone().requires_grad_(True)
    goal.loss(far).sum().backward()
    assert (far.grad[0, :, 0] < 0).all()


def test_side_goal_at_its_limits():
    right, left = SideGoal(CFG, "right"), SideGoal(CFG, "left")
    at_right = _positions(np.full(30, CFG.x_max - 0.1))[None]
    at_left = _positions(np.full(30, CFG.x_min + 0.1))[None]
    assert right.score(at_right)[0] == 1.0 and right.score(at_left)[0] == 0.0
    assert left.score(at_left)[0] == 1.0 and left.score(at_right)[0] == 0.0
    assert right.loss(at_right).item() < 0.02 and right.loss(at_left).item() > 0.98
    assert get_design_goal("side", CFG).region == right.region


def test_goals_round_trip_and_refuse_bad_targets():
    goal = get_design_goal("bin", CFG, target_x=2.0, width=0.8)
    assert goal.to_dict()["width"] == 0.8 and goal.region == pytest.approx((1.6, 2.4))
    with pytest.raises(ConfigError, match="outside the floor"):
        BinGoal(CFG, 2.8)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="target_x must be a finite number"):
            BinGoal(CFG, bad)
    with pytest.raises(ConfigError, match="a fifth of the floor"):
        BinGoal(CFG, 0.0, width=1.5)
    with pytest.raises(ConfigError, match="unknown obstacle task"):
        get_design_goal("funnel", CFG)
    with pytest.raises(ConfigError, match="side must be"):
        SideGoal(CFG, "up")
