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
  Gauss-Newton proximal step on ``U`` (:func:`gndesign.solver.penalty_descent`): ``y = z - eta grad f_C(z)``,
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

A C-GNS is a physics front end with a different predictor: the same front end as the forward
simulator, with a :class:`gndesign.solver.ConstraintSolver` (energy network, learned step size,
iterations) in place of the forward network. Test-time constraints are an argument of its
rollouts (and steps), never model state, so constrained rollouts may use activation
checkpointing; :func:`gndesign.solver.violation_report` judges any rollout.

* :class:`ParticleCGNS`: a :class:`gndesign.particles.ParticleSimulator` whose predictor is the
  solver. Its graph is the particle simulator's (proximity edges within ``R`` of the
  current positions, :func:`gndesign.particles.radius_edges`; kinematic obstacle nodes) with the
  candidate added: node features gain the candidate's normalized acceleration and its distances
  to the floor and walls, edge features the candidate's relative displacement and its length.
* :class:`ArticulatedCGNS`: a :class:`gndesign.simulator.GraphNetworkSimulator` whose predictor
  is the solver; edge features gain the candidate's normalized ``(a, c)`` slots.

Both train with the shared loop (:func:`gndesign.training.train`, families ``cgns-particles`` and
``cgns-articulated`` of :mod:`gndesign.cgns_training`) on the forward simulators' datasets with
their losses (normalized error of the solver's output against the next ground-truth state, through
the unrolled iterations), noise and multi-step unrolls; :mod:`gndesign.checkpoints` saves and loads
them (the solver's configuration: :class:`gndesign.config.SolverConfig`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from gndesign.config import ModelConfig, ParticleModelConfig, SolverConfig
from gndesign.errors import ConfigError
from gndesign.particles import ParticleSimulator
from gndesign.simulator import GraphNetworkSimulator, SystemSpec

__all__ = ["KIND", "ArticulatedCGNS", "ParticleCGNS"]

KIND = "cgns"


class ParticleCGNS(ParticleSimulator):
    """The C-GNS of a particle scene: the :class:`ParticleSimulator` front end (graphs,
    normalizers, integration, rollouts, losses and training) with a
    :class:`gndesign.solver.ConstraintSolver` as its predictor.

    Args:
        config: the particle graph and network (``obstacle_points`` resolved).
        scene: the scene (see :data:`gndesign.datasets.particles.SCENE_KEYS`).
        solver: iterations, initial step size, energy channels.
    """

    def __init__(self, config: ParticleModelConfig, scene: Mapping[str, Any], solver: SolverConfig | None = None):
        super().__init__(config, scene, solver or SolverConfig())

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "kind": KIND, "front": self.front, "solver": asdict(self.solver)}


class ArticulatedCGNS(GraphNetworkSimulator):
    """The C-GNS of articulated systems: the :class:`GraphNetworkSimulator` front end (graphs,
    normalizers, decoding, joint-space integration, rollouts, losses and training) with a
    :class:`gndesign.solver.ConstraintSolver` as its predictor, over the joint edges.

    Test-time constraints see ``qpos [B, nq]``, ``qvel [B, nv]`` and ``positions [B, nbody, 3]``
    (body origins in the world frame, also called ``xpos``) of the candidate, and the same with
    ``_0`` at the start of the rollout.
    """

    def __init__(self, config: ModelConfig, systems: list[SystemSpec], solver: SolverConfig | None = None):
        if config.kind != "gn":
            raise ConfigError(f"model.kind={config.kind!r}: the C-GNS is a graph network (model.kind=gn)")
        super().__init__(config, systems, solver or SolverConfig())

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "kind": KIND, "front": self.front, "solver": asdict(self.solver)}
