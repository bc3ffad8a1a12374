"""The constraint-based graph network simulator (C-GNS): the unrolled solver, gradients through it,
test-time constraints in rollouts, both front ends, training, checkpoints and bad input."""

import numpy as np
import pytest
import torch

from gndesign.cgns import (
    ArticulatedCGNS,
    CGNSRunConfig,
    ParticleCGNS,
    SolverConfig,
    gradient_descent,
    load_cgns_config,
    load_cgns_model,
    penalty_descent,
    train_cgns,
)
from gndesign.constraints import active_stiffness, parse_constraint
from gndesign.datasets.particles import write_particle_dataset
from gndesign.errors import ConfigError, GndesignError
from gndesign.particles import ParticleModelConfig, load_particle_model
from gndesign.training import load_model

SCENE = {"particle_radius": 0.02, "obstacle_radius": 0.015, "x_min": -0.5, "x_max": 0.5, "floor": 0.0,
         "dt": 0.02, "gravity": [0.0, -9.81]}
TINY = ["model.latent_size=8", "model.mlp_hidden_size=8", "model.message_passing_steps=1", "solver.iterations=2",
        "train.steps=4", "train.log_every=2", "train.eval_every=2", "train.checkpoint_every=2"]


def falling(episodes=3, steps=10, n=5, seed=0):
    """Particles released at rest fall under gravity (frame units) onto the floor."""
    rng = np.random.default_rng(seed)
    g = SCENE["gravity"][1] * SCENE["dt"] ** 2
    x = np.zeros((episodes, steps + 1, n, 2))
    x[:, 0, :, 0] = rng.uniform(-0.4, 0.4, (episodes, n))
    x[:, 0, :, 1] = rng.uniform(0.1, 0.4, (episodes, n))
    v = np.zeros((episodes, n, 2))
    for t in range(steps):
        v[..., 1] += g
        v[..., 0] += rng.normal(0.0, 0.2 * abs(g), (episodes, n))  # some sideways pushes
        x[:, t + 1] = x[:, t] + v
        landed = x[:, t + 1, :, 1] < SCENE["particle_radius"]
        x[:, t + 1, :, 1] = np.where(landed, SCENE["particle_radius"], x[:, t + 1, :, 1])
        v[..., 1] = np.where(landed, 0.0, v[..., 1])
    obstacle = np.tile(np.array([[[-0.45, 0.45], [-0.35, 0.45], [-0.25, 0.45]]]), (episodes, 1, 1))
    return x, obstacle, np.zeros((episodes, 2))


def particle_model(dtype=torch.float32, iterations=3):
    cfg = ParticleModelConfig(latent_size=8, mlp_hidden_size=8, message_passing_steps=1, history=2,
                              obstacle_points=2)
    model = ParticleCGNS(cfg, SCENE, SolverConfig(iterations=iterations))
    x, _, _ = falling()
    pos = torch.as_tensor(x)
    for t in range(2, pos.shape[1] - 1):
        model.accumulate_statistics(pos[:, t - 2:t + 1], pos[:, t + 1])
    return model.to(dtype)


def window(dtype=torch.float32, t=4):
    """A history ``[B, 3, N, 2]`` of moving particles, the obstacle and the true next positions."""
    x, obs, _ = falling()
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


def test_model_solver_on_a_quadratic_constraint_reaches_its_minimizer_and_stays_stable_with_stiff_pins():
    model = particle_model(torch.float64).eval()
    hist, obs, _ = window(torch.float64)
    nodes = model.obstacle_nodes(obs, hist.shape[0])
    edges = model.edges(hist, nodes)
    target = torch.randn(hist.shape[0], hist.shape[2], 2, dtype=torch.float64)
    # A known f_C: 0.5 |u - target|^2 (curvature 1) and a step size of 0.5.
    model.energy = lambda h, o, e, u, current=None: 0.5 * (u - target).pow(2).sum((1, 2))
    model.step_param.data.fill_(float(np.log(np.expm1(0.5))))
    mean, std = model.acc_normalizer.stats(hist)
    sigma = model.sigma(hist)
    with model.solving(iterations=60):
        z = model.predict_normalized(hist, nodes, edges)
    assert torch.allclose(z, target * sigma / std, atol=1e-12)  # normalized per axis
    # A pin of weight 1e6 (curvature 2e6 in these units) would make a plain step of 0.5 diverge;
    # the solver's step eta / (1 + 2 eta W) keeps it stable and the pinned particle holds.
    pin = parse_constraint("pin nodes=1 at=0.0,0.3 weight=1e6")
    with model.solving(pin, 60, context=model.constraint_context(hist.shape[2])):
        z = model.predict_normalized(hist, nodes, edges)
    nxt = hist[:, -1] + (hist[:, -1] - hist[:, -2]) + model.acc_normalizer.inverse(z)
    assert torch.isfinite(z).all()
    assert (nxt[:, 1] - torch.tensor([0.0, 0.3], dtype=torch.float64)).norm(dim=-1).max() < 1e-6
    free = [0, 2, 3, 4]
    assert torch.allclose(z[:, free], (target * sigma / std)[:, free], atol=1e-6)


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
    assert model.step_param.grad.abs() > 0
    assert model.net.node_encoder[0].weight.grad.abs().sum() > 0
    assert model.net.node_decoder[-1].weight.grad.abs().sum() > 0


def test_unrolled_gradients_match_finite_differences():
    model = particle_model(torch.float64, iterations=3).train()
    model.solver.iterations_min = 0  # the same unrolled solve in every loss evaluation
    hist, obs, nxt = window(torch.float64)
    w = model.net.node_decoder[-1].weight
    model.loss(hist, obs, nxt).backward()
    analytic = [float(model.step_param.grad), float(w.grad[1, 3])]
    eps = 1e-6
    numeric = []
    for param, idx in ((model.step_param, ()), (w, (1, 3))):
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
    report = model.violation_report(box, through)
    assert report["max"] == pytest.approx(max(depth[:11])) and len(report["constraints"][0]["per_step_max"]) == 11
    assert report["constraints"][0]["spec"]["margin"] == r  # bound: the particle radius


def test_checkpointed_rollouts_refuse_test_time_settings():
    model = particle_model()
    hist, obs, _ = window()
    with pytest.raises(ConfigError, match="checkpoint"):
        model.rollout(hist, obs, 2, checkpoint=True, constraints=parse_constraint("pin nodes=0"))


# ----------------------------------------------------------------------------------------------
# Training, checkpoints and the articulated front end
# ----------------------------------------------------------------------------------------------


def test_particle_training_resumes_exactly_and_checkpoints_round_trip(tmp_path):
    x, obs, design = falling()
    data = write_particle_dataset(tmp_path / "ds", x, obs, design, SCENE, seed=0)
    cfg = load_cgns_config(overrides=[*TINY, "model.history=2", "train.batch_size=2", "train.stats_transitions=8"],
                           data=[data])
    assert isinstance(cfg.model, ParticleModelConfig)
    full = train_cgns(cfg, tmp_path / "full", progress=False)
    train_cgns(cfg, tmp_path / "part", progress=False, max_new_steps=2)
    resumed = train_cgns(cfg, tmp_path / "part", resume=True, progress=False)
    assert resumed["train_loss"] == full["train_loss"] and resumed["step"] == 4
    model, blob = load_cgns_model(tmp_path / "full/checkpoints/latest.pt", scene=SCENE)
    assert isinstance(model, ParticleCGNS) and blob["kind"] == "cgns" and blob["front"] == "particles"
    hist, obstacle, _ = window()
    again, _ = load_cgns_model(tmp_path / "part/checkpoints/latest.pt")
    assert torch.equal(model.rollout(hist, obstacle, 3), again.rollout(hist, obstacle, 3))
    with pytest.raises(GndesignError, match="another scene"):
        load_cgns_model(tmp_path / "full/checkpoints/latest.pt", scene={**SCENE, "dt": 0.01})
    with pytest.raises(GndesignError, match="'cgns' model, not a particle simulator"):
        load_particle_model(tmp_path / "full/checkpoints/latest.pt")


def test_articulated_cgns_trains_rolls_out_and_respects_joint_limits(tmp_path, cartpole_data):
    from gndesign.datasets.trajectories import TrajectoryDataset

    cfg = load_cgns_config(overrides=[*TINY, "train.batch_size=8", "train.stats_transitions=64"], data=[cartpole_data])
    summary = train_cgns(cfg, tmp_path / "run", progress=False)
    assert summary["step"] == 4 and np.isfinite(summary["train_loss"])
    ckpt = tmp_path / "run/checkpoints/latest.pt"
    model, _ = load_cgns_model(ckpt, system="cartpole")
    assert isinstance(model, ArticulatedCGNS)
    assert abs(model.step_size().item() - 0.1) > 1e-5  # the learned step size trained (gradients reached it)
    ds = TrajectoryDataset.load(cartpole_data)
    q = torch.as_tensor(ds.qpos[:2, 0], dtype=torch.float32)
    v = torch.as_tensor(ds.qvel[:2, 0], dtype=torch.float32) + torch.tensor([2.0, 0.0])  # the cart moves right
    a = torch.as_tensor(ds.action[:2, :8], dtype=torch.float32)
    qs, vs = model.rollout(q, v, a)  # differentiable (gradients enabled)
    assert qs.requires_grad and qs.shape == (2, 9, 2) and torch.isfinite(qs).all() and torch.isfinite(vs).all()
    qs = qs.detach()
    upper = float(q[:, 0].max()) + 0.01
    limit = parse_constraint(f"joint_limit joints=slider upper={upper} weight=1000")
    with torch.no_grad():
        held, _ = model.rollout(q, v, a, constraints=limit, iterations=20)
        # A body-position wall (the cart may not pass x = upper) acts through forward kinematics.
        wall = parse_constraint(f"wall axis=x upper={upper} nodes=cart weight=1000")
        walled, _ = model.rollout(q, v, a, constraints=wall, iterations=20)
        # A stiff wall the cart never reaches changes nothing (no step is slowed where it is satisfied).
        far = parse_constraint("wall axis=x upper=100 nodes=cart weight=1000")
        assert torch.equal(model.rollout(q, v, a, constraints=far)[0], model.rollout(q, v, a)[0])
    assert float(qs[:, :, 0].max()) > upper + 0.02 and float(held[:, :, 0].max()) < upper + 1e-4
    assert float(walled[:, :, 0].max()) < upper + 1e-4
    free, limited = model.violation_report(limit, qs), model.violation_report(wall, walled, system="cartpole")
    assert free["max"] == pytest.approx(float(qs[:, :, 0].max()) - upper, abs=1e-6) and limited["max"] < 1e-4
    with pytest.raises(ConfigError, match="body 'pole', which does not exist"):
        model.rollout(q, v, a, constraints=parse_constraint("pin nodes=pole"))
    with pytest.raises(GndesignError, match="not on 'swimmer6'"):
        load_cgns_model(ckpt, system="swimmer6")
    with pytest.raises(GndesignError, match="'cgns' model, not a forward model"):
        load_model(ckpt)


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
        CGNSRunConfig.from_dict(raw).validate()


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
    cfg = CGNSRunConfig.from_dict({"data": [str(cartpole_data)], "model": {"kind": "particles"}})
    with pytest.raises(ConfigError, match="not a particle dataset"):
        train_cgns(cfg, tmp_path / "run", progress=False)
