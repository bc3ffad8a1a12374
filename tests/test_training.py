"""Training: config, checkpoints, resume equals an uninterrupted run, DDP, clear errors."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PARTICLE_SCENE, falling_particles

from gndesign.checkpoints import export_checkpoint, load_model, read_checkpoint, resolve_checkpoint
from gndesign.config import ModelConfig, load_config
from gndesign.datasets.trajectories import TrajectoryDataset
from gndesign.errors import ConfigError, GndesignError
from gndesign.forward_training import ForwardTrainer, TransitionSampler, system_spec, unrolled_loss
from gndesign.simulator import Transitions, build_model
from gndesign.training import Metrics, WeightAverage, train

TINY = ["model.latent_size=16", "model.mlp_hidden_size=16", "model.mlp_layers=1", "train.batch_size=32",
        "train.log_every=5", "train.eval_every=5", "train.checkpoint_every=5", "train.stats_transitions=500"]


def config(data, *extra):
    cfg = load_config(None, TINY + list(extra))
    cfg.data = [str(data)]
    return cfg


def test_training_writes_config_metrics_and_a_usable_checkpoint(cartpole_data, tmp_path):
    run = tmp_path / "run"
    summary = train(config(cartpole_data, "train.steps=10"), run, progress=False)
    assert summary["step"] == 10 and (run / "config.yaml").exists()
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 3
    blob = read_checkpoint(run / "checkpoints" / "latest.pt")
    for key in ("model", "optimizer", "scheduler", "step", "rng", "config", "systems", "feature_names"):
        assert blob[key] is not None
    model, _ = load_model(run / "checkpoints" / "latest.pt", "forward", system="cartpole")
    # A checkpoint round trip gives identical predictions (normalizer statistics included).
    model2, _ = load_model(run / "checkpoints" / "latest.pt", "forward", system="cartpole")
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


def test_every_step_trains_in_training_mode_even_right_after_a_validation(cartpole_data, tmp_path, monkeypatch):
    # The loop switches modes only when a validation left the model in eval mode.
    modes, validations = [], []
    loss, val = ForwardTrainer.loss, ForwardTrainer.validation_loss

    def recording_loss(self, model, net, gens):
        modes.append(all(m.training for m in model.modules()))
        return loss(self, model, net, gens)

    def recording_validation(self, model):
        out = val(self, model)
        validations.append(model.training)
        return out

    monkeypatch.setattr(ForwardTrainer, "loss", recording_loss)
    monkeypatch.setattr(ForwardTrainer, "validation_loss", recording_validation)
    train(config(cartpole_data, "train.steps=12", "train.log_every=2", "train.eval_every=2"), tmp_path / "r",
          progress=False)
    assert len(modes) == 12 and all(modes)
    assert len(validations) >= 6 and not any(validations)  # each validation ran in eval mode


def test_multi_step_loss_trains(cartpole_data, tmp_path):
    summary = train(config(cartpole_data, "train.steps=3", "train.unroll_steps=3"), tmp_path / "u", progress=False)
    assert summary["step"] == 3 and torch.isfinite(torch.tensor(summary["train_loss"]))
    # The same run with one-step losses trains differently (the unroll length reaches the loss).
    one = train(config(cartpole_data, "train.steps=3", "train.unroll_steps=1"), tmp_path / "one", progress=False)
    assert one["train_loss"] != summary["train_loss"]


@torch.no_grad()
def test_unrolled_loss_is_the_mean_of_the_steps_losses_along_the_models_own_rollout(cartpole_data):
    """On one fixed batch, a 3-step loss is not the 1-step loss of its first transitions: it is the
    mean of each step's loss, step k starting where the model's step k-1 ended (lean path = reference)."""
    ds = TrajectoryDataset.load(cartpole_data)
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_size=16, mlp_hidden_size=16, mlp_layers=1), [system_spec(ds)]).double()
    sampler = TransitionSampler([ds], [np.arange(ds.num_episodes)], dtype=torch.float64)
    seqs = sampler.sample(32, 3, torch.Generator().manual_seed(1))
    for s in seqs:
        model.accumulate_statistics(Transitions(s["system"], s["qpos"][:, 0], s["qvel"][:, 0], s["action"][:, 0],
                                                s["params"], s["qpos"][:, 1], s["qvel"][:, 1]))
    start = [(s["qpos"][:, 0], s["qvel"][:, 0]) for s in seqs]
    three = unrolled_loss(model, seqs, start)
    first = [{**s, "qpos": s["qpos"][:, :2], "qvel": s["qvel"][:, :2], "action": s["action"][:, :1]} for s in seqs]
    one = unrolled_loss(model, first, start)
    (s,), (q, v) = seqs, start[0]
    by_hand = []
    for k in range(3):
        by_hand.append(model.loss([Transitions(s["system"], q, v, s["action"][:, k], s["params"], s["qpos"][:, k + 1],
                                               s["qvel"][:, k + 1], None if k else s["qpos"][:, 0])]))
        q, v = model.step(q, v, s["action"][:, k], s["system"], s["params"])
    torch.testing.assert_close(one, by_hand[0])
    torch.testing.assert_close(three, torch.stack(by_hand).mean())
    assert abs(float(three) - float(one)) > 1e-3 * float(one)


@torch.no_grad()
def test_a_batch_can_come_from_one_dataset_drawn_in_proportion_to_its_size(cartpole_data, swimmer_data):
    data = [TrajectoryDataset.load(cartpole_data), TrajectoryDataset.load(swimmer_data)]
    sampler = TransitionSampler(data, [np.arange(d.num_episodes) for d in data])
    gen = torch.Generator().manual_seed(0)
    mixed = sampler.sample(64, 1, gen)
    assert [s["system"] for s in mixed] == ["cartpole", "swimmer4"]  # every dataset contributes by default
    picks = []
    for _ in range(400):
        groups = sampler.sample(16, 1, gen, datasets=1)
        assert len(groups) == 1 and groups[0]["action"].shape[0] == 16
        picks.append(groups[0]["system"])
    # 8 x 40 cartpole transitions against 4 x 20 swimmer ones: 4/5 of the batches are cartpole's
    assert abs(picks.count("cartpole") / len(picks) - 0.8) < 0.06
    with pytest.raises(ConfigError, match="datasets_per_batch must be positive"):
        load_config(None, ["train.datasets_per_batch=0"])


def test_each_system_can_have_its_own_batch_size(cartpole_data, swimmer_data, tmp_path):
    """``train.system_batch_size`` sets the batch size of the system a batch is drawn from (one per
    batch); other systems keep ``train.batch_size``; unknown systems and bad values are refused."""
    data = [TrajectoryDataset.load(cartpole_data), TrajectoryDataset.load(swimmer_data)]
    sampler = TransitionSampler(data, [np.arange(d.num_episodes) for d in data])
    gen = torch.Generator().manual_seed(0)
    sizes = {}
    for _ in range(60):
        (group,) = sampler.sample(16, 1, gen, datasets=1, system_batch_size={"cartpole": 40})
        sizes.setdefault(group["system"], set()).add(group["action"].shape[0])
    assert sizes == {"cartpole": {40}, "swimmer4": {16}}
    cfg = load_config(None, TINY + ["train.datasets_per_batch=1", "train.system_batch_size={cartpole: 40}",
                                    "train.steps=2"])
    assert cfg.train.system_batch_size == {"cartpole": 40}
    cfg.data = [str(cartpole_data), str(swimmer_data)]
    assert train(cfg, tmp_path / "run", progress=False)["step"] == 2
    for bad in (["train.system_batch_size={cartpole: 0}", "train.datasets_per_batch=1"],
                ["train.system_batch_size={cartpole: 40}"],
                ["train.system_batch_size=40", "train.datasets_per_batch=1"]):
        with pytest.raises(ConfigError, match="system_batch_size must map system names to positive integers"):
            load_config(None, bad)
    cfg = config(cartpole_data, "train.datasets_per_batch=1", "train.system_batch_size={pendulum: 40}")
    with pytest.raises(ConfigError, match="names pendulum, which the data do not hold"):
        train(cfg, tmp_path / "bad", progress=False)


def test_balanced_systems_train_on_the_log_of_each_batchs_loss(cartpole_data, swimmer_data):
    """``train.balance_systems``: the same batch's loss as its logarithm, so its gradient is the plain
    gradient over the plain loss (a system's step follows its relative error); it needs one system
    per batch."""
    def batch_loss(*extra):
        cfg = load_config(None, TINY + ["train.datasets_per_batch=1", *extra])
        cfg.data = [str(cartpole_data), str(swimmer_data)]
        trainer = ForwardTrainer(cfg)
        trainer.prepare()
        torch.manual_seed(0)
        trainer.model = model = trainer.build_model()
        trainer.init_statistics(0)
        gens = {"sample": torch.Generator().manual_seed(3), "noise": torch.Generator().manual_seed(4)}
        loss = trainer.loss(model, model, gens)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain, plain_grads = batch_loss()
    balanced, balanced_grads = batch_loss("train.balance_systems=true")
    assert plain > 0 and not torch.isclose(balanced, plain)
    torch.testing.assert_close(balanced, plain.log())
    assert len(balanced_grads) == len(plain_grads) > 0
    for b, p in zip(balanced_grads, plain_grads, strict=True):
        # float32: the scaled backward rounds differently where large terms cancel (seen: 4e-4 of the largest)
        torch.testing.assert_close(b, p / plain, rtol=1e-3, atol=1e-3 * float((p / plain).abs().max()))
    for per_batch in ("", "train.datasets_per_batch=2"):
        with pytest.raises(ConfigError, match="balance_systems needs train.datasets_per_batch=1"):
            load_config(None, ["train.balance_systems=true"] + ([per_batch] if per_batch else []))


def test_multi_step_loss_unrolls_the_models_own_predictions(cartpole_data):
    ds = TrajectoryDataset.load(cartpole_data)
    model = build_model(ModelConfig(latent_size=16, mlp_hidden_size=16, mlp_layers=1), [system_spec(ds)])
    sampler = TransitionSampler([ds], [np.arange(ds.num_episodes)])
    s = sampler.sample(256, 1, torch.Generator().manual_seed(0))[0]
    model.accumulate_statistics(Transitions(s["system"], s["qpos"][:, 0], s["qvel"][:, 0], s["action"][:, 0],
                                            s["params"], s["qpos"][:, 1], s["qvel"][:, 1]))
    seqs = sampler.sample(16, 3, torch.Generator().manual_seed(1))
    s = seqs[0]
    assert len(seqs) == 1 and s["action"].shape[1] == 3
    # By hand: each step's one-step loss from the model's own prediction of the previous state.
    q, v = s["qpos"][:, 0], s["qvel"][:, 0]
    own, forced = [], []
    for k in range(3):
        own.append(model.loss([Transitions(s["system"], q, v, s["action"][:, k], s["params"], s["qpos"][:, k + 1],
                                           s["qvel"][:, k + 1])]))
        forced.append(model.loss([Transitions(s["system"], s["qpos"][:, k], s["qvel"][:, k], s["action"][:, k],
                                              s["params"], s["qpos"][:, k + 1], s["qvel"][:, k + 1])]))
        q, v = model.step(q, v, s["action"][:, k], s["system"], s["params"])
    loss = unrolled_loss(model, seqs, [(s["qpos"][:, 0], s["qvel"][:, 0])])
    torch.testing.assert_close(loss, sum(own) / 3, rtol=1e-5, atol=1e-7)
    assert abs(float(loss) - float(sum(forced) / 3)) > 1e-3 * float(loss)  # not teacher-forced
    assert abs(float(loss) - float(own[0])) > 1e-3 * float(loss)  # not the first step only


def test_checkpoint_for_another_system_is_refused(cartpole_data, tmp_path):
    run = tmp_path / "run"
    train(config(cartpole_data, "train.steps=2", "model.kind=mlp"), run, progress=False)
    with pytest.raises(GndesignError, match=r"trained on \['cartpole'\], not on 'swimmer6'"):
        load_model(run / "checkpoints" / "latest.pt", "forward", system="swimmer6", allow_new_system=True)
    with pytest.raises(GndesignError, match="different 'cartpole' model"):
        load_model(run / "checkpoints" / "latest.pt", "forward", system="cartpole", mjcf_sha256="0" * 64)
    blob = read_checkpoint(run / "checkpoints" / "latest.pt")
    blob["feature_names"]["edge"][0] = "something_else"
    torch.save(blob, tmp_path / "old.pt")
    with pytest.raises(GndesignError, match="incompatible edge features"):
        load_model(tmp_path / "old.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(GndesignError, match="cannot read checkpoint"):
        load_model(tmp_path / "broken.pt")


def test_weight_average_follows_the_exponential_average_with_its_warm_up():
    net = torch.nn.Linear(2, 1)
    net.register_buffer("stat", torch.tensor([3.0]))
    avg = WeightAverage(net, decay=0.9)
    expected = {n: p.detach().clone() for n, p in net.named_parameters()}
    for t in range(30):
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn_like(p))
        avg.update()
        d = min(0.9, (1 + t) / (10 + t))  # 0.1, 0.18, ... then 0.9 from t = 71: warm-up all along here
        for n, p in net.named_parameters():
            expected[n] = d * expected[n] + (1 - d) * p.detach()
    state = avg.state_dict()
    for n, p in net.named_parameters():
        torch.testing.assert_close(state[n], expected[n])
        assert not torch.equal(state[n], p)
    assert torch.equal(state["stat"], net.stat)
    own = {n: p.detach().clone() for n, p in net.named_parameters()}
    with avg.applied():
        assert all(torch.equal(p, state[n]) for n, p in net.named_parameters())
    assert all(torch.equal(p, own[n]) for n, p in net.named_parameters())
    net.load_state_dict(state)  # as a resumed run builds it: the model holds the checkpoint's average
    late = WeightAverage(net, decay=0.9, updates=1000)  # past the warm-up: the decay itself
    with torch.no_grad():
        net.weight.zero_()
    late.update()
    torch.testing.assert_close(late.state_dict()["weight"], 0.9 * state["weight"])


def test_a_run_with_weight_averaging_ships_the_average_and_resumes_exactly(cartpole_data, tmp_path):
    ema = ["train.steps=10", "train.ema_decay=0.5"]
    full, part = tmp_path / "full", tmp_path / "part"
    summary = train(config(cartpole_data, *ema), full, progress=False)
    train(config(cartpole_data, *ema), part, progress=False, max_new_steps=5)
    train(config(cartpole_data, *ema), part, resume=True, progress=False)
    a, b = (read_checkpoint(r / "checkpoints" / "latest.pt") for r in (full, part))
    for key in ("model", "train_model"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    # The model is the average, not the last weights; the statistics are the run's own.
    assert any(not torch.equal(a["model"][k], a["train_model"][k]) for k in a["model"])
    assert all(torch.equal(a["model"][k], a["train_model"][k]) for k in a["model"] if "norm" in k)
    small = export_checkpoint(full / "checkpoints" / "latest.pt", tmp_path / "small.pt")
    assert read_checkpoint(small)["train_model"] is None
    model, _ = load_model(small, "forward", system="cartpole")
    assert all(torch.equal(v, a["model"][k]) for k, v in model.state_dict().items())
    # Validation scores the average: the summary's loss is the shipped model's.
    from gndesign.forward_training import ForwardTrainer
    trainer = ForwardTrainer(config(cartpole_data, *ema))
    trainer.prepare()
    assert summary["val_loss"] == pytest.approx(trainer.validation_loss(model), rel=1e-6)


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
    run = tmp_path / "run"
    train(config(cartpole_data, "train.steps=2"), run, progress=False)
    src = run / "checkpoints" / "latest.pt"
    dst = export_checkpoint(src, tmp_path / "small.pt")
    assert dst.stat().st_size < 0.6 * src.stat().st_size
    a, _ = load_model(src, "forward", system="cartpole")
    b, _ = load_model(dst, "forward", system="cartpole")
    q, v, u = torch.randn(3, 2), torch.randn(3, 2), torch.rand(3, 1)
    assert torch.equal(a.step(q, v, u)[1], b.step(q, v, u)[1])
    (run / "checkpoints" / "latest.pt").write_bytes(dst.read_bytes())
    with pytest.raises(GndesignError, match="cannot be resumed"):
        train(config(cartpole_data, "train.steps=4"), run, resume=True, progress=False)
    with pytest.raises(GndesignError, match="no pretrained model 'nope'"):
        resolve_checkpoint("pretrained:nope")


def test_resume_refuses_a_checkpoint_of_another_family(cartpole_data, tmp_path):
    run = tmp_path / "run"
    train(config(cartpole_data, "train.steps=2"), run, progress=False)
    cgns = load_config(None, TINY + ["train.steps=4"], data=[cartpole_data], cgns=True)
    with pytest.raises(GndesignError, match=r"checkpoint to resume holds a 'forward' model \(a forward model of "
                                            r"articulated systems\), not a C-GNS of articulated systems"):
        train(cgns, run, resume=True, progress=False)


SCENE = PARTICLE_SCENE


def falling(episodes: int = 4, frames: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Falling particles ``[E, frames, 5, 2]`` with sideways kicks and a fixed 2-segment obstacle ``[E, 3, 2]``."""
    x, obstacle, _ = falling_particles(episodes, frames - 1, 5, push=0.2, fixed_obstacle=True)
    return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(obstacle, dtype=torch.float32)


@torch.no_grad()
def test_multi_step_particle_loss_unrolls_the_models_own_predictions():
    from gndesign.config import ParticleModelConfig
    from gndesign.particle_training import unrolled_particle_loss
    from gndesign.particles import ParticleSimulator

    frames, obstacle = falling()
    model = ParticleSimulator(ParticleModelConfig(latent_size=8, mlp_hidden_size=8, mlp_layers=1,
                                                  message_passing_steps=1, history=2, obstacle_points=2), SCENE)
    for t in range(2, 5):
        model.accumulate_statistics(frames[:, t - 2:t + 1], frames[:, t + 1])
    history, future = frames[:, :3], frames[:, 3:]
    own, forced, hist = [], [], history
    for k in range(3):
        own.append(model.loss(hist, obstacle, future[:, k]))
        forced.append(model.loss(frames[:, k:k + 3], obstacle, future[:, k]))
        hist = torch.cat([hist[:, 1:], model(hist, obstacle)[:, None]], 1)
    loss = unrolled_particle_loss(model, history, future, model.obstacle_nodes(obstacle, history.shape[0]))
    torch.testing.assert_close(loss, sum(own) / 3, rtol=1e-5, atol=1e-7)
    assert abs(float(loss) - float(sum(forced) / 3)) > 1e-3 * float(loss)  # not teacher-forced
    assert abs(float(loss) - float(own[0])) > 1e-3 * float(loss)  # not the first step only


def test_multi_step_particle_training_unrolls(tmp_path):
    from gndesign.datasets.particles import write_particle_dataset

    x, obstacle = falling(episodes=4, frames=9)
    data = write_particle_dataset(tmp_path / "ds", x.double().numpy(), obstacle.double().numpy(), np.zeros((4, 2)),
                                  SCENE, seed=0)
    options = ["model.latent_size=8", "model.mlp_hidden_size=8", "model.history=2", "train.steps=2",
               "train.batch_size=2", "train.stats_transitions=8"]
    losses = [train(load_config(None, [*options, f"train.unroll_steps={u}"], data=[data]), tmp_path / f"u{u}",
                    progress=False)["train_loss"] for u in (1, 3)]
    assert losses[0] != losses[1]


def test_metrics_read_leaves_the_file_as_it_is_and_refuses_a_foreign_one(tmp_path):
    path = tmp_path / "metrics.csv"
    assert Metrics.read(path).rows == [] and Metrics.read(path).last_time == 0.0  # no run yet: nothing logged
    text = "step,time_s,train_loss,val_loss,lr,graphs_per_s\n100,1.5,0.2,,0.001,10\n200,3.25,0.1,0.3,0.001,10\n"
    path.write_text(text)
    m = Metrics.read(path)
    assert [r["step"] for r in m.rows] == ["100", "200"] and m.last_time == 3.25
    assert path.read_text() == text  # reading never rewrites (Metrics.resume drops rows past its step)
    Metrics.resume(path, 100)
    assert path.read_text().splitlines()[1:] == ["100,1.5,0.2,,0.001,10"]
    path.write_text("a,b\n1,2\n")
    with pytest.raises(GndesignError, match="is not a gndesign metrics file"):
        Metrics.read(path)
