"""Design optimizers (planners/design.py): toy optima, bounds, the squash, the NaN guard, the prior."""

import json
import logging
import math

import numpy as np
import pytest
import torch

from gndesign.errors import GndesignError
from planners.design import CEMDesign, GradientDesign, RandomDesign, Squash, make_design_optimizer

LOW = torch.tensor([-1.0, -1.0, -0.5, 0.0])
HIGH = torch.tensor([1.0, 2.0, 0.5, 1.0])
OPTIMUM = torch.tensor([0.3, -0.6, 0.5, 1.0])  # the last two sit on their upper bounds: the box's optimum


def quadratic(target):
    def loss(x):
        d = x - target.to(x)
        return {"total": d.square().sum(-1), "distance": d.norm(dim=-1)}
    return loss


def track_bounds(loss_fn, seen):
    def loss(x):
        seen.append(x.detach().clone())
        return loss_fn(x)
    return loss


TARGET = torch.tensor([0.3, -0.6, 0.9, 1.7])  # outside the box in the last two coordinates
OPTIMIZERS = {
    "gradient": lambda: GradientDesign(LOW, HIGH, iterations=150, lr=0.1, seed=0),
    "gradient-normalized": lambda: GradientDesign(LOW, HIGH, iterations=150, lr=0.2, lr_decay=0.02, backtrack=0.01,
                                                  grow=1.5, update="normalized", seed=0),
    "cem": lambda: CEMDesign(LOW, HIGH, population=32, elites=6, budget=32 * 25, seed=0),
    "random": lambda: RandomDesign(LOW, HIGH, budget=20000, batch=2000, seed=0),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_finds_the_box_optimum_and_never_leaves_the_bounds(name):
    seen = []
    opt = OPTIMIZERS[name]()
    result = opt.optimize(track_bounds(quadratic(TARGET), seen))
    xs = torch.cat(seen)
    assert bool(((xs >= LOW.double()) & (xs <= HIGH.double())).all())
    assert bool(((result.design >= LOW.double()) & (result.design <= HIGH.double())).all())
    tol = {"gradient": 0.02, "gradient-normalized": 0.02, "cem": 0.02, "random": 0.25}[name]
    assert (result.design - OPTIMUM.double()).abs().max() < tol, result.design
    # The objective is the best one seen, the history records every term once per iteration.
    assert result.objective == pytest.approx(min(result.history["objective"]))
    assert result.history["best"] == sorted(result.history["best"], reverse=True)
    assert set(result.history) >= {"total", "distance", "prior", "objective", "best"}
    assert result.evaluations == xs.shape[0] and result.optimizer == name.split("-")[0]
    assert result.terms["total"] == pytest.approx(result.objective)


def test_budgets_count_designs_scored():
    loss = quadratic(TARGET)
    assert GradientDesign(LOW, HIGH, iterations=7, restarts=3).optimize(loss).evaluations == 3 * 8
    assert CEMDesign(LOW, HIGH, population=16, budget=100).optimize(loss).evaluations == 16 * 6
    assert RandomDesign(LOW, HIGH, budget=70, batch=32).optimize(loss).evaluations == 70


def test_squash_maps_onto_the_box_with_the_right_gradient():
    sq = Squash(LOW.double(), HIGH.double())
    z = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sq, (z,))
    x = sq(torch.tensor([[-50.0, 50.0, 0.0, 3.0]], dtype=torch.float64))
    assert bool(((x >= LOW) & (x <= HIGH)).all())
    assert torch.allclose(x[0, 2], torch.tensor(0.0, dtype=torch.float64))
    inner = LOW.double() + (HIGH.double() - LOW.double()) * torch.rand(6, 4, dtype=torch.float64)
    assert torch.allclose(sq(sq.inverse(inner)), inner, atol=1e-10)
    assert torch.isfinite(sq.inverse(torch.stack([LOW, HIGH]).double())).all()  # bounds themselves: finite z


def test_nan_guard_resets_and_recovers(caplog):
    calls = {"n": 0}
    target = quadratic(torch.tensor([0.3, -0.6, 0.2, 0.4]))

    def flaky(x):  # the simulator blows up on a few iterations (for one restart or all)
        calls["n"] += 1
        terms = target(x)
        if calls["n"] in (3, 4, 10):
            terms["total"] = terms["total"] * torch.tensor(float("nan"))
        elif calls["n"] == 6:
            terms["total"] = terms["total"] + 0 * torch.where(torch.arange(len(x)) == 0, math.inf, 0.0)
        return terms

    with caplog.at_level(logging.WARNING, logger="planners.design"):
        result = GradientDesign(LOW, HIGH, iterations=120, lr=0.1, restarts=2).optimize(flaky)
    assert "non-finite" in caplog.text
    assert torch.isfinite(result.design).all() and math.isfinite(result.objective)
    assert (result.design - torch.tensor([0.3, -0.6, 0.2, 0.4], dtype=torch.float64)).abs().max() < 0.02


@pytest.mark.parametrize("clip", [1.0, math.inf])
def test_gradient_clipping_survives_a_gradient_spike(clip):
    # One iteration's gradient is 1e8 times too large (a simulator glitch). Unclipped, it fills
    # Adam's second moment and freezes the design for hundreds of steps; clipped, nothing happens.
    calls = {"n": 0}
    target = torch.tensor([0.3, -0.6, 0.2, 0.4])

    def spiky(x):
        calls["n"] += 1
        total = quadratic(target)(x)["total"]
        return {"total": total * (1e8 if calls["n"] == 2 else 1.0)}

    result = GradientDesign(LOW, HIGH, iterations=100, lr=0.1, grad_clip=clip).optimize(spiky)
    error = (result.design - target.double()).abs().max()
    assert (error < 0.02) if clip == 1.0 else (error > 0.1)


def test_smoothness_prior_straightens_the_design():
    low, high = -torch.ones(6), torch.ones(6)
    zigzag = torch.tensor([0.8, -0.8, 0.8, -0.8, 0.8, -0.8])
    loss = lambda x: {"total": 0.1 * (x - zigzag.to(x)).square().sum(-1)}  # noqa: E731
    plain = GradientDesign(low, high, iterations=200, lr=0.1).optimize(loss).design
    smooth_opt = GradientDesign(low, high, iterations=200, lr=0.1, smoothness=1.0)
    smooth = smooth_opt.optimize(loss)
    assert plain.diff().abs().mean() > 1.4
    assert smooth.design.diff().abs().mean() < 0.5
    assert smooth.terms["prior"] == pytest.approx(float(smooth_opt.prior(smooth.design[None])[0]))
    assert smooth.terms["objective"] == pytest.approx(smooth.terms["total"] + smooth.terms["prior"])


def test_bad_input():
    with pytest.raises(GndesignError, match="unknown optimizer"):
        make_design_optimizer("adam", LOW, HIGH)
    with pytest.raises(ValueError, match="low < high"):
        GradientDesign(HIGH, LOW)
    with pytest.raises(ValueError, match="outside the bounds"):
        GradientDesign(LOW, HIGH).optimize(quadratic(TARGET), init=HIGH + 1)
    with pytest.raises(ValueError, match="less than one population"):
        CEMDesign(LOW, HIGH, population=32, budget=10)
    with pytest.raises(ValueError, match="'total'"):
        RandomDesign(LOW, HIGH, budget=4).optimize(lambda x: {"loss": x.sum(-1)})
    assert isinstance(make_design_optimizer("cem", LOW, HIGH, population=8, elites=2), CEMDesign)


@pytest.mark.parametrize("make", [lambda: CEMDesign(LOW, HIGH, population=8, iterations=10**6, max_seconds=0.05),
                                  lambda: RandomDesign(LOW, HIGH, budget=10**9, batch=8, max_seconds=0.05)])
def test_time_budget_stops_sampling(make):
    import time

    def slow(x):
        time.sleep(0.01)
        return quadratic(TARGET)(x)

    result = make().optimize(slow)
    assert 8 <= result.evaluations <= 8 * 10 and result.seconds < 1.0


def test_prior_map_penalizes_differences_of_the_mapped_design():
    opt = GradientDesign(LOW, HIGH, smoothness=2.0, prior_map=lambda x: x.cumsum(-1))
    x = torch.tensor([[0.5, 0.1, -0.2, 0.3]], dtype=torch.float64)
    assert float(opt.prior(x)[0]) == pytest.approx(2.0 * (0.1**2 + 0.2**2 + 0.3**2))


# ----------------------------------------------------------------------------------------------
# On the obstacle scene: the wiring of `gndesign design` (gndesign.cli) with a tiny particle model
# ----------------------------------------------------------------------------------------------

SMALL = {"n_particles": 6, "segments": 2, "frames": 60, "source_x": [-0.3, 0.0], "source_z": [2.0, 2.25]}


def small_scene():
    from envs.obstacle_scene import SceneConfig

    return SceneConfig(**SMALL).validate()


def tiny_particle_model(cfg, dtype=torch.float64):
    """An untrained tiny simulator with order-one frame-unit statistics (gradients are not tiny)."""
    from gndesign.particles import ParticleModelConfig, ParticleSimulator

    torch.manual_seed(0)
    mc = ParticleModelConfig(latent_size=16, mlp_hidden_size=16, mlp_layers=1, message_passing_steps=2, history=2,
                             radius=4.0, obstacle_points=3)
    model = ParticleSimulator(mc, cfg.to_dict()).to(dtype)
    gen = torch.Generator().manual_seed(0)
    hist = torch.randn(4, 3, 6, 2, dtype=dtype, generator=gen) * 0.01
    model.accumulate_statistics(hist, hist[:, -1] + torch.randn(4, 6, 2, dtype=dtype, generator=gen) * 0.01)
    return model


@pytest.fixture
def near_obstacle():
    """A bin problem whose particles start right above the default obstacle, rolled out 4 frames."""
    from envs.design_problem import DesignScene
    from envs.obstacle_scene import SceneConfig, design_fk, get_obstacle_task

    cfg = SceneConfig(**dict(SMALL, frames=4)).validate()
    problem = DesignScene(cfg, get_obstacle_task("bin", cfg, target_x=-1.5), 0, tiny_particle_model(cfg))
    v = design_fk(torch.as_tensor(cfg.default_design())[None], cfg)[0]
    mid = (v[1:] + v[:-1]) / 2
    problem.init_t = torch.cat([mid + torch.tensor([0.0, 0.08]), mid + torch.tensor([0.05, 0.12]),
                                mid + torch.tensor([-0.03, 0.2])])
    return cfg, problem


def test_design_gradient_through_the_learned_rollout_matches_finite_differences(near_obstacle):
    # The whole chain the optimizer differentiates: design -> FK -> obstacle nodes -> rollout -> task loss.
    cfg, problem = near_obstacle
    d0 = torch.as_tensor(cfg.default_design())[None]
    d = d0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(problem.learned_loss(d)["total"].sum(), d)
    assert grad.abs().max() > 1e-3
    eps = 1e-6
    with torch.no_grad():
        fd = torch.stack([(problem.learned_loss(d0 + eps * e)["total"] - problem.learned_loss(d0 - eps * e)["total"])
                          / (2 * eps) for e in torch.eye(cfg.segments, dtype=torch.float64)], -1)
    torch.testing.assert_close(grad, fd, rtol=1e-5, atol=1e-8)
    assert problem.learned_calls == 1 + 2 * cfg.segments


def test_short_gradient_design_improves_the_learned_objective(near_obstacle):
    cfg, problem = near_obstacle
    low, high = (torch.as_tensor(cfg.joint_ranges()[:, i]) for i in (0, 1))
    result = GradientDesign(low, high, iterations=6, lr=0.01).optimize(problem.learned_loss,
                                                                       torch.as_tensor(cfg.default_design()))
    total = result.history["total"]
    assert all(b < a for a, b in zip(total, total[1:], strict=False))  # descends at every step
    assert result.objective < total[0] - 1e-3
    assert {"soft_inside", "interval_distance", "score"} <= set(result.terms)


@pytest.fixture
def tiny_checkpoint(tmp_path):
    from gndesign.particles import ParticleRunConfig, save_particle_checkpoint

    cfg = small_scene()
    model = tiny_particle_model(cfg, torch.float32)
    run = ParticleRunConfig()
    run.model = model.config
    path = tmp_path / "tiny.pt"
    save_particle_checkpoint(path, model, run, step=0)
    scene = tmp_path / "scene.json"
    scene.write_text(json.dumps(SMALL))
    return path, scene


def test_design_command_end_to_end_with_a_learned_model(tiny_checkpoint, tmp_path, capsys):
    import mujoco

    from gndesign.cli import main

    ckpt, scene = tiny_checkpoint
    out = tmp_path / "out"
    argv = ["design", "--target-x", "-1.5", "--model", str(ckpt), "--scene", str(scene), "--iterations", "2",
            "--out", str(out), "--json"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "design.json").read_text())
    assert printed["score"] == saved["score"] and 0.0 <= saved["score"] <= 1.0
    assert saved["evaluations"] == 3 and saved["learned_calls"] == 3 and saved["mujoco_calls"] == 1
    assert len(saved["history"]["total"]) == 3 and "predicted_score" in saved and saved["model_error"] >= 0
    lo, hi = np.array(small_scene().joint_ranges()).T
    assert np.all((np.array(saved["design"]) >= lo) & (np.array(saved["design"]) <= hi))
    model = mujoco.MjModel.from_xml_path(str(out / "design.xml"))
    assert model.ngeom == 3 + 2 + 6  # floor, walls, 2 segments, 6 balls
    for name in ("design.png", "loss.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_design_on_mujoco_scores_what_it_designed(tmp_path):
    from envs.obstacle_scene import get_obstacle_task, simulate
    from gndesign.cli import design_obstacle

    cfg = small_scene()
    r = design_obstacle("bin", -1.5, optimizer="cem", simulator="mujoco", iterations=2, cfg=cfg,
                        options={"population": 6, "elites": 2}, out=str(tmp_path))
    assert r["evaluations"] == 12 and r["mujoco_calls"] == 13 and r["learned_calls"] == 0
    # The reported score is MuJoCo's for the returned design, from the same layout (seed 0).
    task = get_obstacle_task("bin", cfg, target_x=-1.5)
    assert r["score"] == pytest.approx(float(task.score(simulate(cfg, np.array(r["design"]), 0)[:, -1])[0]))
    assert r["score"] >= r["score_initial"] or r["objective"] <= r["history"]["objective"][0]


@pytest.mark.parametrize("extra, message", [
    (["--target-x", "2.9", "--simulator", "mujoco", "--optimizer", "cem"], "outside the floor"),
    (["--target-x", "1.5", "--simulator", "mujoco", "--optimizer", "adam"], "unknown optimizer"),
    (["--target-x", "1.5", "--simulator", "mujoco"], "differentiable"),
    (["--target-x", "1.5", "--simulator", "mujoco", "--optimizer", "cem", "--set", "optimizer.elites=99"], "elites"),
    (["--target-x", "1.5", "--model", "{ckpt}", "--scene", "{other}"], "another scene"),
    (["--target-x", "1.5", "--model", "{tmp}/missing.pt"], "missing.pt"),
])
def test_design_bad_input_is_a_one_line_error(extra, message, tiny_checkpoint, tmp_path, capsys):
    from gndesign.cli import main

    ckpt, scene = tiny_checkpoint
    other = tmp_path / "other.json"
    other.write_text(json.dumps(dict(SMALL, particle_radius=0.045)))
    argv = ["design", "--scene", str(scene), "--out", str(tmp_path / "out")] + [
        a.replace("{ckpt}", str(ckpt)).replace("{other}", str(other)).replace("{tmp}", str(tmp_path)) for a in extra]
    if "{other}" in extra:
        argv.remove(str(scene)), argv.remove("--scene")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gndesign: error:") and message in err and "\n" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_infeasible_designs_never_become_the_result(name):
    # The unconstrained optimum (TARGET's box projection) is infeasible: x[0] > 0 is forbidden,
    # with a penalty that pulls designs back (iterates may still cross: only feasible ones count).
    def loss(x):
        terms = quadratic(TARGET)(x)
        terms["total"] = terms["total"] + 1.0 * torch.relu(x[:, 0])
        terms["feasible"] = (x[:, 0] <= 0).to(x.dtype)
        return terms

    result = OPTIMIZERS[name]().optimize(loss)
    assert result.design[0] <= 0 and result.terms["feasible"] == 1.0
    assert abs(float(result.design[0])) < 0.3 and (result.design[1:] - OPTIMUM[1:].double()).abs().max() < 0.3


def test_designs_reaching_into_the_source_are_penalized_not_simulated():
    from envs.design_problem import DesignScene
    from envs.obstacle_scene import SceneConfig, get_obstacle_task

    cfg = SceneConfig(**dict(SMALL, segments=4)).validate()
    problem = DesignScene(cfg, get_obstacle_task("bin", cfg, target_x=1.5), 0)
    designs = torch.tensor([cfg.default_design().tolist(), [-0.05, 1.5, 0.0, 0.0]], dtype=torch.float64)
    assert problem.clearance(designs)[0] > 0 > problem.clearance(designs)[1]
    terms = problem.mujoco_loss(designs)
    assert problem.mujoco_calls == 1  # only the valid design was simulated
    assert terms["feasible"].tolist() == [1.0, 0.0] and terms["intrusion"][1] > 0 == terms["intrusion"][0]
    assert terms["total"][1] > 2.0 > terms["total"][0] and math.isnan(terms["score"][1])
    # The differentiable clearance behind the penalty agrees with the exact one (up to the sampling).
    rng = np.random.default_rng(0)
    r = cfg.joint_ranges()
    d = torch.as_tensor(rng.uniform(r[:, 0], r[:, 1], (200, 4)))
    exact = problem.clearance(d)
    near = torch.as_tensor((problem.margin - exact) / problem.margin).clamp(min=0)
    pen = problem.intrusion(d)
    shallow = torch.as_tensor(exact > -0.05)  # deeper in, the penalty measures depth, the exact gap does not
    assert torch.allclose(pen[shallow], near[shallow], atol=0.01 / problem.margin)
    assert bool((pen[torch.as_tensor(exact <= 0)] > 1).all())


def test_generate_obstacle_scene_command(tmp_path, capsys):
    from gndesign.cli import main
    from gndesign.datasets.particles import ParticleDataset

    scene = tmp_path / "scene.yaml"
    scene.write_text("n_particles: 6\nsegments: 2\nsource_x: [-0.3, 0.0]\nsource_z: [2.0, 2.25]\n")
    argv = ["generate", "obstacle-scene", "--scene", str(scene), "--episodes", "3", "--steps", "12", "--seed", "1",
            "--out", str(tmp_path / "data")]
    assert main(argv) == 0 and "3 episodes" in capsys.readouterr().out
    ds = ParticleDataset.load(tmp_path / "data")
    assert (len(ds), ds.steps, ds.num_particles, ds.num_segments) == (3, 12, 6, 2)
    assert main(argv) == 2 and "not empty" in capsys.readouterr().err  # refuses to overwrite
    assert main(["generate", "cartpole", "--episodes", "1", "--out", str(tmp_path / "c")]) == 2
    assert "--steps" in capsys.readouterr().err


@pytest.mark.parametrize("backtrack", [0.0, 0.1])
def test_backtracking_returns_from_a_plateau(backtrack):
    # A valley next to a cliff onto a flat plateau (as when balls end up stuck on the obstacle):
    # momentum carries Adam over the edge, where the gradient vanishes and it stays for good.
    low, high = -torch.ones(1), torch.ones(1)

    def cliff(x):
        return {"total": torch.where(x[:, 0] < 0.6, (x[:, 0] - 0.5).square(), torch.ones_like(x[:, 0]))}

    opt = GradientDesign(low, high, iterations=60, lr=0.3, backtrack=backtrack)
    result = opt.optimize(cliff, torch.tensor([-0.9]))
    error = abs(float(result.design[0]) - 0.5)
    assert (error < 0.01 and opt.backtracks > 0) if backtrack else (error > 0.02 and opt.backtracks == 0)
