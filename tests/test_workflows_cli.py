"""The command line: listing, inspecting, checking FK, generating, planning, one-line errors, and the
old option spellings (they work and warn)."""

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from workflows.cli import build_parser, main
from workflows.figures import episode_figure


def test_systems_lists_the_registry(capsys):
    assert main(["systems", "--json"]) == 0
    names = [r["name"] for r in json.loads(capsys.readouterr().out)]
    assert {"pendulum", "cartpole", "acrobot", "swimmerN", "cheetah"} <= set(names)


def test_inspect_json_describes_the_graph(capsys):
    assert main(["inspect", "cartpole", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [e["type"] for e in info["edges"]] == ["slide", "hinge"]
    assert info["actuators"][0]["joints"] == ["slider"]
    assert info["feature_sizes"] == {"node": 27, "edge": 50, "global": 4}


@pytest.mark.parametrize("system", ["pendulum", "cartpole", "acrobot", "swimmer6", "cheetah"])
def test_check_fk_passes_for_every_registered_system(system, capsys):
    assert main(["inspect", system, "--check-fk", "--states", "16"]) == 0
    assert "OK" in capsys.readouterr().out


def test_inspect_an_mjcf_file(tmp_path, capsys):
    from conftest import ALL_JOINTS_XML

    path = tmp_path / "robot.xml"
    path.write_text(ALL_JOINTS_XML)
    assert main(["inspect", str(path), "--check-fk", "--states", "8"]) == 0
    out = capsys.readouterr().out
    assert "ball" in out and "weld" in out and "free" in out


@pytest.mark.parametrize("argv, message", [
    (["inspect", "cartpol"], "unknown system"),
    (["inspect", "swimmer2"], "swimmer"),
    (["generate", "cartpole", "--episodes", "2", "--control-steps", "5", "--out", "{tmp}", "--quiet"], "not empty"),
    (["inspect", "{tmp}/missing.xml"], "does not exist"),
])
def test_bad_input_is_a_one_line_error(argv, message, tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("someone's file")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gndesign: error:") and message in err.lower() and "\n" not in err
    assert (tmp_path / "keep.txt").read_text() == "someone's file"


def test_generate_then_load_through_the_console_script(tmp_path):
    out = tmp_path / "data"
    proc = subprocess.run([sys.executable, "-m", "workflows", "generate", "pendulum", "--episodes", "3",
                           "--control-steps", "10", "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "transitions/s" in proc.stdout
    from gndesign.datasets.trajectories import TrajectoryDataset

    ds = TrajectoryDataset.load(out, "pendulum")
    assert ds.qpos.shape == (3, 11, 1)


def test_oracle_mpc_beats_doing_nothing(tmp_path, capsys):
    from envs.tasks import get_task

    steps = 100
    out = tmp_path / "plan.json"
    assert main(["plan", "cartpole", "--model", "mujoco", "--planner", "cem", "--control-steps", str(steps),
                 "--horizon", "30", "--set", "planner.population=48", "--set", "planner.iterations=3",
                 "--out", str(out), "--plot", str(tmp_path / "p.png"), "--quiet"]) == 0
    result = json.loads(out.read_text())
    env = get_task("cartpole-swingup").make_env(seed=0)
    env.reset()
    zero = sum(env.step([0.0]).reward for _ in range(steps))
    assert result["return_mean"] > zero + 1.0
    assert result["mean_evaluations"] == 48 * 3 * 30
    with Image.open(tmp_path / "p.png") as png:
        assert png.size == (700, 450)  # episode_figure's 7 x 4.5 inches at 100 dpi
    # The figure shows this episode: its rewards over time (s) and its actions.
    fig = episode_figure(result)
    rewards, actions = fig.axes[0].lines[0], fig.axes[1].lines[0]
    assert np.allclose(rewards.get_ydata(), result["episodes"][0]["rewards"])
    assert np.allclose(rewards.get_xdata()[-1], (steps - 1) * result["control_timestep"])
    assert np.allclose(actions.get_ydata(), np.array(result["episodes"][0]["actions"])[:, 0])
    assert "cem planner on mujoco" in fig.axes[0].get_title()


def test_plan_refuses_unknown_planner_and_foreign_checkpoint(tmp_path, capsys, cartpole_data):
    from gndesign.config import load_config
    from gndesign.training import train

    cfg = load_config(None, ["model.latent_size=8", "model.mlp_hidden_size=8", "train.steps=1",
                             "train.batch_size=8", "train.stats_transitions=50"])
    cfg.data = [str(cartpole_data)]
    train(cfg, tmp_path / "run", progress=False)
    ckpt = str(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert main(["plan", "swimmer6", "--model", ckpt, "--control-steps", "2"]) == 2
    assert "trained on ['cartpole'], not on 'swimmer6'" in capsys.readouterr().err
    assert main(["plan", "cartpole", "--model", "mujoco", "--planner", "ilqr", "--control-steps", "2"]) == 2
    assert "unknown planner 'ilqr'" in capsys.readouterr().err
    assert main(["plan", "walker", "--model", "mujoco"]) == 2
    assert "unknown task" in capsys.readouterr().err
    assert main(["plan", "cartpole", "--model", "mujoco", "--set", "iterations=3"]) == 2
    assert "planner.KEY=VALUE" in capsys.readouterr().err


def test_python_m_workflows_shows_the_commands():
    proc = subprocess.run([sys.executable, "-m", "workflows", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: gndesign")
    for command in ("systems", "inspect", "generate", "train", "evaluate", "plan", "demo", "design", "constrain"):
        assert command in proc.stdout
    plan = subprocess.run([sys.executable, "-m", "workflows", "plan", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert "--control-steps" in plan.stdout and "--steps" not in plan.stdout.replace("--control-steps", "")


@pytest.mark.parametrize("old, new, dest, value", [
    (["plan", "cartpole", "--model", "mujoco", "--steps", "7"], "--control-steps", "control_steps", 7),
    (["demo", "--steps", "7"], "--control-steps", "control_steps", 7),
    (["design", "--target-x", "1", "--iterations", "7"], "--steps", "steps", 7),
    (["train", "--out", "x", "--model", "mlp"], "--family", "family", "mlp"),
    (["evaluate", "--model", "m", "--data", "d", "--episodes", "all"], "--episode-set", "episode_set", "all"),
])
def test_old_spellings_parse_as_the_new_ones_and_warn(old, new, dest, value, capsys):
    with pytest.deprecated_call(match=new):
        args = build_parser().parse_args(old)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err
    assert err.startswith(f"gndesign: warning: gndesign {old[0]} {old[-2]} is now {new}") and "next release" in err
    # The new spelling: the same value, no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        args = build_parser().parse_args([new if a == old[-2] else a for a in old])
    assert getattr(args, dest) == value and capsys.readouterr().err == ""


def test_old_steps_of_generate_still_generates_and_warns(tmp_path, capsys):
    from gndesign.datasets.trajectories import TrajectoryDataset

    with pytest.deprecated_call(match="--control-steps"):
        code = main(["generate", "pendulum", "--episodes", "1", "--steps", "4", "--out", str(tmp_path / "d"),
                     "--quiet"])
    assert code == 0
    assert "gndesign generate --steps is now --control-steps" in capsys.readouterr().err
    assert TrajectoryDataset.load(tmp_path / "d", "pendulum").qpos.shape == (1, 5, 1)
    assert main(["generate", "pendulum", "--episodes", "1", "--frames", "4", "--out", str(tmp_path / "e")]) == 2
    assert "--frames does not apply to articulated systems: use --control-steps" in capsys.readouterr().err


def test_old_steps_of_plan_still_plans_and_warns(capsys):
    with pytest.deprecated_call():
        code = main(["plan", "cartpole", "--model", "mujoco", "--planner", "random", "--steps", "3", "--horizon",
                     "2", "--set", "planner.samples=4", "--json", "--quiet"])
    assert code == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["steps"] == 3
    assert "gndesign plan --steps is now --control-steps" in captured.err


@pytest.mark.parametrize("task", ["cartpole", "cartpole-swingup"])
def test_plan_takes_its_horizon_and_replanning_from_the_task(task, capsys):
    assert main(["plan", task, "--model", "mujoco", "--planner", "random", "--control-steps", "1",
                 "--set", "planner.samples=4", "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["horizon"], result["replan_every"], result["options"]) == (120, 1, {"samples": 4})
