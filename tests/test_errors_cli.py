"""Issue 12, the command line's part: outputs never replace inputs, datasets, checkpoints or run
directories and are checked before any computation (items 1 and 12); non-finite rollouts, plans
and designs are errors (5, 6, 7); planner and design options are typed and range-checked (14);
bad horizons and scene files are one-line errors (15).

Every CLI case asserts the exit status, a one-line ``gndesign: error:`` message without a
traceback, that the computation never started (a monkeypatched function that must not be called)
and that no input changed (file hashes before and after)."""

import dataclasses
import hashlib
import inspect
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from gndesign.checkpoints import resolve_checkpoint
from gndesign.errors import GndesignError
from workflows.cli import main

TINY = ["model.latent_size=8", "model.mlp_hidden_size=8", "model.message_passing_steps=1", "train.batch_size=8",
        "train.stats_transitions=64", "train.log_every=1", "train.eval_every=1", "train.checkpoint_every=1"]


def tree_hash(*paths) -> str:
    """One hash of every file under ``paths`` (names and bytes)."""
    h = hashlib.sha256()
    for root in paths:
        root = Path(root)
        for f in sorted([root] if root.is_file() else root.rglob("*")):
            if f.is_file():
                h.update(str(f.relative_to(root.parent)).encode())
                h.update(f.read_bytes())
    return h.hexdigest()


def one_line_error(capsys, code, *fragments):
    """Exit status 2, one ``gndesign: error:`` line holding every fragment, no traceback."""
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("gndesign: error: ") and "\n" not in err and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def never(*names):
    """A stand-in for a computation the command must not reach."""
    def fail(*args, **kwargs):
        raise AssertionError(f"computed before the error: {names}")
    return fail


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cartpole_data):
    """A copy of the cartpole data, a tiny forward model and a tiny articulated C-GNS trained on it."""
    root = tmp_path_factory.mktemp("errors_cli")
    data = root / "data"
    shutil.copytree(cartpole_data, data)
    for name, extra in (("gn", []), ("cgns", ["--family", "cgns", "--set", "solver.iterations=2"])):
        args = ["train", "--data", str(data), "--out", str(root / name), "--steps", "2", "--quiet", *extra]
        for item in TINY:
            args += ["--set", item]
        assert main(args) == 0
    return {"data": data, "gn": root / "gn/checkpoints/latest.pt", "cgns": root / "cgns/checkpoints/latest.pt",
            "run": root / "gn"}


# ----------------------------------------------------------------------------------------------
# 1. No command writes over an input, a dataset, a checkpoint or a run directory
# ----------------------------------------------------------------------------------------------
# where (a path under the fixtures' directories), the option, the message
OVER = {"data/meta.json": ("--out", "is inside an input of this command"),
        "data/plot.png": ("--plot", "is inside an input of this command"),
        "model": ("--out", "is an input of this command"),
        "other/meta.json": ("--out", "is inside the dataset"),
        "run/metrics.json": ("--out", "is inside the run directory"),
        "copy": ("--plot", "is a checkpoint")}


@pytest.mark.parametrize("target", list(OVER))
def test_evaluate_never_writes_over_a_dataset_checkpoint_or_run(runs, tmp_path, capsys, monkeypatch, target):
    import workflows.evaluate as ev

    flag, message = OVER[target]
    other = tmp_path / "other"
    shutil.copytree(runs["data"], other)
    shutil.copy(runs["cgns"], tmp_path / "copy.pt")  # a checkpoint outside any run directory
    paths = {"data": runs["data"], "model": runs["gn"], "other": other, "run": runs["run"],
             "copy": tmp_path / "copy.pt"}
    head, _, tail = target.partition("/")
    path = paths[head] / tail if tail else paths[head]
    before = tree_hash(runs["data"], other, runs["run"], tmp_path / "copy.pt")
    monkeypatch.setattr(ev, "evaluate_trajectories", never("evaluate"))
    code = main(["evaluate", "--model", str(runs["gn"]), "--data", str(runs["data"]), "--horizons", "1", flag,
                 str(path)])
    one_line_error(capsys, code, message)
    assert tree_hash(runs["data"], other, runs["run"], tmp_path / "copy.pt") == before


def test_overwrite_allows_writing_into_another_dataset_but_never_over_an_input(runs, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(runs["data"], other)
    args = ["evaluate", "--model", str(runs["gn"]), "--data", str(runs["data"]), "--horizons", "1", "--overwrite"]
    assert main([*args, "--out", str(other / "result.json")]) == 0
    assert (other / "result.json").is_file()
    capsys.readouterr()
    before = tree_hash(runs["data"])
    one_line_error(capsys, main([*args, "--out", str(runs["data"] / "meta.json")]), "is inside an input")
    assert tree_hash(runs["data"]) == before


def test_evaluate_names_the_statistics_of_a_system_the_model_was_not_trained_on(tmp_path, capsys):
    """``pretrained:swimmers`` (swimmers 3-9) on swimmer10 data: normalized by default like swimmer9,
    the nearest trained swimmer, and as asked with ``--statistics``; an untrained name is a one-line
    error naming the trained systems."""
    from envs.generate import generate_dataset

    data = tmp_path / "swimmer10"
    generate_dataset("swimmer10", episodes=1, steps=3, seed=0, out_dir=data, workers=1, progress=False)
    args = ["evaluate", "--model", "pretrained:swimmers", "--data", str(data), "--horizons", "1", "--json"]
    for extra, source in (([], "swimmer9"), (["--statistics", "pooled"], "pooled"),
                          (["--statistics", "swimmer3"], "swimmer3")):
        assert main([*args, *extra]) == 0
        assert json.loads(capsys.readouterr().out)["statistics_from"] == source
    one_line_error(capsys, main([*args, "--statistics", "cheetah"]), "statistics of 'cheetah'",
                   "trained on swimmer3, swimmer4")


@pytest.mark.parametrize("command", ["train", "design"])
def test_train_and_design_never_write_into_a_dataset(runs, capsys, monkeypatch, command):
    import workflows.design as design
    import workflows.train as train

    monkeypatch.setattr(train, "train", never("train"))
    monkeypatch.setattr(design, "load_design_model", never("design"))
    before = tree_hash(runs["data"])
    argv = (["train", "--data", str(runs["data"]), "--out", str(runs["data"])] if command == "train"
            else ["design", "--target-x", "0.5", "--out", str(runs["data"])])
    one_line_error(capsys, main(argv), "input" if command == "train" else "is a dataset")
    assert tree_hash(runs["data"]) == before


# ----------------------------------------------------------------------------------------------
# 12. Bad output paths fail with one line before any computation, for every command
# ----------------------------------------------------------------------------------------------
# (command argv with OUT for the output, the option, file or directory, what must not run)
COMMANDS = {
    "generate --out": (["generate", "cartpole", "--episodes", "1", "--control-steps", "2", "--out", "OUT"], "dir",
                       [("envs.generate", "generate_dataset")]),
    "train --out": (["train", "--data", "DATA", "--out", "OUT"], "dir", [("workflows.train", "train")]),
    "evaluate --out": (["evaluate", "--model", "pretrained:cartpole", "--data", "DATA", "--out", "OUT"], "file",
                       [("workflows.evaluate", "evaluate_trajectories")]),
    "evaluate --plot": (["evaluate", "--model", "pretrained:cartpole", "--data", "DATA", "--plot", "OUT"], "file",
                        [("workflows.evaluate", "evaluate_trajectories")]),
    "plan --out": (["plan", "cartpole", "--model", "mujoco", "--out", "OUT"], "file",
                   [("workflows.plan", "plan_episodes")]),
    "plan --video": (["plan", "cartpole", "--model", "mujoco", "--video", "OUT"], "file",
                     [("workflows.plan", "plan_episodes")]),
    "plan --plot": (["plan", "cartpole", "--model", "mujoco", "--plot", "OUT"], "file",
                    [("workflows.plan", "plan_episodes")]),
    "constrain --out": (["constrain", "--model", "pretrained:cartpole", "--system", "cartpole", "--constraint",
                         "pin nodes=0", "--out", "OUT"], "file", [("workflows.constrain", "load_constrain_model")]),
    "constrain --plot": (["constrain", "--model", "pretrained:cartpole", "--system", "cartpole", "--constraint",
                          "pin nodes=0", "--plot", "OUT"], "file", [("workflows.constrain", "load_constrain_model")]),
    "constrain --video": (["constrain", "--model", "pretrained:cartpole", "--system", "cartpole", "--constraint",
                           "pin nodes=0", "--video", "OUT"], "file", [("workflows.constrain", "load_constrain_model")]),
    "design --out": (["design", "--target-x", "0.5", "--out", "OUT"], "dir",
                     [("workflows.design", "load_design_model")]),
    "demo --out": (["demo", "--out", "OUT"], "dir", [("workflows.plan", "plan_episodes")]),
}
# (how the path is bad, the path for a file output, for a directory output, the message)
BAD = {
    "special": ("/dev/null", "/dev/null", "is not a regular file or directory"),
    "unwritable": ("/proc/gndesign-out.json", "/proc/gndesign-out", "cannot create files in /proc"),
    "missing parent": ("missing/out.json", "a_file/out", None),
    "wrong kind": ("a_dir", "a_file", None),
}
MESSAGES = {("missing parent", "file"): "does not exist; create it first",
            ("missing parent", "dir"): "is not a directory, so nothing can be created under it",
            ("wrong kind", "file"): "is a directory: give a file path",
            ("wrong kind", "dir"): "exists and is not a directory"}


@pytest.mark.parametrize("bad", list(BAD))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_bad_output_paths_fail_before_computing(command, bad, tmp_path, capsys, monkeypatch, cartpole_data):
    import importlib

    argv, kind, computations = COMMANDS[command]
    for module, name in computations:
        monkeypatch.setattr(importlib.import_module(module), name, never(command))
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "a_file").write_text("keep me\n")
    file_path, dir_path, message = BAD[bad]
    path = file_path if kind == "file" else dir_path
    path = path if path.startswith("/") else str(tmp_path / path)
    argv = [str(cartpole_data) if a == "DATA" else path if a == "OUT" else a for a in argv]
    before = tree_hash(tmp_path, cartpole_data)
    one_line_error(capsys, main(argv), message or MESSAGES[bad, kind])
    assert tree_hash(tmp_path, cartpole_data) == before and not (tmp_path / "missing").exists()
    assert (tmp_path / "a_file").read_text() == "keep me\n"


def test_two_outputs_naming_one_file_are_refused(tmp_path, capsys, monkeypatch):
    import workflows.plan as plan

    monkeypatch.setattr(plan, "plan_episodes", never("plan"))
    code = main(["plan", "cartpole", "--model", "mujoco", "--out", str(tmp_path / "x"), "--plot", str(tmp_path / "x")])
    one_line_error(capsys, code, "--out and --plot both name")


def test_guided_plan_json_is_json_alone(capsys, monkeypatch):
    """``--json`` prints one JSON document and nothing else (the real-time factor is in it)."""
    import workflows.plan as plan

    episode = {"episode": 0, "seed": 0, "return": 800.0, "chatter": 0.01}
    monkeypatch.setattr(plan, "plan_episodes", lambda *a, **k: {
        "planner": "gradient", "model": "m", "return_mean": 800.0, "return_std": 0.0, "mean_latency_s": 0.05,
        "chatter_mean": 0.01, "real_time_factor": 1.6, "episodes": [episode]})
    argv = ["plan", "cartpole", "--model", "pretrained:cartpole-k8", "--policy", "pretrained:cartpole-policy"]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["real_time_factor"] == 1.6 and out["returns"] == [800.0]
    assert main(argv) == 0
    assert "real-time factor 1.60" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------
# 5. A non-finite constrained rollout is an error naming the cause, never "max violation 0"
# ----------------------------------------------------------------------------------------------
def test_a_weight_that_overflows_is_an_error_not_a_result(runs, tmp_path, capsys):
    before = tree_hash(runs["cgns"])
    argv = ["constrain", "--model", str(runs["cgns"]), "--system", "cartpole", "--control-steps", "5",
            "--out", str(tmp_path / "result.json")]
    code = main([*argv, "--constraint", "wall axis=x upper=-5 nodes=cart weight=1e33"])
    one_line_error(capsys, code, "constrained solve's prediction is not finite", "overflows", "use weights below")
    assert not (tmp_path / "result.json").exists() and tree_hash(runs["cgns"]) == before
    # A weight the dtype holds still solves and reports.
    assert main([*argv, "--constraint", "wall axis=x upper=-5 nodes=cart weight=1e6"]) == 0
    assert (tmp_path / "result.json").is_file()


def test_check_finite_walks_nested_results():
    import numpy as np

    from gndesign.io import check_finite

    check_finite({"a": [1.0, torch.zeros(2)], "b": np.ones(3), "c": "text"}, "fine")
    for bad in (float("nan"), [1.0, float("inf")], {"x": torch.tensor([0.0, float("nan")])}, np.array([np.inf])):
        with pytest.raises(GndesignError, match="the thing is not finite .*: because"):
            check_finite(bad, "the thing", "because")


# ----------------------------------------------------------------------------------------------
# 6 and 14. Planner and design options are typed and range-checked before anything runs
# ----------------------------------------------------------------------------------------------
# (command, planner or optimizer, --set option, message)
OPTIONS = [
    ("plan", "gradient", "planner.foo=3", "unknown option planner.foo; valid options: iterations, restarts, lr"),
    ("plan", "gradient", "planner.iterations=abc", "planner.iterations: cannot read 'abc' as int"),
    ("plan", "gradient", "planner.lr=nan", "planner.lr must be a finite number"),
    ("plan", "gradient", "planner.lr=-1", "planner.lr must be > 0"),
    ("plan", "gradient", "planner.restarts=0", "planner.restarts must be >= 1"),
    ("plan", "gradient", "planner.iterations=-5", "planner.iterations must be >= 1, got -5"),
    ("plan", "cem", "planner.population=0", "planner.population must be >= 2"),
    ("plan", "cem", "planner.elites=999", "planner.elites (999) must not exceed planner.population (64)"),
    ("plan", "mppi", "planner.temperature=0", "planner.temperature must be > 0"),
    ("plan", "random", "planner.samples=0", "planner.samples must be >= 1, got 0"),
    ("design", "gradient", "optimizer.lr=nan", "optimizer.lr must be a finite number, got nan"),
    ("design", "gradient", "optimizer.lr=0", "optimizer.lr must be > 0"),
    ("design", "gradient", "optimizer.foo=1", "unknown option optimizer.foo; valid options: iterations, lr"),
    ("design", "gradient", "optimizer.update=sgd", "optimizer.update must be one of adam, normalized"),
    ("design", "gradient", "optimizer.betas=[0.9]", "optimizer.betas must be two numbers"),
    ("design", "cem", "optimizer.elites=1", "optimizer.elites must be >= 2"),
    ("design", "cem", "optimizer.budget=4", "optimizer.budget (4) is less than one population (16)"),
    ("design", "random", "optimizer.batch=x", "optimizer.batch: cannot read 'x' as int"),
    ("design", "gradient", "loss.minibatch=sobol", "loss option minibatch must be random or stratified, got 'sobol'"),
    ("design", "gradient", "loss.grad_horizon=-2", "loss option grad_horizon must be a positive number of frames"),
    ("design", "gradient", "loss.foo=1", "unknown loss options ['foo']; known: nodes"),
    ("design", "cem", "loss.particles=50", "loss options ['particles'] shape the gradient optimizer's learned loss"),
    ("design", "gradient", "planner.lr=1", "must look like optimizer.KEY=VALUE or loss.KEY=VALUE"),
]


@pytest.mark.parametrize("command, name, option, message", OPTIONS)
def test_options_are_checked_before_planning_or_designing(command, name, option, message, tmp_path, capsys,
                                                           monkeypatch):
    import workflows.design as design
    import workflows.plan as plan

    for module, attr in ((plan, "MujocoDynamics"), (plan, "load_model"), (design, "load_design_model"),
                         (design, "load_model"), (design, "load_scene_file")):
        monkeypatch.setattr(module, attr, never(attr))
    out = tmp_path / "out"
    if command == "plan":
        argv = ["plan", "cartpole", "--model", "pretrained:cartpole", "--planner", name, "--out", str(out)]
    else:
        argv = ["design", "--target-x", "0.5", "--optimizer", name, "--simulator",
                "learned" if name == "gradient" else "mujoco", "--out", str(out)]
    before = tree_hash(resolve_checkpoint("pretrained:cartpole"), resolve_checkpoint("pretrained:obstacle"))
    one_line_error(capsys, main([*argv, "--set", option]), message)
    assert not out.exists()
    assert tree_hash(resolve_checkpoint("pretrained:cartpole"), resolve_checkpoint("pretrained:obstacle")) == before



@pytest.mark.parametrize("extra, message", [
    (["--horizon", "2", "--replan-every", "4"], "--replan-every 4 exceeds the planning horizon 2"),
])
def test_plan_horizons_are_checked_before_planning(extra, message, tmp_path, capsys, monkeypatch):
    import workflows.plan as plan

    for attr in ("MujocoDynamics", "load_model"):
        monkeypatch.setattr(plan, attr, never(attr))
    out = tmp_path / "out.json"
    one_line_error(capsys, main(["plan", "cartpole", "--model", "pretrained:cartpole", "--out", str(out), *extra]),
                   message)
    assert not out.exists()

def test_a_design_with_no_finite_objective_is_logged_and_not_finite(caplog):
    """The optimizer says so (and returns objective inf); `gndesign design` then refuses the
    result (``check_finite`` on the design and its objective, before anything is written)."""
    from planners.design import GradientDesign

    opt = GradientDesign(torch.zeros(2), torch.ones(2), iterations=3)
    with caplog.at_level(logging.WARNING):
        result = opt.optimize(lambda x: {"total": x.sum(1) * float("nan")})
    assert result.objective == float("inf") and "no design it scored had a finite objective" in caplog.text


@pytest.mark.parametrize("kind", ["planner", "design"])
def test_option_dataclasses_default_to_the_constructors_defaults(kind):
    """The options' defaults are the planners' own (the dataclasses check, the classes act)."""
    from planners import DESIGN_OPTIMIZERS, DESIGN_OPTION_TYPES, PLANNER_OPTION_TYPES, PLANNERS

    classes, types = (PLANNERS, PLANNER_OPTION_TYPES) if kind == "planner" else (DESIGN_OPTIMIZERS,
                                                                                   DESIGN_OPTION_TYPES)
    assert set(classes) == set(types)
    for name, cls in classes.items():
        params = inspect.signature(cls.__init__).parameters
        for f in dataclasses.fields(types[name]):
            assert params[f.name].default == f.default, (name, f.name)
        tunable = set(params) - {"self", "dynamics", "cost", "horizon", "seed", "low", "high", "prior_map"}
        assert tunable == {f.name for f in dataclasses.fields(types[name])}, name


# ----------------------------------------------------------------------------------------------
# 7. Planners refuse a non-finite start state; a plan with no finite cost is logged
# ----------------------------------------------------------------------------------------------
class Line:
    """1-D double integrator: the smallest differentiable dynamics."""

    nq = nv = nu = 1
    differentiable = True
    control_timestep = 0.1

    def __init__(self):
        self.action_low, self.action_high = -torch.ones(1), torch.ones(1)
        self.evaluations = 0

    def rollout(self, qpos, qvel, actions):
        self.evaluations += actions.shape[0] * actions.shape[1]
        v = qvel[:, None] + self.control_timestep * actions.cumsum(1)
        q = qpos[:, None] + self.control_timestep * v.cumsum(1)
        return torch.cat([qpos[:, None], q], 1), torch.cat([qvel[:, None], v], 1)


def cost(qs, vs, actions):
    return (qs[:, 1:, 0] - 1).pow(2).sum(1)


@pytest.mark.parametrize("name", ["cem", "mppi", "gradient", "random"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_planners_refuse_a_non_finite_start_state(name, bad):
    from planners import make_planner

    planner = make_planner(name, Line(), cost, 4, iterations=2) if name != "random" else \
        make_planner(name, Line(), cost, 4, samples=8)
    with pytest.raises(GndesignError, match="start state .* is not finite .*diverged or was not reset"):
        planner.plan(torch.tensor([bad]), torch.zeros(1))
    with pytest.raises(GndesignError, match="start state"):
        planner.plan(torch.zeros(2, 1), torch.tensor([[0.0], [bad]]))  # one of two lockstep episodes


@pytest.mark.parametrize("name", ["cem", "mppi"])
def test_a_plan_without_a_finite_cost_is_logged(name, caplog):
    from planners import make_planner

    planner = make_planner(name, Line(), lambda q, v, a: torch.full((q.shape[0],), float("nan")), 4, iterations=2)
    with caplog.at_level(logging.WARNING):
        result = planner.plan(torch.zeros(1), torch.zeros(1))
    assert "no action sequence had a finite cost" in caplog.text
    assert torch.isfinite(result.actions).all()


# ----------------------------------------------------------------------------------------------
# 15. Bad horizons and broken scene files: one line
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("horizons, message", [
    ("1,a", "--horizons must be comma-separated positive integers"),
    ("-5", "--horizons must be positive (a rollout of at least one step), got -5"),
    ("0", "got 0"),
    ("10,,5", "comma-separated"),
])
def test_bad_horizons_fail_before_evaluating(horizons, message, runs, capsys, monkeypatch):
    import workflows.evaluate as ev

    monkeypatch.setattr(ev, "evaluate_trajectories", never("evaluate"))
    monkeypatch.setattr(ev, "evaluate_particles", never("evaluate"))
    before = tree_hash(runs["data"], runs["gn"])
    code = main(["evaluate", "--model", str(runs["gn"]), "--data", str(runs["data"]), f"--horizons={horizons}"])
    one_line_error(capsys, code, message)
    assert tree_hash(runs["data"], runs["gn"]) == before


SCENES = {
    "syntax": ("n_particles: [6\n", "is not valid YAML at line"),
    "binary": (bytes(range(128, 256)), "is not a text file"),
    "scalar": ("42\n", "must hold a mapping of keys to values, got a int"),
    "directory": (None, "is a directory: give a YAML file"),
    "type": ("frames: abc\n", "has a value of the wrong type"),
}


# constrain checks the file before loading the model; its values are read against the model's scene.
@pytest.mark.parametrize("command, scene", [(c, s) for c in ("design", "constrain", "generate") for s in SCENES
                                            if (c, s) != ("constrain", "type")])
def test_broken_scene_files_are_one_line_errors(command, scene, tmp_path, capsys, monkeypatch):
    import envs.obstacle.simulation as simulation
    import workflows.constrain as constrain
    import workflows.design as design

    content, message = SCENES[scene]
    path = tmp_path / "scene.yaml"
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    monkeypatch.setattr(design, "DesignProblem", never("design"))
    monkeypatch.setattr(constrain, "load_constrain_model", never("constrain"))
    monkeypatch.setattr(simulation, "generate_obstacle_dataset", never("generate"))
    argv = {"design": ["design", "--target-x", "0.5", "--scene", str(path), "--out", str(tmp_path / "out")],
            "constrain": ["constrain", "--model", "pretrained:obstacle", "--system", "obstacle", "--constraint",
                          "pin nodes=0", "--scene", str(path)],
            "generate": ["generate", "obstacle-scene", "--scene", str(path), "--episodes", "1", "--out",
                         str(tmp_path / "data")]}[command]
    before = tree_hash(resolve_checkpoint("pretrained:obstacle"))
    one_line_error(capsys, main(argv), "scene file", message)
    assert tree_hash(resolve_checkpoint("pretrained:obstacle")) == before
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists()
