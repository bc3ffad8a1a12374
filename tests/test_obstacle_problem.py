"""A design problem on the obstacle scene (envs.obstacle.problem) and the `gndesign design` command
wired over it, with a tiny particle model: gradients, feasibility, end to end."""

import json
import math

import numpy as np
import pytest
import torch

from envs.obstacle.goals import get_design_goal
from envs.obstacle.problem import DesignProblem
from envs.obstacle.scene import SceneConfig, design_fk
from envs.obstacle.simulation import simulate
from planners.design import GradientDesign
from workflows.design import LOSS_DEFAULTS

SMALL = {"n_particles": 6, "segments": 2, "frames": 60, "source_x": [-0.3, 0.0], "source_z": [2.0, 2.25]}


def small_scene():
    return SceneConfig(**SMALL).validate()


def tiny_particle_model(cfg, dtype=torch.float64):
    """An untrained tiny simulator with order-one frame-unit statistics (gradients are not tiny)."""
    from gndesign.config import ParticleModelConfig
    from gndesign.particles import ParticleSimulator

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
    cfg = SceneConfig(**dict(SMALL, frames=4)).validate()
    problem = DesignProblem(cfg, get_design_goal("bin", cfg, target_x=-1.5), 0, tiny_particle_model(cfg))
    v = design_fk(torch.as_tensor(cfg.default_design())[None], cfg)[0]
    mid = (v[1:] + v[:-1]) / 2
    problem.init_t = torch.cat([mid + torch.tensor([0.0, 0.08]), mid + torch.tensor([0.05, 0.12]),
                                mid + torch.tensor([-0.03, 0.2])])
    return cfg, problem


def test_design_gradient_through_the_learned_rollout_matches_finite_differences(near_obstacle):
    # The whole chain the optimizer differentiates: design -> FK -> obstacle nodes -> rollout -> goal loss.
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
    from gndesign.checkpoints import save_checkpoint
    from gndesign.config import ParticleTrainConfig, RunConfig

    cfg = small_scene()
    model = tiny_particle_model(cfg, torch.float32)
    run = RunConfig(model=model.config, train=ParticleTrainConfig())
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, model, run, step=0)
    scene = tmp_path / "scene.json"
    scene.write_text(json.dumps(SMALL))
    return path, scene


def test_design_command_end_to_end_with_a_learned_model(tiny_checkpoint, tmp_path, capsys):
    import mujoco

    from workflows.cli import main

    ckpt, scene = tiny_checkpoint
    out = tmp_path / "out"
    argv = ["design", "--target-x", "-1.5", "--model", str(ckpt), "--scene", str(scene), "--steps", "2",
            "--out", str(out), "--json", "--set", "optimizer.restarts=1"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "design.json").read_text())
    assert printed["score"] == saved["score"] and 0.0 <= saved["score"] <= 1.0
    # 2 steps, then the restart's best and its final design scored again with every ball (the selection).
    assert saved["evaluations"] == 4 and saved["learned_calls"] == 4 and saved["mujoco_calls"] == 1
    assert len(saved["history"]["total"]) == 3 and "predicted_score" in saved and saved["model_error"] >= 0
    assert saved["loss_options"] == dict(LOSS_DEFAULTS, particles=None)  # 25 of the scene's 6 balls: all
    lo, hi = np.array(small_scene().joint_ranges()).T
    assert np.all((np.array(saved["design"]) >= lo) & (np.array(saved["design"]) <= hi))
    model = mujoco.MjModel.from_xml_path(str(out / "design.xml"))
    assert model.ngeom == 3 + 2 + 6  # floor, walls, 2 segments, 6 balls
    for name in ("design.png", "loss.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_design_command_passes_loss_options_to_the_gradient(tiny_checkpoint, tmp_path, capsys):
    from workflows.cli import main

    ckpt, scene = tiny_checkpoint
    out = tmp_path / "out"
    argv = ["design", "--target-x", "-1.5", "--model", str(ckpt), "--scene", str(scene), "--steps", "2",
            "--out", str(out), "--json", "--set", "optimizer.restarts=1", "--set", "loss.minibatch=stratified",
            "--set", "loss.particles=3", "--set", "loss.last_frames=1"]
    assert main(argv) == 0
    saved = json.loads((out / "design.json").read_text())
    assert saved["loss_options"] == dict(LOSS_DEFAULTS, minibatch="stratified", particles=3, last_frames=1)
    assert saved["options"]["restarts"] == 1 and "minibatch" not in saved["options"]


def test_design_on_mujoco_scores_what_it_designed(tmp_path):
    from workflows.design import design_obstacle

    cfg = small_scene()
    r = design_obstacle("bin", -1.5, optimizer="cem", simulator="mujoco", iterations=2, cfg=cfg,
                        options={"population": 6, "elites": 2}, out=str(tmp_path))
    assert r["evaluations"] == 12 and r["mujoco_calls"] == 13 and r["learned_calls"] == 0
    # The reported score is MuJoCo's for the returned design, from the same layout (seed 0).
    goal = get_design_goal("bin", cfg, target_x=-1.5)
    assert r["score"] == pytest.approx(float(goal.score(simulate(cfg, np.array(r["design"]), 0)[:, -1])[0]))
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
    from workflows.cli import main

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


def test_designs_reaching_into_the_source_are_penalized_not_simulated():
    cfg = SceneConfig(**dict(SMALL, segments=4)).validate()
    problem = DesignProblem(cfg, get_design_goal("bin", cfg, target_x=1.5), 0)
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
