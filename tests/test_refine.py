"""The model refined in the design loop: each round adds exactly the MuJoCo trajectories of its
design to the data, the model is fine-tuned from its own weights, and the design continues with it;
fine-tuning refuses checkpoints that do not fit; bad input."""

import numpy as np
import pytest
import yaml

from envs.obstacle.scene import SceneConfig
from envs.obstacle.simulation import generate_obstacle_dataset, simulate
from gndesign.checkpoints import load_model, resolve_checkpoint
from gndesign.config import load_config
from gndesign.datasets.particles import ParticleDataset
from gndesign.errors import ConfigError, GndesignError
from gndesign.training import train
from workflows.cli import main
from workflows.refine import refine_design


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
    (["--refine-data", "DATA", "--segments", "8"], "drop --segments"),
])
def test_bad_refinement_requests(extra, match, base_data, tmp_path, capsys):
    extra = [str(base_data) if x == "DATA" else x for x in extra]
    code = main(["design", "--target-x", "1.5", "--refine-rounds", "1", "--out", str(tmp_path / "o"), *extra])
    assert code != 0
    assert match in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
