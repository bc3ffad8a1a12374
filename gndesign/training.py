"""The training loop shared by every model family: seeding, optimizer and learning-rate schedule,
checkpoints, exact resume, CSV metrics and DDP.

A run directory holds ``config.yaml`` (the resolved configuration), ``metrics.csv`` (scalar logs)
and ``checkpoints/latest.pt`` (:mod:`gndesign.checkpoints`: everything a run needs to continue
exactly as if it had never stopped). What differs between families (data, model, statistics,
losses) is the family's trainer (:class:`gndesign.families.Trainer`), looked up by the
configuration's family in :data:`gndesign.checkpoints.FAMILIES`.

Distributed data parallel: launch the same command under ``torchrun --nproc_per_node K -m gndesign
train ...``; each process samples its own batches (gloo on CPU, nccl on GPU), gradients are
averaged, and rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import csv
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from tqdm import tqdm

from gndesign.checkpoints import check_family, get_family, read_checkpoint, save_checkpoint
from gndesign.config import RunConfig, as_particle_config
from gndesign.datasets.formats import dataset_format
from gndesign.errors import ConfigError, GndesignError
from gndesign.families import Trainer
from gndesign.io import atomic_write_text

log = logging.getLogger(__name__)


def train(config: RunConfig, run_dir: str | os.PathLike, resume: bool = False, progress: bool = True,
          max_new_steps: int | None = None) -> dict:
    """Train a model of ``config.family`` on ``config.data``; returns a summary (final losses,
    steps, throughput).

    With ``resume``, continues from ``run_dir/checkpoints/latest.pt`` and reproduces the
    uninterrupted run (same data order, noise and optimizer state). ``max_new_steps`` stops this
    invocation early, as a preemption would (the run can be resumed).

    A forward configuration on particle data trains a particle simulator with the options both
    share (:func:`gndesign.config.as_particle_config`).
    """
    if not config.data:
        raise ConfigError("no training data: pass --data DIR [DIR ...] or set data: in the config")
    particle_data = dataset_format(config.data[0]) == "particles"
    if particle_data and not config.particles and config.solver is None:
        config = as_particle_config(config)
    config.validate()
    if config.particles != particle_data:
        raise ConfigError(f"{config.data[0]} is {'not ' if config.particles else ''}a particle dataset but the "
                          f"configuration is for {'particles' if config.particles else 'articulated systems'}")
    return run_training(get_family(config.family).trainer(config), run_dir, resume, progress, max_new_steps)


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


def _distributed() -> tuple[int, int]:
    """(rank, world size), initializing the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def run_training(trainer: Trainer, run_dir: str | os.PathLike, resume: bool = False, progress: bool = True,
                 max_new_steps: int | None = None) -> dict:
    """The training loop shared by every model family (see :class:`gndesign.families.Trainer`): Adam with
    gradient clipping, exponential learning-rate decay over ``train.steps`` (or ``train.minutes``),
    CSV metrics, atomic checkpoints with the full training state, exact resume, DDP."""
    tc = trainer.config.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    rank, world = _distributed()
    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoints" / "latest.pt"
    if not resume and ckpt_path.exists():
        raise GndesignError(f"{run_dir} already holds a run: pass --resume to continue it or choose another --out")
    if resume and not ckpt_path.exists():
        raise GndesignError(f"nothing to resume: {ckpt_path} does not exist")
    trainer.prepare()

    torch.manual_seed(tc.seed)
    np.random.seed(tc.seed)
    random.seed(tc.seed)
    model = trainer.model = trainer.build_model()
    gens = {"sample": torch.Generator().manual_seed(tc.seed * 1000 + rank),
            "noise": torch.Generator().manual_seed(tc.seed * 1000 + 500 + rank)}
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr)
    decay = (tc.lr_final / tc.lr) ** (1.0 / tc.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: decay ** min(s, tc.steps))
    step = 0
    if resume:
        blob = read_checkpoint(ckpt_path)
        # Refuse a checkpoint of another family, system, scene or feature layout before loading anything.
        check_family(blob, trainer.config.family, "to resume")
        get_family(blob["family"]).check(blob, "to resume", **trainer.requested())
        if blob["optimizer"] is None:
            raise GndesignError(f"{ckpt_path} is an exported (inference-only) checkpoint and cannot be resumed")
        model.load_state_dict(blob["model"])
        optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
        step = int(blob["step"])
        set_rng_state(blob["rng"], gens)
        log.info("resumed %s at step %d", run_dir, step)
    else:
        trainer.init_statistics(rank)
        if rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(trainer.config.to_dict(), sort_keys=False))

    net = model
    if world > 1:
        # The last processor step's global update feeds no decoder: those weights get no gradient.
        net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    metrics_path = run_dir / "metrics.csv"
    start_time, start_step = time.time(), step
    bar = tqdm(total=tc.steps, initial=step, disable=not progress or rank != 0, desc="train", unit="step")
    summary: dict[str, Any] = {}
    last_loss = float("nan")
    stop_at = tc.steps if max_new_steps is None else min(tc.steps, step + max_new_steps)
    while step < stop_at:
        if tc.minutes is not None and time.time() - start_time > 60 * tc.minutes:
            log.info("stopping after %.1f minutes (train.minutes)", tc.minutes)
            break
        model.train()
        loss = trainer.loss(model, net, gens)
        if not torch.isfinite(loss):
            raise GndesignError(f"training diverged at step {step} (loss {float(loss)}): lower train.lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        optimizer.step()
        scheduler.step()
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
                                         / max(time.time() - start_time, 1e-9), 1)}
            if step % tc.eval_every == 0 or step == tc.steps:
                val = trainer.validation_loss(model)
                if val is not None:
                    row["val_loss"] = val
            _append_csv(metrics_path, row)
            bar.set_postfix(loss=f"{last_loss:.4f}", **({"val": f"{row['val_loss']:.4f}"} if "val_loss" in row else {}))
            summary.update(row)
        if rank == 0 and (step % tc.checkpoint_every == 0 or step == tc.steps):
            save_checkpoint(ckpt_path, model, trainer.config, step, optimizer, scheduler, rng_state(gens))
    bar.close()
    if rank == 0:
        save_checkpoint(ckpt_path, model, trainer.config, step, optimizer, scheduler, rng_state(gens))
        summary.update({"step": step, "train_loss": last_loss, "seconds": time.time() - start_time})
        val = trainer.validation_loss(model)
        if val is not None:
            summary["val_loss"] = val
    if world > 1:
        dist.barrier()
    return summary


METRICS_COLUMNS = ["step", "time_s", "train_loss", "val_loss", "lr", "graphs_per_s"]


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRICS_COLUMNS)
        if new:
            w.writeheader()
        w.writerow(row)
