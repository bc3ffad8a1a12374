"""The particle dataset format and the learned particle simulator."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import PARTICLE_SCENE, falling_particles

from gndesign.datasets.particles import ParticleDataset, scene_mismatch, write_particle_dataset
from gndesign.errors import DatasetError

SCENE = {**PARTICLE_SCENE, "num_particles": 6}


@pytest.fixture
def dataset_dir(tmp_path):
    x, obs, design = falling_particles()
    return write_particle_dataset(tmp_path / "ds", x, obs, design, SCENE, seed=0)


def test_dataset_round_trip_is_deterministic(tmp_path, dataset_dir):
    x, obs, design = falling_particles()
    ds = ParticleDataset.load(dataset_dir)
    np.testing.assert_array_equal(ds.positions, x)
    np.testing.assert_array_equal(ds.obstacle, obs)
    np.testing.assert_array_equal(ds.design, design)
    assert ds.scene == SCENE and (ds.steps, ds.num_particles, ds.num_segments, len(ds)) == (12, 6, 2, 3)
    np.testing.assert_allclose(ds.stats["velocity"]["mean"], (x[:, 1:] - x[:, :-1]).reshape(-1, 2).mean(0))
    other = write_particle_dataset(tmp_path / "again", x, obs, design, SCENE, seed=0, shard_size=64)
    for f in ("meta.json", "stats.json", "shard-00000.npz"):
        assert (other / f).read_bytes() == (dataset_dir / f).read_bytes()
    train, val = ds.split(0.34, seed=0)
    assert sorted([*train, *val]) == [0, 1, 2] and len(val) == 1


def test_dataset_bad_input_gives_clear_errors(tmp_path, dataset_dir):
    x, obs, design = falling_particles()
    with pytest.raises(DatasetError, match=r"obstacle must be \[3, 3, 2\]"):
        write_particle_dataset(tmp_path / "a", x, obs[:, :2], design, SCENE, seed=0)
    with pytest.raises(DatasetError, match="positions must be"):
        write_particle_dataset(tmp_path / "b", x[..., 0], obs, design, SCENE, seed=0)
    bad = x.copy()
    bad[1, 3, 2, 0] = np.nan
    with pytest.raises(DatasetError, match="non-finite values .first in episode 1"):
        write_particle_dataset(tmp_path / "c", bad, obs, design, SCENE, seed=0)
    with pytest.raises(DatasetError, match=r"lacks keys \['floor'\]"):
        write_particle_dataset(tmp_path / "d", x, obs, design, {k: v for k, v in SCENE.items() if k != "floor"}, 0)
    with pytest.raises(DatasetError, match="not empty"):
        write_particle_dataset(dataset_dir, x, obs, design, SCENE, seed=0)
    # A shard whose arrays do not match meta.json: rewrite it with a wrong shape, fix its sha256.
    from gndesign.io import atomic_write_npz, sha256_file

    meta = json.loads((dataset_dir / "meta.json").read_text())
    atomic_write_npz(dataset_dir / "shard-00000.npz", {"positions": x[:, :, :5], "obstacle": obs, "design": design,
                                                       "episode": np.arange(3)})
    meta["shards"][0]["sha256"] = sha256_file(dataset_dir / "shard-00000.npz")
    (dataset_dir / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=r"array positions in shard shard-00000.npz has shape \(3, 13, 5, 2\), "
                                           r"expected \(3, 13, 6, 2\)"):
        ParticleDataset.load(dataset_dir)
    meta["schema_version"] = 99
    (dataset_dir / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="schema_version 99"):
        ParticleDataset.load(dataset_dir)
    with pytest.raises(DatasetError, match="does not exist"):
        ParticleDataset.load(tmp_path / "nothing")


def test_dataset_refuses_another_scene(dataset_dir):
    with pytest.raises(DatasetError, match=r"another scene \(dt: 0.02 vs 0.01\)"):
        ParticleDataset.load(dataset_dir, expected_scene={**SCENE, "dt": 0.01})
    assert scene_mismatch(SCENE, {**SCENE, "gravity": (0.0, -9.81)}) == []
    # Physical keys are compared, layout keys (how many particles, where they start) are not.
    assert scene_mismatch(SCENE, {**SCENE, "x_max": 0.6, "num_particles": 7, "friction": 0.5,
                                  "obstacle_friction": 0.1}) == [
        "x_max: 0.5 vs 0.6", "friction: '<missing>' vs 0.5", "obstacle_friction: '<missing>' vs 0.1"]


# ----------------------------------------------------------------------------------------------
# The simulator
# ----------------------------------------------------------------------------------------------

import torch  # noqa: E402

from gndesign.checkpoints import load_model  # noqa: E402
from gndesign.config import ParticleModelConfig  # noqa: E402
from gndesign.errors import GndesignError  # noqa: E402
from gndesign.particle_evaluation import particle_rollout_errors, summarize_particle_errors  # noqa: E402
from gndesign.particles import (  # noqa: E402
    ParticleSimulator,
    acceleration_targets,
    integrate,
    obstacle_nodes,
    radius_edges,
)

TINY = ["model.latent_size=16", "model.mlp_hidden_size=16", "model.mlp_layers=1", "model.message_passing_steps=2",
        "train.batch_size=2", "train.log_every=2", "train.eval_every=2", "train.checkpoint_every=2",
        "train.stats_transitions=64"]


def tiny_model(dtype=torch.float64, seed=0) -> ParticleSimulator:
    torch.manual_seed(seed)
    cfg = ParticleModelConfig(latent_size=16, mlp_hidden_size=16, mlp_layers=1, message_passing_steps=2, history=2,
                              radius=4.0, obstacle_points=3)
    model = ParticleSimulator(cfg, SCENE).to(dtype)
    # Statistics of order-one frame-unit motion (so that outputs and gradients are not tiny).
    hist = torch.randn(4, 3, 6, 2, dtype=dtype) * 0.01
    model.accumulate_statistics(hist, hist[:, -1] + torch.randn(4, 6, 2, dtype=dtype) * 0.01)
    return model


def brute_force_edges(pos: np.ndarray, radius: float) -> set[tuple[int, int]]:
    B, M, _ = pos.shape
    out = set()
    for b in range(B):
        d = np.linalg.norm(pos[b, :, None] - pos[b, None], axis=-1)
        for i, j in zip(*np.nonzero(d <= radius), strict=True):
            if i != j:
                out.add((b * M + i, b * M + j))
    return out


def test_neighbour_search_equals_brute_force():
    rng = np.random.default_rng(0)
    pos = rng.uniform(-0.3, 0.3, (3, 40, 2))
    pos[1, 5] = np.nan  # a diverged node gets no edges (and does not break the search)
    edges = radius_edges(torch.as_tensor(pos), 0.1)
    got = set(map(tuple, edges.T.tolist()))
    assert len(got) == edges.shape[1] and len(got) > 100
    assert got == brute_force_edges(np.nan_to_num(pos, nan=1e6), 0.1)
    assert radius_edges(np.zeros((1, 1, 2)), 0.1).shape == (2, 0)


def test_integration_and_targets_are_exact_inverses():
    gen = torch.Generator().manual_seed(0)
    hist = torch.randn(3, 4, 5, 2, dtype=torch.float64, generator=gen)
    nxt = torch.randn(3, 5, 2, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(integrate(hist, acceleration_targets(hist, nxt)), nxt, rtol=0, atol=1e-12)
    acc = torch.randn(3, 5, 2, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(acceleration_targets(hist, integrate(hist, acc)), acc, rtol=0, atol=1e-12)


def test_obstacle_nodes_interpolate_the_vertices():
    verts = torch.tensor([[0.0, 0.0], [0.3, 0.0], [0.3, 0.6]])
    nodes = obstacle_nodes(verts, 3)
    expected = torch.tensor([[0, 0], [0.1, 0], [0.2, 0], [0.3, 0], [0.3, 0.2], [0.3, 0.4], [0.3, 0.6]])
    torch.testing.assert_close(nodes, expected)


def test_rollout_gradient_wrt_obstacle_matches_finite_differences():
    model = tiny_model()
    # Particles resting just above a flat obstacle: every particle has obstacle neighbours.
    pos0 = torch.tensor([[[-0.05, 0.32], [0.0, 0.33], [0.05, 0.325]]], dtype=torch.float64)
    verts = torch.tensor([[[-0.1, 0.3], [0.0, 0.29], [0.1, 0.3]]], dtype=torch.float64, requires_grad=True)

    def objective(v):
        out = model.rollout(pos0, v, 3)
        return (out[:, -1] * torch.tensor([1.0, 2.0], dtype=torch.float64)).sum()

    (grad,) = torch.autograd.grad(objective(verts), verts)
    assert grad.abs().max() > 1e-2
    eps = 1e-6
    fd = torch.zeros_like(verts)
    with torch.no_grad():
        for idx in np.ndindex(*verts.shape):
            d = torch.zeros_like(verts)
            d[idx] = eps
            fd[idx] = (objective(verts + d) - objective(verts - d)) / (2 * eps)
    torch.testing.assert_close(grad, fd, rtol=1e-4, atol=1e-7)


def test_checkpointed_rollout_gives_the_same_positions_and_gradients():
    model = tiny_model()
    x, obs, _ = falling_particles(episodes=2, steps=8, n=6)
    verts = torch.as_tensor(obs, dtype=torch.float64).requires_grad_(True)
    pos = torch.as_tensor(x[:, 0], dtype=torch.float64)
    plain = model.rollout(pos, verts, 5)
    (g1,) = torch.autograd.grad(plain.sum(), verts)
    ckpt = model.rollout(pos, verts, 5, checkpoint=True)
    (g2,) = torch.autograd.grad(ckpt.sum(), verts)
    assert plain.shape == (2, 6, 6, 2)
    torch.testing.assert_close(plain, ckpt, rtol=0, atol=0)
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-14)
    hist = model.start_history(pos)
    torch.testing.assert_close(model.rollout(hist, verts, 2), model.rollout(pos, verts, 2))
    with pytest.raises(GndesignError, match="history"):
        model.rollout(pos[:, None], verts, 2)


@pytest.fixture
def trained(tmp_path):
    from gndesign.config import load_config
    from gndesign.training import train

    x, obs, design = falling_particles(episodes=6, steps=10, n=5, k=2)
    data = write_particle_dataset(tmp_path / "ds", x, obs, design, SCENE, seed=0)
    cfg = load_config(None, TINY + ["train.steps=4"], data=[data])
    train(cfg, tmp_path / "run", progress=False)
    return data, tmp_path / "run"


def test_training_checkpoint_round_trip_and_wrong_scene(trained, tmp_path):
    from gndesign.checkpoints import export_checkpoint, read_checkpoint

    data, run = trained
    ckpt = run / "checkpoints" / "latest.pt"
    blob = read_checkpoint(ckpt)
    assert blob["family"] == "particles" and blob["step"] == 4 and blob["optimizer"] is not None
    assert blob["scene"] == SCENE and blob["config"]["model"]["obstacle_points"] >= 1
    a, _ = load_model(ckpt, "particles", scene=SCENE)
    b, _ = load_model(export_checkpoint(ckpt, tmp_path / "small.pt"), "particles", scene=SCENE)
    ds = ParticleDataset.load(data)
    pos, verts = torch.as_tensor(ds.positions[:2, 0], dtype=torch.float32), torch.as_tensor(ds.obstacle[:2])
    assert torch.equal(a.rollout(pos, verts.float(), 3), b.rollout(pos, verts.float(), 3))
    with pytest.raises(GndesignError, match=r"another scene \(floor: 0.0 vs 0.1; gravity: \[0.0, -9.81\] vs"):
        load_model(ckpt, "particles", scene={**SCENE, "floor": 0.1, "gravity": [0.0, -1.0]})
    with pytest.raises(GndesignError, match="not a forward model"):
        load_model(ckpt, "forward")
    errors = summarize_particle_errors(particle_rollout_errors(a, ds, episodes=[0, 1]))
    assert errors["steps"] == 10 and set(errors["position_error"]) == {2, 5, 10} and errors["finite"]


def test_particle_resume_equals_an_uninterrupted_run(trained, tmp_path):
    from gndesign.checkpoints import read_checkpoint
    from gndesign.config import load_config
    from gndesign.training import train

    data, full = trained
    part = tmp_path / "part"
    cfg = load_config(None, TINY + ["train.steps=4"], data=[data])
    train(cfg, part, progress=False, max_new_steps=2)
    train(load_config(None, TINY + ["train.steps=4"], data=[data]), part, resume=True, progress=False)
    a = read_checkpoint(full / "checkpoints" / "latest.pt")["model"]
    b = read_checkpoint(part / "checkpoints" / "latest.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_forward_run_config_on_particle_data_trains_a_particle_model(tmp_path):
    from gndesign.checkpoints import read_checkpoint
    from gndesign.config import as_particle_config, load_config
    from gndesign.errors import ConfigError
    from gndesign.training import train

    x, obs, design = falling_particles(episodes=4, steps=8, n=4, k=2)
    data = write_particle_dataset(tmp_path / "ds", x, obs, design, SCENE, seed=0)
    cfg = load_config(None, ["model.latent_size=8", "train.steps=2", "train.batch_size=2", "train.stats_transitions=8"])
    cfg.data = [str(data)]  # what the command line does: data set after the options
    assert not isinstance(cfg.model, ParticleModelConfig)
    converted = as_particle_config(cfg)
    assert converted.model.latent_size == 8 and converted.model.message_passing_steps == 3
    assert converted.train.batch_size == 2 and converted.train.lr_final == 1e-5  # particle default kept
    train(cfg, tmp_path / "run", progress=False)
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["family"] == "particles"
    cfg.model.kind = "mlp"
    with pytest.raises(ConfigError, match="cannot simulate particles"):
        as_particle_config(cfg)
    with pytest.raises(ConfigError, match="unknown option model.nope"):
        load_config(None, ["model.nope=1"], data=[data])


def test_evaluate_command_reports_particle_errors(trained, tmp_path, capsys):
    from workflows.cli import main

    data, run = trained
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(run / "checkpoints" / "latest.pt"), "--data", str(data),
                 "--horizons", "2,5", "--out", str(out), "--plot", str(tmp_path / "r.png")]) == 0
    text = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert set(result["position_error"]) == {"2", "5", "10"} and result["finite"]
    assert f"{result['mean_position_error']:.4g} m" in text and (tmp_path / "r.png").stat().st_size > 0
