"""The particle family: learned particle simulators (:class:`gndesign.particles.ParticleSimulator`)
on particle datasets of one scene.

Training (the shared loop of :mod:`gndesign.training`) samples windows of ``C + 1`` frames and the
``train.unroll_steps`` frames after them (:class:`ParticleSampler`), adds a random walk to the input
velocities (the last one's standard deviation ``train.vel_noise`` times the data's velocity spread)
and keeps the target pointing at the true next velocity, so the model learns to correct drifted
inputs (noise-corrected targets, :func:`noised_window`). The family's checkpoints record the scene;
:func:`check_scene` refuses a checkpoint trained on another scene.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gndesign.config import ParticleModelConfig
from gndesign.datasets.particles import ParticleDataset, scene_mismatch
from gndesign.errors import ConfigError, DatasetError, GndesignError
from gndesign.families import Family, Trainer
from gndesign.particle_lean import LeanParticles
from gndesign.particles import (
    ParticleSimulator,
    acceleration_targets,
    chain_intervals,
    chain_points,
    integrate,
    obstacle_nodes,
)


class ParticleTrainer(Trainer):
    """Particle simulators on particle datasets, for :func:`gndesign.training.run_training`."""

    def prepare(self) -> None:
        cfg, tc = self.config, self.config.train
        self.datasets = [ParticleDataset.load(p) for p in cfg.data]
        scene = self.datasets[0].scene
        for ds in self.datasets[1:]:
            diff = scene_mismatch(scene, ds.scene)
            if diff:
                raise DatasetError(f"datasets {cfg.data[0]} and {ds.path} hold different scenes ({'; '.join(diff)})")
        self.scene = scene
        cfg.model.obstacle_points = resolve_obstacle_points(cfg.model, self.datasets)
        splits = [ds.split(tc.val_fraction, tc.seed) for ds in self.datasets]
        C = cfg.model.history
        nodes = training_nodes(self.datasets, cfg.model.obstacle_points)
        self.train_set = ParticleSampler(self.datasets, nodes, [s[0] for s in splits], C)
        self.val_set = ParticleSampler(self.datasets, nodes, [s[1] for s in splits], C) if tc.val_fraction > 0 else None
        vel_std = float(np.mean([np.mean(ds.stats["velocity"]["std"]) for ds in self.datasets]))
        self.noise_std = tc.vel_noise * vel_std

    def build_model(self) -> ParticleSimulator:
        return ParticleSimulator(self.config.model, self.scene)

    def init_statistics(self, rank: int) -> None:
        tc = self.config.train
        gen = torch.Generator().manual_seed(tc.seed + 12345)
        left = tc.stats_transitions
        while left > 0:
            n = min(left, 256)
            hist, fut, _ = self.train_set.sample(n, 1, gen)
            noisy, target = self.to_device(noised_window(hist, fut, self.noise_std, gen))
            self.model.accumulate_statistics(noisy, target[:, 0])
            left -= n

    def requested(self) -> dict:
        return {"scene": self.scene}

    def loss(self, model, net, gens) -> Tensor:
        tc = self.config.train
        hist, fut, nodes = self.train_set.sample(tc.batch_size, tc.unroll_steps, gens["sample"])
        noisy, target = noised_window(hist, fut, self.noise_std, gens["noise"])
        return unrolled_particle_loss(model, *self.to_device((noisy, target, nodes)))

    @torch.no_grad()
    def validation_loss(self, model) -> float | None:
        if self.val_set is None or len(self.val_set) == 0:
            return None
        model.eval()
        gen = torch.Generator().manual_seed(0)
        total, n = 0.0, 0
        for _ in range(8):
            hist, fut, nodes = self.to_device(self.val_set.sample(32, 1, gen))
            total += float(unrolled_particle_loss(model, hist, fut, nodes))
            n += 1
        return total / n


def check_scene(blob: dict, where, scene: Mapping[str, Any] | None = None, **_) -> None:
    """Refuse a checkpoint trained on another scene than ``scene`` (names the differing keys)."""
    if scene is not None:
        diff = scene_mismatch(blob["scene"], scene)
        if diff:
            raise GndesignError(f"checkpoint {where} was trained on another scene ({'; '.join(diff)}): train a "
                                "model on data of this scene")


def describe_scene(model) -> dict:
    """What a checkpoint of a particle model records: its scene."""
    return {"scene": model.scene}


PARTICLES = Family("particles", "a particle simulator", "the obstacle scene",
                   build=lambda cfg, blob: ParticleSimulator(cfg.model, blob["scene"]),
                   describe=describe_scene, check=check_scene, trainer=ParticleTrainer)


def training_nodes(datasets: Sequence[ParticleDataset], points_per_segment: int) -> list[Tensor]:
    """Each dataset's obstacle nodes ``[E, P, 2]`` (float32) as the model sees them, at one spacing:
    the first dataset's segment length over ``points_per_segment``. Datasets with the first one's
    number of segments get :func:`~gndesign.particles.obstacle_nodes` (``m`` per segment); chains of
    another ``K`` (a design refined at another resolution, :mod:`workflows.refine`) get points evenly
    along them at that spacing, as design problems give a model (:func:`envs.obstacle.scene.obstacle_points`)."""
    verts = [torch.as_tensor(ds.obstacle, dtype=torch.float32) for ds in datasets]
    K0 = verts[0].shape[1] - 1
    spacing = float(np.linalg.norm(np.diff(datasets[0].obstacle[0], axis=0), axis=-1).mean()) / points_per_segment
    out = []
    for ds, v in zip(datasets, verts, strict=True):
        if v.shape[1] - 1 == K0:
            out.append(obstacle_nodes(v, points_per_segment))
        else:
            length = float(np.linalg.norm(np.diff(ds.obstacle[0], axis=0), axis=-1).sum())
            out.append(chain_points(v, chain_intervals(length, spacing)))
    return out


class ParticleSampler:
    """Random training windows from particle datasets, as float32 tensors, with each episode's
    obstacle nodes (``nodes``: :func:`training_nodes`).

    A sample at frame ``t`` is the history ``x[t-C..t]`` (frames before 0 repeat frame 0: the
    episodes start at rest) and the next ``L`` frames ``x[t+1..t+L]``.
    """

    def __init__(self, datasets: Sequence[ParticleDataset], nodes: Sequence[Tensor], episodes: Sequence[np.ndarray],
                 history: int):
        picks = [np.asarray(e, dtype=np.int64) for e in episodes]
        pos = [torch.as_tensor(ds.positions[e], dtype=torch.float32) for ds, e in zip(datasets, picks, strict=True)]
        obs = [n[torch.as_tensor(e)] for n, e in zip(nodes, picks, strict=True)]
        shapes = {(p.shape[1:], o.shape[1:]) for p, o in zip(pos, obs, strict=True)}
        if len(shapes) > 1:
            raise DatasetError(f"particle datasets differ in frames, particles or obstacle nodes: {sorted(shapes)} "
                               "(chains of one total length give the same nodes at any K)")
        self.positions = torch.cat(pos)  # [E, T+1, N, 2]
        self.nodes = torch.cat(obs)  # [E, P, 2]
        self.history = history

    def __len__(self) -> int:
        return self.positions.shape[0]

    def windows(self, ep: Tensor, t: Tensor, length: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(history [B, C+1, N, 2], future [B, L, N, 2], obstacle nodes [B, P, 2])`` at frames ``t``."""
        C = self.history
        hist_t = (t[:, None] + torch.arange(-C, 1)).clamp_min(0)
        fut_t = t[:, None] + torch.arange(1, length + 1)
        return (self.positions[ep[:, None], hist_t], self.positions[ep[:, None], fut_t], self.nodes[ep])

    def sample(self, batch: int, length: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        T = self.positions.shape[1] - 1
        if T < length:
            raise ConfigError(f"episodes of {T} frames are shorter than the unroll length {length}")
        ep = torch.randint(len(self), (batch,), generator=generator)
        t = torch.randint(T - length + 1, (batch,), generator=generator)
        return self.windows(ep, t, length)


def velocity_noise(history: Tensor, std: float, generator: torch.Generator) -> Tensor:
    """``history`` with a random walk on its velocities (LTS): each of the ``C`` velocities gets
    independent increments of std ``std / sqrt(C)`` accumulated, positions the accumulated sum."""
    C = history.shape[1] - 1
    steps = torch.randn(history[:, 1:].shape, generator=generator, dtype=history.dtype) * (std / math.sqrt(C))
    vel_noise = steps.cumsum(1)
    pos_noise = torch.cat([torch.zeros_like(vel_noise[:, :1]), vel_noise.cumsum(1)], 1)
    return history + pos_noise


def noised_window(history: Tensor, future: Tensor, std: float, generator: torch.Generator
                  ) -> tuple[Tensor, Tensor]:
    """Noised inputs and noise-corrected next positions: the target is shifted with the last input
    position, so the model corrects velocity noise (not position noise)."""
    noisy = velocity_noise(history, std, generator)
    shift = noisy[:, -1] - history[:, -1]
    return noisy, future + shift[:, None]


def unrolled_particle_loss(model: ParticleSimulator, history: Tensor, future: Tensor, nodes: Tensor) -> Tensor:
    """Mean normalized acceleration error over ``L = future.shape[1]`` steps, each from the
    model's own previous prediction (the one-step loss for ``L = 1``), with obstacle nodes ``nodes
    [B, P, 2]`` (e.g. :meth:`~gndesign.particles.ParticleSimulator.obstacle_nodes`); on the lean path
    (:mod:`gndesign.particle_lean`) unless ``GNDESIGN_LEAN=0``."""
    lean = LeanParticles(model, nodes, history.shape[2]) if model.lean() else None
    vels = list((history[:, 1:] - history[:, :-1]).unbind(1))
    total = 0.0
    for k in range(future.shape[1]):
        if lean is not None:
            x = history[:, -1]
            pred = lean.normalized(x, vels, lean.plan(x))
        else:
            pred = model.predict_normalized(history, nodes, model.edges(history, nodes))
        target = model.acc_normalizer(acceleration_targets(history, future[:, k]))
        total = total + (pred - target).pow(2).mean()
        if k + 1 < future.shape[1]:
            nxt = integrate(history, model.acc_normalizer.inverse(pred))
            vels = vels[1:] + [nxt - history[:, -1]]
            history = torch.cat([history[:, 1:], nxt[:, None]], 1)
    return total / future.shape[1]


def resolve_obstacle_points(cfg: ParticleModelConfig, datasets: Sequence[ParticleDataset]) -> int:
    """``cfg.obstacle_points``, or (if 0) enough nodes per segment that neighbours along the
    longest training segment are at most ``obstacle_spacing`` particle radii apart."""
    if cfg.obstacle_points > 0:
        return cfg.obstacle_points
    longest = max(float(np.linalg.norm(np.diff(ds.obstacle, axis=1), axis=-1).max()) for ds in datasets)
    spacing = cfg.obstacle_spacing * datasets[0].scene["particle_radius"]
    return max(1, math.ceil(longest / spacing - 1e-9))


