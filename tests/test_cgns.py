"""The constraint-based graph network simulator (C-GNS): the unrolled solver, gradients through it,
test-time constraints in rollouts, both front ends, training, checkpoints and bad input."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PARTICLE_SCENE, falling_particles

from gndesign.cgns import (
    ArticulatedCGNS,
    ParticleCGNS,
)
from gndesign.checkpoints import load_model
from gndesign.config import ParticleModelConfig, RunConfig, SolverConfig, load_config
from gndesign.constraint_sets import active_stiffness
from gndesign.datasets.particles import write_particle_dataset
from gndesign.errors import ConfigError, GndesignError
from gndesign.particles import ParticleSimulator
from gndesign.solver import gradient_descent, penalty_descent, violation_report
from gndesign.specs import parse_constraint
from gndesign.training import train

SCENE = PARTICLE_SCENE
REFERENCE = Path(__file__).parent / "reference"  # checkpoints written by an earlier version (test_old_cgns.py)
TINY = ["model.latent_size=8", "model.mlp_hidden_size=8", "model.message_passing_steps=1", "solver.iterations=2",
        "train.steps=4", "train.log_every=2", "train.eval_every=2", "train.checkpoint_every=2"]


def particle_model(dtype=torch.float32, iterations=3):
    cfg = ParticleModelConfig(latent_size=8, mlp_hidden_size=8, message_passing_steps=1, history=2,
                              obstacle_points=2)
    model = ParticleCGNS(cfg, SCENE, SolverConfig(iterations=iterations))
    x, _, _ = falling_particles(3, 10, 5, push=0.2, fixed_obstacle=True)
    pos = torch.as_tensor(x)
    for t in range(2, pos.shape[1] - 1):
        model.accumulate_statistics(pos[:, t - 2:t + 1], pos[:, t + 1])
    return model.to(dtype)


def window(dtype=torch.float32, t=4):
    """A history ``[B, 3, N, 2]`` of moving particles, the obstacle and the true next positions."""
    x, obs, _ = falling_particles(3, 10, 5, push=0.2, fixed_obstacle=True)
    return (torch.as_tensor(x[:, t - 2:t + 1], dtype=dtype), torch.as_tensor(obs, dtype=dtype),
            torch.as_tensor(x[:, t + 1], dtype=dtype))


# ----------------------------------------------------------------------------------------------
# The solver
# ----------------------------------------------------------------------------------------------


def test_gradient_descent_converges_to_the_minimizer_of_a_quadratic():
    gen = torch.Generator().manual_seed(1)
    M = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    A = M @ M.T + 0.5 * torch.eye(4, dtype=torch.float64)
    m = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    step = 1 / float(torch.linalg.eigvalsh(A).max())
    z, energies = gradient_descent(lambda z: 0.5 * (((z - m) @ A) * (z - m)).sum(-1), torch.zeros_like(m), step, 400)
    assert torch.allclose(z, m, atol=1e-8)
    assert all(b <= a + 1e-12 for a, b in zip(energies, energies[1:], strict=False)) and energies[0] > 1


def quadratic_model():
    """A particle C-GNS whose f_C is known: 0.5 |u - target|^2 (curvature 1), step size 0.5; with
    a window, its obstacle nodes and edges, and the minimizer normalized per axis."""
    model = particle_model(torch.float64).eval()
    hist, obs, _ = window(torch.float64)
    nodes = model.obstacle_nodes(obs, hist.shape[0])
    edges = model.edges(hist, nodes)
    target = torch.randn(hist.shape[0], hist.shape[2], 2, dtype=torch.float64)
    model.energy = lambda current, h, o, u: 0.5 * (u - target).pow(2).sum((1, 2))
    model.predictor.step_param.data.fill_(float(np.log(np.expm1(0.5))))
    _, std = model.acc_normalizer.stats(hist)
    return model, hist, nodes, edges, target * model.sigma(hist) / std


def test_model_solver_on_a_quadratic_constraint_reaches_its_minimizer():
    model, hist, nodes, edges, minimizer = quadratic_model()
    z = model.predict_normalized(hist, nodes, edges, model.solve_options(None, 60, hist))
    assert torch.allclose(z, minimizer, atol=1e-12)  # normalized per axis


def test_model_solver_stays_stable_with_stiff_pins():
    model, hist, nodes, edges, minimizer = quadratic_model()
    # A pin of weight 1e6 (curvature 2e6 in these units) would make a plain step of 0.5 diverge;
    # the solver's step eta / (1 + 2 eta W) keeps it stable and the pinned particle holds.
    pin = parse_constraint("pin nodes=1 at=0.0,0.3 weight=1e6")
    z = model.predict_normalized(hist, nodes, edges, model.solve_options(pin, 60, hist))
    nxt = hist[:, -1] + (hist[:, -1] - hist[:, -2]) + model.acc_normalizer.inverse(z)
    assert torch.isfinite(z).all()
    assert (nxt[:, 1] - torch.tensor([0.0, 0.3], dtype=torch.float64)).norm(dim=-1).max() < 1e-6
    free = [0, 2, 3, 4]
    assert torch.allclose(z[:, free], minimizer[:, free], atol=1e-6)


def test_penalty_descent_reaches_the_penalized_minimizer_stably_and_leaves_unconstrained_elements_alone():
    # energy 0.5 |z - m|^2 (curvature 1, step 0.5) plus a stiff hinge W relu(z[:, 0] - b)^2 on element 0.
    m = torch.tensor([[1.0, 2.0, -1.0], [0.2, 0.0, 3.0]], dtype=torch.float64)
    b, W = 0.3, 1e6

    def penalty(z):
        v = torch.relu(z[:, 0] - b)
        return W * v.pow(2), torch.stack([W * (v > 0).double(), torch.zeros_like(v), torch.zeros_like(v)], 1)

    def energy(z):
        return 0.5 * (z - m).pow(2).sum(1)

    z = penalty_descent(energy, penalty, torch.zeros_like(m), 0.5, 60, create_graph=False)
    # Row 0: the hinge is active, the minimizer of 0.5 (z - 1)^2 + W (z - b)^2; row 1: inactive (0.2 < b).
    assert z[0, 0] == pytest.approx((1.0 + 2 * W * b) / (1 + 2 * W), abs=1e-12)
    assert z[1, 0] == pytest.approx(0.2, abs=1e-12)
    assert torch.allclose(z[:, 1:], m[:, 1:], atol=1e-12)
    # Elements the penalty does not act on take exactly the plain gradient steps, every iteration.
    for n in (1, 2, 5):
        plain, _ = gradient_descent(energy, torch.zeros_like(m), 0.5, n, create_graph=False)
        z = penalty_descent(energy, penalty, torch.zeros_like(m), 0.5, n, create_graph=False)
        assert torch.equal(z[:, 1:], plain[:, 1:])


def test_active_stiffness_counts_only_the_constraints_violated_at_each_node():
    disk = parse_constraint("disk center=0.0,0.0 radius=1.0 weight=100 margin=0")
    pin = parse_constraint("pin nodes=2 at=0.0,5.0 weight=3 margin=0")
    x = torch.tensor([[[0.5, 0.0], [3.0, 0.0], [0.0, 5.0]], [[3.0, 0.0], [3.0, 0.0], [0.0, 4.0]]])
    q = {"positions": x}
    assert active_stiffness(disk + 2.0 * pin, q, 3).tolist() == [[100.0, 0.0, 0.0], [0.0, 0.0, 6.0]]
    assert active_stiffness(disk + pin, q).tolist() == [100.0, 3.0]


def test_a_stiff_constraint_leaves_the_particles_it_does_not_reach_alone():
    # Particle 0 falls onto a disk; particle 1 falls far from it and from every other node. The
    # solver's penalty step follows the hinge's curvature per particle and iterate, so particle 1
    # moves exactly as without the constraint (a step damped for every particle the constraint
    # applies to would slow its fall) and particle 0 ends up outside the disk.
    model = particle_model().eval()
    r = SCENE["particle_radius"]
    start = torch.tensor([[[-0.3, 0.30], [0.3, 0.30]]])
    hist = torch.stack([start + torch.tensor([0.0, 0.02 * k]) for k in (2, 1, 0)], 1)  # falling 2 cm/frame
    obs = torch.tensor([[-0.45, 0.45], [-0.35, 0.45], [-0.25, 0.45]])
    disk = parse_constraint("disk center=-0.3,0.1 radius=0.1 weight=100")
    bound = disk.bind(model.constraint_context(2))
    with torch.no_grad():
        free = model.rollout(hist, obs, 10)
        held = model.rollout(hist, obs, 10, constraints=disk)
        inertial = model.rollout(hist, obs, 10, iterations=0)
    depth = [[float(bound.violation({"positions": x[:, t]})[0, 0]) for t in range(11)] for x in (free, held)]
    assert max(depth[0]) > r  # without the constraint particle 0 falls into the disk
    assert max(depth[1]) < 0.1 * r
    assert torch.equal(free[:, :, 1], held[:, :, 1])  # particle 1: exactly the unconstrained rollout
    assert (free[:, :, 1] - inertial[:, :, 1]).abs().max() > 1e-4  # in which the solver moves it
    assert torch.equal(free[:, 1], held[:, 1])  # nobody touches the disk in the first frame


def test_gradients_flow_through_the_unrolled_solver_to_every_parameter():
    model = particle_model().train()
    hist, obs, nxt = window()
    model.loss(hist, obs, nxt).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.predictor.step_param.grad.abs() > 0
    assert model.predictor.network.node_encoder[0].weight.grad.abs().sum() > 0
    assert model.predictor.network.node_decoder[-1].weight.grad.abs().sum() > 0


def test_unrolled_gradients_match_finite_differences():
    model = particle_model(torch.float64, iterations=3).train()
    model.solver.iterations_min = 0  # the same unrolled solve in every loss evaluation
    hist, obs, nxt = window(torch.float64)
    w = model.predictor.network.node_decoder[-1].weight
    model.loss(hist, obs, nxt).backward()
    analytic = [float(model.predictor.step_param.grad), float(w.grad[1, 3])]
    eps = 1e-6
    numeric = []
    for param, idx in ((model.predictor.step_param, ()), (w, (1, 3))):
        with torch.no_grad():
            param[idx] += eps
            up = float(model.loss(hist, obs, nxt))
            param[idx] -= 2 * eps
            down = float(model.loss(hist, obs, nxt))
            param[idx] += eps
        numeric.append((up - down) / (2 * eps))
    assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-9)
    assert all(abs(g) > 1e-6 for g in analytic)


# ----------------------------------------------------------------------------------------------
# Particle rollouts with test-time constraints
# ----------------------------------------------------------------------------------------------


def test_zero_iterations_is_the_inertial_guess():
    model = particle_model().eval()
    hist, obs, _ = window()
    out = model.rollout(hist, obs, 1, iterations=0)
    assert torch.allclose(out[:, 1], 2 * hist[:, -1] - hist[:, -2], atol=1e-7)
    assert not torch.allclose(model.rollout(hist, obs, 1), out[:, 1:], atol=1e-6)  # the solver moves it


def test_rollout_with_pinned_particles_keeps_them_fixed():
    model = particle_model().eval()
    hist, obs, _ = window()
    free = model.rollout(hist, obs, 6)
    assert (free[:, -1, 0] - free[:, 0, 0]).norm(dim=-1).max() > 1e-2  # they fall
    pinned = model.rollout(hist, obs, 6, constraints=parse_constraint("pin nodes=0,3 weight=100"), iterations=10)
    drift = (pinned[:, :, [0, 3]] - pinned[:, :1, [0, 3]]).norm(dim=-1).max()
    assert drift < 1e-5  # metres: 0.05% of the particle radius
    others = (pinned[:, -1, [1, 2, 4]] - pinned[:, 0, [1, 2, 4]]).norm(dim=-1)
    assert others.max() > 1e-2


def test_an_unseen_obstacle_holds_particles_back():
    model = particle_model().eval()
    r = SCENE["particle_radius"]
    start = torch.tensor([[[-0.1, 0.30], [0.0, 0.32], [0.1, 0.30]]])
    hist = torch.stack([start + torch.tensor([0.0, 0.02 * k]) for k in (2, 1, 0)], 1)  # falling 2 cm/frame
    obs = torch.tensor([[-0.45, 0.45], [-0.35, 0.45], [-0.25, 0.45]])
    box = parse_constraint("box lower=-0.3,0.1 upper=0.3,0.2 weight=100")
    bound = box.bind(model.constraint_context(3))
    with torch.no_grad():
        through = model.rollout(hist, obs, 10)
        held = model.rollout(hist, obs, 10, constraints=box, iterations=10)
    depth = [float(bound.max_violation({"positions": x[:, t]})) for x in (through, held) for t in range(11)]
    assert max(depth[:11]) > 2 * r  # the solver alone never saw the box: they fall into it
    assert max(depth[11:]) < 0.1 * r
    report = violation_report(box, model.constraint_context(3), model.constraint_frames(through))
    assert report["max"] == pytest.approx(max(depth[:11])) and len(report["constraints"][0]["per_step_max"]) == 11
    assert report["constraints"][0]["spec"]["margin"] == r  # bound: the particle radius


def test_constraints_are_arguments_not_model_state():
    """A constrained step is the first frame of a constrained rollout, and leaves nothing behind:
    the same model then steps exactly as one that never saw the constraints."""
    model = particle_model().eval()
    fresh = copy.deepcopy(model)
    hist, obs, _ = window()
    pin = parse_constraint("pin nodes=0,3 weight=100")
    with torch.no_grad():
        step = model(hist, obs, constraints=pin, iterations=10)
        assert torch.equal(step, model.rollout(hist, obs, 1, constraints=pin, iterations=10)[:, 1])
        assert (step[:, [0, 3]] - hist[:, -1, [0, 3]]).norm(dim=-1).max() < 1e-5
        assert torch.equal(model(hist, obs), fresh(hist, obs))
        assert not torch.allclose(model(hist, obs), step)


def test_checkpointed_constrained_particle_rollouts_equal_plain_ones():
    model = particle_model(torch.float64).eval()
    hist, obs, _ = window(torch.float64)
    pin = parse_constraint("pin nodes=0,3 weight=100")
    out, grads = [], []
    for checkpoint in (False, True):
        o = obs.clone().requires_grad_(True)
        x = model.rollout(hist, o, 3, checkpoint=checkpoint, constraints=pin, iterations=4)
        (x[:, -1, :, 1] * torch.arange(1.0, 6.0, dtype=torch.float64)).sum().backward()
        out.append(x.detach())
        grads.append(o.grad)
    torch.testing.assert_close(out[1], out[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-9, atol=1e-12)
    assert (out[0][:, :, [0, 3]] - out[0][:, :1, [0, 3]]).norm(dim=-1).max() < 1e-5  # the pins held


def test_checkpointed_constrained_articulated_rollouts_equal_plain_ones():
    model, _ = load_model(REFERENCE / "old_cgns_cartpole.pt", "cgns-articulated")
    q, v = torch.zeros(2, 2), torch.tensor([[2.0, 0.0], [1.5, 0.5]])
    limit = parse_constraint("joint_limit joints=slider upper=0.03 weight=1000")
    out, grads = [], []
    for checkpoint in (False, True):
        a = torch.full((2, 4, 1), 0.3, requires_grad=True)
        qs, _ = model.rollout(q, v, a, checkpoint=checkpoint, constraints=limit, iterations=6)
        qs[:, -1].sum().backward()
        out.append(qs.detach())
        grads.append(a.grad)
    torch.testing.assert_close(out[1], out[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        free, _ = model.rollout(q, v, a)
    assert float(out[0][:, :, 0].max()) < 0.035 < float(free[:, :, 0].max()) - 0.02  # the limit acts
    assert grads[0].abs().sum() > 0


def test_forward_simulators_refuse_test_time_settings():
    cfg = ParticleModelConfig(latent_size=8, mlp_hidden_size=8, message_passing_steps=1, history=2,
                              obstacle_points=2)
    forward = ParticleSimulator(cfg, SCENE)
    hist, obs, _ = window()
    with pytest.raises(ConfigError, match="need a C-GNS"):
        forward.rollout(hist, obs, 2, constraints=parse_constraint("pin nodes=0"))
    with pytest.raises(ConfigError, match="need a C-GNS"):
        forward(hist, obs, iterations=3)


def test_one_violation_report_judges_both_fronts_and_any_model():
    box = parse_constraint("box lower=-0.3,0.1 upper=0.3,0.2 weight=100")
    pin = parse_constraint("pin nodes=1 weight=1")
    x, _, _ = falling_particles(3, 10, 5, push=0.2, fixed_obstacle=True)
    x = torch.as_tensor(x[:, :6], dtype=torch.float32)  # ground truth [3, 6, 5, 2]: the particles fall
    # Any model's rollouts are judged the same way, here an untrained forward simulator's front end.
    forward = ParticleSimulator(ParticleModelConfig(history=2, obstacle_points=2), SCENE)
    ctx = forward.constraint_context(5)
    report = violation_report(box + pin, ctx, forward.constraint_frames(x))
    assert [r["spec"]["kind"] for r in report["constraints"]] == ["box", "pin"]
    bound_box = box.bind(ctx)
    box_steps = [float(bound_box.violation({"positions": x[:, t]}).max()) for t in range(6)]
    assert report["constraints"][0]["per_step_max"] == pytest.approx(box_steps)
    drift = (x[:, :, 1] - x[:, :1, 1]).norm(dim=-1).amax(0)  # the pin: distance to frame 0
    assert report["constraints"][1]["per_step_max"] == pytest.approx(drift.tolist(), abs=1e-6)
    assert report["max"] == pytest.approx(max(max(box_steps), float(drift.max())))
    # The same function judges an articulated rollout (body positions by forward kinematics).
    model, _ = load_model(REFERENCE / "old_cgns_cartpole.pt", "cgns-articulated")
    qs = torch.stack([torch.zeros(2), torch.tensor([0.2, 0.0]), torch.tensor([0.5, 0.3])])[None]
    wall = parse_constraint("wall axis=x upper=0.25 nodes=cart weight=1")
    rep = violation_report(wall, model.constraint_context("cartpole"), model.constraint_frames(qs, system="cartpole"))
    assert rep["constraints"][0]["per_step_max"] == pytest.approx([0.0, 0.0, 0.25], abs=1e-6)


# ----------------------------------------------------------------------------------------------
# Training and checkpoints: particles
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def particle_runs(tmp_path_factory):
    """A tiny particle C-GNS trained for 4 steps in one go (``full``) and in two (``part``)."""
    tmp = tmp_path_factory.mktemp("cgns_particles")
    x, obs, design = falling_particles(3, 10, 5, push=0.2, fixed_obstacle=True)
    data = write_particle_dataset(tmp / "ds", x, obs, design, SCENE, seed=0)
    cfg = load_config(overrides=[*TINY, "model.history=2", "train.batch_size=2", "train.stats_transitions=8"],
                      data=[data], cgns=True)
    assert isinstance(cfg.model, ParticleModelConfig)
    full = train(cfg, tmp / "full", progress=False)
    train(cfg, tmp / "part", progress=False, max_new_steps=2)
    resumed = train(cfg, tmp / "part", resume=True, progress=False)
    return tmp, full, resumed


def test_particle_training_resumes_exactly(particle_runs):
    _, full, resumed = particle_runs
    assert resumed["train_loss"] == full["train_loss"] and resumed["step"] == 4


def test_particle_checkpoints_round_trip(particle_runs):
    tmp = particle_runs[0]
    model, blob = load_model(tmp / "full/checkpoints/latest.pt", "cgns-particles", scene=SCENE)
    assert isinstance(model, ParticleCGNS) and blob["family"] == "cgns-particles"
    hist, obstacle, _ = window()
    again, _ = load_model(tmp / "part/checkpoints/latest.pt", "cgns-particles")
    assert torch.equal(model.rollout(hist, obstacle, 3), again.rollout(hist, obstacle, 3))


def test_particle_checkpoints_refuse_another_scene_and_the_forward_loader(particle_runs):
    ckpt = particle_runs[0] / "full/checkpoints/latest.pt"
    with pytest.raises(GndesignError, match="another scene"):
        load_model(ckpt, "cgns-particles", scene={**SCENE, "dt": 0.01})
    with pytest.raises(GndesignError, match=r"'cgns-particles' model \(a C-GNS .*\), not a particle simulator"):
        load_model(ckpt, "particles")


# ----------------------------------------------------------------------------------------------
# Training, checkpoints and constraints: the articulated front end
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cartpole_cgns(tmp_path_factory, cartpole_data):
    """A tiny cartpole C-GNS trained for 4 steps, its checkpoint, and 2 states of the data whose
    cart moves right, with 8 actions each."""
    from gndesign.datasets.trajectories import TrajectoryDataset

    tmp = tmp_path_factory.mktemp("cgns_cartpole")
    cfg = load_config(overrides=[*TINY, "train.batch_size=8", "train.stats_transitions=64"], data=[cartpole_data],
                      cgns=True)
    summary = train(cfg, tmp / "run", progress=False)
    ckpt = tmp / "run/checkpoints/latest.pt"
    model, _ = load_model(ckpt, "cgns-articulated", system="cartpole")
    ds = TrajectoryDataset.load(cartpole_data)
    q = torch.as_tensor(ds.qpos[:2, 0], dtype=torch.float32)
    v = torch.as_tensor(ds.qvel[:2, 0], dtype=torch.float32) + torch.tensor([2.0, 0.0])  # the cart moves right
    a = torch.as_tensor(ds.action[:2, :8], dtype=torch.float32)
    return summary, ckpt, model, (q, v, a)


def test_articulated_cgns_trains_its_step_size(cartpole_cgns):
    summary, _, model, _ = cartpole_cgns
    assert summary["step"] == 4 and np.isfinite(summary["train_loss"])
    assert isinstance(model, ArticulatedCGNS)
    assert abs(model.predictor.step_size().item() - 0.1) > 1e-5  # the learned step size trained (gradients reached it)


def test_articulated_cgns_rollouts_are_differentiable(cartpole_cgns):
    model, (q, v, a) = cartpole_cgns[2], cartpole_cgns[3]
    qs, vs = model.rollout(q, v, a)  # differentiable (gradients enabled)
    assert qs.requires_grad and qs.shape == (2, 9, 2) and torch.isfinite(qs).all() and torch.isfinite(vs).all()


def _cart_limit(model, q, v, a, kind: str):
    """The free rollout, the upper bound just right of the start, the constraint and the
    constrained rollout (20 iterations)."""
    with torch.no_grad():
        free, _ = model.rollout(q, v, a)
    upper = float(q[:, 0].max()) + 0.01
    spec = {"joint": f"joint_limit joints=slider upper={upper} weight=1000",
            # A body-position wall (the cart may not pass x = upper) acts through forward kinematics.
            "wall": f"wall axis=x upper={upper} nodes=cart weight=1000"}[kind]
    constraint = parse_constraint(spec)
    with torch.no_grad():
        held, _ = model.rollout(q, v, a, constraints=constraint, iterations=20)
    assert float(free[:, :, 0].max()) > upper + 0.02  # without it the cart passes the bound
    return free, upper, constraint, held


def test_articulated_joint_limit_holds_and_is_reported(cartpole_cgns):
    model, (q, v, a) = cartpole_cgns[2], cartpole_cgns[3]
    free, upper, limit, held = _cart_limit(model, q, v, a, "joint")
    assert float(held[:, :, 0].max()) < upper + 1e-4
    report = violation_report(limit, model.constraint_context(), model.constraint_frames(free))
    assert report["max"] == pytest.approx(float(free[:, :, 0].max()) - upper, abs=1e-6)


def test_articulated_body_wall_holds_and_is_reported(cartpole_cgns):
    model, (q, v, a) = cartpole_cgns[2], cartpole_cgns[3]
    _, upper, wall, walled = _cart_limit(model, q, v, a, "wall")
    assert float(walled[:, :, 0].max()) < upper + 1e-4
    report = violation_report(wall, model.constraint_context("cartpole"),
                              model.constraint_frames(walled, system="cartpole"))
    assert report["max"] < 1e-4


def test_a_stiff_wall_the_cart_never_reaches_changes_nothing(cartpole_cgns):
    # No step is slowed where the constraint is satisfied.
    model, (q, v, a) = cartpole_cgns[2], cartpole_cgns[3]
    far = parse_constraint("wall axis=x upper=100 nodes=cart weight=1000")
    with torch.no_grad():
        assert torch.equal(model.rollout(q, v, a, constraints=far)[0], model.rollout(q, v, a)[0])


def test_articulated_bad_references_and_loaders_are_refused(cartpole_cgns):
    _, ckpt, model, (q, v, a) = cartpole_cgns
    with pytest.raises(ConfigError, match="body 'pole', which does not exist"):
        model.rollout(q, v, a, constraints=parse_constraint("pin nodes=pole"))
    with pytest.raises(GndesignError, match="not on 'swimmer6'"):
        load_model(ckpt, "cgns-articulated", system="swimmer6")
    with pytest.raises(GndesignError, match=r"'cgns-articulated' model \(a C-GNS .*\), not a forward model"):
        load_model(ckpt, "forward")


@pytest.mark.parametrize("raw, message", [
    ({"solver": {"iterations": 0}}, "solver.iterations must be >= 1"),
    ({"solver": {"iterations": 5, "iterations_min": 6}}, "iterations_min must be between 0"),
    ({"solver": {"iterations_min": -1}}, "iterations_min must be between 0"),
    ({"solver": {"step_size": -1.0}}, "step_size must be a positive"),
    ({"solver": {"wobble": 1}}, "unknown option solver.wobble"),
    ({"model": {"kind": "mlp"}}, "the C-GNS is a graph network"),
    ({"planner": {}}, "unknown config section"),
])
def test_bad_configurations_are_refused(raw, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict(raw, cgns=True).validate()


def test_random_unrolled_iterations_in_training_only():
    # solver.iterations_min: every training solve unrolls a number of steps drawn uniformly from
    # [iterations_min, iterations] (the seed fixes them); eval mode uses the fixed count.
    model = particle_model(iterations=4)
    model.solver.iterations_min = 2
    hist, obs, nxt = window()
    calls = []
    energy = model.energy
    model.energy = lambda *a, **k: calls.append(1) or energy(*a, **k)

    def counts(seed):
        torch.manual_seed(seed)
        out = []
        for _ in range(40):
            calls.clear()
            model.loss(hist, obs, nxt)
            out.append(len(calls))
        return out

    model.train()
    drawn = counts(0)
    assert set(drawn) == {2, 3, 4} and drawn == counts(0)
    model.solver.iterations_min = 0
    assert set(counts(0)) == {4}
    model.solver.iterations_min = 2
    model.eval()
    assert set(counts(0)) == {4}


def test_data_of_the_wrong_kind_is_refused(tmp_path, cartpole_data):
    cfg = RunConfig.from_dict({"data": [str(cartpole_data)], "model": {"kind": "particles"}}, cgns=True)
    with pytest.raises(ConfigError, match="not a particle dataset"):
        train(cfg, tmp_path / "run", progress=False)
