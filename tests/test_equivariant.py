"""The E(n)-equivariant N-body network (issue 18 item 4): exact equivariance, permutations,
training with resume through the N-body family, checkpoints, bad options."""

from __future__ import annotations

import os

import pytest
import torch

from envs.generate import generate_dataset
from gndesign.checkpoints import load_model, read_checkpoint
from gndesign.config import ConfigError, NBodyModelConfig
from gndesign.equivariant import NBodyEGNN
from gndesign.errors import GndesignError
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
