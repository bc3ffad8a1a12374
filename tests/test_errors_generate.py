"""Issue 12, items 9, 11, 16 and 17: interrupted generation, passive and unsupported models,
rendering problems, model errors. Each case checks the exit status, the one-line message and that
no input or dataset changed (a subprocess where signals or environment variables are needed)."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mujoco
import numpy as np
import pytest

import envs.generate as generate_module
from envs import control
from envs.systems import MAX_SWIMMER_LINKS, _suite_source
from gndesign import gl
from gndesign.datasets.staging import locked_tempdir, remove_stale_staging
from gndesign.datasets.trajectories import TrajectoryDataset
from workflows.cli import main
from workflows.video import write_gif

ROOT = Path(__file__).resolve().parents[1]
LINUX = sys.platform.startswith("linux")


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (hidden ones included), by relative path; directories as ``dir``."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("gndesign: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}
    return env


# ----------------------------------------------------------------------------------------------
# 9. Interrupted generation
# ----------------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    """Whether process ``pid`` is running (a zombie, dead but not yet reaped, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _shards(parent: Path) -> list[Path]:
    return [p for d in parent.glob(".ds.*.tmp") for p in d.glob("shard-*.npz")]


def _start_generation(tmp_path: Path) -> tuple[subprocess.Popen, list[int]]:
    """A two-worker generation far longer than the test, once its workers have written a shard."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "workflows", "generate", "cartpole", "--episodes", "4000", "--control-steps", "100",
         "--workers", "2", "--out", str(tmp_path / "ds"), "--quiet"],
        cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: _shards(tmp_path) or proc.poll() is not None, 180, "the first shard")
    except AssertionError:
        proc.kill()
        raise
    assert proc.poll() is None, proc.communicate()
    workers = [k for k in _children(proc.pid) if "spawn_main" in _cmdline(k)]
    assert len(workers) == 2, workers
    return proc, workers


@pytest.mark.skipif(not LINUX, reason="reads /proc")
def test_sigterm_during_generate_removes_the_staging_directory_and_stops_the_workers(tmp_path):
    proc, workers = _start_generation(tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip() == "gndesign: interrupted"
    _wait(lambda: not any(_alive(w) for w in workers), 10, "the workers to exit")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no staging directory, no dataset


@pytest.mark.skipif(not LINUX, reason="reads /proc; PR_SET_PDEATHSIG")
def test_sigkill_workers_die_with_the_parent_and_a_rerun_removes_the_leftovers(tmp_path, capsys, caplog):
    proc, workers = _start_generation(tmp_path)
    proc.kill()
    proc.communicate(timeout=60)
    _wait(lambda: not any(_alive(w) for w in workers), 10, "the workers to die with their parent")
    (staging,) = tmp_path.glob(".ds.*.tmp")
    left = snapshot(staging)
    assert any(name.startswith("shard-") for name in left)
    time.sleep(0.5)
    assert snapshot(staging) == left  # nobody writes there any more

    with caplog.at_level(logging.WARNING, logger="gndesign"):
        assert main(["generate", "cartpole", "--episodes", "2", "--control-steps", "5", "--out",
                     str(tmp_path / "ds"), "--quiet"]) == 0
    removed = [r.getMessage() for r in caplog.records if r.name.startswith("gndesign.datasets")]
    assert len(removed) == 1 and f"removed {staging}" in removed[0] and "killed" in removed[0], removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert TrajectoryDataset.load(tmp_path / "ds").num_episodes == 2


@pytest.mark.skipif(not LINUX, reason="flock")
def test_stale_staging_cleanup_spares_a_running_write_and_restores_an_interrupted_replacement(tmp_path, caplog):
    out = tmp_path / "ds"
    # A writer killed in the middle of replacing ``ds``: the previous dataset is in the .old directory.
    old = tmp_path / ".ds.abcdefgh.old"
    (old / "data").mkdir(parents=True)
    (old / "data" / "meta.json").write_text("{}")
    other = tmp_path / ".ds2.abcdefgh.tmp"  # another output's staging directory
    other.mkdir()
    with locked_tempdir(tmp_path, ".ds.", ".tmp") as running, caplog.at_level(logging.WARNING):
        removed = remove_stale_staging(out)
        assert running.is_dir()  # a living writer's directory stays
    assert removed == [old]
    assert (out / "meta.json").read_text() == "{}" and other.is_dir()
    assert any("restored" in r.getMessage() for r in caplog.records)
    assert remove_stale_staging(out) == [running]  # its writer gone, it is stale


# ----------------------------------------------------------------------------------------------
# 11. Passive systems and unsupported transmissions
# ----------------------------------------------------------------------------------------------

PASSIVE = {
    "passive_hinge": '<mujoco><worldbody><body><joint type="hinge" axis="0 1 0" damping="0.1"/>'
                     '<geom type="capsule" size="0.05" fromto="0 0 0 0 0 -0.5" mass="1"/></body></worldbody></mujoco>',
    "free_only": '<mujoco><worldbody><geom type="plane" size="5 5 .1"/><body pos="0 0 1"><freejoint/>'
                 '<geom type="box" size=".1 .1 .1" mass="1"/></body></worldbody></mujoco>',
}
_SITES = ('<worldbody><site name="s1"/><body name="b"><joint type="slide"/><geom size=".1" mass="1"/>'
          '<site name="s2" pos="0 0 .2"/></body></worldbody>')
REFUSED = {
    "no_joints": ('<mujoco><worldbody><body><geom type="sphere" size=".1"/></body></worldbody></mujoco>',
                  "has no degrees of freedom (no joints)"),
    "site": (f'<mujoco>{_SITES}<actuator><general site="s2" gear="1 0 0 0 0 0"/></actuator></mujoco>',
             "uses a site transmission, which is not supported"),
    "body": (f'<mujoco>{_SITES}<actuator><adhesion body="b" ctrlrange="0 1"/></actuator></mujoco>',
             "uses a body transmission, which is not supported"),
    "slidercrank": (f'<mujoco>{_SITES}<actuator><general cranksite="s1" slidersite="s2" cranklength="0.1"/>'
                    '</actuator></mujoco>', "uses a slidercrank transmission, which is not supported"),
    "spatial_tendon": (f'<mujoco>{_SITES}<tendon><spatial name="t"><site site="s1"/><site site="s2"/></spatial>'
                       '</tendon><actuator><motor tendon="t"/></actuator></mujoco>',
                       "drives spatial tendon 't', which is not supported"),
}


@pytest.mark.parametrize("name", sorted(PASSIVE))
def test_passive_systems_generate_without_actions_and_train(name, tmp_path, capsys):
    model = tmp_path / f"{name}.xml"
    model.write_text(PASSIVE[name])
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["generate", str(model), "--episodes", "6", "--control-steps", "10", "--out", str(data),
                 "--quiet"]) == 0
    ds = TrajectoryDataset.load(data)
    assert ds.meta["nu"] == 0 and ds.action.shape == (6, 10, 0) and np.isfinite(ds.qpos).all()
    before = snapshot(data)
    assert main(["train", "--data", str(data), "--out", str(run), "--steps", "2", "--quiet"]) == 0
    assert "trained 2 steps" in capsys.readouterr().out
    assert snapshot(data) == before
    assert model.read_text() == PASSIVE[name]


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_generate_refuses_unusable_models_before_simulating(case, tmp_path, capsys, monkeypatch):
    xml, message = REFUSED[case]
    model = tmp_path / f"{case}.xml"
    model.write_text(xml)

    def simulated(*args, **kwargs):
        raise AssertionError("simulated before checking the model")

    monkeypatch.setattr(generate_module, "generate_episode", simulated)
    for workers in ("1", "2"):
        assert main(["generate", str(model), "--episodes", "4", "--control-steps", "5", "--workers", workers,
                     "--out", str(tmp_path / "out")]) == 2
        assert message in one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == [model.name]  # nothing written, no staging
    assert model.read_text() == xml


# ----------------------------------------------------------------------------------------------
# 16. Rendering problems: one warning, no video, never a failed run
# ----------------------------------------------------------------------------------------------

GL_CASES = [
    ("bogus", "MUJOCO_GL='bogus' is not an OpenGL backend MuJoCo knows"),
    ("disable", "No OpenGL rendering backend is available"),
    pytest.param("osmesa", "needs the libOSMesa library, which is not installed", marks=pytest.mark.skipif(
        gl.check_backend("osmesa") is None, reason="libOSMesa is installed here")),
]


@pytest.mark.parametrize(("backend", "reason"), GL_CASES)
def test_a_broken_gl_backend_warns_once_and_writes_no_video(backend, reason, tmp_path):
    gif = tmp_path / "plan.gif"
    proc = subprocess.run(
        [sys.executable, "-m", "workflows", "plan", "cartpole-swingup", "--model", "mujoco", "--planner", "random",
         "--episodes", "1", "--control-steps", "4", "--replan-every", "4", "--horizon", "4",
         "--set", "planner.samples=4", "--video", str(gif), "--quiet"],
        cwd=ROOT, env=cli_env(MUJOCO_GL=backend), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and reason in warnings[0] and "no video will be written" in warnings[0], proc.stderr
    assert "Traceback" not in proc.stderr and "video:" not in proc.stdout
    assert "return" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_check_backend_names_the_problem():
    assert gl.check_backend("disable") is None and gl.check_backend("glfw") is None and gl.check_backend("") is None
    assert "not an OpenGL backend" in gl.check_backend("bogus")


def test_a_failing_renderer_gives_no_frames_and_one_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(control, "_render_failure", None)
    calls = []

    def broken(**kwargs):
        calls.append(kwargs)
        raise RuntimeError("no display")

    with caplog.at_level(logging.WARNING, logger="envs"):
        frames = [control.render_or_none(broken, height=2) for _ in range(3)]
    assert frames == [None] * 3 and len(calls) == 1
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "cannot render (RuntimeError: no display): no video will be written; set MUJOCO_GL=egl (GPU) or osmesa "
        "(CPU, libOSMesa) for videos"]
    assert write_gif(frames, tmp_path / "v.gif") is None and not (tmp_path / "v.gif").exists()


# ----------------------------------------------------------------------------------------------
# 17. Model errors that say what is wrong
# ----------------------------------------------------------------------------------------------

MALFORMED = '<mujoco>\n<worldbody>\n<body>\n<geom type="sphere" size=".1"\n</worldbody></mujoco>\n'


@pytest.mark.parametrize("command", ["generate", "inspect"])
@pytest.mark.parametrize(("case", "message"), [
    ("malformed", "malformed.xml: XML syntax error at line 4 (XML_ERROR_PARSING_ELEMENT)"),
    ("directory", "models is a directory, not a model file: give the path of an MJCF .xml file (it holds "
                  "a.xml)"),
    ("swimmer500", f"N in swimmerN must be an integer >= 3 and <= {MAX_SWIMMER_LINKS}"),
])
def test_model_errors_say_what_is_wrong(command, case, message, tmp_path, capsys):
    (tmp_path / "malformed.xml").write_text(MALFORMED)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "a.xml").write_text(PASSIVE["passive_hinge"])
    before = snapshot(tmp_path)
    model = {"malformed": str(tmp_path / "malformed.xml"), "directory": str(tmp_path / "models"),
             "swimmer500": "swimmer500"}[case]
    argv = [command, model] + (["--episodes", "1", "--control-steps", "2", "--out", str(tmp_path / "out")]
                               if command == "generate" else [])
    assert main(argv) == 2
    assert message in one_line_error(capsys)
    assert snapshot(tmp_path) == before


def test_the_swimmer_limit_is_mujocos():
    """swimmer496 compiles and swimmer497 does not (TinyXML2's 500-element nesting limit): the
    limit the registry states is the real one."""
    text, assets = _suite_source("swimmer", MAX_SWIMMER_LINKS)
    assert mujoco.MjModel.from_xml_string(text, assets).nbody == MAX_SWIMMER_LINKS + 1
    text, assets = _suite_source("swimmer", MAX_SWIMMER_LINKS + 1)
    with pytest.raises(ValueError, match="XML_ELEMENT_DEPTH_EXCEEDED"):
        mujoco.MjModel.from_xml_string(text, assets)
