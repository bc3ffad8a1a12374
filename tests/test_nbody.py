"""The N-body simulator, its datasets and the message-sparse model family (issue 18 items 1-2)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from envs.generate import generate_dataset
from envs.nbody import NBodySystem, generate_episode, get_nbody_system
from gndesign.checkpoints import load_model
from gndesign.config import ConfigError, NBodyModelConfig
from gndesign.datasets.formats import dataset_format
from gndesign.datasets.nbody import NBodyDataset
from gndesign.errors import DatasetError, GndesignError
from gndesign.nbody_laws import accelerations, energy, law_forces, pair_inputs, verlet
from gndesign.nbody_model import NBodyGN
from workflows.train import train_model

ENERGY_TOLERANCE = 1e-4  # |E(t) - E(0)| over 200 frames, relative to kinetic + |potential| at t = 0


@pytest.mark.parametrize("law", ["spring", "r1", "r2", "charge"])
def test_energy_is_conserved(law):
    system = get_nbody_system(f"nbody-{law}-2d")
    ep = generate_episode(system, seed=0, episode=0, steps=200)
    x, v, m, q = ep["positions"], ep["velocities"], ep["masses"], ep["charges"]
    e = energy(law, x, v, m[None], q[None])
    kinetic = 0.5 * (m * (v[0] ** 2).sum(-1)).sum()
    scale = kinetic + abs(e[0] - kinetic)
    assert np.abs(e - e[0]).max() / scale < ENERGY_TOLERANCE
    # the stored accelerations are the law's
    np.testing.assert_allclose(ep["accelerations"][7], accelerations(law, x[7], v[7], m, q), rtol=1e-12)


def test_damped_springs_lose_energy():
    ep = generate_episode(get_nbody_system("nbody-damped-3d"), seed=0, episode=1, steps=100)
    e = energy("damped", ep["positions"], ep["velocities"], ep["masses"][None], ep["charges"][None])
    assert e[-1] < e[0] - 1e-3 and np.all(np.diff(e) < 1e-6)


@pytest.mark.parametrize("law,k", [("r2", 2), ("r1", 1)])
def test_circular_two_body_orbit(law, k):
    """Relative circular orbit of radius a: v^2 / a = (m1 + m2) / a^k, period 2 pi a / v."""
    m = np.array([1.5, 0.7])
    a = 1.3
    speed = math.sqrt((m.sum()) / a ** (k - 1))
    period = 2 * math.pi * a / speed
    x = np.array([[a * m[1] / m.sum(), 0.0], [-a * m[0] / m.sum(), 0.0]])
    v = np.array([[0.0, speed * m[1] / m.sum()], [0.0, -speed * m[0] / m.sum()]])
    steps = 400
    dt = period / steps
    xs, _, _ = verlet(lambda xx, vv: accelerations(law, xx, vv, m, np.ones(2)), x, v, dt, steps, substeps=10)
    sep = np.linalg.norm(xs[:, 0] - xs[:, 1], axis=-1)
    assert np.abs(sep - a).max() < 1e-5
    np.testing.assert_allclose(xs[-1], x, atol=1e-5)  # back where it started after one period
    quarter = xs[steps // 4, 0] - xs[steps // 4, 1]  # a quarter turn: along +y
    np.testing.assert_allclose(quarter, [0.0, a], atol=1e-5)


def test_generate_is_deterministic_and_validated(tmp_path):
    a = generate_dataset("nbody-charge-3d", episodes=5, steps=6, seed=3, out_dir=tmp_path / "a", progress=False,
                         shard_size=2)
    generate_dataset("nbody-charge-3d", episodes=5, steps=6, seed=3, out_dir=tmp_path / "b", progress=False,
                         shard_size=2)
    assert a.transitions == 30
    for name in ("meta.json", "stats.json", "shard-00000.npz", "shard-00002.npz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert dataset_format(tmp_path / "a") == "nbody"
    ds = NBodyDataset.load(tmp_path / "a")
    assert ds.positions.shape == (5, 7, 4, 3) and ds.masses.shape == (5, 4) and ds.law == "charge"
    assert set(np.unique(ds.charges)) <= {-1.0, 1.0} and np.all(ds.masses > 0)
    with pytest.raises(DatasetError, match="another N-body system"):
        NBodyDataset.load(tmp_path / "a", expected_system=get_nbody_system("nbody-spring-3d").describe())
    with pytest.raises(GndesignError, match="unknown N-body system"):
        generate_dataset("nbody-gravity-2d", episodes=1, steps=3, seed=0, out_dir=tmp_path / "c")
    with pytest.raises(DatasetError, match="not empty"):
        generate_dataset("nbody-charge-3d", episodes=5, steps=6, seed=3, out_dir=tmp_path / "a", progress=False)


def test_system_checks():
    with pytest.raises(ConfigError, match="unknown N-body force law"):
        NBodySystem("gravity", 2)
    assert get_nbody_system("nbody-r2-3d-n8").num_particles == 8


def test_model_messages_and_bottleneck():
    sys3 = get_nbody_system("nbody-spring-3d").describe()
    model = NBodyGN(NBodyModelConfig(message="bottleneck"), sys3)
    assert model.message_size == 3
    x, v = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    m, q = torch.rand(2, 5) + 0.5, torch.ones(2, 5)
    acc, (msg, logvar, mask) = model(x, v, m, q, return_messages=True)
    assert acc.shape == (2, 5, 3) and msg.shape == (2, 5, 5, 3) and logvar is None
    # translation invariance by construction
    torch.testing.assert_close(model(x + 3.0, v, m, q), acc)
    kl = NBodyGN(NBodyModelConfig(message="kl", message_size=7), sys3)
    _, (msg, logvar, _) = kl(x, v, m, q, return_messages=True)
    assert msg.shape[-1] == 7 and logvar.shape[-1] == 7
    with pytest.raises(ConfigError, match="model.message"):
        NBodyModelConfig(message="l2").validate()


@pytest.mark.parametrize("law", ["r2", "charge"])
def test_force_readout_divides_the_net_force_by_the_mass(law):
    """readout=force: a linear node model fed the true pair forces gives the true accelerations,
    and the node model does not see the receiver (so messages must carry the forces themselves)."""
    system = get_nbody_system(f"nbody-{law}-2d").describe()
    model = NBodyGN(NBodyModelConfig(message="bottleneck", readout="force", mlp_layers=0), system)
    assert model.node[0].in_features == 2
    with torch.no_grad():
        model.node[0].weight.copy_(torch.eye(2))
        model.node[0].bias.zero_()
        model.acc_scale.fill_(1.0)
    x, v = torch.randn(3, 4, 2, dtype=torch.float64), torch.randn(3, 4, 2, dtype=torch.float64)
    m, q = torch.rand(3, 4, dtype=torch.float64) + 0.5, torch.tensor([1.0, -1.0, 1.0, -1.0]).repeat(3, 1).double()
    model.double()
    model.edge_override = lambda feats: law_forces(law, pair_inputs(x, v, m, q))
    torch.testing.assert_close(model(x, v, m, q), accelerations(law, x, v, m, q))
    with pytest.raises(ConfigError, match="model.readout"):
        NBodyModelConfig(readout="energy").validate()
    with pytest.raises(ConfigError, match="model.readout=force needs model.net=gn"):
        NBodyModelConfig(net="egnn", readout="force").validate()


@pytest.mark.parametrize("message", ["l1", "kl"])
def test_train_and_resume(tmp_path, message):
    data = generate_dataset("nbody-spring-2d", episodes=6, steps=4, seed=0, out_dir=tmp_path / "d", progress=False)
    sets = ["model.kind=nbody", f"model.message={message}", "model.hidden_size=16", "model.mlp_layers=1",
            "model.message_size=8", "train.batch_size=4", "train.threads=1"]
    run = tmp_path / "run"
    first = train_model(str(run), [os.fspath(data)], overrides=sets, steps=3, progress=False)
    assert first["step"] == 3
    again = train_model(str(run), [os.fspath(data)], overrides=sets, steps=5, resume=True, progress=False)
    assert again["step"] == 5
    model, blob = load_model(run / "checkpoints" / "latest.pt", "nbody")
    assert blob["family"] == "nbody" and model.config.message == message and blob["system"]["law"] == "spring"
    # plain `train --data` on N-body data selects the N-body model
    summary = train_model(str(tmp_path / "plain"), [os.fspath(data)], overrides=["train.threads=1"], steps=2,
                          progress=False)
    assert summary["step"] == 2
    _, blob = load_model(tmp_path / "plain" / "checkpoints" / "latest.pt")
    assert blob["family"] == "nbody" and blob["config"]["model"]["message"] == "standard"
