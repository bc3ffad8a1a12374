"""Training: config, checkpoints, resume equals an uninterrupted run, DDP, clear errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gndesign.errors import ConfigError, GndesignError
from gndesign.training import load_config, load_model, read_checkpoint, train

TINY = ["model.latent_size=16", "model.mlp_hidden_size=16", "model.mlp_layers=1", "train.batch_size=32",
        "train.log_every=5", "train.eval_every=5", "train.checkpoint_every=5", "train.stats_transitions=500"]


def config(data, *extra):
    cfg = load_config(None, TINY + list(extra))
    cfg.data = [str(data)]
    return cfg


def test_yaml_config_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  latent_size: 64\ntrain:\n  lr: 0.01\n  minutes: 2\n")
    cfg = load_config(path, ["train.lr=3e-4", "model.shared_weights=true"])
    assert cfg.model.latent_size == 64 and cfg.train.lr == 3e-4 and cfg.model.shared_weights is True
    assert cfg.train.minutes == 2.0
    with pytest.raises(ConfigError, match="unknown option train.learning_rate"):
        load_config(None, ["train.learning_rate=1"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["lr=1"])
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(None, ["train.steps=many"])


def test_training_writes_config_metrics_and_a_usable_checkpoint(cartpole_data, tmp_path):
    run = tmp_path / "run"
    summary = train(config(cartpole_data, "train.steps=10"), run, progress=False)
    assert summary["step"] == 10 and (run / "config.yaml").exists()
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 3
    blob = read_checkpoint(run / "checkpoints" / "latest.pt")
    for key in ("model", "optimizer", "scheduler", "step", "rng", "config", "systems", "feature_names"):
        assert blob[key] is not None
    model, _ = load_model(run / "checkpoints" / "latest.pt", "cartpole")
    # A checkpoint round trip gives identical predictions (normalizer statistics included).
    model2, _ = load_model(run / "checkpoints" / "latest.pt", "cartpole")
    q, v, a = torch.randn(4, 2), torch.randn(4, 2), torch.rand(4, 1)
    assert torch.equal(model.step(q, v, a)[0], model2.step(q, v, a)[0])
    with pytest.raises(GndesignError, match="already holds a run"):
        train(config(cartpole_data, "train.steps=10"), run, progress=False)


def test_resume_equals_an_uninterrupted_run(cartpole_data, tmp_path):
    full = tmp_path / "full"
    train(config(cartpole_data, "train.steps=10"), full, progress=False)
    part = tmp_path / "part"
    train(config(cartpole_data, "train.steps=10"), part, progress=False, max_new_steps=5)  # "preempted"
    assert read_checkpoint(part / "checkpoints" / "latest.pt")["step"] == 5
    train(config(cartpole_data, "train.steps=10"), part, resume=True, progress=False)
    a = read_checkpoint(full / "checkpoints" / "latest.pt")["model"]
    b = read_checkpoint(part / "checkpoints" / "latest.pt")["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    with pytest.raises(GndesignError, match="nothing to resume"):
        train(config(cartpole_data, "train.steps=10"), tmp_path / "none", resume=True, progress=False)


def test_multi_step_loss_trains(cartpole_data, tmp_path):
    summary = train(config(cartpole_data, "train.steps=3", "train.unroll_steps=3"), tmp_path / "u", progress=False)
    assert summary["step"] == 3 and torch.isfinite(torch.tensor(summary["train_loss"]))


def test_checkpoint_for_another_system_is_refused(cartpole_data, tmp_path):
    run = tmp_path / "run"
    train(config(cartpole_data, "train.steps=2", "model.kind=mlp"), run, progress=False)
    with pytest.raises(GndesignError, match=r"trained on \['cartpole'\], not on 'swimmer6'"):
        load_model(run / "checkpoints" / "latest.pt", "swimmer6", allow_new_system=True)
    with pytest.raises(GndesignError, match="different 'cartpole' model"):
        load_model(run / "checkpoints" / "latest.pt", "cartpole", mjcf_sha256="0" * 64)
    blob = torch.load(run / "checkpoints" / "latest.pt", weights_only=False)
    blob["feature_names"]["edge"][0] = "something_else"
    torch.save(blob, tmp_path / "old.pt")
    with pytest.raises(GndesignError, match="incompatible edge features"):
        load_model(tmp_path / "old.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(GndesignError, match="cannot read checkpoint"):
        load_model(tmp_path / "broken.pt")


def test_ddp_two_processes_on_cpu(cartpole_data, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "workflows", "train", "--data", str(cartpole_data), "--out", str(run), "--steps", "4", "--quiet"]
    cmd += [a for t in TINY for a in ("--set", t)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_checkpoint(Path(run) / "checkpoints" / "latest.pt")["step"] == 4


def test_exported_checkpoint_predicts_the_same_and_refuses_resume(cartpole_data, tmp_path):
    from gndesign.training import export_checkpoint, resolve_checkpoint

    run = tmp_path / "run"
    train(config(cartpole_data, "train.steps=2"), run, progress=False)
    src = run / "checkpoints" / "latest.pt"
    dst = export_checkpoint(src, tmp_path / "small.pt")
    assert dst.stat().st_size < 0.6 * src.stat().st_size
    a, _ = load_model(src, "cartpole")
    b, _ = load_model(dst, "cartpole")
    q, v, u = torch.randn(3, 2), torch.randn(3, 2), torch.rand(3, 1)
    assert torch.equal(a.step(q, v, u)[1], b.step(q, v, u)[1])
    (run / "checkpoints" / "latest.pt").write_bytes(dst.read_bytes())
    with pytest.raises(GndesignError, match="cannot be resumed"):
        train(config(cartpole_data, "train.steps=4"), run, resume=True, progress=False)
    with pytest.raises(GndesignError, match="no pretrained model 'nope'"):
        resolve_checkpoint("pretrained:nope")
