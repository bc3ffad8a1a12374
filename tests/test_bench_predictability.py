"""The predictability check (``scripts/bench_predictability.py``): MuJoCo repeats itself, so an
unperturbed layout diverges by nothing; a perturbed one starts exactly as far off as it was moved;
bad options are refused before anything is simulated."""

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from envs.obstacle.scene import SceneConfig
from envs.obstacle.simulation import episode_setup, simulate
from tests.test_obstacle_problem import SMALL

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_predictability.py"


@pytest.fixture(scope="module")
def bench():
    return runpy.run_path(str(SCRIPT), run_name="bench_predictability")


def test_the_divergence_is_zero_unperturbed_and_starts_at_the_perturbation(bench):
    cfg = SceneConfig(**SMALL).validate()
    setups = [episode_setup(cfg, 1, i) for i in range(2)]
    designs, inits = np.stack([d for d, _ in setups]), np.stack([q for _, q in setups])
    reference = simulate(cfg, designs, inits)
    none = bench["perturbed_divergence"](cfg, designs, inits, reference, 0.0, np.random.default_rng(0), 1)
    assert none.shape == (2, cfg.frames + 1) and np.all(none == 0)
    err = bench["perturbed_divergence"](cfg, designs, inits, reference, 1e-3, np.random.default_rng(5), 1)
    moved = 1e-3 * np.random.default_rng(5).standard_normal(inits.shape)
    np.testing.assert_allclose(err[:, 0], np.linalg.norm(moved, axis=-1).mean(-1), rtol=1e-12)
    assert err[:, -1].mean() > 0  # the moved balls end elsewhere


@pytest.mark.parametrize("args, message", [(["--deltas", "1e-4", "nan"], "--deltas must be positive"),
                                           (["--frames", "0"], "--frames must lie in"),
                                           (["--episodes", "0"], "must be positive"),
                                           (["--model", "no/such/model.pt"], "--model no/such/model.pt: ")])
def test_bad_options_are_refused_before_simulating(tmp_path, monkeypatch, args, message):
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--out", str(tmp_path / "out"), *args])
    with pytest.raises(SystemExit, match=message):
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert not (tmp_path / "out").exists()


def test_an_output_path_that_is_a_file_is_refused(tmp_path, monkeypatch):
    (tmp_path / "taken").write_text("keep me")
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--out", str(tmp_path / "taken")])
    with pytest.raises(SystemExit, match="not a directory"):
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert (tmp_path / "taken").read_text() == "keep me"


def _report(cfg, design, target, score, predicted):
    """A design report as ``scripts/bench_design.py`` writes it: a gradient run, a refined run whose
    two rounds repeat its design, and CEM on MuJoCo (no prediction) with another design."""
    rounds = [{"round": r, "design": design, "score": score, "predicted_score": predicted} for r in range(2)]
    other = [design[0] + 1e-12, *design[1:]]
    refined = {"design": design, "score": score, "predicted_score": predicted, "rounds": rounds}
    return {"protocol": {"scene": cfg.to_dict(), "seed": 3},
            "runs": {str(target): {"gradient": rounds[0], "gradient-refined": refined,
                                   "cem-mujoco": {"design": other, "score": score}}}}


def test_design_scores_are_reproduced_then_perturbed(bench):
    from envs.obstacle.goals import get_design_goal
    from envs.obstacle.scene import initial_positions
    from gndesign.errors import GndesignError

    cfg = SceneConfig(**SMALL).validate()
    design = cfg.default_design().tolist()
    goal = get_design_goal("bin", cfg, target_x=-0.2)
    score = float(goal.score(simulate(cfg, np.asarray(design), initial_positions(cfg, 3)[None])[0, -1]))
    report = _report(cfg, design, -0.2, score, score + 0.25)
    rows = bench["scored_designs"](report)
    # The refined loop's result (a runner-up it did not predict) and its rounds' one design, predicted.
    assert [(r["method"], r["gap"]) for r in rows] == [
        ("gradient", pytest.approx(0.25)), ("gradient-refined", None), ("gradient-refined rounds", pytest.approx(0.25)),
        ("cem-mujoco", None)]
    r = bench["score_changes"](report, [1e-3], 2, 1)
    assert [d["method"] for d in r["designs"]] == [row["method"] for row in rows]
    assert np.shape(r["deltas"]["0.001"]) == (2, 4)  # two draws of four designs
    # A changed score is a change by a multiple of one ball in six.
    changes = np.asarray(r["deltas"]["0.001"]) * cfg.n_particles
    np.testing.assert_allclose(changes, np.round(changes), atol=1e-9)
    page = bench["markdown"]({"machine": {"cores": 2, "torch": "t", "python": "p"}, "seconds": 1.0,
                              "protocol": {"episodes": 2, "seed": 1, "particles": 6, "frames_total": 60, "segments": 2,
                                           "frames": [10], "deltas": [1e-3], "model": "none"},
                              "mujoco": {}, "scores": {"d.json": r}, "repeat_max_difference": 0.0})
    moved = score + np.asarray(r["deltas"]["0.001"])[:, 3].mean()  # CEM's design over the two draws
    assert f"| `d.json` | 2 | cem-mujoco | {score:.2f} -> {moved:.3f} | {score:.3f} -> {moved:.3f} |" in page
    # A report from before the refined loop recorded its result: the best verified design, as the bench picks it.
    old = _report(cfg, design, -0.2, score, score)
    run = old["runs"]["-0.2"]["gradient-refined"]
    del run["design"], run["score"]
    better = {"design": [0.0] * len(design), "score": score + 0.5}  # a runner-up that scored higher
    run["rounds"][1]["verified"] = [{"design": design, "score": score}, better]
    result = next(r for r in bench["scored_designs"](old) if r["method"] == "gradient-refined")
    assert (result["design"], result["score"], result["gap"]) == (better["design"], better["score"], None)
    with pytest.raises(GndesignError, match="does not reproduce"):
        bench["score_changes"](_report(cfg, design, -0.2, score + 1 / 6, score), [1e-3], 1, 1)


def test_a_design_report_that_is_not_one_is_refused(tmp_path, monkeypatch):
    bad = tmp_path / "design.json"
    bad.write_text('{"runs": {}, "protocol": {"seed": 0}}')  # no scene
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--out", str(tmp_path / "out"), "--designs", str(bad)])
    with pytest.raises(SystemExit, match="not a report of scripts/bench_design.py"):
        runpy.run_path(str(SCRIPT), run_name="__main__")
    bad.write_text("{not json")
    with pytest.raises(SystemExit, match="is not a JSON file"):
        runpy.run_path(str(SCRIPT), run_name="__main__")
