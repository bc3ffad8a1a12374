"""Dataset generation (envs.generate) and the format's loader (gndesign.datasets)."""

from __future__ import annotations

import json

import mujoco
import numpy as np
import pytest

import envs.generate as gen
from envs.generate import (
    generate_dataset,
    generate_episode,
    rollout,
    smooth_random_actions,
)
from envs.systems import InitConfig, get_system
from gndesign.datasets.base import META_FILE, RunningStats
from gndesign.datasets.params import PARAM_KEYS
from gndesign.datasets.trajectories import TrajectoryDataset, write_dataset
from gndesign.errors import DatasetError, GndesignError
from gndesign.io import atomic_write_json, atomic_write_npz, sha256_file

EPISODES, STEPS, SEED = 6, 20, 3


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """The same cartpole dataset made by one and by two worker processes."""
    root = tmp_path_factory.mktemp("gen")
    one = generate_dataset("cartpole", EPISODES, STEPS, SEED, root / "w1", workers=1, shard_size=2, progress=False)
    two = generate_dataset("cartpole", EPISODES, STEPS, SEED, root / "w2", workers=2, shard_size=2, progress=False)
    return one, two


@pytest.fixture
def dataset_copy(datasets, tmp_path):
    """A private copy of the dataset that a test may damage."""
    import shutil

    dst = tmp_path / "ds"
    shutil.copytree(datasets[0].path, dst)
    return dst


def test_generation_is_independent_of_workers(datasets):
    one, two = datasets
    files = sorted(p.name for p in one.path.iterdir())
    assert files == ["meta.json", "shard-00000.npz", "shard-00001.npz", "shard-00002.npz", "stats.json"]
    assert sorted(p.name for p in two.path.iterdir()) == files
    for name in files:
        assert sha256_file(one.path / name) == sha256_file(two.path / name), name
    assert one.transitions == EPISODES * STEPS and one.rate > 0
    # Nothing else (no temporary directory) was left next to the datasets.
    assert sorted(p.name for p in one.path.parent.iterdir()) == ["w1", "w2"]


def test_load_round_trip(datasets):
    ds = TrajectoryDataset.load(datasets[0].path)
    system = get_system("cartpole")
    assert ds.num_episodes == EPISODES and ds.steps == STEPS and len(ds) == EPISODES
    assert ds.qpos.shape == (EPISODES, STEPS + 1, 2)
    assert ds.action.shape == (EPISODES, STEPS, 1)
    assert ds.params["actuator_gear"].shape == (EPISODES, 1, 6)
    assert ds.mjcf == system.mjcf and ds.mjcf_sha256 == system.mjcf_sha256()
    assert ds.control_timestep == pytest.approx(0.01) and ds.n_substeps == 1
    for i in (0, 3, EPISODES - 1):
        expected = generate_episode(system, SEED, i, STEPS)
        got = ds.episode(i)
        assert set(got) == set(expected)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])
    # Parameters really were randomized per episode.
    assert np.ptp(ds.params["body_mass"][:, 1]) > 0


def test_stats_match_numpy(datasets):
    ds = TrajectoryDataset.load(datasets[0].path)
    qacc = np.diff(ds.qvel, axis=1) / ds.control_timestep
    for name, arr in {"qpos": ds.qpos, "qvel": ds.qvel, "action": ds.action, "qacc": qacc}.items():
        flat = arr.reshape(-1, arr.shape[-1])
        st = ds.stats[name]
        np.testing.assert_allclose(st["mean"], flat.mean(0), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(st["std"], flat.std(0), rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(st["min"], flat.min(0))
        np.testing.assert_array_equal(st["max"], flat.max(0))
        assert st["count"] == flat.shape[0]
    np.testing.assert_allclose(ds.qacc, qacc)


def test_running_stats_merge_equals_whole():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(101, 4))
    merged = RunningStats.from_samples(x[:30]).merge(RunningStats.from_samples(x[30:]))
    np.testing.assert_allclose(merged.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(merged.std, x.std(0), rtol=1e-12)
    assert merged.count == 101


def test_rebuild_model_from_dataset_alone(datasets):
    ds = TrajectoryDataset.load(datasets[0].path)
    model = ds.build_model(2)
    for key in PARAM_KEYS:
        np.testing.assert_array_equal(getattr(model, key), ds.params[key][2])
    # Re-simulating episode 2 with the rebuilt model gives the stored trajectory.
    data = mujoco.MjData(model)
    data.qpos[:], data.qvel[:] = ds.qpos[2, 0], ds.qvel[2, 0]
    for t in range(ds.steps):
        data.ctrl[:] = ds.action[2, t]
        mujoco.mj_step(model, data)
    np.testing.assert_array_equal(data.qpos, ds.qpos[2, -1])


def test_split_is_deterministic(datasets):
    ds = TrajectoryDataset.load(datasets[0].path)
    train, val = ds.split(0.34, seed=1)
    train2, val2 = ds.split(0.34, seed=1)
    np.testing.assert_array_equal(train, train2)
    np.testing.assert_array_equal(val, val2)
    assert len(val) == 2 and len(train) == 4
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(EPISODES))
    with pytest.raises(DatasetError):
        ds.split(1.0)


def test_rollout_reproduces_mj_step():
    system = get_system("swimmer3")
    rng = np.random.default_rng(5)
    params = system.sample_params(rng)
    model = system.make_model(params)
    qpos0, qvel0 = system.initial_state(model, rng)
    actions = smooth_random_actions(rng, 10, system.ctrlrange())
    qpos, qvel = rollout(system, params, qpos0, qvel0, actions)
    assert qpos.shape == (11, system.nq) and qvel.shape == (11, system.nv)
    data = mujoco.MjData(model)
    data.qpos[:], data.qvel[:] = qpos0, qvel0
    for t in range(10):
        data.ctrl[:] = actions[t]
        for _ in range(system.n_substeps):
            mujoco.mj_step(model, data)
        np.testing.assert_array_equal(qpos[t + 1], data.qpos)
        np.testing.assert_array_equal(qvel[t + 1], data.qvel)


def test_rollout_reports_divergence():
    system = get_system("pendulum")
    model = system.make_model()
    with pytest.raises(GndesignError, match="non-finite"):
        rollout(system, model, np.array([np.nan]), np.zeros(1), np.zeros((3, 1)))
    # An absurd velocity makes MuJoCo reset the state with a warning; that must not pass silently.
    with pytest.raises(GndesignError, match="rollout failed"):
        rollout(system, model, np.zeros(1), np.array([1e12]), np.zeros((3, 1)))


def test_smooth_actions_in_range_and_correlated():
    ctrlrange = np.array([[-1.0, 1.0], [0.0, 2.0], [-0.5, 0.25]])
    rng = np.random.default_rng(0)
    lag1, spans = [], []
    for _ in range(10):
        u = smooth_random_actions(rng, 1000, ctrlrange)
        assert u.shape == (1000, 3)
        assert np.all(u >= ctrlrange[:, 0]) and np.all(u <= ctrlrange[:, 1])
        for i in range(3):
            if np.std(u[:, i]) > 0:
                lag1.append(np.corrcoef(u[:-1, i], u[1:, i])[0, 1])
        spans.append(np.ptp(u, axis=0) / np.ptp(ctrlrange, axis=1))
    assert min(lag1) > 0.8
    # Over episodes the whole range is visited, bounds included.
    assert np.mean(spans) > 0.6


def test_missing_meta(dataset_copy):
    (dataset_copy / META_FILE).unlink()
    with pytest.raises(DatasetError, match="not a gndesign dataset or generation was interrupted"):
        TrajectoryDataset.load(dataset_copy)


def test_missing_directory(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        TrajectoryDataset.load(tmp_path / "nothing")


def test_missing_shard(dataset_copy):
    (dataset_copy / "shard-00001.npz").unlink()
    with pytest.raises(DatasetError, match="shard-00001.npz.*missing"):
        TrajectoryDataset.load(dataset_copy)


def test_truncated_shard(dataset_copy):
    path = dataset_copy / "shard-00002.npz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="shard-00002.npz is truncated or corrupted") as info:
        TrajectoryDataset.load(dataset_copy)
    assert "regenerate" in str(info.value)


def test_nan_in_shard(dataset_copy):
    path = dataset_copy / "shard-00001.npz"
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["qvel"][1, 5, 0] = np.nan  # second episode of shard 1 = episode 3
    sha = atomic_write_npz(path, arrays)
    meta = json.loads((dataset_copy / META_FILE).read_text())
    meta["shards"][1]["sha256"] = sha  # so that only the NaN check can catch it
    atomic_write_json(dataset_copy / META_FILE, meta)
    with pytest.raises(DatasetError, match=r"qvel.*shard-00001\.npz.*non-finite.*episode 3"):
        TrajectoryDataset.load(dataset_copy)


def test_wrong_schema(dataset_copy):
    meta = json.loads((dataset_copy / META_FILE).read_text())
    meta["schema_version"] = 99
    atomic_write_json(dataset_copy / META_FILE, meta)
    with pytest.raises(DatasetError, match="schema_version 99"):
        TrajectoryDataset.load(dataset_copy)


def test_wrong_shapes_in_meta(dataset_copy):
    meta = json.loads((dataset_copy / META_FILE).read_text())
    meta["steps"] = STEPS + 1
    atomic_write_json(dataset_copy / META_FILE, meta)
    with pytest.raises(DatasetError, match="shape"):
        TrajectoryDataset.load(dataset_copy)


def test_expected_system(datasets):
    path = datasets[0].path
    sha = get_system("cartpole").mjcf_sha256()
    assert TrajectoryDataset.load(path, "cartpole").system == "cartpole"
    assert TrajectoryDataset.load(path, sha).mjcf_sha256 == sha
    with pytest.raises(DatasetError, match="'cartpole'.*expected 'pendulum'"):
        TrajectoryDataset.load(path, "pendulum")


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = gen.rollout

    def flaky(*args, **kwargs):
        if calls["n"] == 3:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(gen, "rollout", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset("pendulum", 6, 5, 0, tmp_path / "out", shard_size=2, progress=False)
    assert calls["n"] == 3
    assert list(tmp_path.iterdir()) == []


def _failing_hook(system, model, rng, qpos, qvel):
    raise GndesignError("initial state hook failed on purpose")


def test_failed_worker_leaves_nothing(tmp_path):
    # Every worker process fails; the workers' error reaches the caller, no file stays behind.
    system = get_system("pendulum", init=InitConfig(hook=_failing_hook))
    with pytest.raises(GndesignError, match="failed on purpose"):
        generate_dataset(system, 4, 5, 0, tmp_path / "out", workers=2, shard_size=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_non_empty_out_dir_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        generate_dataset("pendulum", 2, 5, 0, out, progress=False)
    # overwrite never deletes files that are not a dataset's
    with pytest.raises(DatasetError, match="not part of a dataset"):
        generate_dataset("pendulum", 2, 5, 0, out, progress=False, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_overwrite_replaces_dataset(tmp_path):
    out = tmp_path / "out"
    generate_dataset("pendulum", 2, 5, 0, out, progress=False)
    generate_dataset("pendulum", 3, 5, 1, out, progress=False, overwrite=True)
    assert TrajectoryDataset.load(out).num_episodes == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # An empty directory is fine without overwrite.
    empty = tmp_path / "empty"
    empty.mkdir()
    generate_dataset("pendulum", 1, 5, 0, empty, progress=False)
    assert TrajectoryDataset.load(empty).num_episodes == 1


def test_write_dataset_bring_your_own(tmp_path, datasets):
    ds = TrajectoryDataset.load(datasets[0].path)
    out = write_dataset(
        tmp_path / "byo",
        system="cartpole",
        mjcf=ds.mjcf,
        assets=ds.assets,
        timestep=ds.timestep,
        control_timestep=ds.control_timestep,
        n_substeps=ds.n_substeps,
        qpos=ds.qpos,
        qvel=ds.qvel,
        action=ds.action,
        params=ds.params,
        nbody=ds.meta["nbody"],
        shard_size=4,
    )
    again = TrajectoryDataset.load(out, "cartpole")
    np.testing.assert_array_equal(again.qvel, ds.qvel)
    assert [s["episodes"] for s in again.meta["shards"]] == [[0, 4], [4, 6]]
    for key in ("qpos", "qacc"):
        np.testing.assert_allclose(again.stats[key]["std"], ds.stats[key]["std"], rtol=1e-12)


def test_nominal_parameters_and_no_paths_in_meta(tmp_path):
    system = get_system("pendulum")
    out = generate_dataset(system, 3, 4, 0, tmp_path / "nominal", randomize=False, progress=False).path
    ds = TrajectoryDataset.load(out, "pendulum")
    for key, value in system.nominal_params().items():
        np.testing.assert_array_equal(ds.params[key], np.broadcast_to(value, ds.params[key].shape))
    assert ds.meta["randomize"] is False and ds.meta["seed"] == 0
    assert str(tmp_path) not in (out / META_FILE).read_text()
