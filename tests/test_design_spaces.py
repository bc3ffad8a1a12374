"""Design spaces of the obstacle scene (issue 17): chains of K segments with a fixed total length and
free bars, their forward kinematics against MuJoCo's geometry, the learned model's obstacle nodes,
the smooth minibatch loss and its gradient, and design constraints."""

import math

import numpy as np
import pytest
import torch

from envs.obstacle.geometry import mujoco_segments
from envs.obstacle.goals import get_design_goal
from envs.obstacle.problem import DesignProblem, layout_strata, prior_map
from envs.obstacle.scene import (
    SceneConfig,
    design_fk,
    load_scene_file,
    make_model,
    obstacle_points,
    obstacle_segments,
)
from envs.obstacle.simulation import chain_as_bars, sample_design, smooth_designs
from gndesign.errors import ConfigError, GndesignError
from gndesign.particles import obstacle_nodes
from gndesign.specs import parse_constraints
from planners.design import GradientDesign
from tests.test_obstacle_problem import tiny_particle_model

SPACES = [("chain", 1), ("chain", 4), ("chain", 8), ("chain", 16), ("chain", 32), ("bars", 4), ("bars", 8),
          ("bars", 16)]


def scene(obstacle: str, K: int, **kw) -> SceneConfig:
    return load_scene_file(None, segments=K, obstacle=obstacle, **kw)


@pytest.mark.parametrize("obstacle, K", SPACES)
def test_forward_kinematics_equals_the_mujoco_geometry(obstacle, K):
    cfg = scene(obstacle, K)
    assert cfg.total_length == pytest.approx(SceneConfig().total_length)  # K is resolution, not reach
    assert cfg.design_dim == (3 * K if obstacle == "bars" else K)
    rng = np.random.default_rng(K)
    designs = [cfg.default_design()] + [sample_design(cfg, rng) for _ in range(3)]
    for d in designs:
        fk = obstacle_segments(torch.as_tensor(d)[None], cfg)[0].numpy()
        mj = mujoco_segments(make_model(cfg, d))
        assert mj.shape == (K, 2, 2)
        np.testing.assert_allclose(fk, mj, atol=1e-9)
        np.testing.assert_allclose(np.linalg.norm(fk[:, 1] - fk[:, 0], axis=-1), cfg.segment_length)
    # The scene checks of today hold for every design in the ranges: the MuJoCo capsules stay
    # above the floor and between the walls.
    lo, hi = cfg.joint_ranges().T
    corners = np.stack([lo, hi, (lo + hi) / 2])
    seg = obstacle_segments(torch.as_tensor(corners), cfg).numpy()
    assert (seg[..., 1] - cfg.obstacle_radius > cfg.floor).all()
    assert ((seg[..., 0] - cfg.obstacle_radius > cfg.x_min) & (seg[..., 0] + cfg.obstacle_radius < cfg.x_max)).all()


def test_obstacle_points_keep_the_training_density_and_match_the_models_own_nodes_at_k4():
    cfg4 = scene("chain", 4)
    d = torch.as_tensor(sample_design(cfg4, np.random.default_rng(0)))[None]
    # At the training K, points at the training spacing are the model's own nodes (9 per segment).
    native = obstacle_nodes(design_fk(d, cfg4), 9)
    torch.testing.assert_close(obstacle_points(d, cfg4, cfg4.segment_length / 9), native)
    for obstacle, K in SPACES:
        cfg = scene(obstacle, K)
        d = torch.as_tensor(sample_design(cfg, np.random.default_rng(K)))[None]
        pts = obstacle_points(d, cfg, 0.05)[0]
        seg = obstacle_segments(d, cfg)[0]
        gaps = (pts[1:] - pts[:-1]).norm(dim=-1)
        if obstacle == "chain":
            assert pts.shape[0] == 37 and (gaps <= 0.05 + 1e-9).all()  # the same for every K
            torch.testing.assert_close(pts[0], seg[0, 0])
            torch.testing.assert_close(pts[-1], seg[-1, 1])
        else:
            per = pts.reshape(K, -1, 2)
            torch.testing.assert_close(per[:, 0], seg[:, 0])
            torch.testing.assert_close(per[:, -1], seg[:, 1])


@pytest.mark.parametrize("kwargs, message", [
    ({"segments": 0}, "integer in"),
    ({"segments": 10**6}, "integer in"),
    ({"segments": 2.5}, "integer in"),
    ({"obstacle": "spline"}, "unknown obstacle"),
])
def test_bad_design_spaces_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        load_scene_file(None, **kwargs)


def test_more_segments_than_the_limit_are_refused_even_with_a_length():
    with pytest.raises(ConfigError, match="more than 256"):
        SceneConfig(segments=300, segment_length=0.001).validate()


@pytest.mark.parametrize("obstacle, K, shape", [("chain", 8, (4,)), ("chain", 8, (2, 9)), ("bars", 4, (4,)),
                                                ("bars", 4, (13,))])
def test_designs_of_the_wrong_length_are_refused(obstacle, K, shape):
    cfg = scene(obstacle, K)
    with pytest.raises(ConfigError, match="a design (of this scene )?is"):
        cfg.check_design(np.zeros(shape))
    with pytest.raises(ConfigError, match="coordinates"):
        obstacle_segments(torch.zeros(shape), cfg)


def test_bars_have_no_chain_vertices_and_no_datasets(tmp_path):
    from envs.obstacle.simulation import generate_obstacle_dataset

    cfg = scene("bars", 4)
    with pytest.raises(ConfigError, match="obstacle_segments"):
        design_fk(torch.as_tensor(cfg.default_design())[None], cfg)
    with pytest.raises(ConfigError, match="obstacle: chain"):
        generate_obstacle_dataset(cfg, tmp_path / "ds", 1, 0)


def test_smoothness_prior_per_space():
    chain = scene("chain", 8)
    straight = torch.as_tensor(chain.default_design())[None]
    bent = straight.clone()
    bent[0, 3] = 0.5
    opt = GradientDesign(*(torch.as_tensor(chain.joint_ranges()[:, i]) for i in (0, 1)), smoothness=1.0,
                         prior_map=prior_map(chain))
    assert float(opt.prior(straight)) == 0.0 and float(opt.prior(bent)) == pytest.approx(0.5**2)  # one bend
    bars = scene("bars", 4)
    d = torch.as_tensor(bars.default_design())[None]
    opt = GradientDesign(*(torch.as_tensor(bars.joint_ranges()[:, i]) for i in (0, 1)), smoothness=1.0,
                         prior_map=prior_map(bars))
    # Neighbouring bars of the hanging default differ only in height, by one bar length.
    assert float(opt.prior(d)) == pytest.approx(3 * bars.segment_length**2)


# ---------------------------------------------------------------------------------------------- the loss

SMALL = {"n_particles": 6, "frames": 4, "source_x": [-0.3, 0.0], "source_z": [2.0, 2.25]}


def small_problem(obstacle: str, K: int, **kw) -> tuple[SceneConfig, DesignProblem]:
    base = SceneConfig(**SMALL).to_dict()
    cfg = load_scene_file(None, base, segments=K, obstacle=obstacle)
    model = tiny_particle_model(cfg)
    problem = DesignProblem(cfg, get_design_goal("bin", cfg, target_x=-1.5), 0, model, **kw)
    # The tiny model's node gap (0.2) equals its connectivity radius: rigid bars would keep node
    # pairs exactly at the radius, where an edge comes and goes with rounding. Nodes a bit closer:
    problem.spacing = 0.17
    # Balls just above the obstacle's points, so that the rollout touches it.
    pts = obstacle_points(torch.as_tensor(cfg.default_design())[None], cfg, 0.1)[0]
    pick = pts[torch.linspace(0, len(pts) - 1, 6).long()]
    problem.init_t = pick + torch.tensor([0.06, 0.07], dtype=pick.dtype)
    return cfg, problem


@pytest.mark.parametrize("obstacle, K", [("chain", 8), ("bars", 3)])
def test_gradient_of_the_smooth_minibatch_loss_matches_finite_differences(obstacle, K):
    cfg, problem = small_problem(obstacle, K, last_frames=3, temperature=4.0, particles=4)
    problem.anneal(0.5)
    assert problem.temperature == pytest.approx(2.0) and len(problem.subset) == 4
    d0 = torch.as_tensor(cfg.default_design())[None]
    if obstacle == "bars":  # pull the hanging bars apart: coincident end nodes are a kink of the edge length
        d0 = d0.reshape(K, 3) + torch.tensor([[0.013, -0.021, 0.07]], dtype=d0.dtype) * torch.arange(K)[:, None]
        d0 = d0.reshape(1, -1)
    d = d0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(problem.learned_loss(d)["total"].sum(), d)
    assert grad.abs().max() > 1e-4
    # Central differences, all 2 D perturbed designs in one batch (rollouts are per design).
    eps, D = 1e-6, cfg.design_dim
    steps = torch.cat([torch.eye(D), -torch.eye(D)]).to(d0) * eps
    with torch.no_grad():
        plus, minus = problem.learned_loss(d0 + steps)["total"].split(D)
    torch.testing.assert_close(grad[0], (plus - minus) / (2 * eps), rtol=1e-4, atol=1e-7)
    # The full loss (the selection) uses every ball at temperature 1, whatever the schedule.
    full = problem.full_loss(d0)
    assert problem.learned_rollout(d0).shape[2] == cfg.n_particles
    assert torch.isfinite(full["total"]).all()


def test_the_screens_cheap_loss_is_the_full_loss_of_one_fixed_subset():
    cfg, problem = small_problem("chain", 4, last_frames=2, temperature=3.0, particles=4)
    subset = problem.screen_subset.clone()
    assert len(subset) == 4 and len(set(subset.tolist())) == 4
    designs = torch.as_tensor(cfg.default_design())[None] + torch.tensor([[0.0], [0.05]], dtype=torch.float64)
    first = problem.screen_loss(designs)
    problem.anneal(0.3)  # the descent's schedule moves its own subset and temperature, not the screen's
    assert torch.equal(problem.screen_subset, subset)
    again = problem.screen_loss(designs)
    torch.testing.assert_close(again["total"], first["total"])
    # It rolls out those balls alone: moving every other ball away changes nothing.
    keep = problem.init_t[subset].clone()
    problem.init_t = problem.init_t + 5.0
    problem.init_t[subset] = keep
    torch.testing.assert_close(problem.screen_loss(designs)["total"], first["total"])
    # With every ball in the minibatch there is no cheap stage: it is the full loss.
    _, every = small_problem("chain", 4, particles=None)
    assert every.screen_subset is None
    torch.testing.assert_close(every.screen_loss(designs)["total"], every.full_loss(designs)["total"])


def test_layout_strata_are_cells_of_columns_in_x_then_z():
    # A 10 x 10 grid in 25 strata: 5 columns of 2 x-values, each cut into 5 cells of 2 z-values.
    x, z = np.meshgrid(np.arange(10.0), np.arange(10.0), indexing="ij")
    grid = np.stack([x.ravel(), z.ravel()], 1)
    cells = {frozenset(map(tuple, grid[s])) for s in layout_strata(grid, 25)}
    want = {frozenset((float(i), float(j)) for i in (2 * a, 2 * a + 1) for j in (2 * b, 2 * b + 1))
            for a in range(5) for b in range(5)}
    assert cells == want
    # Any k: a partition of every ball into k non-empty groups, each inside one column band.
    rng = np.random.default_rng(0)
    layout = rng.uniform(size=(100, 2))
    for k in (1, 7, 25, 99, 100):
        strata = layout_strata(layout, k)
        assert len(strata) == k and min(map(len, strata)) >= 1
        assert sorted(np.concatenate(strata).tolist()) == list(range(100))
    cols = [layout[np.concatenate(layout_strata(layout, 7)[a:b]), 0] for a, b in ((0, 3), (3, 5), (5, 7))]
    assert cols[0].max() < cols[1].min() and cols[1].max() < cols[2].min()  # 3 columns: 3, 2 and 2 cells
    with pytest.raises(ConfigError, match="strata"):
        layout_strata(layout, 101)


def test_stratified_minibatches_take_one_ball_from_every_stratum():
    cfg, problem = small_problem("chain", 4, particles=3, minibatch="stratified")
    strata = layout_strata(problem.init, 3)
    drawn = set()
    for f in np.linspace(0, 1, 12):
        problem.anneal(f)
        subset = problem.subset.tolist()
        assert sorted(sum(i in s for i in subset) for s in strata) == [1, 1, 1]
        drawn.update(subset)
    assert drawn == set(range(cfg.n_particles))  # every ball gets its turn
    # The default draws uniformly: some minibatch takes two balls of one stratum.
    _, plain = small_problem("chain", 4, particles=3)
    counts = []
    for f in np.linspace(0, 1, 12):
        plain.anneal(f)
        counts.append(max(sum(i in s for i in plain.subset.tolist()) for s in strata))
    assert max(counts) >= 2


def test_gradient_design_anneals_and_selects_with_the_full_loss():
    cfg, problem = small_problem("chain", 4, last_frames=2, temperature=3.0, particles=3)
    seen = []

    def schedule(f):
        seen.append(f)
        problem.anneal(f)

    low, high = (torch.as_tensor(cfg.joint_ranges()[:, i]) for i in (0, 1))
    opt = GradientDesign(low, high, iterations=3, lr=0.05, restarts=2)
    result = opt.optimize(problem.learned_loss, torch.as_tensor(cfg.default_design()), schedule=schedule,
                          select_fn=problem.full_loss)
    assert seen == [0.0, 0.5, 1.0] and problem.temperature == 1.0
    # 3 steps of 2 restarts, then each restart's best and final design (4) scored with every ball.
    assert result.evaluations == 3 * 2 + 4
    full = problem.full_loss(result.design[None])
    assert result.objective == pytest.approx(float(full["total"][0] + opt.prior(result.design[None])[0]))


@pytest.mark.parametrize("kwargs, message", [
    ({"nodes": "capsules"}, "nodes must be"),
    ({"last_frames": 0}, "last_frames"),
    ({"temperature": 0.5}, "temperature"),
    ({"particles": 7}, "particles"),
    ({"minibatch": "sobol"}, "minibatch must be random or stratified"),
])
def test_bad_loss_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        small_problem("chain", 2, **kwargs)


# ---------------------------------------------------------------------------------------------- constraints

def test_constraint_penalties_are_zero_when_satisfied_and_verified_on_mujoco_geometry():
    cfg = scene("chain", 8)
    goal = get_design_goal("bin", cfg, target_x=1.5)
    d = torch.as_tensor(cfg.default_design())[None]  # hanging at x = -0.65, z in [0.1, 1.9]
    ok = parse_constraints(["box lower=0.5,0.0 upper=3.0,1.5 keep=out weight=100",  # a keep-out region
                            "wall axis=x upper=0.5 quantity=span margin=0",  # a footprint budget
                            "wall axis=x upper=2.0 quantity=length margin=0",  # a length budget (1.8 m)
                            f"box lower={cfg.source_x[0]},{cfg.source_z[0]} upper={cfg.source_x[1]},"
                            f"{cfg.source_z[1]} keep=out margin=0.1"])  # clearance around the source
    problem = DesignProblem(cfg, goal, 0, constraints=ok)
    assert float(problem.constraint_penalty(d)[0]) == 0.0
    mj = torch.as_tensor(mujoco_segments(make_model(cfg, d[0].numpy())))[None]
    assert float(problem.segments_penalty(mj)[0]) == 0.0
    # Swing the chain to the right into the keep-out box: penalized, on FK and on MuJoCo's capsules alike.
    swung = d.clone()
    swung[0, 0] = -0.3
    pen = problem.constraint_penalty(swung)
    mj = torch.as_tensor(mujoco_segments(make_model(cfg, swung[0].numpy())))[None]
    assert float(pen[0]) > 0 and float(problem.segments_penalty(mj)[0]) == pytest.approx(float(pen[0]))
    # ... and the penalty has a gradient that moves the design out.
    x = swung.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(problem.constraint_penalty(x).sum(), x)
    assert g.abs().sum() > 0
    budget = parse_constraints(["wall axis=x upper=1.0 quantity=length margin=0"])
    tight = DesignProblem(cfg, goal, 0, constraints=budget)
    assert float(tight.constraint_penalty(d)[0]) == pytest.approx(0.8**2)


def test_constraints_naming_what_the_scene_lacks_are_refused():
    cfg = scene("bars", 4)
    goal = get_design_goal("bin", cfg, target_x=1.5)
    with pytest.raises(ConfigError, match="quantity 'qpos'"):
        DesignProblem(cfg, goal, 0, constraints=parse_constraints(["disk center=1,1 radius=0.2 quantity=qpos"]))
    with pytest.raises(ConfigError, match="joint"):
        DesignProblem(cfg, goal, 0, constraints=parse_constraints(["joint_limit joints=hinge lower=0 upper=1"]))
    with pytest.raises(ConfigError):
        DesignProblem(cfg, goal, 0, constraints=parse_constraints(["disk center=1,1,1 radius=0.2"]))


def test_design_on_mujoco_with_constraints_reports_the_verdict(tmp_path):
    from workflows.design import design_obstacle

    base = SceneConfig(**dict(SMALL, frames=40)).to_dict()
    cfg = load_scene_file(None, base, segments=3, obstacle="bars")
    r = design_obstacle("bin", 1.5, optimizer="random", simulator="mujoco", iterations=1, cfg=cfg,
                        options={"budget": 4, "batch": 4}, constraints=["box lower=-3,0 upper=3,0.5 keep=out"],
                        out=str(tmp_path))
    assert r["obstacle"] == "bars" and r["design_dim"] == 9 and len(r["segments_xz"]) == 3
    assert r["constraints_met"] == (r["constraint_violation"] == 0.0)
    assert r["terms"]["constraints"] == pytest.approx(r["constraint_violation"])
    assert (tmp_path / "design.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(GndesignError, match="unknown loss options"):
        design_obstacle("bin", 1.5, cfg=cfg, loss={"batch": 3})
    assert math.isfinite(r["score"])


@pytest.mark.parametrize("K", [1, 4, 16, 32])
def test_smooth_designs_are_piecewise_linear_angle_profiles_within_the_ranges(K):
    cfg = scene("chain", K)
    d = smooth_designs(cfg, 50, torch.Generator().manual_seed(3))
    r = torch.as_tensor(cfg.joint_ranges())
    assert d.shape == (50, K) and bool(((d >= r[:, 0]) & (d <= r[:, 1])).all())
    torch.testing.assert_close(smooth_designs(cfg, 50, torch.Generator().manual_seed(3)), d)  # reproducible
    a = d.cumsum(-1)  # absolute segment angles
    lo, hi = cfg.first_angle_range
    assert bool(((a >= lo - 1e-9) & (a <= hi + 1e-9)).all())
    if K >= 16:  # no joint needs clipping: at most 4 pieces, so at most 3 kinks, each between two
        # segment centres (two non-zero second differences)
        kinks = (a.diff(dim=-1).diff(dim=-1).abs() > 1e-9).sum(-1)
        assert int(kinks.max()) <= 6 and int(kinks.min()) == 0  # some profiles are straight
        assert float(a.diff(dim=-1).abs().max()) > 0.1  # and some bend


@pytest.mark.parametrize("K", [4, 8])
def test_smooth_bar_designs_are_smooth_chains_cut_into_their_bars(K):
    """Bars lie where the same chain's segments lie (MuJoCo's capsules end to end), within the bars'
    ranges and clear of the source region."""
    bars, chain = scene("bars", K), scene("chain", K)
    d = smooth_designs(bars, 20, torch.Generator().manual_seed(5))
    c = smooth_designs(chain, 20, torch.Generator().manual_seed(5))
    r = torch.as_tensor(bars.joint_ranges())
    assert d.shape == (20, 3 * K) and bool(((d >= r[:, 0]) & (d <= r[:, 1])).all())
    inside = ((chain_as_bars(c, bars) - d).abs() < 1e-12).all(-1)
    unclipped = (design_fk(c, chain)[..., 1] >= r[1, 0] + bars.segment_length / 2).all(-1)  # no bar below its z range
    assert bool(inside.all()) and bool(unclipped.any())
    for b, ch in zip(d[unclipped], c[unclipped], strict=True):
        np.testing.assert_allclose(mujoco_segments(make_model(bars, b.numpy())),
                                   obstacle_segments(ch[None], chain)[0].numpy(), atol=1e-9)
        assert bars.design_clearance(b.numpy()) > 0
    with pytest.raises(ConfigError, match="bars scene"):
        chain_as_bars(c, chain)


def test_damped_rollouts_keep_the_positions_and_scale_the_gradient_through_time():
    from envs.obstacle.problem import damped_rollout

    cfg, problem = small_problem("chain", 2)
    model = problem.node_model.double()
    init = problem.init_t.double()[None].expand(2, -1, -1)
    frames, chunk = 4, model.history + 1  # two chunks: the second one short
    designs = torch.as_tensor(cfg.default_design())[None] + torch.tensor([[0.0], [0.03]], dtype=torch.float64)

    def rollout(factor, x):
        obstacle = problem.model_obstacle(x).double()
        if factor is None:
            return model.rollout(init, obstacle, frames)
        return damped_rollout(model, init, obstacle, frames, factor, chunk=chunk)

    def grad(factor):
        x = designs.clone().requires_grad_(True)
        pos = rollout(factor, x)
        (g,) = torch.autograd.grad(pos[:, -1, :, 0].sum(), x)
        return pos.detach(), g

    plain, g_exact = grad(None)
    for factor in (1.0, 0.5, 0.0):
        pos, g = grad(factor)
        torch.testing.assert_close(pos, plain, rtol=1e-12, atol=1e-12)  # the same positions
        if factor == 1.0:
            torch.testing.assert_close(g, g_exact)  # undamped: the exact gradient
    _, g0 = grad(0.0)
    _, g_half = grad(0.5)
    assert not torch.allclose(g0, g_exact)  # the paths through the chunk boundary carry part of it
    # The gradient is linear in the factor: the paths that cross the one boundary, scaled.
    torch.testing.assert_close(g_half, g0 + 0.5 * (g_exact - g0))
    # A design problem's horizon is a positive number of frames.
    with pytest.raises(ConfigError, match="grad_horizon"):
        small_problem("chain", 2, grad_horizon=0)
