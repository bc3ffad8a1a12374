"""Training on a device (``train.device``): the option and its errors, batches moved to the model's
device, a run resumed on another device; where torch sees a GPU (never in CI), the same losses,
gradients and statistics there as on the CPU for every family, and a GPU run end to end."""

import copy
import os

import numpy as np
import pytest
import torch
from conftest import PARTICLE_SCENE, falling_particles

from envs.generate import generate_dataset
from gndesign.checkpoints import load_model, read_checkpoint
from gndesign.config import load_config
from gndesign.datasets.trajectories import TrajectoryDataset
from gndesign.errors import ConfigError
from gndesign.families import Trainer, to_device
from gndesign.training import make_trainer, resolve_device, run_training, train
from planners.policy import PolicyTrainer

GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not GPU, reason="needs a GPU that torch sees (CI has none)")
TRAIN = ["train.batch_size=16", "train.log_every=3", "train.eval_every=3", "train.checkpoint_every=3",
         "train.stats_transitions=200"]
TINY = ["model.latent_size=16", "model.mlp_hidden_size=16", "model.mlp_layers=1", *TRAIN]


@pytest.fixture(scope="module")
def particle_data(tmp_path_factory):
    from gndesign.datasets.particles import write_particle_dataset

    x, obstacle, _ = falling_particles(4, 8, 5, push=0.2, fixed_obstacle=True)
    return write_particle_dataset(tmp_path_factory.mktemp("data") / "particles", x, obstacle, np.zeros((4, 2)),
                                  PARTICLE_SCENE, seed=0)


@pytest.fixture(scope="module")
def nbody_data(tmp_path_factory):
    return os.fspath(generate_dataset("nbody-spring-2d", episodes=6, steps=4, seed=0,
                                      out_dir=tmp_path_factory.mktemp("data") / "nbody", progress=False))


def config(data, *extra, base=TINY):
    return load_config(None, base + list(extra), data=[data])


def test_the_device_option_is_checked():
    assert load_config(None, []).train.device == "cpu"
    for good in ("cpu", "cuda", "cuda:1", "auto"):
        assert load_config(None, [f"train.device={good}"]).train.device == good
    for bad in ("gpu", "cuda:x", "CUDA", "cuda:", "mps"):
        with pytest.raises(ConfigError, match="train.device must be cpu, cuda, cuda:N or auto"):
            load_config(None, [f"train.device={bad}"])


def test_auto_is_the_gpu_when_torch_sees_one():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda:0" if GPU else "cpu")
    if GPU:
        assert resolve_device("cuda", local_rank=0) == torch.device("cuda:0")
        with pytest.raises(ConfigError, match="GPU"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.skipif(GPU, reason="torch sees a GPU here")
def test_a_gpu_torch_cannot_see_is_refused_before_anything_is_written(arm_data, tmp_path):
    with pytest.raises(ConfigError, match=r"train.device=cuda but this torch .* sees no GPU.*train.device=cpu"):
        train(config(arm_data, "train.device=cuda", "train.steps=2"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_cpu_only_trainer_refuses_a_gpu(tmp_path):
    class CPUOnly(Trainer):
        gpu = False

    assert PolicyTrainer.gpu is False  # it imagines through a learned model that runs on the CPU
    with pytest.raises(ConfigError, match="train.device=cuda:0: .* trains on the CPU only; set train.device=cpu"):
        run_training(CPUOnly(load_config(None, ["train.device=cuda:0"])), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_to_device_moves_every_tensor_and_keeps_the_rest():
    batch = {"system": "arm", "qpos": torch.zeros(2, 3), "params": {"mass": torch.ones(2)},
             "seq": [torch.ones(1), None], "pair": (torch.ones(1), 3)}
    out = to_device(batch, torch.device("meta"))
    assert out["system"] == "arm" and out["qpos"].is_meta and out["params"]["mass"].is_meta
    assert out["seq"][0].is_meta and out["seq"][1] is None
    assert isinstance(out["pair"], tuple) and out["pair"][0].is_meta and out["pair"][1] == 3
    assert batch["qpos"].device.type == "cpu"  # the input is left as it was


def test_a_run_resumes_on_another_device(arm_data, tmp_path):
    """``train.device`` may change on resume (the checkpoint loads anywhere); on a machine without a
    GPU ``auto`` is the CPU and the resumed run equals the uninterrupted one exactly."""
    train(config(arm_data, "train.steps=6"), tmp_path / "full", progress=False)
    train(config(arm_data, "train.steps=6"), tmp_path / "part", progress=False, max_new_steps=3)
    summary = train(config(arm_data, "train.steps=6", "train.device=auto"), tmp_path / "part", resume=True,
                    progress=False)
    assert summary["step"] == 6 and summary["device"] == str(resolve_device("auto"))
    a = read_checkpoint(tmp_path / "full" / "checkpoints" / "latest.pt")["model"]
    b = read_checkpoint(tmp_path / "part" / "checkpoints" / "latest.pt")["model"]
    for k in a:
        if GPU:  # float rounding differs; each of the 3 resumed Adam steps moves a weight by about lr (1e-3) at most
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=3e-3)
        else:
            assert torch.equal(a[k], b[k]), k


FAMILIES = {"gn": ("arm", []), "mlp": ("arm", ["model.kind=mlp"]),
            "cgns": ("arm", ["solver.iterations=2", "model.message_passing_steps=2"]),
            "particles": ("particle", ["model.history=2", "model.message_passing_steps=2", "train.batch_size=2"]),
            "nbody": ("nbody", ["model.kind=nbody", "model.hidden_size=16", "model.message_size=8",
                                "model.mlp_layers=1", "train.batch_size=4"])}


@needs_gpu
@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_batch_gives_the_same_statistics_loss_and_gradients_on_the_gpu(family, request):
    data, extra = FAMILIES[family]
    unroll = [] if data == "nbody" else ["train.unroll_steps=2"]
    cfg = config(request.getfixturevalue(f"{data}_data"), *extra, *unroll, base=TRAIN if data == "nbody" else TINY)
    trainer = make_trainer(cfg)
    trainer.prepare()
    torch.manual_seed(0)
    base = trainer.build_model()

    def on(device: str):
        trainer.device, trainer.model = torch.device(device), copy.deepcopy(base).to(device)
        trainer.init_statistics(0)
        model = trainer.model
        gens = {"sample": torch.Generator().manual_seed(1), "noise": torch.Generator().manual_seed(2)}
        torch.manual_seed(3)  # what draws from the global stream (the C-GNS's solver) draws the same
        loss = trainer.loss(model, model, gens)
        loss.backward()
        return (loss.item(), {k: v.cpu() for k, v in model.state_dict().items()},
                [None if p.grad is None else p.grad.cpu() for p in model.parameters()], trainer.validation_loss(model))

    cpu, gpu = on("cpu"), on("cuda")
    assert next(trainer.model.parameters()).is_cuda
    assert gpu[0] == pytest.approx(cpu[0], rel=1e-4)
    for k in cpu[1]:
        torch.testing.assert_close(gpu[1][k], cpu[1][k], rtol=1e-4, atol=1e-6, msg=k)
    # Gradients to 1e-4 of each tensor's largest: a constant input (the planar arm's rel_z, which the lean path
    # forms as a difference of two products) normalized by the clamped std (1e-3) amplifies float cancellation
    # noise 1000x in its weights' column (0.02 against a largest 4,117 in the GN's first layer), and that noise
    # depends on the order of operations, which differs between devices.
    for g_cpu, g_gpu in zip(cpu[2], gpu[2], strict=True):
        assert (g_cpu is None) == (g_gpu is None)
        if g_cpu is not None:
            torch.testing.assert_close(g_gpu, g_cpu, rtol=1e-3, atol=1e-4 * float(g_cpu.abs().max()))
    assert (cpu[3] is None) == (gpu[3] is None)
    if cpu[3] is not None:
        assert gpu[3] == pytest.approx(cpu[3], rel=1e-4)


@needs_gpu
def test_a_gpu_run_ships_a_checkpoint_for_the_cpu_and_resumes_there(arm_data, tmp_path):
    run = tmp_path / "run"
    summary = train(config(arm_data, "train.steps=6", "train.device=cuda", "train.ema_decay=0.9"), run,
                    progress=False, max_new_steps=3)
    assert summary["device"] == "cuda:0" and np.isfinite(summary["train_loss"])
    blob = read_checkpoint(run / "checkpoints" / "latest.pt")
    assert blob["config"]["train"]["device"] == "cuda" and blob["step"] == 3
    summary = train(config(arm_data, "train.steps=6", "train.ema_decay=0.9"), run, resume=True, progress=False)
    assert summary["device"] == "cpu" and summary["step"] == 6
    model, _ = load_model(run / "checkpoints" / "latest.pt", "forward", system="arm")
    ds = TrajectoryDataset.load(arm_data)
    nxt = model.step(torch.as_tensor(ds.qpos[:2, 0]).float(), torch.as_tensor(ds.qvel[:2, 0]).float(),
                     torch.as_tensor(ds.action[:2, 0]).float())
    assert all(torch.isfinite(t).all() for t in nxt)


def test_the_train_command_takes_a_device_and_reports_it(arm_data, tmp_path, capsys, monkeypatch):
    from workflows.cli import main

    sets = [a for o in TINY for a in ("--set", o)]
    code = main(["train", "--data", str(arm_data), "--out", str(tmp_path / "bad"), "--steps", "2", "--quiet",
                 "--device", "gpu", *sets])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("gndesign: error: ") and "\n" not in err, err
    assert "train.device must be cpu, cuda, cuda:N or auto, got 'gpu'" in err
    assert not (tmp_path / "bad").exists()
    assert main(["train", "--data", str(arm_data), "--out", str(tmp_path / "run"), "--steps", "2", "--quiet",
                 "--device", "auto", *sets]) == 0
    assert f"on {resolve_device('auto')}: train loss" in capsys.readouterr().out
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["config"]["train"]["device"] == "auto"
