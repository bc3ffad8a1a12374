"""The training loop shared by every model family: seeding, optimizer and learning-rate schedule,
checkpoints, exact resume, CSV metrics and DDP.

A run directory holds ``config.yaml`` (the resolved configuration), ``metrics.csv`` (scalar logs)
and ``checkpoints/latest.pt`` (:mod:`gndesign.checkpoints`: everything a run needs to continue
exactly as if it had never stopped). What differs between families (data, model, statistics,
losses) is the family's trainer (:class:`gndesign.families.Trainer`), looked up by the
configuration's family in :data:`gndesign.checkpoints.FAMILIES`.

A resumed run must have the checkpoint's data and configuration (only ``train.steps``,
``train.minutes``, ``train.threads``, ``train.device`` and the logging intervals may change); its ``metrics.csv``
keeps the rows up to the checkpoint's step and its clock continues. Ctrl-C or SIGTERM finish the
step in progress and save a checkpoint before exiting. A file that cannot be written (disk full,
read-only directory) is a one-line error naming it; the previous file stays as it was.

Distributed data parallel: launch the same command under ``torchrun --nproc_per_node K -m gndesign
train ...``; each process samples its own batches (gloo on CPU, nccl on GPU: ``train.device=cuda``
gives each process its own GPU), gradients are averaged, and rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from tqdm import tqdm

from gndesign.checkpoints import (
    check_family,
    get_family,
    load_weights,
    read_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from gndesign.config import RunConfig, as_nbody_config, as_particle_config, config_mismatch
from gndesign.datasets.base import one_line
from gndesign.datasets.formats import dataset_format
from gndesign.errors import ConfigError, GndesignError, writing
from gndesign.families import Trainer
from gndesign.io import atomic_write_text

log = logging.getLogger(__name__)


def train(config: RunConfig, run_dir: str | os.PathLike, resume: bool = False, progress: bool = True,
          max_new_steps: int | None = None, init_from: str | os.PathLike | None = None) -> dict:
    """Train a model of ``config.family`` on ``config.data``; returns a summary (final losses,
    steps, throughput).

    With ``resume``, continues from ``run_dir/checkpoints/latest.pt`` and reproduces the
    uninterrupted run (same data order, noise and optimizer state). ``max_new_steps`` stops this
    invocation early, as a preemption would (the run can be resumed). ``init_from``: fine-tune, i.e.
    start a new run from that checkpoint's weights and normalization statistics (a fresh optimizer
    and schedule; an exported checkpoint will do) instead of a new model.

    A forward configuration on particle data trains a particle simulator with the options both
    share (:func:`gndesign.config.as_particle_config`).
    """
    return run_training(make_trainer(config), run_dir, resume, progress, max_new_steps, init_from)


def make_trainer(config: RunConfig) -> Trainer:
    """The trainer of ``config``'s family for its data (a forward configuration on particle or
    N-body data becomes that family's configuration), the configuration validated."""
    if not config.data:
        raise ConfigError("no training data: pass --data DIR [DIR ...] or set data: in the config")
    fmt = dataset_format(config.data[0])
    if fmt == "nbody":  # the N-body message-passing model (gndesign.nbody_training)
        config = as_nbody_config(config)
    particle_data = fmt == "particles"
    if particle_data and not config.particles and config.solver is None:
        config = as_particle_config(config)
    config.validate()
    if config.particles != particle_data:
        raise ConfigError(f"{config.data[0]} is {'not ' if config.particles else ''}a particle dataset but the "
                          f"configuration is for {'particles' if config.particles else 'articulated systems'}")
    return get_family(config.family).trainer(config)


def fine_tune_start(trainer: Trainer, model: torch.nn.Module, spec: str | os.PathLike) -> None:
    """Load the weights and statistics of checkpoint ``spec`` (a path or ``pretrained:NAME``) into
    ``model``, refusing one of another family, system or scene, or of other model options."""
    path = resolve_checkpoint(spec)
    blob = read_checkpoint(path)
    check_family(blob, trainer.config.family, "to fine-tune")
    get_family(blob["family"]).check(blob, "to fine-tune", **trainer.requested())
    saved = RunConfig.from_dict(blob["config"], particles="scene" in blob, cgns="solver" in blob["config"])
    old, new = saved.to_dict()["model"], trainer.config.to_dict()["model"]
    key = next((k for k, v in old.items() if new.get(k) != v), None)
    if key is not None:
        raise ConfigError(f"cannot fine-tune {spec}: model.{key} {old[key]} in the checkpoint vs {new.get(key)} now; "
                          "train with the checkpoint's model options")
    load_weights(model, blob["model"], path)
    log.info("fine-tuning from %s", spec)


def rng_state(generators: dict[str, torch.Generator]) -> dict:
    """Every RNG state a run consumes (saved in its checkpoints: resuming continues the same streams)."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "generators": {k: g.get_state() for k, g in generators.items()}}


def set_rng_state(state: dict, generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    for k, g in generators.items():
        g.set_state(state["generators"][k])


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """The device ``train.device`` names: ``auto`` is the GPU when torch sees one, else the CPU; a
    bare ``cuda`` under torchrun is the process's own GPU (``LOCAL_RANK``). A GPU torch cannot use is
    a one-line error before anything runs."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"train.device={spec} but this torch ({torch.__version__}) sees no GPU: install a CUDA build "
                          "of torch (make install TORCH_SPEC=...) or train with train.device=cpu (--device cpu)")
    device = torch.device(spec if ":" in spec else f"cuda:{local_rank}")
    if device.index >= torch.cuda.device_count():
        raise ConfigError(f"train.device={spec}: torch sees {torch.cuda.device_count()} GPU(s) (cuda:0 to "
                          f"cuda:{torch.cuda.device_count() - 1})")
    return device


def _distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size), initializing the process group under torchrun (nccl for GPUs, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def run_training(trainer: Trainer, run_dir: str | os.PathLike, resume: bool = False, progress: bool = True,
                 max_new_steps: int | None = None, init_from: str | os.PathLike | None = None) -> dict:
    """The training loop shared by every model family (see :class:`gndesign.families.Trainer`): Adam with
    gradient clipping, exponential learning-rate decay over ``train.steps`` (or ``train.minutes``),
    CSV metrics, atomic checkpoints with the full training state, exact resume, DDP."""
    tc = trainer.config.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if not trainer.gpu and tc.device not in ("cpu", "auto"):
        raise ConfigError(f"train.device={tc.device}: {get_family(trainer.config.family).what} trains on the CPU "
                          "only; set train.device=cpu")
    device = resolve_device(tc.device if trainer.gpu else "cpu", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    rank, world = _distributed(device)
    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoints" / "latest.pt"
    metrics_path = run_dir / "metrics.csv"
    if not resume and ckpt_path.exists():
        raise GndesignError(f"{run_dir} already holds a run: pass --resume to continue it or choose another --out")
    if resume and not ckpt_path.exists():
        raise GndesignError(f"nothing to resume: {ckpt_path} does not exist")
    if resume and init_from is not None:
        raise GndesignError("a resumed run continues its own weights: drop the checkpoint to fine-tune from")
    trainer.prepare()

    torch.manual_seed(tc.seed)
    np.random.seed(tc.seed)
    random.seed(tc.seed)
    # Built on the CPU (the same initial weights on every device), then moved before the optimizer sees it.
    model = trainer.model = trainer.build_model().to(device)
    trainer.device = device
    gens = {"sample": torch.Generator().manual_seed(tc.seed * 1000 + rank),
            "noise": torch.Generator().manual_seed(tc.seed * 1000 + 500 + rank)}
    # One fused kernel for all parameters (the per-tensor loop cost ~3 ms a step on a CPU core)
    params = list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=tc.lr, fused=True)
    decay = (tc.lr_final / tc.lr) ** (1.0 / tc.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: decay ** min(s, tc.steps))
    step, elapsed = 0, 0.0
    if resume:
        blob = read_checkpoint(ckpt_path)
        # Refuse a checkpoint of another family, system, scene, feature layout or configuration
        # before loading anything (nothing in the run directory changes).
        check_family(blob, trainer.config.family, "to resume")
        get_family(blob["family"]).check(blob, "to resume", **trainer.requested())
        if blob["optimizer"] is None:
            raise GndesignError(f"{ckpt_path} is an exported (inference-only) checkpoint and cannot be resumed")
        saved = RunConfig.from_dict(blob["config"], particles="scene" in blob, cgns="solver" in blob["config"])
        diff = config_mismatch(saved, trainer.config)
        if diff:
            raise ConfigError(f"cannot resume {run_dir}: {diff}; resume with the run's configuration "
                              f"(--config {run_dir / 'config.yaml'}) or start a new run (another --out)")
        load_weights(model, blob["model"], ckpt_path)  # with train.ema_decay the average: see below
        try:
            optimizer.load_state_dict(blob["optimizer"])
            scheduler.load_state_dict(blob["scheduler"])
            for group in optimizer.param_groups:  # older checkpoints saved the unfused optimizer's flags
                group.update(fused=True, foreach=None)
        except (ValueError, KeyError, RuntimeError) as e:
            raise GndesignError(f"{ckpt_path}: its optimizer state does not fit its model ({one_line(e)}): "
                                "restore the original file or start a new run") from None
        step = int(blob["step"])
        set_rng_state(blob["rng"], gens)
        metrics = Metrics.resume(metrics_path, step) if rank == 0 else None
        # The run's clock continues (metrics' time_s, train.minutes); older checkpoints: the last logged time.
        elapsed = float((blob.get("extra") or {}).get("elapsed_s", metrics.last_time if metrics else 0.0))
        log.info("resumed %s at step %d", run_dir, step)
    else:
        if init_from is not None:
            fine_tune_start(trainer, model, init_from)
        else:
            trainer.init_statistics(rank)
        metrics = Metrics(metrics_path) if rank == 0 else None
        if rank == 0:
            with writing(run_dir / "config.yaml"):
                run_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(trainer.config.to_dict(), sort_keys=False))

    average = None
    if tc.ema_decay is not None:
        average = WeightAverage(model, tc.ema_decay, step)  # starts at the model's weights (resumed: its average)
        if resume:
            load_weights(model, blob["train_model"], ckpt_path)  # the weights the optimizer continues from
    net = model
    if world > 1:
        # The last processor step's global update feeds no decoder: those weights get no gradient.
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                                        find_unused_parameters=True)
    session_start, start_step = time.time(), step
    start_time = session_start - elapsed  # the run's clock, across resumes

    def save() -> None:
        save_checkpoint(ckpt_path, model, trainer.config, step, optimizer, scheduler, rng_state(gens),
                        extra={"elapsed_s": time.time() - start_time},
                        weights=None if average is None else average.state_dict())

    def validation_loss() -> float | None:
        if average is None:
            return trainer.validation_loss(model)
        with average.applied():  # the weights a checkpoint ships
            return trainer.validation_loss(model)

    bar = tqdm(total=tc.steps, initial=step, disable=not progress or rank != 0, desc="train", unit="step")
    summary: dict[str, Any] = {}
    last_loss = float("nan")
    stop_at = tc.steps if max_new_steps is None else min(tc.steps, step + max_new_steps)
    # Ctrl-C and SIGTERM finish the step and save (one process; under torchrun they stop every rank).
    with StopRequest(world == 1) as stop:
        while step < stop_at and not stop.signal:
            if tc.minutes is not None and time.time() - start_time > 60 * tc.minutes:
                log.info("stopping after %.1f minutes (train.minutes)", tc.minutes)
                break
            if not model.training:  # a validation left it in eval mode (train() walks every module)
                model.train()
            loss = trainer.loss(model, net, gens)
            if not torch.isfinite(loss):
                raise GndesignError(f"training diverged at step {step} (loss {float(loss)}): lower train.lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, tc.grad_clip, foreach=True)
            optimizer.step()
            scheduler.step()
            if average is not None:
                average.update()
            if tc.minutes is not None:
                # A wall-clock budget anneals over the budget (whichever of steps and time runs out first).
                progress_frac = max(step / tc.steps, (time.time() - start_time) / (60 * tc.minutes))
                for group in optimizer.param_groups:
                    group["lr"] = tc.lr * (tc.lr_final / tc.lr) ** min(progress_frac, 1.0)
            step += 1
            last_loss = loss.item()
            bar.update(1)
            if rank == 0 and (step % tc.log_every == 0 or step == tc.steps):
                row = {"step": step, "time_s": round(time.time() - start_time, 3), "train_loss": last_loss,
                       "lr": optimizer.param_groups[0]["lr"],
                       "graphs_per_s": round((step - start_step) * tc.batch_size * tc.unroll_steps * world
                                             / max(time.time() - session_start, 1e-9), 1)}
                if step % tc.eval_every == 0 or step == tc.steps:
                    val = validation_loss()
                    if val is not None:
                        row["val_loss"] = val
                metrics.append(row)
                bar.set_postfix(loss=f"{last_loss:.4f}",
                                **({"val": f"{row['val_loss']:.4f}"} if "val_loss" in row else {}))
                summary.update(row)
            if rank == 0 and (step % tc.checkpoint_every == 0 or step == tc.steps):
                save()
        bar.close()
        if rank == 0:
            save()
        if stop.signal:
            # Ctrl-C or SIGTERM: the step in progress finished and was saved; no work is lost.
            log.warning("%s at step %d: saved %s; continue with --resume", stop.name, step, ckpt_path)
            raise KeyboardInterrupt
    if rank == 0:
        summary.update({"step": step, "train_loss": last_loss, "seconds": time.time() - session_start,
                        "device": str(device)})
        val = validation_loss()
        if val is not None:
            summary["val_loss"] = val
    if world > 1:
        dist.barrier()
    return summary


class WeightAverage:
    """An exponential moving average of a model's parameters (``train.ema_decay``), updated after
    every optimizer step: ``average += (1 - d) * (weights - average)``, with ``d = min(decay, (1 + t)
    / (10 + t))`` at update ``t`` so a short run's average does not hold on to the initial weights.
    The average of the last ~1/(1 - decay) steps' weights smooths out the optimizer's step-to-step
    noise, which otherwise stays in the final weights as an error that persists along rollouts.

    Args:
        model: the model whose parameters are averaged (buffers, e.g. normalizer statistics, are
            its own).
        decay: the decay per step, in (0, 1).
        updates: how many updates the average already has (a resumed run: its step; the model
            then holds the checkpoint's average when this is built).
    """

    def __init__(self, model: torch.nn.Module, decay: float, updates: int = 0) -> None:
        self.model, self.decay, self.updates = model, decay, updates
        self.names = [n for n, _ in model.named_parameters()]
        self.params = [p for _, p in model.named_parameters()]
        self.average = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.average, self.params, 1.0 - d)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The model's state dict with the averaged parameters."""
        state = self.model.state_dict()
        state.update({n: a.clone() for n, a in zip(self.names, self.average, strict=True)})
        return state

    @contextlib.contextmanager
    def applied(self):
        """Within the block the model holds the averaged weights; its own come back after."""
        own = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            torch._foreach_copy_(self.params, self.average)
        try:
            yield self.model
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, own)


class StopRequest:
    """Within the block, SIGINT (Ctrl-C) and SIGTERM set :attr:`signal` instead of stopping the
    process, so the training loop can finish its step, save a checkpoint and exit; a second signal
    interrupts at once. Outside the main thread (no signal handlers there) it does nothing, and
    signals the process ignores stay ignored."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def name(self) -> str:
        return "interrupted" if self.signal == signal.SIGINT else "terminated"

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    def __enter__(self) -> StopRequest:
        if self.enabled and threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                if signal.getsignal(s) is not signal.SIG_IGN:  # a signal the caller ignores stays ignored (nohup)
                    self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


METRICS_COLUMNS = ["step", "time_s", "train_loss", "val_loss", "lr", "graphs_per_s"]


class Metrics:
    """``metrics.csv``: one row per logged step, rewritten atomically at every row (a full disk
    leaves the previous file, never a partial row)."""

    def __init__(self, path: Path, rows: list[dict[str, str]] | None = None) -> None:
        self.path = path
        self.rows = rows or []

    @classmethod
    def read(cls, path: Path) -> Metrics:
        """A run's metrics as logged (no rows when the file is missing), checked, nothing rewritten."""
        if not path.is_file():
            return cls(path)
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        try:
            for r in rows:
                int(r["step"])
        except (KeyError, TypeError, ValueError):
            raise GndesignError(f"{path} is not a gndesign metrics file: move it away to resume") from None
        return cls(path, rows)

    @classmethod
    def resume(cls, path: Path, step: int) -> Metrics:
        """The metrics of a run resumed at ``step``: the rows logged after it (work the resumed run
        redoes) are dropped from the file at once."""
        logged = cls.read(path)
        out = cls(path, [r for r in logged.rows if int(r["step"]) <= step])
        if len(out.rows) != len(logged.rows):
            out.write()
        return out

    @property
    def last_time(self) -> float:
        return float(self.rows[-1]["time_s"]) if self.rows else 0.0

    def append(self, row: dict) -> None:
        self.rows.append(row)
        self.write()

    def write(self) -> None:
        text = io.StringIO()
        w = csv.DictWriter(text, fieldnames=METRICS_COLUMNS)
        w.writeheader()
        w.writerows(self.rows)
        with writing(self.path):
            atomic_write_text(self.path, text.getvalue())
