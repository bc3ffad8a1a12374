"""The particle dataset format and the learned particle simulator."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gndesign.errors import DatasetError
from gndesign.particles import ParticleDataset, scene_mismatch, write_particle_dataset

SCENE = {"particle_radius": 0.02, "obstacle_radius": 0.015, "x_min": -0.5, "x_max": 0.5, "floor": 0.0,
         "dt": 0.02, "gravity": [0.0, -9.81], "num_particles": 6}


def falling_particles(episodes: int = 3, steps: int = 12, n: int = 6, k: int = 2, seed: int = 0):
    """Synthetic data: particles released at rest fall (semi-implicit Euler in frame units) and
    stop on the floor; obstacles are random polylines (the particles ignore them)."""
    rng = np.random.default_rng(seed)
    g = SCENE["gravity"][1] * SCENE["dt"] ** 2
    x = np.zeros((episodes, steps + 1, n, 2))
    x[:, 0, :, 0] = rng.uniform(-0.4, 0.4, (episodes, n))
    x[:, 0, :, 1] = rng.uniform(0.1, 0.4, (episodes, n))
    v = np.zeros((episodes, n, 2))
    for t in range(steps):
        v[..., 1] += g
        nxt = x[:, t] + v
        landed = nxt[..., 1] < SCENE["particle_radius"]
        nxt[..., 1] = np.where(landed, SCENE["particle_radius"], nxt[..., 1])
        v[..., 1] = np.where(landed, 0.0, v[..., 1])
        x[:, t + 1] = nxt
    design = rng.uniform(-1, 1, (episodes, k))
    angles = np.cumsum(design, axis=1)
    seg = 0.1 * np.stack([np.cos(angles), np.sin(angles)], -1)
    obstacle = np.concatenate([np.tile([[[-0.1, 0.3]]], (episodes, 1, 1)), seg], 1).cumsum(1)
    return x, obstacle, design


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
    assert scene_mismatch(SCENE, {**SCENE, "x_max": 0.6, "num_particles": 7}) == ["x_max: 0.5 vs 0.6",
                                                                                  "num_particles: 6 vs 7"]
