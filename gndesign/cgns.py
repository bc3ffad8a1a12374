"""The constraint-based graph network simulator (C-GNS, Rubanova et al. 2022).

Instead of predicting the next state, a graph network scores candidate next states: a learned
scalar constraint ``f_C(history, candidate) >= 0``, the sum over the graph's nodes (particles) or
edges (joints) of the squared norm of a small decoded vector. The next state is found by ``N``
steps of gradient descent on ``f_C`` (plus, at test time, user constraints) from an inertial guess,
with a learned step size:

    ``z_0 = normalized(0)``  (zero acceleration: ``x + v``, constant velocity),
    ``z_{k+1} = z_k - eta * grad_z [f_C(z_k) + U(x(z_k)) / sigma^2]``,

where ``z`` is the candidate in normalized units, decoded and integrated exactly as the forward
simulators do (:func:`gndesign.particles.integrate`, :func:`gndesign.simulator.integrate_prediction`),
so the solver's output plugs into their losses, rollouts and evaluations unchanged:

* particles: accelerations ``[B, N, 2]`` centred on the data's mean, in units of ``sigma``, the
  largest per-axis std (one scale for both axes: an axis the data hardly accelerates along stays
  movable by user constraints); returned normalized per axis like the forward simulator's;
* articulated systems: the forward simulator's normalized per-dof ``(a, c)`` in the joint edges'
  dof slots ``[B, E, 12]`` (normalized per joint type); ``sigma = max(dt^2 std_a, dt std_c)``
  over the dofs, the largest joint-coordinate change one unit makes.

Descending in normalized units preconditions the problem (an acceleration of 1e-3 m/frame^2 and a
joint correction of 1 rad/s live on one scale).

* ``eta = softplus(p)`` is learned; the iterations are unrolled differentiably in training
  (``create_graph=True``), ``solver.iterations`` of them (about 5); at test time any number.
* ``U`` (test-time user constraints, :mod:`gndesign.constraints`) is measured in world units
  (metres, radians) and divided by ``sigma^2``, so a weight of 1 makes a violation of one ``sigma``
  cost as much as a unit of the learned constraint. Its squared hinges can be far stiffer than
  ``f_C``, so with constraints every iteration is a plain step on ``f_C`` followed by a
  Gauss-Newton proximal step on ``U`` (:func:`penalty_descent`): ``y = z - eta grad f_C(z)``,
  ``z' = y - eta / (1 + 2 eta W(y)) grad U(y) / sigma^2``, where ``W(y)`` is the weight of the
  constraints *violated at y* (per particle; per scene for articulated systems, whose candidate
  moves every body). Each violation has a gradient of norm <= 1 (a distance), so ``2 W`` bounds the
  hinge's curvature where it is active and the step shrinks a violation ``v`` to about
  ``v / (1 + 2 eta W)``: stable for any weight, a projection for stiff ones. Where no constraint
  is violated ``W = 0`` and ``grad U = 0``: particles a constraint does not reach (and articulated
  scenes whose constraints hold) take exactly the unconstrained step, so a stiff obstacle slows
  nothing that is not touching it. The fixed points are those of gradient descent on
  ``f_C + U / sigma^2``; the penalties are finite, so a constraint holds to about
  ``|grad f_C| sigma / (2 W)`` at convergence (larger weights: tighter).
* ``solver.iterations_min``: training draws the number of unrolled iterations of every solve
  uniformly from ``[iterations_min, iterations]`` (0: always ``iterations``), so the targets are
  fitted after any number of steps: the learned constraint's minimizer, not one fixed-length
  descent from the inertial guess, becomes the prediction, and more test-time iterations stay
  near it (with a fixed 5 unrolled steps, cartpole's error grew 4.5x from 5 to 20 test-time
  iterations; see README, C-GNS results).

Front ends:

* :class:`ParticleCGNS`: a :class:`gndesign.particles.ParticleSimulator` whose prediction is the
  solver's output. Its graph is the particle simulator's (proximity edges within ``R`` of the
  current positions, :func:`gndesign.particles.radius_edges`; kinematic obstacle nodes) with the
  candidate added: node features gain the candidate's normalized acceleration and its distances
  to the floor and walls, edge features the candidate's relative displacement and its length.
* :class:`ArticulatedCGNS`: a :class:`gndesign.simulator.GraphNetworkSimulator` whose prediction
  is the solver's output; edge features gain the candidate's normalized ``(a, c)`` slots.

Both train with the shared loop (:func:`train_cgns`, :func:`gndesign.training.run_training`) on
the forward simulators' datasets with their losses (normalized error of the solver's output
against the next ground-truth state, through the unrolled iterations), noise and multi-step
unrolls, and save checkpoints of kind ``"cgns"`` (:func:`save_cgns_checkpoint`,
:func:`load_cgns_model`).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gndesign import __version__
from gndesign.constraints import ConstraintContext, active_stiffness, bind_constraints, constraint_terms
from gndesign.datasets.formats import dataset_format
from gndesign.datasets.particles import scene_mismatch
from gndesign.errors import ConfigError, GndesignError
from gndesign.graphs import GraphBuilder
from gndesign.io import atomic_path
from gndesign.kinematics import forward_kinematics
from gndesign.nn import EncodeProcessDecode
from gndesign.objectives import Objective
from gndesign.particles import (
    NUM_TYPES,
    ParticleModelConfig,
    ParticleSimulator,
    ParticleTask,
    ParticleTrainConfig,
    integrate,
)
from gndesign.simulator import (
    _CHANNELS,
    GraphNetworkSimulator,
    ModelConfig,
    SystemSpec,
    Transitions,
    integrate_prediction,
)
from gndesign.training import (
    CHECKPOINT_FORMAT,
    TrainConfig,
    _dataclass_from,
    _ForwardTask,
    _read_config,
    read_checkpoint,
    resolve_checkpoint,
    run_training,
)
from gndesign.tree import HINGE, MAX_DOF, SLIDE

__all__ = [
    "KIND",
    "ArticulatedCGNS",
    "CGNSRunConfig",
    "ParticleCGNS",
    "SolverConfig",
    "gradient_descent",
    "penalty_descent",
    "load_cgns_config",
    "load_cgns_model",
    "save_cgns_checkpoint",
    "train_cgns",
]

KIND = "cgns"
Energy = Callable[[Tensor], Tensor]


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


@dataclass
class SolverConfig:
    """The C-GNS solver (saved with checkpoints)."""

    iterations: int = 5  # N_train: gradient steps unrolled in training (the most, see iterations_min)
    # Training draws the number of unrolled steps uniformly from [iterations_min, iterations] for
    # every solve (0: always ``iterations``). Fitting the targets after any number of steps makes
    # the learned constraint's minimizer, not one fixed-length descent, the prediction, so more
    # test-time iterations do not walk away from it (measured on cartpole, see the module doc).
    iterations_min: int = 1
    test_iterations: int = 0  # default N at test time (0: the same as iterations)
    step_size: float = 0.1  # initial learned step size eta
    learn_step_size: bool = True
    energy_channels: int = 4  # f_C = sum over nodes (edges) of |decoded vector of this size|^2

    def validate(self) -> None:
        if self.iterations < 1 or self.test_iterations < 0:
            raise ConfigError(f"solver.iterations must be >= 1 and solver.test_iterations >= 0, got "
                              f"{self.iterations} and {self.test_iterations}")
        if not 0 <= self.iterations_min <= self.iterations:
            raise ConfigError(f"solver.iterations_min must be between 0 (off) and solver.iterations "
                              f"({self.iterations}), got {self.iterations_min}")
        if not (math.isfinite(self.step_size) and self.step_size > 0):
            raise ConfigError(f"solver.step_size must be a positive number, got {self.step_size}")
        if self.energy_channels < 1:
            raise ConfigError(f"solver.energy_channels must be >= 1, got {self.energy_channels}")


@dataclass
class CGNSRunConfig:
    """A C-GNS training run: ``data``, ``model`` (a :class:`ParticleModelConfig` for particle
    data, else a graph-network :class:`ModelConfig`), ``solver`` and ``train`` (YAML sections of
    the same names)."""

    data: list[str] = field(default_factory=list)
    model: ModelConfig | ParticleModelConfig = field(default_factory=ModelConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def particles(self) -> bool:
        return isinstance(self.model, ParticleModelConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], particles: bool | None = None) -> CGNSRunConfig:
        """``particles``: the front end (None: from ``model.kind`` or the first data directory)."""
        unknown = set(d) - {"data", "model", "solver", "train"}
        if unknown:
            raise ConfigError(f"unknown config section(s) {sorted(unknown)}; expected data, model, solver, train")
        data = [str(p) for p in d.get("data") or []]
        model = dict(d.get("model") or {})
        if particles is None:
            particles = model.get("kind") == "particles" or bool(data and dataset_format(data[0]) == "particles")
        if particles:
            model.setdefault("kind", "particles")
            cfg = cls(data, _dataclass_from(ParticleModelConfig, model, "model"),
                      _dataclass_from(SolverConfig, d.get("solver") or {}, "solver"),
                      _dataclass_from(ParticleTrainConfig, d.get("train") or {}, "train"))
        else:
            cfg = cls(data, _dataclass_from(ModelConfig, model, "model"),
                      _dataclass_from(SolverConfig, d.get("solver") or {}, "solver"),
                      _dataclass_from(TrainConfig, d.get("train") or {}, "train"))
        return cfg

    def validate(self) -> None:
        self.model.validate()
        if not self.particles and self.model.kind != "gn":
            raise ConfigError(f"model.kind={self.model.kind!r}: the C-GNS is a graph network (model.kind=gn)")
        self.solver.validate()
        self.train.validate()


def load_cgns_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                     data: list[str | os.PathLike] | None = None) -> CGNSRunConfig:
    """Defaults, then an optional YAML file (sections data, model, solver, train), then
    ``section.key=value`` overrides; ``data`` replaces the file's data directories."""
    raw = _read_config(path, overrides)
    if data is not None:
        raw["data"] = [str(p) for p in data]
    cfg = CGNSRunConfig.from_dict(raw)
    cfg.validate()
    return cfg


# ----------------------------------------------------------------------------------------------
# The solver
# ----------------------------------------------------------------------------------------------


def gradient_descent(energy: Energy, z0: Tensor, step_size: Tensor | float, iterations: int,
                     create_graph: bool | None = None, record: bool = True) -> tuple[Tensor, list[float]]:
    """``iterations`` steps ``z <- z - step_size * grad energy(z)`` from ``z0``.

    Args:
        energy: ``z -> [B]`` (or a scalar); the batch elements' energies are summed, so each
            element descends on its own energy.
        step_size: a float or a (learned) scalar tensor.
        create_graph: keep the graph of every step so the result is differentiable with respect
            to ``step_size``, the energy's parameters and ``z0`` (training, design). Default: when
            gradients are enabled. Without it every step is detached (test time, low memory).

        record: record the energies (one device synchronization per step).

    Returns:
        ``(z, energies)``: the final candidate (``z0``'s shape) and the total energy before each
        step (floats, for diagnostics; empty without ``record``).
    """
    if create_graph is None:
        create_graph = torch.is_grad_enabled()
    energies = []
    with torch.enable_grad():
        z = z0 if (create_graph and z0.requires_grad) else z0.detach().clone().requires_grad_(True)
        for _ in range(iterations):
            e = energy(z).sum()
            if record:
                energies.append(float(e.detach()))
            (g,) = torch.autograd.grad(e, z, create_graph=create_graph)
            z = z - step_size * g
            if not create_graph:
                z = z.detach().requires_grad_(True)
    return (z if create_graph else z.detach()), energies


def penalty_descent(energy: Energy, penalty: Callable[[Tensor], tuple[Tensor, Tensor]], z0: Tensor,
                    step_size: Tensor | float, iterations: int, create_graph: bool | None = None) -> Tensor:
    """``iterations`` steps of gradient descent on ``energy(z) + P(z)`` for a stiff penalty ``P``
    (forward-backward splitting with a Gauss-Newton proximal step on ``P``)::

        y       = z - eta * grad energy(z)                         (the plain learned step)
        z_next  = y - eta / (1 + 2 eta W(y)) * grad P(y)

    ``penalty(y)`` returns ``(P(y) [B], W(y))``: the penalty and the curvature bound of its
    squared hinges where they are active at ``y`` (per element, broadcasting against ``z``; zero
    where every constraint holds). The second line is the exact proximal step of the penalty's
    Gauss-Newton model at ``y`` (for a hinge of unit-gradient violation ``v`` and weight ``W``:
    ``v -> v / (1 + 2 eta W)``), so any weight is stable, a stiff penalty projects onto its
    feasible side, and it never slows the descent on ``energy``: elements no constraint acts on
    take the plain step, exactly as without constraints. The fixed points are the stationary
    points of ``energy + P``, as for plain gradient descent. ``create_graph``: as in
    :func:`gradient_descent` (``W`` is piecewise constant and carries no gradient).
    """
    if create_graph is None:
        create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        z = z0 if (create_graph and z0.requires_grad) else z0.detach().clone().requires_grad_(True)
        for _ in range(iterations):
            (g,) = torch.autograd.grad(energy(z).sum(), z, create_graph=create_graph)
            y = z - step_size * g
            if not create_graph:
                y = y.detach().requires_grad_(True)
            p, W = penalty(y)
            if p.requires_grad:
                (gp,) = torch.autograd.grad(p.sum(), y, create_graph=create_graph, allow_unused=True)
            else:  # the penalty does not depend on the candidate
                gp = None
            z = y if gp is None else y - step_size / (1 + 2 * step_size * W.detach()) * gp
            if not create_graph:
                z = z.detach().requires_grad_(True)
    return z if create_graph else z.detach()


@dataclass
class _TestTime:
    """Test-time solver settings while a rollout (or a :meth:`_SolverMixin.solving` block) runs:
    bound constraints, quantities at the rollout's start, iterations."""

    constraints: Objective | None = None
    start: dict = field(default_factory=dict)
    iterations: int | None = None


class _SolverMixin:
    """The parts both front ends share: the learned step size, iteration counts, test-time
    constraints and the descent itself."""

    def _init_solver(self, solver: SolverConfig) -> None:
        solver.validate()
        self.solver = solver
        raw = math.log(math.expm1(solver.step_size))  # softplus^-1
        self.step_param = nn.Parameter(torch.tensor(raw), requires_grad=solver.learn_step_size)
        self._test = _TestTime()

    def step_size(self) -> Tensor:
        """The learned step size ``eta = softplus(p) > 0``."""
        return F.softplus(self.step_param)

    def default_iterations(self) -> int:
        """In training ``solver.iterations``, or with ``solver.iterations_min`` a number drawn
        uniformly from ``[iterations_min, iterations]`` (torch's global generator: reproducible
        with the training seed, resumed exactly); in eval mode ``solver.test_iterations`` (if set),
        else ``solver.iterations``."""
        s = self.solver
        if self.training:
            if s.iterations_min and s.iterations_min < s.iterations:
                return int(torch.randint(s.iterations_min, s.iterations + 1, ()))
            return s.iterations
        return s.test_iterations or s.iterations

    def constraint_context(self, *args) -> ConstraintContext:
        raise NotImplementedError

    def _active_stiffness(self, bound: Objective, q: dict) -> Tensor:
        """The weights of the constraints active at the candidate's quantities ``q``, broadcasting
        against the candidate: per batch element ``[B, 1, 1]`` (the articulated candidate's slots
        all move every body); :class:`ParticleCGNS` overrides it per particle."""
        return active_stiffness(bound, q)[:, None, None]

    @contextlib.contextmanager
    def solving(self, constraints: Objective | None = None, iterations: int | None = None,
                start: Mapping[str, Tensor] | None = None, context: ConstraintContext | None = None) -> Iterator[None]:
        """Within the block, every step minimizes ``f_C`` plus ``constraints`` (bound to
        ``context``) with ``iterations`` solver steps. ``start``: quantities at the start of the
        rollout (e.g. ``positions_0``, for pins without ``at``)."""
        if iterations is not None and iterations < 0:
            raise ConfigError(f"solver iterations must be >= 0, got {iterations}")
        bound = bind_constraints(constraints, context) if (constraints is not None and context is not None) \
            else constraints
        constraint_terms(bound)  # refuse objectives that are not constraints now, not mid-rollout
        old = self._test
        self._test = _TestTime(bound, dict(start or {}), iterations)
        try:
            yield
        finally:
            self._test = old

    def _descend(self, energy: Callable[[Tensor], Tensor], quantities: Callable[[Tensor], dict], z0: Tensor,
                 sigma: Tensor) -> Tensor:
        """Gradient descent on ``energy(z)``, with the test-time constraints (if any) by
        :func:`penalty_descent` on ``energy(z) + U(quantities(z)) / sigma^2``."""
        t = self._test
        n = self.default_iterations() if t.iterations is None else t.iterations
        eta = self.step_size().to(z0.dtype)
        if t.constraints is None:
            z, _ = gradient_descent(energy, z0, eta, n, record=False)
            return z
        bound, inv = t.constraints, 1.0 / sigma.to(z0.dtype).pow(2)

        def penalty(z: Tensor) -> tuple[Tensor, Tensor]:
            q = {**t.start, **quantities(z)}
            return bound(q) * inv, self._active_stiffness(bound, q).to(z0.dtype)

        return penalty_descent(energy, penalty, z0, eta, n)


def _report(bound: Objective | None, frames: list[dict]) -> dict[str, Any]:
    """Violations of every bound constraint over a rollout's frames (quantity dicts)."""
    out = []
    for c in constraint_terms(bound):
        per_step = []
        total, count = 0.0, 0
        for q in frames:
            v = c.violation(q).detach().double()
            per_step.append(float(v.max()) if v.numel() else 0.0)
            total += float(v.sum())
            count += v.numel()
        out.append({"spec": c.to_spec(), "max": max(per_step, default=0.0), "mean": total / max(count, 1),
                    "per_step_max": per_step})
    return {"constraints": out, "max": max((r["max"] for r in out), default=0.0)}


def _check_checkpointing(model: _SolverMixin, checkpoint: bool, constraints, iterations) -> None:
    if checkpoint and (constraints is not None or iterations is not None):
        # Recomputation in the backward pass happens after the rollout's solver settings are gone.
        raise ConfigError("checkpointed rollouts use the trained solver settings: drop checkpoint=True to "
                          "roll out with test-time constraints or iterations")


# ----------------------------------------------------------------------------------------------
# Particles
# ----------------------------------------------------------------------------------------------


class ParticleCGNS(_SolverMixin, ParticleSimulator):
    """The C-GNS of a particle scene: a :class:`ParticleSimulator` (same graphs, normalizers,
    integration, rollouts, losses and training) whose normalized acceleration is found by
    gradient descent on a learned constraint.

    Args:
        config: the particle graph and network (``obstacle_points`` resolved).
        scene: the scene (see :data:`gndesign.datasets.particles.SCENE_KEYS`).
        solver: iterations, initial step size, energy channels.
    """

    front = "particles"

    def __init__(self, config: ParticleModelConfig, scene: Mapping[str, Any], solver: SolverConfig | None = None):
        super().__init__(config, scene)
        self._init_solver(solver or SolverConfig())
        # f_C's network replaces the forward network: the candidate enters the inputs.
        self.net = EncodeProcessDecode(
            node_in=2 * config.history + 3 + NUM_TYPES + 5, edge_in=6, global_in=0,
            latent_size=config.latent_size, mlp_hidden_size=config.mlp_hidden_size, mlp_layers=config.mlp_layers,
            message_passing_steps=config.message_passing_steps, shared_weights=config.shared_weights,
            node_out=self.solver.energy_channels, aggregation=config.aggregation, use_globals=False)

    def constraint_context(self, num_particles: int) -> ConstraintContext:
        return ConstraintContext(num_nodes=num_particles, node_kind="particle", dim=2,
                                 margin=float(self.scene["particle_radius"]))

    def _active_stiffness(self, bound: Objective, q: dict) -> Tensor:
        # Particles are separate blocks of the candidate: a per-particle step [B, N, 1], stiff only
        # for the particles a constraint acts on at this iterate.
        return active_stiffness(bound, q, q["positions"].shape[1])[..., None]

    def sigma(self, like: Tensor) -> Tensor:
        """The solver's unit of acceleration [m/frame^2]: the largest per-axis std of the data's."""
        return self.acc_normalizer.stats(like)[1].max()

    def _walls(self, pos: Tensor) -> Tensor:
        s = self.scene
        walls = torch.stack([pos[..., 1] - s["floor"], pos[..., 0] - s["x_min"], s["x_max"] - pos[..., 0]], -1)
        return (walls / self.R).clamp(-1.0, 1.0)

    def _next(self, history: Tensor, u: Tensor) -> Tensor:
        """Next positions ``[B, N, 2]`` of candidates ``u`` (accelerations in units of sigma, centred
        on the data's mean)."""
        mean = self.acc_normalizer.stats(u)[0]
        return integrate(history, u * self.sigma(u) + mean)

    def energy(self, history: Tensor, obs_nodes: Tensor, edge_index: Tensor, u: Tensor,
               current: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """``f_C`` per scene ``[B]`` of the candidates ``u [B, N, 2]``: accelerations centred on the
        data's mean, in units of :meth:`sigma` (one scale for both axes). ``current``: the
        current state's node and edge features (``_features``), if already computed."""
        B, _, N, _ = history.shape
        P = obs_nodes.shape[1]
        x, e = current if current is not None else self._features(history, obs_nodes, edge_index)
        nxt = torch.cat([self._next(history, u), obs_nodes], 1)  # [B, M, 2]
        uc = torch.cat([u, u.new_zeros(B, P, 2)], 1)
        x = torch.cat([x, torch.cat([uc, self._walls(nxt)], -1).reshape(B * (N + P), -1)], -1)
        flat = nxt.reshape(-1, 2)
        d = (flat.index_select(0, edge_index[0]) - flat.index_select(0, edge_index[1])) / self.R
        e = torch.cat([e, d, (d.pow(2).sum(-1, keepdim=True) + 1e-12).sqrt()], -1)
        batch = torch.arange(B, device=x.device).repeat_interleave(N + P)
        out = self.net(x, e, None, edge_index, batch, B)["node"].view(B, N + P, -1)[:, :N]
        return out.pow(2).sum((1, 2))

    def predict_normalized(self, history: Tensor, obs_nodes: Tensor, edge_index: Tensor) -> Tensor:
        """The solver's accelerations ``[B, N, 2]``, normalized like the forward simulator's.

        The descent runs in one isotropic unit (``sigma``, not the per-axis std): an axis the
        data hardly accelerates along (a tiny std) must stay movable by user constraints.
        """
        B, _, N, _ = history.shape
        mean, std = self.acc_normalizer.stats(history)
        sigma = self.sigma(history)
        u0 = (-mean / sigma).expand(B, N, 2)  # zero acceleration: the inertial guess x + v

        def quantities(u: Tensor) -> dict:
            nxt = self._next(history, u)
            return {"positions": nxt, "velocities": nxt - history[:, -1]}

        current = self._features(history, obs_nodes, edge_index)  # the same for every iteration
        u = self._descend(lambda u: self.energy(history, obs_nodes, edge_index, u, current),
                          quantities, u0, sigma)
        return u * (sigma / std)

    def rollout(self, positions: Tensor, obstacle: Tensor, steps: int, checkpoint: bool = False,
                constraints: Objective | None = None, iterations: int | None = None) -> Tensor:
        """:meth:`ParticleSimulator.rollout` (positions ``[B, steps+1, N, 2]``) with optional
        test-time ``constraints`` on ``positions [B, N, 2]`` (bound to this scene: particle
        indices checked, margin = particle radius; pins hold ``positions_0``, the start) and
        ``iterations`` solver steps per frame (default: :meth:`default_iterations`)."""
        _check_checkpointing(self, checkpoint, constraints, iterations)
        history = self.start_history(positions)
        start = {"positions_0": history[:, -1]}
        with self.solving(constraints, iterations, start, self.constraint_context(history.shape[2])):
            return super().rollout(history, obstacle, steps, checkpoint)

    @torch.no_grad()
    def violation_report(self, constraints: Objective, positions: Tensor) -> dict[str, Any]:
        """How much a rollout ``positions [B, T+1, N, 2]`` violates ``constraints`` (bound to this
        scene like :meth:`rollout` does; pins refer to frame 0): for each constraint its spec, the
        largest and mean violation [m] (for obstacles: the penetration of the particles' surface)
        and the largest per frame; ``max`` over all of them. Any model's rollout may be judged."""
        bound = bind_constraints(constraints, self.constraint_context(positions.shape[2]))
        vel = torch.cat([torch.zeros_like(positions[:, :1]), positions[:, 1:] - positions[:, :-1]], 1)
        frames = [{"positions": positions[:, t], "positions_0": positions[:, 0], "velocities": vel[:, t]}
                  for t in range(positions.shape[1])]
        return _report(bound, frames)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "kind": KIND, "front": self.front, "solver": asdict(self.solver)}


# ----------------------------------------------------------------------------------------------
# Articulated systems
# ----------------------------------------------------------------------------------------------


class ArticulatedCGNS(_SolverMixin, GraphNetworkSimulator):
    """The C-GNS of articulated systems: a :class:`GraphNetworkSimulator` (same graphs,
    normalizers, decoding, joint-space integration, rollouts, losses and training) whose
    normalized per-dof ``(a, c)`` is found by gradient descent on a learned constraint over the
    joint edges. The candidate next state is ``qvel' = qvel + dt a``,
    ``qpos' = qpos (+) dt (qvel' + c)``; the inertial guess is ``a = c = 0``.

    Test-time constraints see ``qpos [B, nq]``, ``qvel [B, nv]`` and ``positions [B, nbody, 3]``
    (body origins in the world frame, also called ``xpos``) of the candidate, and the same with
    ``_0`` at the start of the rollout.
    """

    front = "articulated"

    def __init__(self, config: ModelConfig, systems: list[SystemSpec], solver: SolverConfig | None = None):
        if config.kind != "gn":
            raise ConfigError(f"model.kind={config.kind!r}: the C-GNS is a graph network (model.kind=gn)")
        super().__init__(config, systems)
        self._init_solver(solver or SolverConfig())
        sizes = GraphBuilder.feature_sizes()
        self.core = EncodeProcessDecode(
            node_in=sizes["node"], edge_in=sizes["edge"] + _CHANNELS * MAX_DOF, global_in=sizes["global"],
            latent_size=config.latent_size, mlp_hidden_size=config.mlp_hidden_size, mlp_layers=config.mlp_layers,
            message_passing_steps=config.message_passing_steps, shared_weights=config.shared_weights,
            aggregation=config.aggregation, edge_out=self.solver.energy_channels)

    def constraint_context(self, system: str | None = None) -> ConstraintContext:
        t = self.tree(system)
        joints = {n: int(t.jnt_qposadr[j]) for j, n in enumerate(t.joint_names)
                  if n and t.jnt_type[j] in (HINGE, SLIDE)}
        return ConstraintContext(num_nodes=t.nbody, node_names=list(t.body_names), node_kind="body",
                                 joints=joints, nq=t.nq, dim=3, margin=0.0)

    def sigma(self, system: str, like: Tensor) -> Tensor:
        """The largest displacement of a joint coordinate per normalized unit:
        ``max(dt^2 std_a, dt std_c)`` over the system's dofs."""
        _, std = self._type_stats(system, like)
        mask = self._slot_mask(system).to(like.device)
        dt = self.builder(system).control_timestep
        scale = torch.cat([std[:, :MAX_DOF] * dt * dt, std[:, MAX_DOF:] * dt], -1)
        return (scale * mask).max()

    def energy(self, graph, z: Tensor) -> Tensor:
        """``f_C`` per graph ``[B]`` of candidates ``z [B, E, 12]`` (forward edges' slots) given
        the normalized current-state graph ``(x, edge_attr, u, edge_index, batch, B)``."""
        x, ea, u, ei, batch, B = graph
        cand = torch.cat([z, z], 1).reshape(-1, z.shape[-1])  # both directions of every joint edge
        out = self.core(x, torch.cat([ea, cand], -1), u, ei, batch, B)["edge"]
        return out.pow(2).sum(-1).view(B, -1).sum(1)

    def predict_normalized(self, batches: list[Transitions]) -> list[Tensor]:
        preds = []
        for tr in batches:
            b = self.builder(tr.system)
            g = b.build_tensors(tr.qpos, tr.qvel, tr.action, tr.params, tr.static)
            B = tr.qpos.shape[0]
            graph = (self.node_norm(g.x), self.edge_norm(g.edge_attr), self.global_norm(g.u), g.edge_index, g.batch, B)
            mean, std = self._type_stats(tr.system, tr.qpos)
            mask = self._slot_mask(tr.system).to(tr.qpos.device).to(tr.qpos.dtype)
            z0 = (-mean / std * mask).expand(B, -1, -1)

            def quantities(z: Tensor, tr=tr, b=b, mask=mask) -> dict:
                acc, corr = self.denormalize(tr.system, z * mask)
                qpos, qvel = integrate_prediction(b.tree, tr.qpos, tr.qvel, acc, corr, b.control_timestep)
                xpos = forward_kinematics(b.tree, qpos).xpos
                return {"qpos": qpos, "qvel": qvel, "positions": xpos, "xpos": xpos}

            z = self._descend(lambda z, graph=graph, mask=mask: self.energy(graph, z * mask),
                              quantities, z0, self.sigma(tr.system, tr.qpos))
            preds.append(z * mask)
        return preds

    def _start(self, qpos: Tensor, system: str | None) -> dict:
        xpos = forward_kinematics(self.tree(system), qpos).xpos
        return {"qpos_0": qpos, "positions_0": xpos, "xpos_0": xpos}

    def rollout(self, qpos: Tensor, qvel: Tensor, actions: Tensor, system: str | None = None,
                params: dict | None = None, checkpoint: bool = False, constraints: Objective | None = None,
                iterations: int | None = None) -> tuple[Tensor, Tensor]:
        """:meth:`ForwardModel.rollout` (``qpos [B, H+1, nq]``, ``qvel [B, H+1, nv]``) with optional
        test-time ``constraints`` (bound to the system: body and joint names checked) and
        ``iterations`` solver steps per control step."""
        _check_checkpointing(self, checkpoint, constraints, iterations)
        with self.solving(constraints, iterations, self._start(qpos, system), self.constraint_context(system)):
            return super().rollout(qpos, qvel, actions, system, params, checkpoint)

    @torch.no_grad()
    def violation_report(self, constraints: Objective, qpos: Tensor, qvel: Tensor | None = None,
                         system: str | None = None) -> dict[str, Any]:
        """How much a rollout ``qpos [B, T+1, nq]`` (``qvel [B, T+1, nv]`` for constraints on
        velocities) violates ``constraints`` (bound to the system; pins refer to step 0): per
        constraint its spec, largest and mean violation (metres or radians) and the largest per
        step; ``max`` over all of them. Any model's rollout may be judged."""
        tree = self.tree(system)
        bound = bind_constraints(constraints, self.constraint_context(system))
        B, T1 = qpos.shape[:2]
        xpos = forward_kinematics(tree, qpos.reshape(B * T1, -1)).xpos.reshape(B, T1, tree.nbody, 3)
        frames = []
        for t in range(T1):
            q = {"qpos": qpos[:, t], "positions": xpos[:, t], "xpos": xpos[:, t], "qpos_0": qpos[:, 0],
                 "positions_0": xpos[:, 0], "xpos_0": xpos[:, 0]}
            if qvel is not None:
                q["qvel"] = qvel[:, t]
            frames.append(q)
        return _report(bound, frames)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "kind": KIND, "front": self.front, "solver": asdict(self.solver)}


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------


def save_cgns_checkpoint(path: str | os.PathLike, model: ParticleCGNS | ArticulatedCGNS, config: CGNSRunConfig,
                         step: int, optimizer=None, scheduler=None, rng: dict | None = None,
                         extra: dict | None = None) -> None:
    """Write a checkpoint atomically, in the format of :func:`gndesign.training.save_checkpoint`
    (kind ``"cgns"``, plus ``front``): model (normalizers and step size included), configuration,
    the scene or the systems (MJCF, feature layout, signatures), and the training state."""
    blob = {"format": CHECKPOINT_FORMAT, "kind": KIND, "front": model.front, "gndesign_version": __version__,
            "step": step, "config": config.to_dict(), "model": model.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer else None,
            "scheduler": scheduler.state_dict() if scheduler else None, "rng": rng, "extra": extra or {}}
    if isinstance(model, ParticleCGNS):
        blob["scene"] = model.scene
    else:
        blob["systems"] = model.describe()["systems"]
        blob["feature_names"] = GraphBuilder.feature_names()
        blob["signatures"] = {s: model.tree(s).signature() for s in model.trained_systems}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def _check_blob(blob: dict, path, front: str | None = None) -> None:
    if blob.get("kind") != KIND:
        raise GndesignError(f"checkpoint {path} holds a {blob.get('kind', 'forward')!r} model, not a C-GNS")
    if front is not None and blob.get("front") != front:
        raise GndesignError(f"checkpoint {path} holds a C-GNS of {blob.get('front')}, not of {front}")


def build_cgns(config: CGNSRunConfig, scene: Mapping[str, Any] | None = None,
               systems: list[SystemSpec] | None = None) -> ParticleCGNS | ArticulatedCGNS:
    """A fresh C-GNS of the configured front end (a scene for particles, systems otherwise)."""
    config.validate()
    if config.particles:
        if scene is None:
            raise ConfigError("a particle C-GNS needs its scene")
        return ParticleCGNS(config.model, scene, config.solver)
    if not systems:
        raise ConfigError("an articulated C-GNS needs at least one system")
    return ArticulatedCGNS(config.model, systems, config.solver)


def load_cgns_model(path: str | os.PathLike, scene: Mapping[str, Any] | None = None, system: str | None = None
                    ) -> tuple[ParticleCGNS | ArticulatedCGNS, dict]:
    """A trained C-GNS (eval mode) and its checkpoint dict.

    ``scene``: refuse a particle model trained on another scene (names the differing keys).
    ``system``: refuse an articulated model not trained on this system.
    """
    path = resolve_checkpoint(path)
    blob = read_checkpoint(path)
    _check_blob(blob, path)
    cfg = CGNSRunConfig.from_dict(blob["config"], particles=blob["front"] == ParticleCGNS.front)
    if cfg.particles:
        if scene is not None:
            diff = scene_mismatch(blob["scene"], scene)
            if diff:
                raise GndesignError(f"C-GNS {path} was trained on another scene ({'; '.join(diff)})")
        model = build_cgns(cfg, scene=blob["scene"])
    else:
        names = GraphBuilder.feature_names()
        for kind, cols in blob["feature_names"].items():
            if cols != names[kind]:
                raise GndesignError(f"checkpoint {path} has incompatible {kind} features: it was written by "
                                    "another gndesign version; retrain it")
        specs = [SystemSpec.from_dict(d) for d in blob["systems"]]
        if system is not None and system not in [s.name for s in specs]:
            raise GndesignError(f"checkpoint {path} was trained on {[s.name for s in specs]}, not on {system!r}")
        model = build_cgns(cfg, systems=specs)
    model.load_state_dict(blob["model"])
    model.eval()
    return model, blob


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


class CGNSParticleTask(ParticleTask):
    """:class:`gndesign.particles.ParticleTask` (data, noise, losses, validation) for a C-GNS."""

    def build_model(self) -> ParticleCGNS:
        return ParticleCGNS(self.config.model, self.scene, self.config.solver)

    def check_resume(self, blob: dict) -> None:
        _check_blob(blob, "to resume", ParticleCGNS.front)
        diff = scene_mismatch(blob["scene"], self.scene)
        if diff:
            raise GndesignError(f"the checkpoint to resume was trained on another scene ({'; '.join(diff)})")

    def save_checkpoint(self, path, model, step, optimizer, scheduler, rng) -> None:
        save_cgns_checkpoint(path, model, self.config, step, optimizer, scheduler, rng)


class CGNSArticulatedTask(_ForwardTask):
    """The forward models' task (data, noise, unrolled losses, validation) for a C-GNS."""

    def build_model(self) -> ArticulatedCGNS:
        return ArticulatedCGNS(self.config.model, list(self.systems.values()), self.config.solver)

    def check_resume(self, blob: dict) -> None:
        _check_blob(blob, "to resume", ArticulatedCGNS.front)

    def save_checkpoint(self, path, model, step, optimizer, scheduler, rng) -> None:
        save_cgns_checkpoint(path, model, self.config, step, optimizer, scheduler, rng)


def train_cgns(config: CGNSRunConfig, run_dir: str | os.PathLike, resume: bool = False, progress: bool = True,
               max_new_steps: int | None = None) -> dict:
    """Train a C-GNS on ``config.data`` (particle datasets of one scene, or trajectory datasets)
    with the shared loop (checkpoints, exact resume, CSV metrics, DDP); returns its summary."""
    config.validate()
    if not config.data:
        raise ConfigError("no training data: pass --data DIR [DIR ...] or set data: in the config")
    if config.particles != (dataset_format(config.data[0]) == "particles"):
        raise ConfigError(f"{config.data[0]} is {'not ' if config.particles else ''}a particle dataset but the "
                          f"configuration is for {'particles' if config.particles else 'articulated systems'}")
    task = CGNSParticleTask(config) if config.particles else CGNSArticulatedTask(config)
    return run_training(task, run_dir, resume, progress, max_new_steps)
