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

Rollouts, training losses and :meth:`ParticleSimulator.loss` of the forward predictor take the lean
path (:mod:`gndesign.particle_lean`: per-rollout constants, hop-pruned message passing; equal to the
reference path up to floating-point order) unless ``GNDESIGN_LEAN=0`` or
``gndesign.lean.reference_path(model)``; the C-GNS and constrained rollouts take the reference path.

Training, configuration and checkpoints: :mod:`gndesign.particle_training`,
:mod:`gndesign.config` (:class:`gndesign.config.ParticleModelConfig`), :mod:`gndesign.checkpoints`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from gndesign.config import ParticleModelConfig, SolverConfig
from gndesign.constraint_sets import active_stiffness
from gndesign.constraints import ConstraintContext
from gndesign.datasets.particles import (
    validate_scene,
)
from gndesign.equivariant import EquivariantParticleNet
from gndesign.errors import ConfigError, GndesignError
from gndesign.graphs import radius_pairs
from gndesign.lean import lean_enabled
from gndesign.nn import EncodeProcessDecode, Graph
from gndesign.normalization import Normalizer
from gndesign.objectives import Objective
from gndesign.particle_lean import LeanParticles
from gndesign.solver import ConstraintSolver, SolveOptions, solve_options, upgrade_state_dict

__all__ = [
    "ParticleSimulator",
    "acceleration_targets",
    "integrate",
    "obstacle_nodes",
    "chain_intervals",
    "chain_points",
    "radius_edges",
    "radius_pairs",
]

log = logging.getLogger(__name__)
KIND = "particles"
NUM_TYPES = 2  # particle, obstacle
PARTICLE, OBSTACLE = 0, 1


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


def one_hot_types(like: Tensor, particles: int, obstacle_nodes: int) -> Tensor:
    """One-hot node types ``[N + P, NUM_TYPES]``: the particles first, then the obstacle nodes."""
    types = like.new_zeros(particles + obstacle_nodes, NUM_TYPES)
    types[:particles, PARTICLE] = 1.0
    types[particles:, OBSTACLE] = 1.0
    return types


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


def chain_points(vertices: Tensor, intervals: int) -> Tensor:
    """``intervals + 1`` points ``[..., intervals + 1, 2]`` evenly spaced in arc length along a chain of
    equal-length segments ``vertices [..., K+1, 2]``, both ends included (differentiable: a fixed
    linear interpolation). With ``intervals = K m`` they are :func:`obstacle_nodes` with ``m``; other
    counts keep a node spacing independent of ``K`` (a model trained on one ``K`` sees another)."""
    K = vertices.shape[-2] - 1
    if K < 1 or intervals < 1:
        raise ConfigError(f"a chain needs >= 1 segment and >= 1 interval, got K={K}, intervals={intervals}")
    s = torch.arange(intervals + 1, dtype=torch.float64) * (K / intervals)  # arc position in segments
    k = torch.clamp(torch.floor(s + 1e-9).long(), max=K - 1)
    t = (s - k).to(vertices.dtype).to(vertices.device)[:, None]
    a, b = vertices[..., k, :], vertices[..., k + 1, :]
    return a + (b - a) * t


def chain_intervals(length: float, spacing: float) -> int:
    """How many intervals :func:`chain_points` divides a chain of ``length`` into so that its points
    are at most ``spacing`` apart."""
    if not (math.isfinite(length) and length > 0 and math.isfinite(spacing) and spacing > 0):
        raise ConfigError(f"a chain's length and point spacing must be positive, got {length} and {spacing}")
    return max(1, math.ceil(length / spacing - 1e-9))


def radius_edges(positions: np.ndarray | Tensor, radius: float) -> Tensor:
    """Directed proximity edges ``[2, E]`` (sender, receiver; int64) between nodes of the same
    graph closer than ``radius`` (distance ``<= radius``), both directions, no self-edges.

    ``positions [B, M, 2]`` (or ``[M, 2]``): node positions of ``B`` graphs of ``M`` nodes; node
    ``j`` of graph ``b`` has the flat index ``b M + j``. Runs outside autograd (``cKDTree`` on
    float64 copies, :func:`radius_pairs`); non-finite positions get no edges.
    """
    pairs = torch.from_numpy(radius_pairs(positions, radius))
    return torch.cat([pairs.T, pairs.T.flip(0)], dim=1)


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


class ParticleSimulator(nn.Module):
    """The learned particle simulator of one scene: a physics front end (position history,
    neighbours, walls, normalizers, integration) and a predictor of the particles' normalized
    accelerations.

    Args:
        config: architecture and graph construction (``obstacle_points`` must be resolved, > 0).
        scene: the scene it simulates (see :data:`gndesign.datasets.particles.SCENE_KEYS`).
        solver: None for the forward predictor (an encode-process-decode network decoding every
            particle's acceleration from the current graph), or the settings of a
            :class:`gndesign.solver.ConstraintSolver` (the C-GNS, :mod:`gndesign.cgns`), whose
            network scores candidate accelerations: node features gain the candidate's normalized
            acceleration and its next position's distances to the floor and walls, edge features
            its relative displacement and length.
    """

    front = "particles"
    node_types = (PARTICLE, OBSTACLE)  # one-hot columns of the node types

    def __init__(self, config: ParticleModelConfig, scene: Mapping[str, Any], solver: SolverConfig | None = None):
        super().__init__()
        config.validate()
        if config.obstacle_points < 1:
            raise ConfigError("model.obstacle_points must be resolved (>= 1) to build a model")
        self.config = config
        self.scene = validate_scene(scene, error=ConfigError)
        self.R = float(config.radius * self.scene["particle_radius"])  # connectivity radius [m]
        self.history = config.history

        def network(node_in: int, edge_in: int, node_out: int) -> EncodeProcessDecode:
            return EncodeProcessDecode(
                node_in=node_in, edge_in=edge_in, global_in=0, latent_size=config.latent_size,
                mlp_hidden_size=config.mlp_hidden_size, mlp_layers=config.mlp_layers,
                message_passing_steps=config.message_passing_steps, shared_weights=config.shared_weights,
                node_out=node_out, aggregation=config.aggregation, use_globals=False)

        node_in, edge_in = 2 * config.history + 3 + NUM_TYPES, 3
        self.solver = solver  # the C-GNS solver's settings, or None for the forward predictor
        self.solves = solver is not None
        self.register_load_state_dict_pre_hook(partial(upgrade_state_dict, old_network="net"))  # older layouts
        if config.net == "egnn":
            if solver is not None:
                raise ConfigError("model.net=egnn is a forward predictor: the constraint-based solver (C-GNS) "
                                  "needs model.net=gn")
            self.predictor = EquivariantParticleNet(
                config.history, config.latent_size, config.mlp_hidden_size, config.mlp_layers,
                config.message_passing_steps, config.aggregation, NUM_TYPES)
        else:
            self.predictor = (network(node_in, edge_in, 2) if solver is None else
                              ConstraintSolver(network(node_in + 5, edge_in + 3, solver.energy_channels), solver))
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

    def symmetry_breakers(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """What breaks the scene's E(2) symmetry, as explicit inputs of ``model.net=egnn``: the
        gravity direction ``[2]``, and the floor's and the left and right walls' unit normals
        ``[3, 2]`` (pointing into the box) and offsets ``[3]`` (the wall is ``n . x = c``)."""
        s = self.scene
        g = like.new_tensor(s["gravity"])
        normals = like.new_tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
        return g / g.norm().clamp_min(1e-30), normals, like.new_tensor([s["floor"], s["x_min"], -s["x_max"]])

    def _walls(self, pos: Tensor) -> Tensor:
        """``[..., 3]``: signed distances of node positions ``[..., 2]`` to the floor and the left
        and right walls, over ``R``, clipped to ``[-1, 1]``."""
        s = self.scene
        walls = torch.stack([pos[..., 1] - s["floor"], pos[..., 0] - s["x_min"], s["x_max"] - pos[..., 0]], -1)
        return (walls / self.R).clamp(-1.0, 1.0)

    def _edge_geometry(self, pos: Tensor, edge_index: Tensor) -> Tensor:
        """``[E, 3]``: ``(x_sender - x_receiver) / R`` and its length, from node positions ``[B, M, 2]``."""
        flat = pos.reshape(-1, 2)
        d = (flat.index_select(0, edge_index[0]) - flat.index_select(0, edge_index[1])) / self.R
        return torch.cat([d, (d.pow(2).sum(-1, keepdim=True) + 1e-12).sqrt()], -1)

    def graph(self, history: Tensor, obs_nodes: Tensor, edge_index: Tensor) -> Graph:
        """The current state's graph: node features ``[B (N + P), 2 C + 5]``, edge features
        ``[E, 3]``, no globals."""
        B, _, N, _ = history.shape
        P = obs_nodes.shape[1]
        vel = self.vel_normalizer(history[:, 1:] - history[:, :-1])  # [B, C, N, 2]
        vel = vel.permute(0, 2, 1, 3).reshape(B, N, -1)
        still = self.vel_normalizer(history.new_zeros(2)).repeat(self.history).expand(B, P, -1)
        pos = torch.cat([history[:, -1], obs_nodes], 1)  # [B, M, 2]
        types = one_hot_types(history, N, P).expand(B, -1, -1)
        x = torch.cat([torch.cat([vel, still], 1), self._walls(pos), types], -1)
        batch = torch.arange(B, device=x.device).repeat_interleave(N + P)
        return Graph(x.reshape(B * (N + P), -1), self._edge_geometry(pos, edge_index), None, edge_index, batch, B)

    # ------------------------------------------------------------------------------- prediction
    def predict_normalized(self, history: Tensor, obs_nodes: Tensor, edge_index: Tensor,
                           options: SolveOptions | None = None) -> Tensor:
        """Normalized particle accelerations ``[B, N, 2]`` (``options``: the solver's test-time
        constraints and iterations)."""
        if self.config.net == "egnn":
            SolveOptions.refuse(options)
            return self._equivariant(history, obs_nodes, edge_index)
        graph = self.graph(history, obs_nodes, edge_index)
        if self.solves:
            return self._solve(graph, history, obs_nodes, options)
        SolveOptions.refuse(options)
        B, _, N, _ = history.shape
        return self.predictor(graph).x.view(B, -1, 2)[:, :N]

    def _equivariant(self, history: Tensor, obs_nodes: Tensor, edge_index: Tensor) -> Tensor:
        """``model.net=egnn``: normalized accelerations ``[B, N, 2]``. The network works in isotropic
        units (one scale per quantity: the largest per-axis std) so that it stays equivariant; the
        per-axis normalization is applied to its output."""
        B, _, N, _ = history.shape
        vel = history[:, 1:] - history[:, :-1]  # [B, C, N, 2]
        vel = torch.cat([vel, vel.new_zeros(B, self.history, obs_nodes.shape[1], 2)], 2)
        pos = torch.cat([history[:, -1], obs_nodes], 1)
        v_scale = self.vel_normalizer.stats(vel)[1].max()
        types = one_hot_types(history, N, obs_nodes.shape[1])
        acc = self.predictor(pos, vel / v_scale, types, edge_index, *self.symmetry_breakers(pos), self.R)
        return self.acc_normalizer(acc[:, :N] * self.sigma(acc))

    def sigma(self, like: Tensor) -> Tensor:
        """The solver's unit of acceleration [m/frame^2]: the largest per-axis std of the data's."""
        return self.acc_normalizer.stats(like)[1].max()

    def _next(self, history: Tensor, u: Tensor) -> Tensor:
        """Next positions ``[B, N, 2]`` of candidates ``u`` (accelerations in units of sigma, centred
        on the data's mean)."""
        mean = self.acc_normalizer.stats(u)[0]
        return integrate(history, u * self.sigma(u) + mean)

    def energy(self, current: Graph, history: Tensor, obs_nodes: Tensor, u: Tensor) -> Tensor:
        """The C-GNS's ``f_C`` per scene ``[B]`` of the candidates ``u [B, N, 2]`` (accelerations
        centred on the data's mean, in units of :meth:`sigma`, one scale for both axes), given the
        ``current`` state's graph."""
        B, _, N, _ = history.shape
        P = obs_nodes.shape[1]
        nxt = torch.cat([self._next(history, u), obs_nodes], 1)  # [B, M, 2]
        uc = torch.cat([u, u.new_zeros(B, P, 2)], 1)
        x = torch.cat([current.x, torch.cat([uc, self._walls(nxt)], -1).reshape(B * (N + P), -1)], -1)
        e = torch.cat([current.edge_attr, self._edge_geometry(nxt, current.edge_index)], -1)
        out = self.predictor.network(current._replace(x=x, edge_attr=e)).x.view(B, N + P, -1)[:, :N]
        return out.pow(2).sum((1, 2))

    def _solve(self, graph: Graph, history: Tensor, obs_nodes: Tensor, options: SolveOptions | None) -> Tensor:
        """The solver's accelerations ``[B, N, 2]``, normalized like the forward predictor's.

        The descent runs in one isotropic unit (``sigma``, not the per-axis std): an axis the
        data hardly accelerates along (a tiny std) must stay movable by user constraints.
        """
        B, _, N, _ = history.shape
        mean, std = self.acc_normalizer.stats(history)
        sigma = self.sigma(history)
        u0 = (-mean / sigma).expand(B, N, 2)  # zero acceleration: the inertial guess x + v
        u = self.predictor.solve(lambda u: self.energy(graph, history, obs_nodes, u), u0, sigma,
                                 lambda u: self.constraint_quantities(self._next(history, u), history[:, -1]),
                                 _per_particle_stiffness, options)
        return u * (sigma / std)

    # ------------------------------------------------------------------------------- constraints
    def constraint_context(self, num_particles: int) -> ConstraintContext:
        """What constraints on ``num_particles`` particles may refer to (margin: the particle radius)."""
        return ConstraintContext(num_nodes=num_particles, node_kind="particle", dim=2,
                                 margin=float(self.scene["particle_radius"]))

    @staticmethod
    def constraint_quantities(positions: Tensor, previous: Tensor) -> dict[str, Tensor]:
        """What a constraint sees of positions ``[B, N, 2]`` reached from ``previous``."""
        return {"positions": positions, "velocities": positions - previous}

    def constraint_frames(self, positions: Tensor) -> list[dict[str, Tensor]]:
        """The quantities of every frame of a rollout ``positions [B, T+1, N, 2]`` (pins refer to
        frame 0), for :func:`gndesign.solver.violation_report`."""
        return [{**self.constraint_quantities(positions[:, t], positions[:, max(t - 1, 0)]),
                 "positions_0": positions[:, 0]} for t in range(positions.shape[1])]

    def solve_options(self, constraints: Objective | None, iterations: int | None,
                      history: Tensor) -> SolveOptions | None:
        """Test-time ``constraints`` bound to this scene and ``iterations`` for a rollout from
        ``history [B, C+1, N, 2]`` (pins hold its current positions)."""
        options = solve_options(constraints, iterations, self.constraint_context(history.shape[2]),
                                lambda: {"positions_0": history[:, -1]})
        if not self.solves:
            SolveOptions.refuse(options)
        return options

    # ------------------------------------------------------------------------------- dynamics
    def lean(self, options: SolveOptions | None = None) -> bool:
        """Whether frames take the lean path (:mod:`gndesign.particle_lean`): the forward predictor
        without test-time constraints, unless ``GNDESIGN_LEAN=0``, ``model.use_lean = False`` or
        inside ``with gndesign.lean.reference_path(model):``."""
        return (lean_enabled() and self.__dict__.get("use_lean", True) and not self.solves
                and options is None and self.config.net == "gn")

    def _step(self, history: Tensor, obs_nodes: Tensor, edge_index: Tensor,
              options: SolveOptions | None = None) -> Tensor:
        acc = self.acc_normalizer.inverse(self.predict_normalized(history, obs_nodes, edge_index, options))
        return integrate(history, acc)

    def forward(self, history: Tensor, obstacle: Tensor, constraints: Objective | None = None,
                iterations: int | None = None) -> Tensor:
        """One frame: next positions ``[B, N, 2]`` from a history ``[B, C+1, N, 2]`` (or positions at
        rest ``[B, N, 2]``) and obstacle vertices ``[B, K+1, 2]``; ``constraints`` and
        ``iterations``: as in :meth:`rollout`."""
        return self.rollout(history, obstacle, 1, constraints=constraints, iterations=iterations)[:, -1]

    def rollout(self, positions: Tensor, obstacle: Tensor, steps: int, checkpoint: bool = False,
                constraints: Objective | None = None, iterations: int | None = None) -> Tensor:
        """Roll the particles out for ``steps`` frames.

        Args:
            positions: ``[B, N, 2]`` particles at rest, or a position history ``[B, C+1, N, 2]``
                (the last frame is the current one).
            obstacle: obstacle vertices ``[B, K+1, 2]`` or ``[K+1, 2]`` (may require grad).
            checkpoint: recompute each step's activations in the backward pass (memory grows with
                the positions only, so 100-150-step differentiable rollouts fit); on the lean path
                only the frames past :data:`gndesign.particle_lean.CHECKPOINT_BUDGET` bytes of saved
                activations (about 1 GiB) are recomputed.
            constraints: test-time constraints on ``positions [B, N, 2]`` (C-GNS only; bound to
                this scene: particle indices checked, margin = particle radius; pins hold the
                start); iterations: solver steps per frame (C-GNS only; default:
                :meth:`gndesign.solver.ConstraintSolver.default_iterations`).

        Returns:
            positions ``[B, steps+1, N, 2]``, the current frame first; differentiable with respect
            to ``obstacle`` and ``positions``.
        """
        history = self.start_history(positions)
        options = self.solve_options(constraints, iterations, history)
        nodes = self.obstacle_nodes(obstacle, history.shape[0])  # static: built once per rollout
        if self.lean(options):
            return LeanParticles(self, nodes, history.shape[2]).rollout(history, steps, checkpoint)
        frames = [history[:, -1]]
        ckpt = checkpoint and torch.is_grad_enabled()
        for _ in range(steps):
            edge_index = self.edges(history, nodes)
            if ckpt:
                nxt = torch.utils.checkpoint.checkpoint(self._step, history, nodes, edge_index, options,
                                                        use_reentrant=False)
            else:
                nxt = self._step(history, nodes, edge_index, options)
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
        if self.lean():
            lean = LeanParticles(self, nodes, history.shape[2])
            x = history[:, -1]
            pred = lean.normalized(x, list((history[:, 1:] - history[:, :-1]).unbind(1)), lean.plan(x))
        else:
            pred = self.predict_normalized(history, nodes, self.edges(history, nodes))
        return (pred - self.acc_normalizer(acceleration_targets(history, next_positions))).pow(2).mean()

    def describe(self) -> dict[str, Any]:
        return {"kind": KIND, "config": asdict(self.config), "scene": self.scene}


def _per_particle_stiffness(bound: Objective, q: dict[str, Tensor]) -> Tensor:
    # Particles are separate blocks of the candidate: a per-particle step [B, N, 1], stiff only
    # for the particles a constraint acts on at this iterate.
    return active_stiffness(bound, q, q["positions"].shape[1])[..., None]
