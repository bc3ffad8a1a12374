"""What a model family is: how to build, describe, check and train one sort of learned simulator.

The families (articulated forward models, particle simulators, the C-GNS of either) are declared
next to their training code (:mod:`gndesign.forward_training`, :mod:`gndesign.particle_training`,
:mod:`gndesign.cgns_training`) and listed in :data:`gndesign.checkpoints.FAMILIES`, where the one
checkpoint writer and loader and the training loop (:mod:`gndesign.training`) look them up by the
name a :class:`gndesign.config.RunConfig` (``config.family``) or a checkpoint (``blob["family"]``)
carries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from gndesign.config import RunConfig


@dataclass(frozen=True)
class Family:
    """One model family.

    Attributes:
        name: its name in configurations and checkpoints (``forward``, ``particles``, ...).
        what: what it is, for messages (``a particle simulator``).
        of: what it simulates, for messages (``articulated systems``).
        build: ``(config, blob) -> model``: a fresh model of a checkpoint's configuration and
            description (what :attr:`describe` wrote into ``blob``).
        describe: ``model -> dict``: what a checkpoint records besides the weights to rebuild and
            check the model (systems and feature layout, or the scene).
        check: ``(blob, where, **requested)``: refuse a checkpoint that does not fit what the caller
            asks for (``system``, ``allow_new_system``, ``mjcf_sha256``, ``scene``;
            articulated families also ``systems``, the data a run resumes on; ``None``: anything)
            or this version's feature layout, with a one-line message naming the mismatch.
        trainer: ``config -> Trainer`` for :func:`gndesign.training.run_training`.
    """

    name: str
    what: str
    of: str
    build: Callable[[RunConfig, dict], torch.nn.Module]
    describe: Callable[[torch.nn.Module], dict]
    check: Callable[..., None]
    trainer: Callable[[RunConfig], Trainer]

    @property
    def title(self) -> str:
        return f"{self.what} of {self.of}"


class Trainer:
    """What :func:`gndesign.training.run_training` needs from a family: the shared loop owns
    seeding, the optimizer and learning-rate schedule, resume, logging, checkpoints and DDP; a
    trainer owns data, model, statistics and losses.

    The methods are called in this order: :meth:`prepare` (load data), then, after seeding,
    :meth:`build_model`, then :meth:`init_statistics` (fresh runs) or, for resumed runs, the
    family's ``check`` with :meth:`requested`, then :meth:`loss` once per step;
    :meth:`validation_loss` when due.

    The data stay in host memory and the random numbers come from CPU generators (so a run draws the
    same batches and noise on every device); whatever a trainer hands the model passes through
    :meth:`to_device` first (the loop puts the model on :attr:`device`, ``train.device``).
    """

    #: Whether the family trains on a GPU (``train.device``); False: only on the CPU.
    gpu = True

    def __init__(self, config: RunConfig):
        self.config = config
        self.model: Any = None
        self.device = torch.device("cpu")

    def to_device(self, batch: Any) -> Any:
        """``batch`` (tensors in nested dicts, lists and tuples; other leaves as they are) on :attr:`device`."""
        return to_device(batch, self.device)

    def prepare(self) -> None:
        """Load the data (before seeding: it must not consume the global RNGs)."""

    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def init_statistics(self, rank: int) -> None:
        """Accumulate normalization statistics (fresh runs only; the same on every rank)."""

    def requested(self) -> dict:
        """What a checkpoint to resume must fit (keyword arguments of the family's ``check``)."""
        return {}

    def loss(self, model: torch.nn.Module, net: torch.nn.Module, gens: dict[str, torch.Generator]) -> torch.Tensor:
        """One training batch's loss (``net`` is ``model`` or its DDP wrapper)."""
        raise NotImplementedError

    def validation_loss(self, model: torch.nn.Module) -> float | None:
        return None


def to_device(batch: Any, device: torch.device) -> Any:
    """Every tensor of ``batch`` (nested dicts, lists and tuples) on ``device``; other leaves unchanged."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
