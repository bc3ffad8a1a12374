"""`gndesign constrain` and `gndesign train --family cgns` end to end, bad input, and the one
constraint library acting on task quantities (planner costs) and particle quantities (design
penalties)."""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from gndesign.checkpoints import read_checkpoint
from workflows.cli import main

SCENE = {"n_particles": 6, "frames": 12}
TINY = ["model.latent_size=8", "model.mlp_hidden_size=8", "model.message_passing_steps=1", "model.history=2",
        "solver.iterations=2", "train.batch_size=2", "train.stats_transitions=8", "train.log_every=2",
        "train.eval_every=2", "train.checkpoint_every=2"]


@pytest.fixture(scope="module")
def particle_cgns(tmp_path_factory):
    """A tiny particle C-GNS trained for 4 steps through the CLI on 3 MuJoCo episodes of 6 balls."""
    root = tmp_path_factory.mktemp("cgns")
    scene = root / "scene.yaml"
    scene.write_text(yaml.safe_dump(SCENE))
    assert main(["generate", "obstacle-scene", "--scene", str(scene), "--episodes", "3", "--seed", "0",
                 "--out", str(root / "data")]) == 0
    args = ["train", "--family", "cgns", "--data", str(root / "data"), "--out", str(root / "run"), "--steps", "4",
            "--quiet"]
    for item in TINY:
        args += ["--set", item]
    assert main(args) == 0
    return root / "run/checkpoints/latest.pt", scene


def run_json(capsys, args):
    code = main(args)
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def test_train_cgns_through_the_cli_writes_a_cgns_checkpoint(particle_cgns):
    blob = read_checkpoint(particle_cgns[0])
    assert blob["family"] == "cgns-particles" and blob["step"] == 4
    assert blob["config"]["solver"]["iterations"] == 2


def test_constrain_particles_holds_pins_and_pushes_particles_out_of_a_disk(particle_cgns, capsys, tmp_path):
    from envs.obstacle.scene import SceneConfig, initial_positions

    ckpt, scene = particle_cgns
    init = initial_positions(SceneConfig(**SCENE), 0)
    r = 0.05
    # A disk just below particle 0 (it starts 2 radii deep inside), pins on the two particles
    # farthest from it (outside the disk).
    cx, cz = init[0, 0], init[0, 1] - r
    far = np.argsort(np.linalg.norm(init - init[0], axis=1))[-2:].tolist()
    disk = f"disk center={cx:.4f},{cz:.4f} radius={2 * r} weight=100"
    pin = f"pin weight=100 nodes={far[0]},{far[1]}"
    res = run_json(capsys, ["constrain", "--model", str(ckpt), "--system", "obstacle", "--scene", str(scene),
                            "--frames", "8", "--iterations", "10", "--constraint", disk, "--constraint", pin,
                            "--compare", "--json", "--plot", str(tmp_path / "c.png"), "--video",
                            str(tmp_path / "c.gif")])
    assert res["particles"] == 6 and res["steps"] == 8 and res["iterations"] == 10
    assert res["constraints"] == [disk.replace("weight=100", "keep=out weight=100"), pin]
    d, p = res["violations"]["constraints"]
    assert d["spec"]["margin"] == r  # bound: the particles' surface stays out
    assert len(d["per_step_max"]) == 9
    assert d["per_step_max"][0] == pytest.approx(2 * r, abs=1e-4)  # frame 0 is given: 2 radii deep
    assert max(d["per_step_max"][1:]) < 0.1 * r  # pushed out at the first step and kept out
    assert d["max_radii"] == pytest.approx(d["max"] / r)
    assert p["max"] < 1e-4  # metres: pinned particles drift less than 0.2% of a radius
    free = res["unconstrained"]["constraints"]
    assert free[0]["per_step_max"][-1] > 0.5 * r  # the solver alone leaves particle 0 in the disk
    assert res["violations"]["max"] == pytest.approx(max(d["max"], p["max"]))
    with Image.open(tmp_path / "c.png") as png:
        assert png.size[0] > png.size[1] > 100  # two panels side by side
    with Image.open(tmp_path / "c.gif") as gif:
        assert gif.n_frames == 9  # frames 0..8 (fewer than the 60-frame cap)


def test_particle_constraint_figure_draws_both_rollouts_and_the_constraints(particle_cgns):
    from workflows.constrain import constrain_particles, load_constrain_model, read_constraints
    from workflows.figures import particle_constraints_figure

    ckpt, scene = particle_cgns
    model, blob = load_constrain_model(str(ckpt), "obstacle")
    constraints = read_constraints(["disk center=0,1.5 radius=0.2", "pin nodes=2"])
    result, arrays = constrain_particles(model, blob, constraints, 3, 2, scene=str(scene), compare=True)
    fig = particle_constraints_figure(result, arrays)
    without, with_ = fig.axes
    assert without.get_title().startswith("without the constraints: max violation")
    assert with_.get_title().startswith("with the constraints: max violation")
    # Per panel: floor/walls (3 lines), obstacle, pin marker, then one trace per particle.
    traces = [ln for ln in with_.lines if len(ln.get_xdata()) == 4]
    assert len(traces) == 6 and np.allclose(traces[0].get_xdata(), arrays["positions"][:, 0, 0])
    assert len([ln for ln in without.lines if len(ln.get_xdata()) == 4]) == 6
    disk = [p for p in with_.patches if hasattr(p, "radius")]
    assert len(disk) == 1 and disk[0].radius == pytest.approx(0.2) and tuple(disk[0].center) == (0, 1.5)
    pins = [ln for ln in with_.lines if ln.get_marker() == "x"]
    assert len(pins) == 1 and np.allclose(pins[0].get_xydata(), arrays["positions"][0, [2]])


def test_old_steps_of_constrain_rolls_out_frames_and_warns(particle_cgns, capsys):
    ckpt, scene = particle_cgns
    argv = ["constrain", "--model", str(ckpt), "--system", "obstacle", "--scene", str(scene), "--constraint",
            "pin nodes=0", "--json"]
    with pytest.deprecated_call(match="--frames"):
        res = run_json(capsys, [*argv, "--steps", "3"])
    assert res["steps"] == 3
    code = main([*argv, "--control-steps", "3"])
    err = capsys.readouterr().err
    assert code == 2 and "--control-steps does not apply to the obstacle scene: use --frames" in err


def test_constrain_reads_a_constraint_file_and_prints_a_summary(particle_cgns, capsys, tmp_path):
    ckpt, scene = particle_cgns
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"constraints": ["halfplane normal=0,1 offset=0.5",
                                                 {"kind": "box", "lower": [-3, 0], "upper": [3, 1]}]}))
    assert main(["constrain", "--model", str(ckpt), "--system", "obstacle", "--scene", str(scene), "--frames", "2",
                 "--constraints", str(f), "--out", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "halfplane normal=0,1 offset=0.5" in out and "box lower=-3,0 upper=3,1" in out and "radii" in out
    assert len(json.loads((tmp_path / "r.json").read_text())["violations"]["constraints"]) == 2


@pytest.mark.parametrize("spec, message", [
    ("blob center=0,1", "unknown constraint kind 'blob'"),
    ("disk center=0,1 radius", "malformed constraint"),
    ("disk center=0,1 radius=0.2 weight=-1", "weights must be finite and non-negative"),
    ("disk center=0,1 radius=0.2 weight=nan", "weights must be finite"),
    ("pin nodes=6", "particle 6, which does not exist"),
    ("pin nodes=cart", "particle 'cart', which does not exist"),
    ("disk center=0,1,2 radius=0.2", "center has 3 coordinates but the points have 2"),
    ("wall axis=w upper=1", "axis must be"),
])
def test_bad_constraints_are_refused_with_a_message_and_no_traceback(particle_cgns, capsys, spec, message):
    ckpt, scene = particle_cgns
    code = main(["constrain", "--model", str(ckpt), "--system", "obstacle", "--scene", str(scene), "--frames", "2",
                 "--constraint", spec])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize("args, message", [
    (["--model", "pretrained:cartpole", "--system", "cartpole"], "not a C-GNS: `gndesign constrain` needs"),
    (["--system", "cartpole"], "C-GNS of the obstacle scene (--system obstacle), not of 'cartpole'"),
    (["--system", "obstacle", "--design", "0,0"], "a design is 4 joint angles"),
    (["--system", "obstacle", "--actions", "random"], "--actions applies to articulated systems only"),
    (["--system", "obstacle", "--iterations", "-1"], "iterations must be >= 0"),
    (["--system", "obstacle", "--constraints", "missing.yaml"], "missing.yaml does not exist"),
])
def test_bad_arguments_are_refused(particle_cgns, capsys, args, message):
    ckpt, scene = particle_cgns
    argv = ["constrain", "--model", str(ckpt), "--scene", str(scene), "--frames", "2",
            "--constraint", "pin nodes=0", *args]
    if "--model" in args:
        argv = ["constrain", *args, "--constraint", "pin nodes=0"]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_articulated_constrain_holds_a_wall_on_the_cart(tmp_path, capsys, cartpole_data):
    from envs.systems import get_system

    args = ["train", "--family", "cgns", "--data", str(cartpole_data), "--out", str(tmp_path / "run"), "--steps", "2",
            "--quiet", "--set", "train.batch_size=8", "--set", "train.stats_transitions=64"]
    for item in TINY:
        if not item.startswith(("model.history", "train.batch_size", "train.stats")):
            args += ["--set", item]
    assert main(args) == 0
    capsys.readouterr()
    ckpt = str(tmp_path / "run/checkpoints/latest.pt")
    base = ["constrain", "--model", ckpt, "--system", "cartpole", "--control-steps", "10", "--seed", "1", "--json"]
    # The CLI's start: the system's initial state from default_rng(seed); a wall 5 mm ahead of the cart.
    system = get_system("cartpole", randomize=False)
    q0, v0 = system.initial_state(system.model, np.random.default_rng(1))
    side = f"upper={q0[0] + 0.005:.6f}" if v0[0] > 0 else f"lower={q0[0] - 0.005:.6f}"
    res = run_json(capsys, [*base, "--iterations", "20", "--compare",
                            "--constraint", f"wall axis=x {side} nodes=cart weight=1000",
                            "--constraint", "joint_limit joints=slider lower=-10 upper=10",
                            "--plot", str(tmp_path / "a.png"), "--video", str(tmp_path / "a.gif")])
    wall, limit = res["violations"]["constraints"]
    assert res["actions"] == "zero" and wall["spec"]["nodes"] == [1] and limit["spec"]["joints"] == [0]
    assert res["constraints"][0] == f"wall axis=x {side} weight=1000 nodes=cart"
    assert res["unconstrained"]["constraints"][0]["max"] > 0.01  # the cart coasts through the wall
    assert wall["max"] < 1e-3 and limit["max"] == 0  # metres
    with Image.open(tmp_path / "a.png") as png:
        assert png.size == (700, int(100 * (1.2 + 2.2 * 2)))  # one panel per constraint
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == 11
    res = run_json(capsys, [*base, "--actions", "random", "--constraint", "joint_limit joints=slider upper=0"])
    assert res["actions"] == "random" and len(res["violations"]["constraints"][0]["per_step_max"]) == 11
    # The figure: the cart's x with the wall (red line) and the slider's limits, with and without.
    from workflows.constrain import constrain_articulated, load_constrain_model, read_constraints
    from workflows.figures import articulated_constraints_figure

    model, _ = load_constrain_model(ckpt, "cartpole")
    result, arrays = constrain_articulated(model, "cartpole", read_constraints([f"wall axis=x {side} nodes=cart"]),
                                           10, 20, 1, compare=True)
    ax = articulated_constraints_figure(result, arrays).axes[0]
    assert ax.get_ylabel() == "body x [m]" and ax.get_title() == f"wall axis=x {side} weight=1 nodes=cart"
    cart, baseline, limit = ax.lines
    assert np.allclose(cart.get_ydata(), arrays["xpos"][:, 1, 0]) and cart.get_label() == "cart"
    assert np.allclose(baseline.get_ydata(), arrays["baseline"]["xpos"][:, 1, 0])
    assert limit.get_ydata()[0] == pytest.approx(float(side.split("=")[1]))
    code = main([*base, "--constraint", "pin nodes=pole"])
    err = capsys.readouterr().err
    assert code == 2 and "body 'pole', which does not exist" in err and "known body names" in err


# ----------------------------------------------------------------------------------------------
# One library: the same constraint objects as planner costs and design penalties
# ----------------------------------------------------------------------------------------------


def test_a_wall_on_a_task_s_quantities_is_zero_when_satisfied_and_positive_when_violated():
    from envs.tasks import get_task
    from gndesign.constraint_sets import bind_constraints
    from gndesign.specs import parse_constraints

    task = get_task("cartpole-swingup")
    wall = bind_constraints(parse_constraints(["wall axis=x upper=1.2 nodes=cart weight=2",
                                               "joint_limit joints=slider lower=-1.0"]), task.constraint_context())
    qpos = torch.tensor([[0.5, 0.3], [1.5, 0.0], [-1.25, 0.0]], dtype=torch.float64)
    q = task.quantities(qpos, torch.zeros_like(qpos), torch.zeros(3, 1, dtype=torch.float64))
    assert q["positions"].shape == (3, task.tree.nbody, 3) and torch.equal(q["qpos"], qpos)
    cost = wall(q)
    assert cost[0] == 0 and cost[1] == pytest.approx(2 * 0.3 ** 2) and cost[2] == pytest.approx(0.25 ** 2)
    # As a planner cost: added to the task's cost over a rollout [B, H+1, nq].
    qs = qpos[:, None].expand(3, 4, 2)
    extra = wall(task.quantities(qs[:, 1:].reshape(-1, 2), torch.zeros(9, 2, dtype=torch.float64),
                                 torch.zeros(9, 1, dtype=torch.float64))).view(3, 3).sum(1)
    assert torch.allclose(extra, 3 * cost)


def test_an_obstacle_on_particle_quantities_is_a_differentiable_design_penalty():
    from envs.obstacle.goals import particle_quantities
    from gndesign.constraint_sets import bind_constraints
    from gndesign.constraints import ConstraintContext
    from gndesign.specs import parse_constraint

    disk = bind_constraints(parse_constraint("disk center=0,0.5 radius=0.2"),
                            ConstraintContext(num_nodes=2, node_kind="particle", dim=2, margin=0.05))
    pos = torch.tensor([[[1.0, 0.5], [0.0, 1.0]], [[0.1, 0.5], [0.0, 1.0]]], requires_grad=True)
    pen = disk(particle_quantities(pos))
    assert pen[0] == 0 and float(pen[1].detach()) == pytest.approx(0.15 ** 2)
    pen.sum().backward()
    assert pos.grad[1, 0, 0] < 0  # pushes the particle out (to larger x)
