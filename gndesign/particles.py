"""A learned particle simulator for the obstacle-design scene ("learning to simulate").

Sanchez-Gonzalez et al. (2020): particles are graph nodes carrying a short history of velocities;
edges join nodes closer than a connectivity radius ``R``; an encode-process-decode graph network
(:class:`gndesign.nn.EncodeProcessDecode`, the same core as the articulated models) predicts each
particle's normalized acceleration, and a semi-implicit Euler step in *frame units* moves it:

    ``v[t] = x[t] - x[t-1]``,  ``v[t+1] = v[t] + a[t]``,  ``x[t+1] = x[t] + v[t+1]``

(:func:`integrate`; its exact inverse :func:`acceleration_targets` builds training targets).

The obstacle, a polyline of ``K`` segments (``K+1`` vertices ``(x, z)``), enters as *kinematic*
nodes sampled along it at a fixed number of points per segment (:func:`obstacle_nodes`, linear
interpolation of the vertices: the graph's size does not depend on the design). They have zero
velocity, are never predicted, and their positions reach the prediction only through edge
features, computed inside autograd from positions, so gradients flow from a rollout's particles
back to the obstacle's vertices (inverse design). The neighbour search itself (``scipy``'s
``cKDTree``, :func:`radius_edges`) runs outside autograd on detached positions.

Features
--------
* nodes ``[2 C + 5]``: ``C`` normalized velocities (oldest first; zero for obstacle nodes),
  signed distances to the floor and to the left and right walls divided by ``R`` and clipped to
  ``[-1, 1]``, and a one-hot node type (particle, obstacle);
* edges ``[3]``: ``(x_sender - x_receiver) / R`` and its length.

Training (:func:`train_particles`, the shared loop of :mod:`gndesign.training`) adds a random
walk to the input velocities (the last one's standard deviation ``train.vel_noise`` times the
data's velocity spread) and keeps the target pointing at the true next velocity, so the model
learns to correct drifted inputs (noise-corrected targets).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.utils.checkpoint
from scipy.spatial import cKDTree
from torch import Tensor, nn

from gndesign import __version__
from gndesign.datasets.particles import (
    ParticleDataset,
    scene_mismatch,
    validate_scene,
)
from gndesign.errors import ConfigError, DatasetError, GndesignError
from gndesign.io import atomic_path
from gndesign.nn import AGGREGATIONS, EncodeProcessDecode
from gndesign.normalization import Normalizer
from gndesign.simulator import ModelConfig
from gndesign.training import (
    CHECKPOINT_FORMAT,
    TrainConfig,
    TrainingTask,
    _dataclass_from,
    read_checkpoint,
    resolve_checkpoint,
    run_training,
)

__all__ = [
    "ParticleModelConfig",
    "ParticleRunConfig",
    "ParticleSimulator",
    "ParticleTrainConfig",
    "acceleration_targets",
    "integrate",
    "load_particle_model",
    "obstacle_nodes",
    "radius_edges",
    "save_particle_checkpoint",
    "train_particles",
]

log = logging.getLogger(__name__)
KIND = "particles"
NUM_TYPES = 2  # particle, obstacle
PARTICLE, OBSTACLE = 0, 1


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


@dataclass
class ParticleModelConfig:
    """Architecture and graph construction of a particle simulator (saved with checkpoints)."""

    kind: str = KIND
    latent_size: int = 64
    mlp_hidden_size: int = 64
    mlp_layers: int = 2
    message_passing_steps: int = 3
    shared_weights: bool = False
    aggregation: str = "sum"
    history: int = 5  # C: velocities per particle node
    radius: float = 3.0  # connectivity radius R, in particle radii
    obstacle_spacing: float = 1.0  # largest gap between obstacle nodes, in particle radii
    # Obstacle nodes per segment (a fixed count: the graph's size does not depend on the design);
    # 0: chosen from the training data's longest segment and obstacle_spacing, then saved resolved.
    obstacle_points: int = 0
    std_epsilon: float = 1e-9  # smallest normalizer std (frame units are small: keep it tiny)

    def validate(self) -> None:
        if self.kind != KIND:
            raise ConfigError(f"model.kind must be {KIND!r} for particle data, got {self.kind!r}")
        for name in ("latent_size", "mlp_hidden_size", "mlp_layers", "history"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.message_passing_steps < 0 or self.obstacle_points < 0:
            raise ConfigError("model.message_passing_steps and model.obstacle_points must be >= 0")
        if not self.radius > 0 or not self.obstacle_spacing > 0:
            raise ConfigError("model.radius and model.obstacle_spacing must be positive")
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"model.aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")


@dataclass
class ParticleTrainConfig(TrainConfig):
    """:class:`gndesign.training.TrainConfig` with particle defaults: ``batch_size`` counts graphs
    (frames of ~100 particles), ``stats_transitions`` frames; ``vel_noise`` is the standard
    deviation of the last input velocity's random-walk noise as a fraction of the data's velocity
    std; ``pos_noise`` and ``correct_pos_noise`` are unused."""

    steps: int = 20000
    batch_size: int = 4
    lr: float = 1e-3
    lr_final: float = 1e-5
    vel_noise: float = 0.03
    stats_transitions: int = 2000
    log_every: int = 100
    eval_every: int = 500
    checkpoint_every: int = 500


@dataclass
class ParticleRunConfig:
    """A particle training run: data, model and optimization (the counterpart of
    :class:`gndesign.training.RunConfig`)."""

    data: list[str] = field(default_factory=list)
    model: ParticleModelConfig = field(default_factory=ParticleModelConfig)
    train: ParticleTrainConfig = field(default_factory=ParticleTrainConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ParticleRunConfig:
        unknown = set(d) - {"data", "model", "train"}
        if unknown:
            raise ConfigError(f"unknown config section(s) {sorted(unknown)}; expected data, model, train")
        model = dict(d.get("model") or {})
        model.setdefault("kind", KIND)
        return cls(data=list(d.get("data") or []), model=_dataclass_from(ParticleModelConfig, model, "model"),
                   train=_dataclass_from(ParticleTrainConfig, d.get("train") or {}, "train"))

    def validate(self) -> None:
        self.model.validate()
        self.train.validate()


def as_particle_config(config: Any) -> ParticleRunConfig:
    """A :class:`ParticleRunConfig` from itself or from a :class:`gndesign.training.RunConfig` (its
    data, and the model and train options both kinds share that differ from the forward defaults)."""
    if isinstance(config, ParticleRunConfig):
        return config
    out = ParticleRunConfig(data=list(config.data))
    for section, base in (("model", ModelConfig()), ("train", TrainConfig())):
        src, dst = getattr(config, section), getattr(out, section)
        names = {f.name for f in dataclasses.fields(dst)} - {"kind"}
        for f in dataclasses.fields(src):
            value = getattr(src, f.name)
            if f.name in names and value != getattr(base, f.name):
                setattr(dst, f.name, value)
    if config.model.kind != "gn":
        raise ConfigError(f"model.kind={config.model.kind!r} cannot simulate particles: use the graph network")
    out.validate()
    return out


# ----------------------------------------------------------------------------------------------
# Physics wrapper: integration, obstacle nodes, neighbour search (pure functions)
# ----------------------------------------------------------------------------------------------


def integrate(history: Tensor, acc: Tensor) -> Tensor:
    """Semi-implicit Euler in frame units: the next positions ``[..., N, 2]`` from the positions
    ``history [..., F, N, 2]`` (``F >= 2``, the last frame is the current one) and accelerations
    ``acc [..., N, 2]``: ``x' = x + (x - x_prev) + a``."""
    x, x_prev = history[..., -1, :, :], history[..., -2, :, :]
    return x + (x - x_prev) + acc


def acceleration_targets(history: Tensor, next_positions: Tensor) -> Tensor:
    """The exact inverse of :func:`integrate`: ``a = x' - 2 x + x_prev`` ``[..., N, 2]``."""
    x, x_prev = history[..., -1, :, :], history[..., -2, :, :]
    return next_positions - x - (x - x_prev)


def obstacle_weights(num_segments: int, points_per_segment: int, dtype=torch.float32) -> Tensor:
    """The interpolation matrix ``W [K m + 1, K + 1]`` of :func:`obstacle_nodes`: ``m`` evenly
    spaced nodes per segment (its start vertex included) and the polyline's last vertex."""
    K, m = num_segments, points_per_segment
    if K < 1 or m < 1:
        raise ConfigError(f"an obstacle needs >= 1 segment and >= 1 node per segment, got K={K}, m={m}")
    W = torch.zeros(K * m + 1, K + 1, dtype=dtype)
    t = torch.arange(m, dtype=dtype) / m
    for k in range(K):
        W[k * m:(k + 1) * m, k] = 1 - t
        W[k * m:(k + 1) * m, k + 1] = t
    W[-1, -1] = 1.0
    return W


def obstacle_nodes(vertices: Tensor, points_per_segment: int) -> Tensor:
    """Kinematic obstacle nodes ``[..., K m + 1, 2]`` along the polyline ``vertices [..., K+1, 2]``
    (differentiable: a fixed linear interpolation of the vertices)."""
    W = obstacle_weights(vertices.shape[-2] - 1, points_per_segment, vertices.dtype).to(vertices.device)
    return W @ vertices


def radius_edges(positions: np.ndarray | Tensor, radius: float) -> Tensor:
    """Directed proximity edges ``[2, E]`` (sender, receiver; int64) between nodes of the same
    graph closer than ``radius`` (distance ``<= radius``), both directions, no self-edges.

    ``positions [B, M, 2]`` (or ``[M, 2]``): node positions of ``B`` graphs of ``M`` nodes; node
    ``j`` of graph ``b`` has the flat index ``b M + j``. Runs outside autograd (``cKDTree`` on
    float64 copies); non-finite positions get no edges.
    """
    if isinstance(positions, Tensor):
        positions = positions.detach().cpu().double().numpy()
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim == 2:
        pos = pos[None]
    B, M, _ = pos.shape
    flat = pos.reshape(B * M, 2).copy()
    bad = ~np.isfinite(flat).all(axis=1)
    if bad.any():
        flat[bad] = 0.0
    if B > 1:
        # One tree for the whole batch: graphs side by side, further apart than the radius.
        lo, hi = flat[:, 0].min(), flat[:, 0].max()
        flat[:, 0] += np.repeat(np.arange(B) * (hi - lo + 2 * radius + 1.0), M)
    if bad.any():
        # Park non-finite nodes far from everything (and from each other).
        far = np.abs(flat).max() + 10 * radius
        flat[bad] = np.stack([far + 3 * radius * np.arange(1, bad.sum() + 1), np.full(bad.sum(), far)], 1)
    pairs = cKDTree(flat).query_pairs(radius, output_type="ndarray")
    if len(pairs) == 0:
        return torch.zeros(2, 0, dtype=torch.long)
    pairs = torch.from_numpy(pairs.astype(np.int64))
    return torch.cat([pairs.T, pairs.T.flip(0)], dim=1)


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


class ParticleSimulator(nn.Module):
    """The learned particle simulator of one scene.

    Args:
        config: architecture and graph construction (``obstacle_points`` must be resolved, > 0).
        scene: the scene it simulates (see :data:`gndesign.datasets.particles.SCENE_KEYS`).
    """

    def __init__(self, config: ParticleModelConfig, scene: Mapping[str, Any]):
        super().__init__()
        config.validate()
        if config.obstacle_points < 1:
            raise ConfigError("model.obstacle_points must be resolved (>= 1) to build a model")
        self.config = config
        self.scene = validate_scene(scene, error=ConfigError)
        self.R = float(config.radius * self.scene["particle_radius"])  # connectivity radius [m]
        self.history = config.history
        self.net = EncodeProcessDecode(
            node_in=2 * config.history + 3 + NUM_TYPES, edge_in=3, global_in=0, latent_size=config.latent_size,
            mlp_hidden_size=config.mlp_hidden_size, mlp_layers=config.mlp_layers,
            message_passing_steps=config.message_passing_steps, shared_weights=config.shared_weights,
            node_out=2, aggregation=config.aggregation, use_globals=False)
        self.vel_normalizer = Normalizer(2, config.std_epsilon)
        self.acc_normalizer = Normalizer(2, config.std_epsilon)

    # ------------------------------------------------------------------------------- graph
    def start_history(self, positions: Tensor) -> Tensor:
        """``[B, C+1, N, 2]`` position history: given as such, or from positions ``[B, N, 2]``
        of particles at rest (the frame repeated: zero velocities)."""
        C = self.history
        if positions.dim() == 3:
            return positions[:, None].expand(-1, C + 1, -1, -1)
        if positions.dim() == 4 and positions.shape[1] == C + 1:
            return positions
        raise GndesignError(f"particle positions must be [B, N, 2] (at rest) or a history [B, {C + 1}, N, 2], "
                            f"got {list(positions.shape)}")

    def obstacle_nodes(self, obstacle: Tensor, batch: int | None = None) -> Tensor:
        """Obstacle nodes ``[B, P, 2]`` from vertices ``[B, K+1, 2]`` (or ``[K+1, 2]``, shared)."""
        if obstacle.dim() == 2:
            obstacle = obstacle[None]
        if obstacle.dim() != 3 or obstacle.shape[-1] != 2 or obstacle.shape[1] < 2:
            raise GndesignError(f"obstacle vertices must be [B, K+1, 2] with K >= 1, got {list(obstacle.shape)}")
        nodes = obstacle_nodes(obstacle, self.config.obstacle_points)
        if batch is not None and nodes.shape[0] != batch:
            if nodes.shape[0] != 1:
                raise GndesignError(f"{nodes.shape[0]} obstacles for a batch of {batch} scenes")
            nodes = nodes.expand(batch, -1, -1)
        return nodes

    def edges(self, history: Tensor, obs_nodes: Tensor) -> Tensor:
        """Proximity edges ``[2, E]`` over the current particles and the obstacle nodes
        (computed outside autograd)."""
        return radius_edges(torch.cat([history[:, -1], obs_nodes], 1), self.R)

    def _features(self, history: Tensor, obs_nodes: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
        """Node features ``[B (N + P), 2 C + 5]`` and edge features ``[E, 3]``."""
        B, _, N, _ = history.shape
        P = obs_nodes.shape[1]
        vel = self.vel_normalizer(history[:, 1:] - history[:, :-1])  # [B, C, N, 2]
        vel = vel.permute(0, 2, 1, 3).reshape(B, N, -1)
        still = self.vel_normalizer(history.new_zeros(2)).repeat(self.history).expand(B, P, -1)
        pos = torch.cat([history[:, -1], obs_nodes], 1)  # [B, M, 2]
        s = self.scene
        walls = torch.stack([pos[..., 1] - s["floor"], pos[..., 0] - s["x_min"], s["x_max"] - pos[..., 0]], -1)
        walls = (walls / self.R).clamp(-1.0, 1.0)
        types = history.new_zeros(N + P, NUM_TYPES)
        types[:N, PARTICLE] = 1.0
        types[N:, OBSTACLE] = 1.0
        x = torch.cat([torch.cat([vel, still], 1), walls, types.expand(B, -1, -1)], -1).reshape(B * (N + P), -1)
        flat = pos.reshape(-1, 2)
        d = (flat.index_select(0, edge_index[0]) - flat.index_select(0, edge_index[1])) / self.R
        e = torch.cat([d, (d.pow(2).sum(-1, keepdim=True) + 1e-12).sqrt()], -1)
        return x, e

    def predict_normalized(self, history: Tensor, obs_nodes: Tensor, edge_index: Tensor) -> Tensor:
        """Normalized particle accelerations ``[B, N, 2]``."""
        B, _, N, _ = history.shape
        M = N + obs_nodes.shape[1]
        x, e = self._features(history, obs_nodes, edge_index)
        batch = torch.arange(B, device=x.device).repeat_interleave(M)
        out = self.net(x, e, None, edge_index, batch, B)["node"]
        return out.view(B, M, 2)[:, :N]

    def _step(self, history: Tensor, obs_nodes: Tensor, edge_index: Tensor) -> Tensor:
        acc = self.acc_normalizer.inverse(self.predict_normalized(history, obs_nodes, edge_index))
        return integrate(history, acc)

    def forward(self, history: Tensor, obstacle: Tensor) -> Tensor:
        """One frame: next positions ``[B, N, 2]`` from a history ``[B, C+1, N, 2]`` (or positions at
        rest ``[B, N, 2]``) and obstacle vertices ``[B, K+1, 2]``."""
        history = self.start_history(history)
        nodes = self.obstacle_nodes(obstacle, history.shape[0])
        return self._step(history, nodes, self.edges(history, nodes))

    def rollout(self, positions: Tensor, obstacle: Tensor, steps: int, checkpoint: bool = False) -> Tensor:
        """Roll the particles out for ``steps`` frames.

        Args:
            positions: ``[B, N, 2]`` particles at rest, or a position history ``[B, C+1, N, 2]``
                (the last frame is the current one).
            obstacle: obstacle vertices ``[B, K+1, 2]`` or ``[K+1, 2]`` (may require grad).
            checkpoint: recompute each step's activations in the backward pass (memory grows with
                the positions only, so 100-150-step differentiable rollouts fit).

        Returns:
            positions ``[B, steps+1, N, 2]``, the current frame first; differentiable with respect
            to ``obstacle`` and ``positions``.
        """
        history = self.start_history(positions)
        nodes = self.obstacle_nodes(obstacle, history.shape[0])  # static: built once per rollout
        frames = [history[:, -1]]
        ckpt = checkpoint and torch.is_grad_enabled()
        for _ in range(steps):
            edge_index = self.edges(history, nodes)
            if ckpt:
                nxt = torch.utils.checkpoint.checkpoint(self._step, history, nodes, edge_index, use_reentrant=False)
            else:
                nxt = self._step(history, nodes, edge_index)
            frames.append(nxt)
            history = torch.cat([history[:, 1:], nxt[:, None]], 1)
        return torch.stack(frames, 1)

    # ------------------------------------------------------------------------------- training
    @torch.no_grad()
    def accumulate_statistics(self, history: Tensor, next_positions: Tensor) -> None:
        """Add (noised) inputs ``[B, C+1, N, 2]`` and their targets ``[B, N, 2]`` to the normalizers."""
        self.vel_normalizer.accumulate(history[:, 1:] - history[:, :-1])
        self.acc_normalizer.accumulate(acceleration_targets(history, next_positions))

    def loss(self, history: Tensor, obstacle: Tensor, next_positions: Tensor) -> Tensor:
        """Mean squared error of normalized accelerations over particles."""
        nodes = self.obstacle_nodes(obstacle, history.shape[0])
        pred = self.predict_normalized(history, nodes, self.edges(history, nodes))
        return (pred - self.acc_normalizer(acceleration_targets(history, next_positions))).pow(2).mean()

    def describe(self) -> dict[str, Any]:
        return {"kind": KIND, "config": asdict(self.config), "scene": self.scene}


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------


def save_particle_checkpoint(path: str | os.PathLike, model: ParticleSimulator, config: ParticleRunConfig, step: int,
                             optimizer=None, scheduler=None, rng: dict | None = None,
                             extra: dict | None = None) -> None:
    """Write a checkpoint atomically: model (normalizer statistics included), the scene, the
    resolved configuration, and (for resuming) optimizer, scheduler, step and RNG states."""
    blob = {"format": CHECKPOINT_FORMAT, "kind": KIND, "gndesign_version": __version__, "step": step,
            "config": config.to_dict(), "model": model.state_dict(), "scene": model.scene,
            "optimizer": optimizer.state_dict() if optimizer else None,
            "scheduler": scheduler.state_dict() if scheduler else None, "rng": rng, "extra": extra or {}}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def load_particle_model(path: str | os.PathLike, scene: Mapping[str, Any] | None = None
                        ) -> tuple[ParticleSimulator, dict]:
    """A trained particle simulator (eval mode) and its checkpoint dict.

    ``path`` may be ``pretrained:NAME``. ``scene``: the scene it will simulate; a scene that
    differs from the training scene (physical keys, and every other key both have) is refused
    with a message naming the mismatching keys.
    """
    path = resolve_checkpoint(path)
    blob = read_checkpoint(path)
    if blob.get("kind") != KIND:
        raise GndesignError(f"checkpoint {path} holds a {blob.get('kind', 'forward')!r} model, not a particle "
                            "simulator (load it with gndesign.training.load_model)")
    cfg = ParticleRunConfig.from_dict(blob["config"])
    if scene is not None:
        diff = scene_mismatch(blob["scene"], scene)
        if diff:
            raise GndesignError(f"particle model {path} was trained on another scene ({'; '.join(diff)}): train "
                                "a model on data of this scene")
    model = ParticleSimulator(cfg.model, blob["scene"])
    model.load_state_dict(blob["model"])
    model.eval()
    return model, blob


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


class ParticleSampler:
    """Random training windows from particle datasets, as float32 tensors.

    A sample at frame ``t`` is the history ``x[t-C..t]`` (frames before 0 repeat frame 0: the
    episodes start at rest) and the next ``L`` frames ``x[t+1..t+L]``.
    """

    def __init__(self, datasets: Sequence[ParticleDataset], episodes: Sequence[np.ndarray], history: int):
        pos = [torch.as_tensor(ds.positions[np.asarray(e, dtype=np.int64)], dtype=torch.float32)
               for ds, e in zip(datasets, episodes, strict=True)]
        obs = [torch.as_tensor(ds.obstacle[np.asarray(e, dtype=np.int64)], dtype=torch.float32)
               for ds, e in zip(datasets, episodes, strict=True)]
        shapes = {(p.shape[1:], o.shape[1:]) for p, o in zip(pos, obs, strict=True)}
        if len(shapes) > 1:
            raise DatasetError(f"particle datasets differ in frames, particles or segments: {sorted(shapes)}")
        self.positions = torch.cat(pos)  # [E, T+1, N, 2]
        self.obstacle = torch.cat(obs)  # [E, K+1, 2]
        self.history = history

    def __len__(self) -> int:
        return self.positions.shape[0]

    def windows(self, ep: Tensor, t: Tensor, length: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(history [B, C+1, N, 2], future [B, L, N, 2], obstacle [B, K+1, 2])`` at frames ``t``."""
        C = self.history
        hist_t = (t[:, None] + torch.arange(-C, 1)).clamp_min(0)
        fut_t = t[:, None] + torch.arange(1, length + 1)
        return (self.positions[ep[:, None], hist_t], self.positions[ep[:, None], fut_t], self.obstacle[ep])

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


def unrolled_particle_loss(model: ParticleSimulator, history: Tensor, future: Tensor, obstacle: Tensor) -> Tensor:
    """Mean normalized acceleration error over ``L = future.shape[1]`` steps, each from the
    model's own previous prediction (the one-step loss for ``L = 1``)."""
    nodes = model.obstacle_nodes(obstacle, history.shape[0])
    total = 0.0
    for k in range(future.shape[1]):
        edge_index = model.edges(history, nodes)
        pred = model.predict_normalized(history, nodes, edge_index)
        target = model.acc_normalizer(acceleration_targets(history, future[:, k]))
        total = total + (pred - target).pow(2).mean()
        if k + 1 < future.shape[1]:
            nxt = integrate(history, model.acc_normalizer.inverse(pred))
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


class ParticleTask(TrainingTask):
    """Particle simulators on particle datasets, for :func:`gndesign.training.run_training`."""

    def __init__(self, cfg: ParticleRunConfig):
        self.config = cfg

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
        self.train_set = ParticleSampler(self.datasets, [s[0] for s in splits], C)
        self.val_set = ParticleSampler(self.datasets, [s[1] for s in splits], C) if tc.val_fraction > 0 else None
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
            noisy, target = noised_window(hist, fut, self.noise_std, gen)
            self.model.accumulate_statistics(noisy, target[:, 0])
            left -= n

    def check_resume(self, blob: dict) -> None:
        if blob.get("kind") != KIND:
            raise GndesignError(f"the checkpoint to resume holds a {blob.get('kind', 'forward')!r} model, "
                                "not a particle simulator")
        diff = scene_mismatch(blob["scene"], self.scene)
        if diff:
            raise GndesignError(f"the checkpoint to resume was trained on another scene ({'; '.join(diff)})")

    def loss(self, model, net, gens) -> Tensor:
        tc = self.config.train
        hist, fut, obs = self.train_set.sample(tc.batch_size, tc.unroll_steps, gens["sample"])
        noisy, target = noised_window(hist, fut, self.noise_std, gens["noise"])
        return unrolled_particle_loss(model, noisy, target, obs)

    @torch.no_grad()
    def validation_loss(self, model) -> float | None:
        if self.val_set is None or len(self.val_set) == 0:
            return None
        model.eval()
        gen = torch.Generator().manual_seed(0)
        total, n = 0.0, 0
        for _ in range(8):
            hist, fut, obs = self.val_set.sample(32, 1, gen)
            total += float(model.loss(hist, obs, fut[:, 0]))
            n += 1
        return total / n

    def save_checkpoint(self, path, model, step, optimizer, scheduler, rng) -> None:
        save_particle_checkpoint(path, model, self.config, step, optimizer, scheduler, rng)


def train_particles(config: ParticleRunConfig, run_dir: str | os.PathLike, resume: bool = False,
                    progress: bool = True, max_new_steps: int | None = None) -> dict:
    """Train a particle simulator on ``config.data`` (particle datasets of one scene) with the
    shared training loop (:func:`gndesign.training.run_training`: checkpoints, exact resume, CSV
    metrics, DDP); returns a summary (steps, losses, seconds). ``train.batch_size`` counts frames."""
    config = as_particle_config(config)
    config.validate()
    if not config.data:
        raise ConfigError("no training data: pass --data DIR [DIR ...] or set data: in the config")
    return run_training(ParticleTask(config), run_dir, resume, progress, max_new_steps)
