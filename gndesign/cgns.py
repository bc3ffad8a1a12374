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

Both train with the shared loop (:func:`train_cgns`, :func:`gndesign.training.run_training`) on
the forward simulators' datasets with their losses (normalized error of the solver's output
against the next ground-truth state, through the unrolled iterations), noise and multi-step
unrolls, and save checkpoints of kind ``"cgns"`` (:func:`save_cgns_checkpoint`,
:func:`load_cgns_model`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from gndesign import __version__
from gndesign.errors import ConfigError, GndesignError
from gndesign.graphs import GraphBuilder
from gndesign.io import atomic_path
from gndesign.particles import (
    ParticleModelConfig,
    ParticleSimulator,
    ParticleTask,
    ParticleTrainConfig,
    scene_mismatch,
)
from gndesign.simulator import GraphNetworkSimulator, ModelConfig, SystemSpec
from gndesign.solver import SolverConfig
from gndesign.training import (
    CHECKPOINT_FORMAT,
    TrainConfig,
    _dataclass_from,
    _ForwardTask,
    _read_config,
    is_particle_dataset,
    read_checkpoint,
    resolve_checkpoint,
    run_training,
)

__all__ = [
    "KIND",
    "ArticulatedCGNS",
    "CGNSRunConfig",
    "ParticleCGNS",
    "load_cgns_config",
    "load_cgns_model",
    "save_cgns_checkpoint",
    "train_cgns",
]

KIND = "cgns"


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


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
            particles = model.get("kind") == "particles" or bool(data and is_particle_dataset(data[0]))
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
# The models: a front end with the solver as its predictor
# ----------------------------------------------------------------------------------------------


class ParticleCGNS(ParticleSimulator):
    """The C-GNS of a particle scene: the :class:`ParticleSimulator` front end (graphs,
    normalizers, integration, rollouts, losses and training) with a
    :class:`gndesign.solver.ConstraintSolver` as its predictor.

    Args:
        config: the particle graph and network (``obstacle_points`` resolved).
        scene: the scene (see :data:`gndesign.particle_data.SCENE_KEYS`).
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
    if config.particles != is_particle_dataset(config.data[0]):
        raise ConfigError(f"{config.data[0]} is {'not ' if config.particles else ''}a particle dataset but the "
                          f"configuration is for {'particles' if config.particles else 'articulated systems'}")
    task = CGNSParticleTask(config) if config.particles else CGNSArticulatedTask(config)
    return run_training(task, run_dir, resume, progress, max_new_steps)
