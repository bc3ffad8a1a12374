"""The model refined in the design loop: each round adds exactly the MuJoCo trajectories of its
design to the data, the model is fine-tuned from its own weights, and the design continues with it,
also for chains of another K than the training data's (whose obstacle the fine-tuning sees at the
training node spacing); fine-tuning refuses checkpoints that do not fit; bad input."""

import numpy as np
import pytest
import torch
import yaml

from envs.obstacle.goals import get_design_goal
from envs.obstacle.scene import SceneConfig, design_fk, load_scene_file, obstacle_points
from envs.obstacle.simulation import generate_obstacle_dataset, simulate, smooth_designs
from gndesign.checkpoints import load_model, resolve_checkpoint
from gndesign.config import load_config
from gndesign.datasets.particles import ParticleDataset, write_particle_dataset
from gndesign.errors import ConfigError, GndesignError
from gndesign.particle_training import training_nodes
from gndesign.particles import obstacle_nodes
from gndesign.training import train
from workflows.cli import main
from workflows.refine import refine_design, refined_best, rollout_error


@pytest.fixture(scope="module")
def base_data(tmp_path_factory):
    """Episodes of the shipped obstacle model's scene (the default scene)."""
    return generate_obstacle_dataset(SceneConfig(), tmp_path_factory.mktemp("refine") / "base", 3, 0).path


@pytest.fixture(scope="module")
def refined(base_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("refine") / "run"
    r = refine_design(1.5, str(base_data), rounds=1, out=str(out), layouts=2, replay=2, iterations=2,
                      options={"restarts": 1}, fine_tune={"steps": 3})
    return r, out


def test_a_round_adds_exactly_its_designs_mujoco_trajectories(refined, base_data):
    r, out = refined
    round0 = r["rounds"][0]
    added = ParticleDataset.load(out / "data" / "round-0")
    cfg = SceneConfig()
    design = np.asarray(round0["design"])
    assert added.positions.shape[0] == 2 == round0["new_episodes"]
    np.testing.assert_array_equal(added.design, np.repeat(design[None], 2, 0))
    np.testing.assert_array_equal(added.positions, simulate(cfg, design, init=[0, 10_001]))
    replay = ParticleDataset.load(out / "data" / "replay")  # episodes of the base data, unchanged
    base = ParticleDataset.load(base_data)
    for ep in replay.positions:
        assert any(np.array_equal(ep, b) for b in base.positions)
    run_cfg = yaml.safe_load((out / "models" / "round-0" / "config.yaml").read_text())
    assert [str(p) for p in run_cfg["data"]] == [str(out / "data" / "replay"), str(out / "data" / "round-0")]


def test_the_design_continues_with_the_fine_tuned_model(refined):
    r, out = refined
    assert [row["round"] for row in r["rounds"]] == [0, 1]
    assert r["rounds"][1]["model"] == str(out / "models" / "round-0" / "model.pt")
    for row in r["rounds"]:
        assert row["gap"] == pytest.approx(row["predicted_score"] - row["score"])
    best = r["rounds"][r["best_round"]]  # every round was verified in MuJoCo: the result is the best
    assert r["score"] == best["score"] == max(row["score"] for row in r["rounds"]) and r["design"] == best["design"]
    tuned, _ = load_model(out / "models" / "round-0" / "model.pt", "particles")
    shipped, _ = load_model("pretrained:obstacle", "particles")
    diffs = [float((a - b).detach().abs().max()) for a, b in zip(tuned.parameters(), shipped.parameters(), strict=True)]
    assert 0 < max(diffs) < 0.05  # three small steps from the shipped weights, not a new model
    assert (out / "refine.json").exists()


def test_each_round_records_the_tuned_models_error_on_its_design_comparable_to_the_models_before(refined):
    """``tuned_model_error`` (after fine-tuning) is measured as the round's ``model_error`` (before): the
    same rollout of the same design from the problem's layout, so the two say whether the tuning learned it."""
    r, out = refined
    first = r["rounds"][0]
    truth = ParticleDataset.load(out / "data" / "round-0").positions[0]
    before = rollout_error("pretrained:obstacle", SceneConfig(), np.asarray(first["design"]), 1.5, 0, truth)
    assert before == pytest.approx(first["model_error"], rel=1e-6)
    after = rollout_error(out / "models" / "round-0" / "model.pt", SceneConfig(), np.asarray(first["design"]), 1.5, 0,
                          truth)
    assert first["tuned_model_error"] == pytest.approx(after, rel=1e-9) and after != before
    assert "tuned_model_error" not in r["rounds"][-1]  # the last round is not fine-tuned


@pytest.fixture(scope="module")
def verified(base_data, tmp_path_factory):
    """Two rounds verifying three designs each (the result and its runners-up: two restarts and a screen)."""
    out = tmp_path_factory.mktemp("refine") / "verify"
    r = refine_design(1.5, str(base_data), rounds=1, out=str(out), layouts=2, replay=2, iterations=2, verify=3,
                      options={"restarts": 2, "screen": 4, "screen_keep": 0}, fine_tune={"steps": 3})
    return r, out


def test_verify_simulates_the_rounds_runners_up_and_they_all_become_data(verified):
    r, out = verified
    cfg, goal = SceneConfig(), get_design_goal("bin", SceneConfig(), target_x=1.5)
    round0, round1 = r["rounds"]
    cands = [np.asarray(v["design"]) for v in round0["verified"]]
    assert len(cands) == 3 and np.array_equal(cands[0], np.asarray(round0["design"]))
    assert min(np.abs(a - b).max() for i, a in enumerate(cands) for b in cands[i + 1:]) > 1e-9  # distinct
    added = ParticleDataset.load(out / "data" / "round-0")  # every candidate from both layouts, design-major
    assert added.positions.shape[0] == 6 == round0["new_episodes"]
    np.testing.assert_array_equal(added.design, np.repeat(np.stack(cands), 2, 0))
    for i, c in enumerate(cands):
        np.testing.assert_array_equal(added.positions[2 * i:2 * i + 2], simulate(cfg, c, init=[0, 10_001]))
    # scores from the problem's layout: the optimizer's own for its result, the trajectories' for the others
    assert round0["verified"][0]["score"] == round0["score"]
    assert round0["score"] == pytest.approx(float(goal.score(added.positions[0, -1])))
    for i in (1, 2):
        assert round0["verified"][i]["score"] == pytest.approx(float(goal.score(added.positions[2 * i, -1])))
    # the last round's runners-up are scored from the problem's layout only, and counted
    last = [np.asarray(v["design"]) for v in round1["verified"]]
    assert round1["verify_calls"] == len(last) - 1 and "new_episodes" not in round1
    for v, c in zip(round1["verified"][1:], last[1:], strict=True):
        assert v["score"] == pytest.approx(float(goal.score(simulate(cfg, c, init=[0])[0, -1])))
    # the result: the best verified design over both rounds
    every = [v for row in r["rounds"] for v in row["verified"]]
    assert r["score"] == max(v["score"] for v in every) and r["verify"] == 3
    assert r["design"] in [v["design"] for v in every if v["score"] == r["score"]]


def test_the_next_round_starts_from_the_best_verified_design(base_data, tmp_path, monkeypatch):
    """The optimizer's result is made the worst of three designs in MuJoCo: the next round must start
    from the runner-up that scored best, not from the result."""
    import workflows.refine as refine

    cfg, goal = SceneConfig(), get_design_goal("bin", SceneConfig(), target_x=1.5)
    designs = smooth_designs(cfg, 3, torch.Generator().manual_seed(2)).numpy()  # scores 0.48, 0.25, 0.21
    scores = [float(goal.score(simulate(cfg, d, init=[0])[0, -1])) for d in designs]
    order = np.argsort(scores)  # worst first
    assert scores[order[0]] < scores[order[1]] < scores[order[2]]
    inits = []

    def fake(*args, init=None, **kwargs):  # the worst as the result, the others as runners-up
        inits.append(None if init is None else np.asarray(init).tolist())
        return {"design": designs[order[0]].tolist(), "score": scores[order[0]], "predicted_score": 0.5,
                "model_error": 0.1, "mujoco_calls": 1, "learned_calls": 1, "optimizer_seconds": 0.0,
                "candidates": [designs[i].tolist() for i in order]}

    monkeypatch.setattr(refine, "design_obstacle", fake)
    r = refine_design(1.5, str(base_data), rounds=1, out=str(tmp_path / "o"), layouts=1, replay=2, verify=3,
                      fine_tune={"steps": 1})
    assert [v["score"] for v in r["rounds"][0]["verified"]] == pytest.approx([scores[i] for i in order])
    assert inits == [None, designs[order[-1]].tolist()]
    assert r["score"] == pytest.approx(max(scores)) and r["design"] == designs[order[-1]].tolist()


def test_a_model_trained_on_a_gpu_fine_tunes_on_the_cpu(base_data, tmp_path, monkeypatch):
    """A checkpoint's configuration says where it trained (train.device); the refinement fine-tunes on
    the CPU whatever it says (without a GPU, cuda would stop the loop after its first design round)."""
    import workflows.refine as refine

    def from_a_gpu(*args, **kwargs):
        model, blob = load_model(*args, **kwargs)
        blob["config"]["train"]["device"] = "cuda"
        return model, blob

    devices = []

    def tune(cfg, *args, **kwargs):
        devices.append(cfg.train.device)
        return train(cfg, *args, **kwargs)

    design = smooth_designs(SceneConfig(), 1, torch.Generator().manual_seed(2))[0].tolist()
    monkeypatch.setattr(refine, "load_model", from_a_gpu)
    monkeypatch.setattr(refine, "train", tune)
    monkeypatch.setattr(refine, "design_obstacle", lambda *a, **k: {
        "design": design, "score": 0.5, "predicted_score": 0.5, "model_error": 0.1, "mujoco_calls": 1,
        "learned_calls": 1, "optimizer_seconds": 0.0, "candidates": [design]})
    r = refine_design(1.5, str(base_data), rounds=1, out=str(tmp_path / "o"), layouts=1, replay=1,
                      fine_tune={"steps": 1})
    assert devices == ["cpu"] and len(r["rounds"]) == 2


def test_the_result_is_the_best_verified_design_and_older_rounds_count_their_own():
    rows = [{"round": 0, "design": [0.0], "score": 0.7, "predicted_score": 0.8,
             "verified": [{"design": [0.0], "score": 0.7}, {"design": [0.1], "score": 0.9}]},
            {"round": 1, "design": [0.2], "score": 0.9, "predicted_score": 0.6,
             "verified": [{"design": [0.2], "score": 0.9}]}]
    assert refined_best(rows) == {"best_round": 0, "design": [0.1], "score": 0.9, "predicted_score": 0.8}  # earliest
    old = [{"round": 0, "design": [0.0], "score": 0.5, "predicted_score": 0.5},  # cached before --verify
           {"round": 1, "design": [0.3], "score": 0.6, "predicted_score": 0.7}]
    assert refined_best(old) == {"best_round": 1, "design": [0.3], "score": 0.6, "predicted_score": 0.7}


def test_an_earlier_refinement_is_not_overwritten_unasked(refined, base_data):
    _, out = refined
    before = (out / "refine.json").read_bytes()
    with pytest.raises(GndesignError, match="already holds a refinement run"):
        refine_design(1.5, str(base_data), rounds=1, out=str(out), iterations=1)
    assert (out / "refine.json").read_bytes() == before


def test_fine_tuning_refuses_other_model_options(base_data, tmp_path):
    cfg = load_config(None, ["model.latent_size=32", "train.steps=1"], data=[str(base_data)])
    with pytest.raises(ConfigError, match="cannot fine-tune pretrained:obstacle: model[.]"):
        train(cfg, tmp_path / "run", progress=False, init_from="pretrained:obstacle")
    assert not (tmp_path / "run" / "checkpoints").exists()
    with pytest.raises(GndesignError, match="family|particle|forward"):
        train(cfg, tmp_path / "run2", progress=False, init_from=resolve_checkpoint("pretrained:cartpole"))


@pytest.mark.parametrize("extra, match", [
    ([], "needs --refine-data"),
    (["--refine-data", "DATA", "--optimizer", "cem"], "drop --optimizer"),
    (["--refine-data", "DATA", "--scene", "scene.yaml"], "drop --scene"),
    (["--refine-data", "DATA", "--segments", "8", "--replay", "0"], "give --replay >= 1"),
])
def test_bad_refinement_requests(extra, match, base_data, tmp_path, capsys):
    extra = [str(base_data) if x == "DATA" else x for x in extra]
    code = main(["design", "--target-x", "1.5", "--refine-rounds", "1", "--out", str(tmp_path / "o"), *extra])
    assert code != 0
    assert match in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_verify_needs_at_least_one_design(base_data, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["design", "--target-x", "1.5", "--refine-rounds", "1", "--refine-data", str(base_data), "--verify", "0",
              "--out", str(tmp_path / "o")])
    assert "argument --verify: expected a positive integer, got 0" in capsys.readouterr().err
    with pytest.raises(GndesignError, match="--verify >= 1"):
        refine_design(1.5, str(base_data), rounds=1, out=str(tmp_path / "o"), verify=0)
    assert not (tmp_path / "o").exists()


def test_training_nodes_keep_the_first_datasets_spacing_for_chains_of_another_k(tmp_path):
    """A K = 16 chain beside K = 4 training data is seen as the design problem shows it to the model
    (points at the training spacing, 37 of them like the K = 4 chain's nodes), not as 9 nodes per segment."""
    cfg4, cfg16 = SceneConfig(), load_scene_file(None, segments=16)
    rng = np.random.default_rng(0)
    d4, d16 = rng.uniform(-0.5, 0.5, (2, 4)), rng.uniform(-0.3, 0.3, (3, 16))
    d4[:, 0] -= 1.2
    d16[:, 0] -= 1.2
    data = []
    for cfg, d in ((cfg4, d4), (cfg16, d16)):
        pos = rng.uniform(0, 1, (len(d), 4, 3, 2))
        verts = design_fk(torch.as_tensor(d), cfg).numpy()
        data.append(ParticleDataset.load(write_particle_dataset(tmp_path / f"k{cfg.segments}", pos, verts, d,
                                                                cfg.to_dict(), 0)))
    n4, n16 = training_nodes(data, 9)
    torch.testing.assert_close(n4, obstacle_nodes(torch.as_tensor(data[0].obstacle, dtype=torch.float32), 9))
    assert n4.shape == (2, 37, 2) and n16.shape == (3, 37, 2)
    want = obstacle_points(torch.as_tensor(d16), cfg16, cfg4.segment_length / 9).float()
    torch.testing.assert_close(n16, want, atol=1e-6, rtol=0)


def test_refinement_at_another_k_designs_and_adds_trajectories_of_that_k(base_data, tmp_path):
    r = refine_design(1.5, str(base_data), rounds=1, out=str(tmp_path / "run"), layouts=1, replay=2, iterations=1,
                      options={"restarts": 1, "screen": 0}, fine_tune={"steps": 2}, segments=8)
    assert r["segments"] == 8 and all(len(row["design"]) == 8 for row in r["rounds"])
    added = ParticleDataset.load(tmp_path / "run" / "data" / "round-0")
    cfg8 = load_scene_file(None, segments=8)
    design = np.asarray(r["rounds"][0]["design"])
    assert added.scene["segments"] == 8 and added.obstacle.shape == (1, 9, 2)
    np.testing.assert_array_equal(added.positions, simulate(cfg8, design, init=[0]))
    # The fine-tuned model keeps the training scene (K = 4), whose segment length sets its node spacing.
    _, blob = load_model(tmp_path / "run" / "models" / "round-0" / "model.pt", "particles")
    assert blob["scene"]["segments"] == 4 and blob["scene"]["segment_length"] == SceneConfig().segment_length


def test_refinement_at_another_k_needs_the_replay(base_data, tmp_path):
    with pytest.raises(GndesignError, match="give --replay >= 1"):
        refine_design(1.5, str(base_data), rounds=1, out=str(tmp_path / "run"), replay=0, segments=8)
    assert not (tmp_path / "run").exists()
