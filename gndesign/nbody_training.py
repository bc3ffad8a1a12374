"""The N-body family: message-passing models (:class:`gndesign.nbody_model.NBodyGN`) trained on
N-body datasets of one system to predict the true accelerations of random frames.

The shared loop (:mod:`gndesign.training`) owns seeding, optimizer, resume and checkpoints; this
trainer samples ``train.batch_size`` frames of the training episodes per step. Checkpoints record
the system; :func:`check_system` refuses one trained on another law, dimension or step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gndesign.datasets.nbody import NBodyDataset, system_mismatch
from gndesign.equivariant import NBodyEGNN
from gndesign.errors import DatasetError, GndesignError
from gndesign.families import Family, Trainer
from gndesign.nbody_model import NBodyGN

FIELDS = ("positions", "velocities", "masses", "charges", "accelerations")


class FrameSampler:
    """Frames of chosen episodes of N-body datasets as float32 tensors ``x, v, a [F, N, D]``,
    ``m, q [F, N]``."""

    def __init__(self, datasets: Sequence[NBodyDataset], episodes: Sequence[np.ndarray]):
        parts: dict[str, list[Tensor]] = {k: [] for k in FIELDS}
        for ds, ep in zip(datasets, episodes, strict=True):
            ep = np.asarray(ep, dtype=np.int64)
            t1 = ds.steps + 1
            for k in ("positions", "velocities", "accelerations"):
                arr = getattr(ds, k)[ep]
                parts[k].append(torch.as_tensor(arr.reshape(-1, *arr.shape[2:]), dtype=torch.float32))
            for k in ("masses", "charges"):
                arr = np.repeat(getattr(ds, k)[ep], t1, axis=0)
                parts[k].append(torch.as_tensor(arr, dtype=torch.float32))
        self.data = {k: torch.cat(v) for k, v in parts.items()}

    def __len__(self) -> int:
        return len(self.data["positions"])

    def batch(self, index: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.data[k][index] for k in FIELDS)

    def sample(self, n: int, gen: torch.Generator) -> tuple[Tensor, ...]:
        return self.batch(torch.randint(len(self), (n,), generator=gen))


def load_system_datasets(paths: Sequence[str]) -> list[NBodyDataset]:
    """N-body datasets of one system (same law, dimension, step and particle count)."""
    datasets = [NBodyDataset.load(p) for p in paths]
    first = datasets[0]
    for ds in datasets[1:]:
        diff = system_mismatch(first.system, ds.system)
        if diff or ds.num_particles != first.num_particles:
            raise DatasetError(f"datasets {first.path} and {ds.path} hold different N-body systems "
                               f"({'; '.join(diff) or 'particle counts differ'}): train on one system")
    return datasets


def build_network(config, system: Mapping[str, Any]) -> NBodyGN | NBodyEGNN:
    """The network ``config.net`` selects (``gn`` or ``egnn``) for an N-body ``system``."""
    return (NBodyEGNN if config.net == "egnn" else NBodyGN)(config, system)


class NBodyTrainer(Trainer):
    def prepare(self) -> None:
        cfg, tc = self.config, self.config.train
        self.datasets = load_system_datasets(cfg.data)
        self.system = self.datasets[0].system
        splits = [ds.split(tc.val_fraction, tc.seed) for ds in self.datasets]
        self.train_set = FrameSampler(self.datasets, [s[0] for s in splits])
        self.val_set = FrameSampler(self.datasets, [s[1] for s in splits]) if tc.val_fraction > 0 else None

    def build_model(self) -> NBodyGN | NBodyEGNN:
        return build_network(self.config.model, self.system)

    def init_statistics(self, rank: int) -> None:
        a = self.train_set.data["accelerations"]
        self.model.acc_scale.fill_(max(float(a.std()), self.config.model.std_epsilon))

    def requested(self) -> dict:
        return {"system": self.system}

    def loss(self, model, net, gens) -> Tensor:
        x, v, m, q, a = self.to_device(self.train_set.sample(self.config.train.batch_size, gens["sample"]))
        return model.loss(x, v, m, q, a)[0]

    @torch.no_grad()
    def validation_loss(self, model) -> float | None:
        """The loss over every held-out frame (in chunks of 1024), weighted by chunk size."""
        frames = 0 if self.val_set is None else len(self.val_set)
        if frames == 0:
            return None
        model.eval()
        chunks = torch.arange(frames).split(1024)
        losses = (float(model.loss(*self.to_device(self.val_set.batch(c)))[0]) * len(c) for c in chunks)
        return float(sum(losses) / frames)


def check_system(blob: dict, where, system: Mapping[str, Any] | str | None = None, **_) -> None:
    """Refuse a checkpoint trained on another N-body system (law, dimension, step, damping)."""
    if isinstance(system, Mapping):
        diff = system_mismatch(blob["system"], system)
        if diff:
            raise GndesignError(f"checkpoint {where} was trained on another N-body system ({'; '.join(diff)}): "
                                "train a model on data of this system")


NBODY = Family("nbody", "an N-body message-passing model", "N-body systems",
               build=lambda cfg, blob: build_network(cfg.model, blob["system"]),
               describe=lambda model: {"system": model.system}, check=check_system, trainer=NBodyTrainer)
