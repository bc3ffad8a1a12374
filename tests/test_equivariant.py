"""The E(n)-equivariant N-body network (issue 18 item 4): exact equivariance, permutations,
training with resume through the N-body family, checkpoints, bad options; the equivariant particle
network of the obstacle scene (gravity and walls as explicit inputs)."""

from __future__ import annotations

import os

import pytest
import torch

from envs.generate import generate_dataset
from gndesign.checkpoints import load_model, read_checkpoint
from gndesign.config import ConfigError, NBodyModelConfig, ParticleModelConfig, SolverConfig
from gndesign.datasets.particles import write_particle_dataset
from gndesign.equivariant import EquivariantParticleNet, NBodyEGNN
from gndesign.errors import GndesignError
from gndesign.particles import ParticleSimulator
from workflows.cli import main
from workflows.distill import run_distill
from workflows.train import train_model


def _model(dim: int) -> NBodyEGNN:
    torch.manual_seed(0)
    model = NBodyEGNN(NBodyModelConfig(net="egnn", hidden_size=16, mlp_layers=2, layers=2), {"dim": dim})
    model.acc_scale.fill_(2.5)
    return model.double()


def _inputs(dim: int, seed: int = 1, n: int = 5):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(3, n, dim, generator=g, dtype=torch.float64),
            torch.randn(3, n, dim, generator=g, dtype=torch.float64),
            torch.rand(3, n, generator=g, dtype=torch.float64) + 0.5,
            torch.randn(3, n, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("reflect", [False, True])
def test_outputs_rotate_with_inputs_and_ignore_translations(dim, reflect):
    model = _model(dim)
    x, v, m, q = _inputs(dim)
    a = model(x, v, m, q)
    assert a.abs().mean() > 1e-3  # not trivially zero
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        rot, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
        if (torch.det(rot) < 0) != reflect:
            rot[:, 0] = -rot[:, 0]
        shift = 10 * torch.randn(dim, generator=g, dtype=torch.float64)
        b = model(x @ rot.T + shift, v @ rot.T, m, q)
        assert torch.allclose(b, a @ rot.T, atol=1e-5, rtol=0)
        assert (b - a @ rot.T).abs().max() < 1e-10  # float64: exact up to rounding


def test_permutations_permute_the_outputs():
    model = _model(3)
    x, v, m, q = _inputs(3, n=6)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(3))
    a = model(x, v, m, q)
    b = model(x[:, perm], v[:, perm], m[:, perm], q[:, perm])
    assert torch.allclose(b, a[:, perm], atol=1e-10)


def test_velocity_differences_enter():
    """Damped laws need the relative velocities: changing them changes the output."""
    model = _model(2)
    x, v, m, q = _inputs(2)
    assert not torch.allclose(model(x, v, m, q), model(x, 2 * v, m, q))


def test_train_resume_and_checkpoint_round_trip(tmp_path):
    data = generate_dataset("nbody-damped-2d", episodes=6, steps=4, seed=0, out_dir=tmp_path / "d", progress=False)
    sets = ["model.kind=nbody", "model.net=egnn", "model.hidden_size=16", "model.mlp_layers=1",
            "model.layers=2", "train.batch_size=4", "train.threads=1"]
    run = tmp_path / "run"
    assert train_model(str(run), [os.fspath(data)], overrides=sets, steps=3, progress=False)["step"] == 3
    again = train_model(str(run), [os.fspath(data)], overrides=sets, steps=5, resume=True, progress=False)
    assert again["step"] == 5
    model, blob = load_model(run / "checkpoints" / "latest.pt", "nbody")
    assert isinstance(model, NBodyEGNN) and blob["config"]["model"]["net"] == "egnn"
    assert model.config.layers == 2 and blob["system"]["law"] == "damped"
    state = read_checkpoint(run / "checkpoints" / "latest.pt")["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert float(model.acc_scale) != 1.0  # the statistics travel with the checkpoint
    x, v, m, q = (torch.randn(2, 4, 2), torch.randn(2, 4, 2), torch.rand(2, 4) + 0.5, torch.zeros(2, 4))
    xs, vs = model.step(x, v, m, q, dt=0.01, steps=3)
    assert xs.shape == (4, 2, 4, 2) and torch.isfinite(xs).all()
    with pytest.raises(GndesignError, match="equivariant network.*model.net=gn"):
        run_distill(str(run / "checkpoints" / "latest.pt"), os.fspath(data), tmp_path / "distill")


def test_bad_options_are_clear(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"model.net one of gn, egnn.*'transformer'"):
        NBodyModelConfig(net="transformer").validate()
    with pytest.raises(ConfigError, match="model.message=l1 needs model.net=gn"):
        NBodyModelConfig(net="egnn", message="l1").validate()
    with pytest.raises(ConfigError, match="model.layers must be positive"):
        NBodyModelConfig(net="egnn", layers=0).validate()
    data = generate_dataset("nbody-spring-2d", episodes=2, steps=3, seed=0, out_dir=tmp_path / "d", progress=False)
    assert main(["train", "--data", os.fspath(data), "--out", os.fspath(tmp_path / "r"), "--steps", "1",
                 "--set", "model.net=egnn", "--set", "model.message=kl"]) == 2
    err = capsys.readouterr().err
    assert "gndesign: error:" in err and "model.net=egnn" in err and "Traceback" not in err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_cli_train_selects_egnn_on_nbody_data(tmp_path):
    """`gndesign train --data <N-body data> --set model.net=egnn` (no model.kind), then --resume."""
    data = generate_dataset("nbody-spring-3d", episodes=2, steps=3, seed=0, out_dir=tmp_path / "d", progress=False)
    args = ["train", "--data", os.fspath(data), "--out", os.fspath(tmp_path / "r"), "--set", "model.net=egnn",
            "--set", "model.hidden_size=8", "--set", "train.batch_size=2", "--set", "train.threads=1"]
    assert main(args + ["--steps", "2"]) == 0
    assert main(args + ["--steps", "3", "--resume"]) == 0
    model, blob = load_model(tmp_path / "r" / "checkpoints" / "latest.pt")
    assert isinstance(model, NBodyEGNN) and blob["step"] == 3 and blob["family"] == "nbody"


# ------------------------------------------------------------------------------ particle scenes


def _particle_inputs(dtype, seed: int = 4, B: int = 2, C: int = 3, M: int = 9):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(B, M, 2, generator=g, dtype=dtype)
    vel = torch.randn(B, C, M, 2, generator=g, dtype=dtype)
    types = torch.zeros(M, 2, dtype=dtype)
    types[:6, 0] = types[6:, 1] = 1.0
    d = torch.cdist(pos, pos)
    b, r, s = torch.nonzero((d < 1.5) & (d > 0), as_tuple=True)
    return pos, vel, types, torch.stack([b * M + s, b * M + r])


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_particle_net_rotates_with_particles_gravity_and_walls(dtype, tol):
    """Rotating and reflecting everything (particles, velocities, gravity, the walls' normals) and
    translating the positions with the walls rotates the accelerations; the walls are a set."""
    torch.manual_seed(0)
    net = EquivariantParticleNet(3, 16, 16, 1, 2).to(dtype)
    pos, vel, types, edges = _particle_inputs(dtype)
    grav = torch.tensor([0.0, -1.0], dtype=dtype)
    normals = torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]], dtype=dtype)
    offsets = torch.tensor([-1.0, -1.5, -1.5], dtype=dtype)
    a = net(pos, vel, types, edges, grav, normals, offsets, 1.5)
    assert a.abs().mean() > 1e-2
    g = torch.Generator().manual_seed(5)
    for reflect in (False, True):
        rot, _ = torch.linalg.qr(torch.randn(2, 2, generator=g, dtype=torch.float64))
        if (torch.det(rot) < 0) != reflect:
            rot[:, 0] = -rot[:, 0]
        rot, shift = rot.to(dtype), torch.randn(2, generator=g, dtype=dtype)
        n = normals @ rot.T
        b = net(pos @ rot.T + shift, vel @ rot.T, types, edges, grav @ rot.T, n, offsets + n @ shift, 1.5)
        assert (b - a @ rot.T).abs().max() < tol
    perm = [2, 0, 1]
    assert (net(pos, vel, types, edges, grav, normals[perm], offsets[perm], 1.5) - a).abs().max() < tol
    # gravity and the walls are inputs, not constants: turning gravity alone changes the prediction
    assert (net(pos, vel, types, edges, grav @ rot.T, normals, offsets, 1.5) - a).abs().max() > 1e-3


def _particle_simulator(net: str) -> ParticleSimulator:
    from conftest import PARTICLE_SCENE

    torch.manual_seed(0)
    cfg = ParticleModelConfig(net=net, latent_size=16, mlp_hidden_size=16, mlp_layers=1, message_passing_steps=2,
                              history=2, radius=4.0, obstacle_points=3)
    model = ParticleSimulator(cfg, {**PARTICLE_SCENE, "num_particles": 6}).double()
    hist = torch.randn(4, 3, 6, 2, dtype=torch.float64) * 0.01
    model.accumulate_statistics(hist, hist[:, -1] + torch.randn(4, 6, 2, dtype=torch.float64) * 0.01)
    return model


def test_particle_simulator_mirror_symmetry_is_built_in():
    """The test scene is its own mirror image (walls at x = -0.5 and 0.5, gravity along -z): the
    equivariant simulator's rollout of mirrored particles and a mirrored obstacle is the mirrored
    rollout, exactly; the plain GN's is not (it would have to learn it). Gradients reach the
    obstacle's vertices (inverse design)."""
    g = torch.Generator().manual_seed(6)
    hist = torch.stack([torch.rand(2, 3, 6, generator=g, dtype=torch.float64) * 0.8 - 0.4,
                        torch.rand(2, 3, 6, generator=g, dtype=torch.float64) * 0.3 + 0.05], -1)
    verts = torch.tensor([[[-0.3, 0.2], [-0.1, 0.15], [0.2, 0.25]]], dtype=torch.float64).repeat(2, 1, 1)
    mirror = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    gaps = {}
    for net in ("egnn", "gn"):
        model = _particle_simulator(net)
        assert model.lean() == (net == "gn")  # the equivariant network takes the reference path
        with torch.no_grad():
            a = model.rollout(hist, verts, 3)
            b = model.rollout(hist * mirror, verts * mirror, 3)
        gaps[net] = float((b - a * mirror).abs().max() / (a[:, 1:] - a[:, :-1]).abs().max())
    assert gaps["egnn"] < 1e-10 and gaps["gn"] > 1e-3, gaps
    model = _particle_simulator("egnn")
    v = verts.clone().requires_grad_(True)
    model.rollout(hist, v, 3)[:, -1, :, 0].sum().backward()
    assert torch.isfinite(v.grad).all() and v.grad.abs().max() > 0


def test_particle_egnn_trains_through_the_cli_and_refuses_the_solver(tmp_path, capsys):
    from conftest import PARTICLE_SCENE, falling_particles

    with pytest.raises(ConfigError, match="C-GNS.*needs model.net=gn"):
        ParticleSimulator(ParticleModelConfig(net="egnn", obstacle_points=2), PARTICLE_SCENE, solver=SolverConfig())
    with pytest.raises(ConfigError, match=r"model.net one of gn, egnn.*'e3nn'"):
        ParticleModelConfig(net="e3nn").validate()
    x, obs, design = falling_particles(episodes=4, steps=8, n=5, k=2)
    data = write_particle_dataset(tmp_path / "ds", x, obs, design, {**PARTICLE_SCENE, "num_particles": 5}, seed=0)
    args = ["train", "--data", os.fspath(data), "--out", os.fspath(tmp_path / "r"), "--steps", "2", "--quiet",
            "--set", "model.net=egnn", "--set", "model.latent_size=8", "--set", "model.mlp_hidden_size=8",
            "--set", "model.history=2", "--set", "train.batch_size=2", "--set", "train.threads=1"]
    assert main(args) == 0
    model, blob = load_model(tmp_path / "r" / "checkpoints" / "latest.pt", "particles")
    assert isinstance(model.predictor, EquivariantParticleNet) and blob["config"]["model"]["net"] == "egnn"
    assert torch.isfinite(model.rollout(torch.as_tensor(x[:1, :3], dtype=torch.float32),
                                        torch.as_tensor(obs[:1], dtype=torch.float32), 4)).all()
