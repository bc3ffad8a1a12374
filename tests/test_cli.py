"""The command line: listing, inspecting, checking FK, generating, and one-line errors."""

import json
import subprocess
import sys

import pytest

from gndesign.cli import main


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
    (["generate", "cartpole", "--episodes", "2", "--steps", "5", "--out", "{tmp}", "--quiet"], "not empty"),
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
    proc = subprocess.run([sys.executable, "-m", "gndesign", "generate", "pendulum", "--episodes", "3",
                           "--steps", "10", "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "transitions/s" in proc.stdout
    from gndesign.datasets.trajectories import TrajectoryDataset

    ds = TrajectoryDataset.load(out, "pendulum")
    assert ds.qpos.shape == (3, 11, 1)


def test_oracle_mpc_beats_doing_nothing(tmp_path, capsys):
    from envs.tasks import get_task

    steps = 100
    out = tmp_path / "plan.json"
    assert main(["plan", "cartpole", "--model", "mujoco", "--planner", "cem", "--steps", str(steps),
                 "--horizon", "30", "--set", "planner.population=48", "--set", "planner.iterations=3",
                 "--out", str(out), "--plot", str(tmp_path / "p.png"), "--quiet"]) == 0
    result = json.loads(out.read_text())
    env = get_task("cartpole-swingup").make_env(seed=0)
    env.reset()
    zero = sum(env.step([0.0]).reward for _ in range(steps))
    assert result["return_mean"] > zero + 1.0
    assert result["mean_evaluations"] == 48 * 3 * 30
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_plan_refuses_unknown_planner_and_foreign_checkpoint(tmp_path, capsys, cartpole_data):
    from gndesign.training import load_config, train

    cfg = load_config(None, ["model.latent_size=8", "model.mlp_hidden_size=8", "train.steps=1",
                             "train.batch_size=8", "train.stats_transitions=50"])
    cfg.data = [str(cartpole_data)]
    train(cfg, tmp_path / "run", progress=False)
    ckpt = str(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert main(["plan", "swimmer6", "--model", ckpt, "--steps", "2"]) == 2
    assert "trained on ['cartpole'], not on 'swimmer6'" in capsys.readouterr().err
    assert main(["plan", "cartpole", "--model", "mujoco", "--planner", "ilqr", "--steps", "2"]) == 2
    assert "unknown planner 'ilqr'" in capsys.readouterr().err
    assert main(["plan", "walker", "--model", "mujoco"]) == 2
    assert "unknown task" in capsys.readouterr().err
    assert main(["plan", "cartpole", "--model", "mujoco", "--set", "iterations=3"]) == 2
    assert "planner.KEY=VALUE" in capsys.readouterr().err
