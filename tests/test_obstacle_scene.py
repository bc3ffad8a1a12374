"""The obstacle-design particle scene and its simulation (envs.obstacle.scene, .simulation): FK equals
MuJoCo, rollouts, bad input, data."""

import dataclasses
import math

import mujoco
import numpy as np
import pytest
import torch

from envs.obstacle.scene import (
    SceneConfig,
    design_fk,
    design_to_mjcf,
    initial_positions,
    make_model,
    source_clearance,
)
from envs.obstacle.simulation import generate_obstacle_dataset, sample_design, simulate
from gndesign.datasets.particles import SCENE_KEYS, ParticleDataset
from gndesign.errors import ConfigError

CFG = SceneConfig()


def small(**kw) -> SceneConfig:
    """The default scene with fewer balls and frames (fast tests)."""
    return dataclasses.replace(CFG, **{"n_particles": 12, "frames": 20, **kw})


def random_designs(cfg: SceneConfig, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([sample_design(cfg, rng) for _ in range(n)])


def test_default_scene_is_valid_and_round_trips():
    d = CFG.validate().to_dict()
    for key in SCENE_KEYS:
        assert key in d, key
    assert d["dt"] == pytest.approx(0.01) and d["gravity"] == [0.0, -9.81]
    assert SceneConfig.from_dict(d) == CFG
    assert CFG.width / 5 == pytest.approx(1.2)


def test_fk_equals_mujoco_geoms():
    designs = np.concatenate([CFG.default_design()[None], random_designs(CFG, 5)])
    fk = design_fk(torch.as_tensor(designs), CFG).numpy()
    for design, vertices in zip(designs, fk, strict=True):
        model = make_model(small(), design)
        data = mujoco.MjData(model)
        mujoco.mj_forward(model, data)
        for k in range(CFG.segments):
            g = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, f"segment{k}")
            half = model.geom_size[g, 1]
            axis = data.geom_xmat[g].reshape(3, 3)[:, 2]
            ends = np.stack([data.geom_xpos[g] - half * axis, data.geom_xpos[g] + half * axis])[:, [0, 2]]
            if np.abs(ends[0] - vertices[k]).max() > np.abs(ends[1] - vertices[k]).max():
                ends = ends[::-1]
            assert np.abs(ends - vertices[k : k + 2]).max() < 1e-9
            assert model.geom_size[g, 0] == CFG.obstacle_radius


def test_fk_is_differentiable_and_batched():
    design = torch.tensor([[-1.0, 0.3, -0.2, 0.5]], dtype=torch.float64, requires_grad=True)
    v = design_fk(design, CFG)
    assert v.shape == (1, CFG.segments + 1, 2)
    assert torch.allclose(v[0, 0], torch.tensor(CFG.anchor, dtype=torch.float64))
    seg = (v[0, 1:] - v[0, :-1]).norm(dim=-1)
    assert torch.allclose(seg, torch.full_like(seg, CFG.segment_length))
    v[0, -1, 0].backward()
    assert torch.isfinite(design.grad).all() and design.grad[0, 0] != 0
    # The last joint moves only the last vertex: dx/dtheta_K = -L sin(sum of angles).
    assert design.grad[0, 3].item() == pytest.approx(-CFG.segment_length * math.sin(-0.4))


def test_initial_positions_are_in_the_source_apart_and_seeded():
    p = initial_positions(CFG, 3)
    assert p.shape == (CFG.n_particles, 2)
    (x0, x1), (z0, z1) = CFG.source_x, CFG.source_z
    assert (p[:, 0] >= x0).all() and (p[:, 0] <= x1).all() and (p[:, 1] >= z0).all() and (p[:, 1] <= z1).all()
    gaps = np.linalg.norm(p[:, None] - p[None], axis=-1) + np.eye(len(p)) * 1e9
    assert gaps.min() >= 2 * CFG.particle_radius
    assert np.array_equal(p, initial_positions(CFG, 3)) and not np.array_equal(p, initial_positions(CFG, 4))


def test_rollouts_fall_stay_inside_and_resolve_collisions():
    cfg = small(frames=60)
    designs = random_designs(cfg, 2, seed=1)
    out = simulate(cfg, designs, [0, 1])
    assert out.shape == (2, 61, cfg.n_particles, 2)
    assert np.array_equal(out[:, 0], np.stack([initial_positions(cfg, 0), initial_positions(cfg, 1)]))
    assert (out[:, -1, :, 1] < out[:, 0, :, 1] - 0.3).all()  # every ball fell
    r = cfg.particle_radius
    assert (out[..., 0] > cfg.x_min + 0.5 * r).all() and (out[..., 0] < cfg.x_max - 0.5 * r).all()
    assert (out[..., 1] > cfg.floor + 0.5 * r).all()
    step = np.linalg.norm(np.diff(out, axis=1), axis=-1)
    assert np.percentile(step, 95) < 1.2 * r and step.max() < 2 * r  # a learned model can resolve contacts
    again = simulate(cfg, designs[:1], [0])
    assert np.array_equal(again[0], out[0])  # deterministic; MjData reuse does not leak state


def test_balls_settle_by_the_last_frame():
    cfg = dataclasses.replace(CFG, n_particles=40)
    out = simulate(cfg, cfg.default_design(), 0)[0]
    speed = np.linalg.norm(out[-1] - out[-2], axis=-1) / cfg.particle_radius
    assert np.median(speed) < 0.02 and np.mean(speed < 0.1) > 0.9
    assert (out[-1, :, 1] < cfg.floor + 12 * cfg.particle_radius).mean() > 0.9  # on the floor, not in the air


@pytest.mark.parametrize("change, message", [
    ({"n_particles": 0}, "at least one particle"),
    ({"segments": 0}, "at least one segment"),
    ({"anchor": (-0.65, 1.5)}, "through the floor"),
    ({"anchor": (-2.2, 1.9)}, "through a wall"),
    ({"segment_length": 0.6}, "through the floor"),
    ({"source_x": (2.5, 3.2)}, "outside the walls"),
    ({"source_z": (1.0, 1.4)}, "holds .* balls"),
    ({"source_x": (-1.0, 0.0), "source_z": (0.8, 2.5)}, "default design reaches into the source"),
    ({"grid_spacing": 1.5}, "overlap"),
    ({"joint_range": (1.0, -1.0)}, "lower <= upper"),
    ({"solref": (0.001, 1.0)}, "time constant"),
    ({"particle_radius": -0.1}, "positive"),
])
def test_impossible_scenes_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(CFG, **change).validate()


def test_bad_designs_and_dicts_are_refused():
    with pytest.raises(ConfigError, match="outside its joint range"):
        design_to_mjcf(CFG, np.array([0.5, 0.0, 0.0, 0.0]))
    with pytest.raises(ConfigError, match="joint range"):
        simulate(small(), np.array([[-1.0, 0.0, 0.0, 2.0]]), 0)
    with pytest.raises(ConfigError, match="into the source region"):
        CFG.check_design(np.array([0.0, math.pi / 2, 0.0, 0.0]))  # straight up into the balls
    with pytest.raises(ConfigError, match="4 joint angles"):
        CFG.check_design(np.zeros(3))
    with pytest.raises(ConfigError, match="unknown scene keys"):
        SceneConfig.from_dict({**CFG.to_dict(), "colour": "red"})
    with pytest.raises(ConfigError, match="disagrees"):
        SceneConfig.from_dict({**CFG.to_dict(), "dt": 0.02})
    with pytest.raises(ConfigError, match="seeds for"):
        simulate(small(), random_designs(CFG, 3), [0, 1])


def test_generated_dataset_loads_and_matches_the_scene(tmp_path):
    cfg = small(frames=8)
    report = generate_obstacle_dataset(cfg, tmp_path / "d", episodes=3, seed=5)
    ds = ParticleDataset.load(tmp_path / "d")
    assert SceneConfig.from_dict(ds.scene) == cfg
    assert report.episodes == 3 and report.path == tmp_path / "d"
    with pytest.raises(ConfigError, match="overwrite"):
        generate_obstacle_dataset(cfg, tmp_path / "d", episodes=3, seed=5)
    again = generate_obstacle_dataset(cfg, tmp_path / "e", episodes=3, seed=5)
    assert (tmp_path / "d" / "meta.json").read_bytes() == (again.path / "meta.json").read_bytes()


def test_differentiable_source_clearance_agrees_with_the_exact_one():
    designs = np.concatenate([random_designs(CFG, 20, seed=3), [[0.0, math.pi / 2, 0.0, 0.0]]])
    exact = CFG.design_clearance(designs)
    d = torch.tensor(designs, requires_grad=True)
    approx = source_clearance(d, CFG)
    assert np.all(np.abs(approx.detach().numpy() - exact)[exact > 0] < CFG.segment_length / 100)
    assert approx[-1] < 0 and exact[-1] < 0
    approx[-1].backward()  # a step up the gradient pulls the curled-up chain out of the source
    assert d.grad[-1].abs().sum() > 0
    stepped = (d[-1:] + 0.05 * d.grad[-1:] / d.grad[-1].norm()).detach()
    assert source_clearance(stepped, CFG)[0] > approx[-1].item() + 0.01


def test_worker_processes_give_the_same_rollouts():
    cfg = small(frames=10)
    designs = random_designs(cfg, 3, seed=4)
    assert np.array_equal(simulate(cfg, designs, [0, 1, 2], workers=2), simulate(cfg, designs, [0, 1, 2]))


def test_generate_obstacle_scene_command(tmp_path, capsys):
    from gndesign.datasets.particles import ParticleDataset
    from workflows.cli import main

    scene = tmp_path / "scene.yaml"
    scene.write_text("n_particles: 6\nsegments: 2\nsource_x: [-0.3, 0.0]\nsource_z: [2.0, 2.25]\n")
    argv = ["generate", "obstacle-scene", "--scene", str(scene), "--episodes", "3", "--frames", "12", "--seed", "1",
            "--out", str(tmp_path / "data")]
    assert main(argv) == 0 and "3 episodes" in capsys.readouterr().out
    ds = ParticleDataset.load(tmp_path / "data")
    assert (len(ds), ds.steps, ds.num_particles, ds.num_segments) == (3, 12, 6, 2)
    assert main(argv) == 2 and "not empty" in capsys.readouterr().err  # refuses to overwrite
    assert main(["generate", "cartpole", "--episodes", "1", "--out", str(tmp_path / "c")]) == 2
    assert "--control-steps" in capsys.readouterr().err
