"""Issue 12, data, configuration and checkpoints: every bad input or fault is a one-line error (exit 2)
that changes no input, dataset or checkpoint; interrupted training loses no work.

One test per item: 2 (resume with other data or configuration), 3 (zero or negative durations),
4 (a flipped bit in a checkpoint, for every loader), 8 (datasets that do not fit their MJCF or hold
impossible values, at write and load), 10 (metrics after a resume; Ctrl-C and SIGTERM save a
checkpoint), 13 (write failures), 15 (non-finite options, broken config files, a checkpoint whose
tensors do not fit its configuration).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from gndesign import checkpoints, io
from gndesign.checkpoints import read_checkpoint
from gndesign.config import load_config
from gndesign.datasets.particles import ParticleDataset, write_particle_dataset
from gndesign.datasets.trajectories import TrajectoryDataset, write_dataset
from gndesign.errors import ConfigError, DatasetError
from gndesign.forward_training import ForwardTrainer
from gndesign.io import atomic_write_json, atomic_write_npz, sha256_file
from gndesign.training import train
from workflows.cli import main
from workflows.train import train_model

TINY = ["model.latent_size=16", "model.mlp_hidden_size=16", "model.mlp_layers=1", "train.batch_size=32",
        "train.log_every=1", "train.eval_every=5", "train.checkpoint_every=5", "train.stats_transitions=300"]
SETS = [a for s in TINY for a in ("--set", s)]


def snapshot(*paths: Path) -> dict[str, str]:
    """sha256 of every file under ``paths`` (files or directories)."""
    out = {}
    for p in map(Path, paths):
        for f in [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()):
            out[str(f)] = sha256_file(f)
    return out


def run_cli(argv: list, capsys, status: int = 2) -> str:
    """Run the command line; assert its exit status and, for errors, one line; return stderr."""
    capsys.readouterr()
    assert main([str(a) for a in argv]) == status
    err = capsys.readouterr().err.strip()
    if status == 2:
        assert err.startswith("gndesign: error:") and "\n" not in err, err
    return err


def train_cli(data, out, *extra) -> list:
    return ["train", "--data", data, "--out", out, "--quiet", *SETS, *extra]


@pytest.fixture(scope="module")
def run(cartpole_data, tmp_path_factory):
    """A 10-step cartpole run (checkpoint at step 10)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main([str(a) for a in train_cli(cartpole_data, out, "--steps", "10")]) == 0
    return out


@pytest.fixture
def run_copy(run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


# ------------------------------------------------------------------------------------------ item 2
@pytest.mark.parametrize("extra, message", [
    (["--data", "{swimmer}"], "trained on cartpole, --data holds swimmer4"),
    (["--set", "model.latent_size=32"], "model.latent_size 16 in the checkpoint vs 32 now"),
    (["--family", "mlp"], "model.kind gn in the checkpoint vs mlp now"),
    (["--set", "train.lr=0.01"], "train.lr 0.001 in the checkpoint vs 0.01 now"),
])
def test_2_resume_refuses_other_data_or_configuration(extra, message, run_copy, cartpole_data, swimmer_data,
                                                      capsys):
    before = snapshot(run_copy, cartpole_data, swimmer_data)
    extra = [str(swimmer_data) if a == "{swimmer}" else a for a in extra]
    argv = ["train", "--data", cartpole_data, "--out", run_copy, "--quiet", *SETS, "--steps", "20", "--resume"]
    bad = [*argv[:2], extra[1], *argv[3:]] if extra[0] == "--data" else argv + extra
    err = run_cli(bad, capsys)
    assert message in err and ("another --out" in err or "new run" in err)
    assert snapshot(run_copy, cartpole_data, swimmer_data) == before
    # The same run resumes fine (longer: train.steps may change).
    run_cli(argv, capsys, status=0)
    assert read_checkpoint(run_copy / "checkpoints" / "latest.pt")["step"] == 20



def test_2_resume_without_options_continues_the_run_as_configured(run_copy, cartpole_data, capsys):
    # The run trained with non-default options (TINY); `--resume` alone reads them from RUN/config.yaml.
    run_cli(["train", "--data", cartpole_data, "--out", run_copy, "--quiet", "--steps", "15", "--resume"], capsys,
            status=0)
    blob = read_checkpoint(run_copy / "checkpoints" / "latest.pt")
    assert blob["step"] == 15 and blob["config"]["model"]["latent_size"] == 16

# ------------------------------------------------------------------------------------------ item 3
@pytest.mark.parametrize("extra, message", [
    (["--minutes", "0"], "train.minutes must be a positive number of minutes, got 0"),
    (["--minutes", "-1"], "train.minutes must be a positive number of minutes, got -1"),
    (["--minutes", "nan"], "train.minutes must be a finite number, got nan"),
    (["--set", "train.steps=0"], "train.steps must be positive, got 0"),
    (["--set", "train.steps=-5"], "train.steps must be positive, got -5"),
])
def test_3_zero_or_negative_durations_are_refused(extra, message, cartpole_data, tmp_path, capsys):
    before = snapshot(cartpole_data)
    err = run_cli(train_cli(cartpole_data, tmp_path / "out", *extra), capsys)
    assert message in err
    assert not (tmp_path / "out").exists() and snapshot(cartpole_data) == before
    # The Python entry point: 0 is not "unset" (it used to train the default 20,000 steps).
    for kwargs in ({"steps": 0}, {"minutes": 0.0}):
        with pytest.raises(ConfigError, match="must be (a )?positive"):
            train_model(str(tmp_path / "out"), [str(cartpole_data)], overrides=TINY, progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


def test_3_a_time_budget_is_not_cut_short_by_the_default_step_count(cartpole_data, tmp_path, capsys):
    """``--minutes`` alone trains for that time: it used to stop at the default train.steps (20,000)
    first, silently, however many minutes were asked for."""
    from workflows.train import NO_STEP_LIMIT

    run_cli(train_cli(cartpole_data, tmp_path / "out", "--minutes", "0.01"), capsys, status=0)
    saved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())["train"]
    assert saved["minutes"] == 0.01 and saved["steps"] == NO_STEP_LIMIT
    # Given both (the Python entry point), the steps stay a limit too.
    train_model(str(tmp_path / "both"), [str(cartpole_data)], overrides=TINY, progress=False, steps=3, minutes=1.0)
    assert read_checkpoint(tmp_path / "both" / "checkpoints" / "latest.pt")["step"] == 3


# ------------------------------------------------------------------------------------------ item 4
def flip_exponent(path: Path, out: Path) -> None:
    """Write ``path`` with the top exponent bit of one float32 weight flipped (0.1 -> ~3e37)."""
    raw = bytearray(path.read_bytes())
    weights = [v for v in read_checkpoint(path)["model"].values() if v.dtype == torch.float32 and v.numel() > 8]
    at = raw.find(weights[0].numpy().tobytes())
    assert at > 0
    raw[at + 3] ^= 0x40  # little-endian float32: byte 3 holds the sign and the exponent's top 7 bits
    out.write_bytes(bytes(raw))


@pytest.mark.parametrize("command", ["load", "resume", "evaluate", "plan", "constrain", "design"])
def test_4_a_flipped_bit_is_refused_by_every_loader(command, run_copy, cartpole_data, tmp_path, capsys):
    ckpt = run_copy / "checkpoints" / "latest.pt"
    bad = tmp_path / "bad.pt"
    flip_exponent(ckpt, bad)
    if command == "resume":
        shutil.copy(bad, ckpt)
        bad = ckpt
    before = snapshot(run_copy, bad, cartpole_data)
    argv = {"resume": train_cli(cartpole_data, run_copy, "--steps", "20", "--resume"),
            "evaluate": ["evaluate", "--model", bad, "--data", cartpole_data],
            "plan": ["plan", "cartpole", "--model", bad, "--control-steps", "2", "--quiet"],
            "constrain": ["constrain", "--model", bad, "--system", "cartpole", "--constraint", "pin nodes=0"],
            "design": ["design", "--model", bad, "--out", tmp_path / "design", "--steps", "1"]}
    if command == "load":
        with pytest.raises(checkpoints.GndesignError, match="corrupted") as info:
            checkpoints.load_model(bad, "forward", system="cartpole")
        err = str(info.value)
    else:
        err = run_cli(argv[command], capsys)
    assert f"{bad} is corrupted (its content does not match its sha256 hash)" in err
    assert snapshot(run_copy, bad, cartpole_data) == before
    assert not (tmp_path / "design").exists()


# ------------------------------------------------------------------------------------------ item 8
def byo(ds: TrajectoryDataset, **changes) -> dict:
    """``write_dataset`` arguments reproducing ``ds``, with ``changes``."""
    kwargs = dict(system=ds.system, mjcf=ds.mjcf, assets=ds.assets, timestep=ds.timestep,
                  control_timestep=ds.control_timestep, n_substeps=ds.n_substeps, qpos=ds.qpos.copy(),
                  qvel=ds.qvel.copy(), action=ds.action.copy(), params={k: v.copy() for k, v in ds.params.items()},
                  nbody=ds.meta["nbody"])
    for key, value in changes.items():
        if callable(value):
            value(kwargs)
        else:
            kwargs[key] = value
    return kwargs


def _set(array_key: str, index, value, param: bool = False):
    def edit(kwargs):
        (kwargs["params"] if param else kwargs)[array_key][index] = value
    return edit


BAD_DATA = {
    "nq": ({"qpos": lambda k: k.update(qpos=np.concatenate([k["qpos"], k["qpos"][..., :1]], -1))},
           "nq is 3 but the MJCF's model has nq 2"),
    "nbody": ({"nbody": lambda k: k.update(nbody=4, params={**k["params"],
                                                          "body_mass": np.ones((len(k["qpos"]), 4)),
                                                          "body_inertia": np.ones((len(k["qpos"]), 4, 3))})},
              "nbody is 4 but the MJCF's model has nbody 3"),
    "negative mass": ({"m": _set("body_mass", (2, 1), -1.0, True)}, "physical parameter body_mass has negative values"),
    "zero mass": ({"m": _set("body_mass", (0, 2), 0.0, True)}, "body_mass must be positive, body 2 has 0"),
    "negative inertia": ({"i": _set("body_inertia", (1, 1, 0), -0.5, True)}, "body_inertia has negative values"),
    "negative damping": ({"d": _set("dof_damping", (3, 0), -2.0, True)}, "dof_damping has negative values"),
    "nan gear": ({"g": _set("actuator_gear", (0, 0, 0), np.nan, True)}, "actuator_gear has non-finite values",
                 "array actuator_gear in shard shard-00000.npz has non-finite values (first in episode 0)"),
    "huge qpos": ({"q": _set("qpos", (1, 3, 0), 1e300)}, "qpos has values beyond 1e+06 (first in episode 1: 1e+300)"),
    "zero control timestep": ({"control_timestep": 0.0}, "control_timestep must be a positive number of seconds"),
    "inf qvel": ({"v": _set("qvel", (2, 0, 1), np.inf)}, "qvel has non-finite values (first in episode 2: inf)",
                 "array qvel in shard shard-00000.npz has non-finite values (first in episode 2)"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_8_datasets_that_do_not_fit_their_mjcf_or_physics_are_refused(case, cartpole_data, tmp_path, capsys):
    ds = TrajectoryDataset.load(cartpole_data)
    changes, message, *at_load = BAD_DATA[case]
    before = snapshot(cartpole_data)
    # At write: refused before anything is written.
    with pytest.raises(DatasetError, match="^[^\n]*$") as info:
        write_dataset(tmp_path / "byo", **byo(ds, **changes))
    assert message in str(info.value), str(info.value)
    assert not (tmp_path / "byo").exists() and list(tmp_path.iterdir()) == []
    # At load: the same values written into a copy (shard hashes and sizes fixed up, so only the
    # new checks can catch them) are refused by the loader and by `train`, naming the dataset.
    bad = tmp_path / "bad"
    shutil.copytree(cartpole_data, bad)
    kwargs = byo(ds, **changes)
    meta = json.loads((bad / "meta.json").read_text())
    for key in ("nq", "nv", "nu"):
        meta[key] = {"nq": kwargs["qpos"], "nv": kwargs["qvel"], "nu": kwargs["action"]}[key].shape[-1]
    meta["nbody"], meta["control_timestep"] = kwargs["nbody"], kwargs["control_timestep"]
    for entry in meta["shards"]:
        start, stop = entry["episodes"]
        arrays = {k: kwargs[k][start:stop] for k in ("qpos", "qvel", "action")}
        arrays.update({k: v[start:stop] for k, v in kwargs["params"].items()})
        arrays["episode"] = np.arange(start, stop)
        entry["sha256"] = atomic_write_npz(bad / entry["file"], arrays)
    atomic_write_json(bad / "meta.json", meta)
    if case in ("nq", "nbody"):  # the statistics' sizes follow meta: let the MJCF check be the one to fail
        stats = json.loads((bad / "stats.json").read_text())
        if case == "nq":
            stats["qpos"] = {k: (v + v[:1] if isinstance(v, list) else v) for k, v in stats["qpos"].items()}
        atomic_write_json(bad / "stats.json", stats)
        meta["stats_sha256"] = sha256_file(bad / "stats.json")
        atomic_write_json(bad / "meta.json", meta)
    before_bad = snapshot(bad)
    message = at_load[0] if at_load else message  # non-finite values: the shard loader's own check
    with pytest.raises(DatasetError, match="^[^\n]*$") as info:
        TrajectoryDataset.load(bad)
    assert message in str(info.value) and "regenerate" in str(info.value), str(info.value)
    err = run_cli(train_cli(bad, tmp_path / "run", "--steps", "2"), capsys)
    assert message in err and (at_load or str(bad) in err)  # the shard loader names the shard only
    assert not (tmp_path / "run").exists()
    assert snapshot(cartpole_data) == before and snapshot(bad) == before_bad


def test_8_particle_datasets_with_absurd_values_are_refused(tmp_path):
    from test_particles import SCENE, falling_particles

    x, obs, design = falling_particles()
    for name, (arrays, index, value) in {"positions": ((x, obs, design), (0, (1, 2, 3, 1)), 1e300),
                                         "design": ((x, obs, design), (2, (0, 1)), np.inf)}.items():
        bad = [a.copy() for a in arrays]
        which = ("positions", "obstacle", "design").index(name)
        bad[which][index[1]] = value
        with pytest.raises(DatasetError, match=f"^{name} has (values beyond 1e\\+06|non-finite values)"):
            write_particle_dataset(tmp_path / name, *bad, SCENE, seed=0)
        assert not (tmp_path / name).exists()
    # At load: a shard edited to hold 1e300 (its hash fixed up).
    path = write_particle_dataset(tmp_path / "ok", x, obs, design, SCENE, seed=0)
    meta = json.loads((path / "meta.json").read_text())
    with np.load(path / "shard-00000.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["obstacle"][1, 0, 0] = -1e300
    meta["shards"][0]["sha256"] = atomic_write_npz(path / "shard-00000.npz", arrays)
    atomic_write_json(path / "meta.json", meta)
    with pytest.raises(DatasetError, match=r"obstacle has values beyond 1e\+06 \(first in episode 1: -1e\+300\): "
                                           "regenerate"):
        ParticleDataset.load(path)


# ----------------------------------------------------------------------------------------- item 10
def weights(run_dir: Path) -> dict:
    return read_checkpoint(run_dir / "checkpoints" / "latest.pt")["model"]


def metric_steps(run_dir: Path) -> list[int]:
    rows = (run_dir / "metrics.csv").read_text().splitlines()[1:]
    return [int(r.split(",")[0]) for r in rows]


def test_10_metrics_after_a_resume_hold_each_step_once_and_keep_their_clock(cartpole_data, run, tmp_path, capsys):
    part = tmp_path / "part"
    run_cli(train_cli(cartpole_data, part, "--steps", "10", "--set", "train.checkpoint_every=100"), capsys, 0)
    # A kill -9 after step 7 was logged, its checkpoint being the one of step 5: put it back.
    cfg = load_config(None, TINY + ["train.steps=10"])
    cfg.data = [str(cartpole_data)]
    train(cfg, tmp_path / "ck5", progress=False, max_new_steps=5)
    shutil.copy(tmp_path / "ck5" / "checkpoints" / "latest.pt", part / "checkpoints" / "latest.pt")
    before = (part / "metrics.csv").read_text().splitlines()
    assert metric_steps(part) == list(range(1, 11))
    elapsed = read_checkpoint(part / "checkpoints" / "latest.pt")["extra"]["elapsed_s"]
    run_cli(train_cli(cartpole_data, part, "--steps", "10", "--resume"), capsys, 0)
    assert metric_steps(part) == list(range(1, 11))  # steps 6..10 logged once, not twice
    lines = (part / "metrics.csv").read_text().splitlines()
    assert lines[:6] == before[:6]  # the header and steps 1..5 as they were
    times = [float(r.split(",")[1]) for r in lines[1:]]
    assert times == sorted(times) and times[5] >= elapsed  # the clock continues from the checkpoint's
    for k, v in weights(run).items():  # and the run is still exact
        assert torch.equal(v, weights(part)[k]), k


@pytest.fixture
def usual_signals():
    """SIGINT and SIGTERM with their usual dispositions. A process started in the background
    (nohup, ``cmd &``, as CI may be) inherits SIGINT ignored, and training leaves ignored signals
    ignored (nohup's promise)."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_10_ctrl_c_and_sigterm_save_a_checkpoint_and_resume_exactly(signum, cartpole_data, run, tmp_path, capsys,
                                                                     monkeypatch, usual_signals):
    loss, calls = ForwardTrainer.loss, []

    def interrupted(self, *args):
        calls.append(1)
        if len(calls) == 7:  # during step 7 (checkpoints every 5)
            os.kill(os.getpid(), signum)
        return loss(self, *args)

    monkeypatch.setattr(ForwardTrainer, "loss", interrupted)
    out = tmp_path / "run"
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    run_cli(train_cli(cartpole_data, out, "--steps", "10"), capsys, status=130)
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # restored
    blob = read_checkpoint(out / "checkpoints" / "latest.pt")
    assert blob["step"] == 7 and metric_steps(out) == list(range(1, 8))
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["latest.pt"]  # written atomically
    monkeypatch.setattr(ForwardTrainer, "loss", loss)
    run_cli(train_cli(cartpole_data, out, "--steps", "10", "--resume"), capsys, status=0)
    assert metric_steps(out) == list(range(1, 11))
    for k, v in weights(run).items():  # bit-identical to the uninterrupted run
        assert torch.equal(v, weights(out)[k]), k


# ----------------------------------------------------------------------------------------- item 13
def disk_full_at(name: str, monkeypatch) -> None:
    """Make every atomic write of a file called ``name`` fail as a full disk does, after writing
    part of it."""
    real = io.atomic_path

    @contextlib.contextmanager
    def full(path):
        with real(path) as tmp:
            yield tmp
            if Path(path).name == name:
                tmp.write_bytes(b"partial")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

    monkeypatch.setattr(io, "atomic_path", full)


@pytest.mark.parametrize("name", ["latest.pt", "metrics.csv", "config.yaml"])
def test_13_write_failures_name_the_file_and_keep_the_previous_one(name, run_copy, cartpole_data, tmp_path, capsys,
                                                                    monkeypatch):
    disk_full_at(name, monkeypatch)
    if name == "config.yaml":  # a fresh run
        out = tmp_path / "fresh"
        err = run_cli(train_cli(cartpole_data, out, "--steps", "10"), capsys)
        assert f"cannot write {out / name}: No space left on device" in err
        assert sorted(p.name for p in out.iterdir()) == []  # nothing partial
        return
    before = snapshot(run_copy, cartpole_data)
    err = run_cli(train_cli(cartpole_data, run_copy, "--steps", "20", "--resume"), capsys)
    path = run_copy / ("checkpoints" if name == "latest.pt" else "") / name
    assert f"cannot write {path}: No space left on device" in err
    if name == "latest.pt":  # the rows logged since are kept; the checkpoint is the previous one
        before = {k: v for k, v in before.items() if not k.endswith("metrics.csv")}
        assert {k: v for k, v in snapshot(run_copy, cartpole_data).items() if not k.endswith("metrics.csv")} == before
    else:
        assert snapshot(run_copy, cartpole_data) == before
    assert not [p for p in run_copy.rglob(".*")]  # no temporary file left
    assert read_checkpoint(run_copy / "checkpoints" / "latest.pt")["step"] == 10


def test_13_an_unwritable_run_directory_is_one_line(cartpole_data, tmp_path, capsys):
    (tmp_path / "file").write_text("not a directory")
    err = run_cli(train_cli(cartpole_data, tmp_path / "file" / "run", "--steps", "2"), capsys)
    # Refused before training by the output-path guard (gndesign.io.check_output), naming the culprit.
    assert f"{tmp_path / 'file'} is not a directory" in err
    assert (tmp_path / "file").read_text() == "not a directory"


# ----------------------------------------------------------------------------------------- item 15
CONFIG_FILES = {"scalar.yaml": (b"train: 5\n", "section train: must be a mapping of options"),
                "list.yaml": (b"model: [1, 2]\n", "section model: must be a mapping of options"),
                "binary.yaml": (bytes(range(128, 256)) * 3, "is not a text file (YAML/JSON expected)"),
                "dir.yaml": (None, "is a directory: give a YAML file"),
                "top.yaml": (b"- 1\n- 2\n", "must hold a mapping of keys to values, got a list")}


@pytest.mark.parametrize("extra, message", [
    *[((["--set", s]), m) for s, m in [("train.lr=nan", "train.lr must be a finite number, got nan"),
                                       ("train.lr=inf", "train.lr must be a finite number, got inf"),
                                       ("train.lr=-1", "train.lr and train.lr_final must be positive, got -1"),
                                       ("train.grad_clip=nan", "train.grad_clip must be a finite number"),
                                       ("train.vel_noise=-inf", "train.vel_noise must be a finite number"),
                                       ("model.std_epsilon=nan", "model.std_epsilon must be a finite number"),
                                       ("solver.step_size=inf", "solver.step_size must be a finite number")]],
    *[(["--config", name], m) for name, (_, m) in CONFIG_FILES.items()],
])
def test_15_non_finite_options_and_broken_config_files_are_one_line(extra, message, cartpole_data, tmp_path, capsys):
    for name, (content, _) in CONFIG_FILES.items():
        if content is None:
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_bytes(content)
    extra = [str(tmp_path / a) if a in CONFIG_FILES else a for a in extra]
    before = snapshot(tmp_path, cartpole_data)
    err = run_cli(train_cli(cartpole_data, tmp_path / "out", "--steps", "2", *extra), capsys)
    assert message in err
    assert not (tmp_path / "out").exists() and snapshot(tmp_path, cartpole_data) == before


@pytest.mark.parametrize("command", ["evaluate", "resume"])
def test_15_a_checkpoint_whose_tensors_do_not_fit_its_configuration_is_one_line(command, run_copy, cartpole_data,
                                                                                  tmp_path, capsys):
    ckpt = run_copy / "checkpoints" / "latest.pt"
    blob = read_checkpoint(ckpt)
    blob["config"]["model"]["latent_size"] = 32  # edited, then re-saved with a valid hash
    checkpoints._write(ckpt, blob)
    before = snapshot(run_copy, cartpole_data)
    if command == "evaluate":
        err = run_cli(["evaluate", "--model", ckpt, "--data", cartpole_data], capsys)
        assert f"checkpoint {ckpt}: tensor " in err and "has shape [" in err and "the model needs [" in err
    else:  # the configuration now disagrees with the run's: named before the tensors are
        err = run_cli(train_cli(cartpole_data, run_copy, "--steps", "20", "--resume"), capsys)
        assert "model.latent_size 32 in the checkpoint vs 16 now" in err
    assert snapshot(run_copy, cartpole_data) == before
