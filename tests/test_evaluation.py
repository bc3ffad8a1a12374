"""Evaluation (gndesign.evaluation, gndesign.particle_evaluation, gndesign.constraint_evaluation): per-episode
arrays whose means are the reported summaries; and the dataset-format detector."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import PARTICLE_SCENE

from gndesign.config import ModelConfig, ParticleModelConfig
from gndesign.constraint_evaluation import mean_before_first
from gndesign.datasets.formats import dataset_format
from gndesign.datasets.particles import ParticleDataset, write_particle_dataset
from gndesign.datasets.trajectories import TrajectoryDataset
from gndesign.errors import DatasetError
from gndesign.evaluation import (
    body_position_errors,
    episode_tensors,
    evaluate,
    rollout_errors,
    summarize_rollout_errors,
)
from gndesign.particle_evaluation import (
    particle_rollout_errors,
    summarize_particle_errors,
    summarize_position_errors,
)
from gndesign.particles import ParticleSimulator
from gndesign.simulator import SystemSpec, Transitions, build_model

SCENE = PARTICLE_SCENE


@pytest.fixture(scope="module")
def particle_data(tmp_path_factory):
    """Five episodes of four particles falling from rest (12 frames) past a two-segment obstacle."""
    rng = np.random.default_rng(0)
    start = np.stack([rng.uniform(-0.4, 0.4, (5, 4)), rng.uniform(0.3, 0.5, (5, 4))], -1)
    t = np.arange(12)[None, :, None]
    pos = np.repeat(start[:, None], 12, 1)
    pos[..., 1] -= 0.5 * 9.81 * (t * SCENE["dt"]) ** 2
    obstacle = np.tile(np.array([[-0.2, 0.1], [0.0, 0.05], [0.2, 0.1]]), (5, 1, 1))
    path = write_particle_dataset(tmp_path_factory.mktemp("p") / "ds", pos, obstacle, np.zeros((5, 2)), SCENE, 0)
    return ParticleDataset.load(path)


def cartpole_model(ds: TrajectoryDataset):
    """An untrained GN with the data's normalization statistics."""
    torch.manual_seed(0)
    cfg = ModelConfig(latent_size=8, mlp_hidden_size=8, message_passing_steps=1)
    spec = SystemSpec(name=ds.system, mjcf=ds.mjcf, control_timestep=ds.control_timestep, assets=ds.assets)
    model = build_model(cfg, [spec])
    d, T = episode_tensors(ds, np.arange(ds.num_episodes)), ds.steps
    flat = {k: d[k][:, :-1].flatten(0, 1) for k in ("qpos", "qvel")}
    nxt = {k: d[k][:, 1:].flatten(0, 1) for k in ("qpos", "qvel")}
    params = {k: v.repeat_interleave(T, 0) for k, v in d["params"].items()}
    model.accumulate_statistics(Transitions(ds.system, flat["qpos"], flat["qvel"], d["action"].flatten(0, 1), params,
                                            nxt["qpos"], nxt["qvel"]))
    return model.eval()


def test_rollout_errors_are_per_episode_and_their_means_are_the_summary(cartpole_data):
    ds = TrajectoryDataset.load(cartpole_data)
    model = cartpole_model(ds)
    episodes, horizons = np.array([0, 2, 5]), [1, 5, 20]
    errors = rollout_errors(model, ds, episodes, horizons)
    assert errors["horizons"] == horizons
    for key in ("qpos_mse", "body_pos_error", "finite"):
        assert errors[key].shape == (3, 3), key
    summary = summarize_rollout_errors(errors)
    for j, h in enumerate(horizons):
        assert summary["body_pos_error"][h] == pytest.approx(errors["body_pos_error"][:, j].mean())
        assert summary["qpos_rmse"][h] == pytest.approx(np.sqrt(errors["qpos_mse"][:, j].mean()))
        assert summary["finite"][h] == bool(errors["finite"][:, j].all())
    # evaluate() reports exactly these summaries.
    report = evaluate(model, ds, episodes, tuple(horizons))
    assert report["body_pos_error"] == summary["body_pos_error"] and report["qpos_rmse"] == summary["qpos_rmse"]
    # One episode alone has the same errors as in a batch.
    alone = rollout_errors(model, ds, np.array([2]), horizons)
    np.testing.assert_allclose(alone["body_pos_error"][0], errors["body_pos_error"][1], rtol=1e-5, atol=1e-9)


def test_body_position_errors_from_the_first_step_match_the_rollout_errors_of_one_start(cartpole_data):
    ds = TrajectoryDataset.load(cartpole_data)
    model = cartpole_model(ds)
    every = body_position_errors(model, ds, np.arange(4), 20)
    assert every.shape == (4, 21) and np.all(every[:, 0] < 1e-6)  # the rollout starts on the truth
    one_start = rollout_errors(model, ds, np.arange(4), [5, 20], starts_per_episode=1)
    np.testing.assert_allclose(every[:, [5, 20]], one_start["body_pos_error"], rtol=1e-5, atol=1e-9)


def test_particle_errors_are_per_episode_and_their_means_are_the_summary(particle_data):
    ds = particle_data
    torch.manual_seed(0)
    cfg = ParticleModelConfig(latent_size=8, mlp_hidden_size=8, message_passing_steps=1, history=2,
                              obstacle_points=2)
    model = ParticleSimulator(cfg, ds.scene)
    x = torch.as_tensor(ds.positions, dtype=torch.float32)
    model.accumulate_statistics(x[:, :3], x[:, 3])
    errors = particle_rollout_errors(model, ds, episodes=[0, 3, 4], batch=2)
    assert errors["position_error"].shape == (3, 12) and errors["baseline_error"].shape == (3, 12)
    assert errors["episodes"].tolist() == [0, 3, 4]
    assert np.all(errors["baseline_error"][:, 0] == 0) and np.all(errors["position_error"][:, 0] < 1e-6)
    summary = summarize_particle_errors(errors)
    assert list(summary) == ["position_error", "mean_position_error", "baseline_error", "baseline_mean_error",
                             "finite", "episodes", "steps"]
    assert set(summary["position_error"]) == {2, 5, 11} and summary["episodes"] == 3 and summary["steps"] == 11
    for h, value in summary["position_error"].items():
        assert value == pytest.approx(errors["position_error"][:, h].mean())
    assert summary["mean_position_error"] == pytest.approx(errors["position_error"][:, 1:].mean())
    # The baseline (particles that stay put) is the fall itself, the same whatever the model.
    assert summary["baseline_mean_error"] == pytest.approx(
        np.linalg.norm(ds.positions[[0, 3, 4], :1] - ds.positions[[0, 3, 4]], axis=-1).mean(-1)[:, 1:].mean(),
        rel=1e-5)
    assert summarize_position_errors(errors["position_error"], [3])["position_error"] == {
        3: pytest.approx(errors["position_error"][:, 3].mean())}
    with pytest.raises(Exception, match=r"horizons must lie in 1..11"):
        summarize_particle_errors(errors, [12])


def test_mean_before_first_averages_the_frames_before_each_first_event():
    values = torch.arange(12, dtype=torch.float64).reshape(1, 4, 3)  # [B=1, T+1=4, N=3]
    events = torch.zeros(1, 4, 3, dtype=torch.bool)
    events[0, 2, 0] = True  # particle 0: frames 1 only; particle 1 never: frames 1..3; particle 2 at frame 1: none
    events[0, 1, 2] = True
    expected = np.mean([values[0, 1, 0], values[0, 1, 1], values[0, 2, 1], values[0, 3, 1]])
    assert mean_before_first(values, events) == pytest.approx(float(expected))
    assert mean_before_first(values, torch.ones_like(events)) == 0.0


def test_dataset_format_names_both_formats_and_refuses_anything_else(cartpole_data, particle_data, tmp_path):
    assert dataset_format(cartpole_data) == "trajectories"
    assert dataset_format(particle_data.path) == "particles"
    with pytest.raises(DatasetError, match="does not exist"):
        dataset_format(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"is not a gndesign dataset \(has no readable meta.json"):
        dataset_format(tmp_path / "empty")
    other = tmp_path / "other"
    other.mkdir()
    (other / "meta.json").write_text(json.dumps({"format": "somebody-else"}))
    with pytest.raises(DatasetError, match="names format 'somebody-else'"):
        dataset_format(other)
