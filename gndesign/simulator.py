"""Learned forward models of articulated systems: the graph-network simulator and an MLP baseline.

Both models predict, for every degree of freedom, two normalized quantities over one control
step ``dt``:

* the acceleration ``a``: ``qvel' = qvel + dt * a``;
* a position-increment correction ``c``: ``qpos' = integrate(qpos, qvel' + c, dt)``.

Integration is in joint space (links cannot come apart); ``c`` absorbs MuJoCo's other integrators and
substeps; :func:`dynamics_targets` inverts the decoding exactly. The physics lives here, not in the network.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

from gndesign.config import ModelConfig, SolverConfig
from gndesign.constraint_sets import active_stiffness
from gndesign.constraints import ConstraintContext
from gndesign.datasets.params import PARAM_KEYS
from gndesign.errors import ConfigError
from gndesign.graphs import EDGE_STATIC, NODE_STATIC, GraphBuilder, StaticGraph, concat_batches
from gndesign.kinematics import differentiate_qpos, forward_kinematics, integrate_qpos
from gndesign.lean import LeanPlan, LeanRollout, compiled, lean_plan
from gndesign.nn import EncodeProcessDecode, Graph
from gndesign.normalization import Normalizer, PerSystemStatistics
from gndesign.objectives import Objective
from gndesign.solver import ConstraintSolver, SolveOptions, solve_options, upgrade_state_dict
from gndesign.tree import EDGE_TYPES, HINGE, MAX_DOF, SLIDE, WELD, KinematicTree

Params = dict[str, torch.Tensor]
_CHANNELS = 2  # acceleration and position-increment correction


@dataclass
class SystemSpec:
    """What a learned model knows about a system: enough to rebuild its kinematic tree.

    ``control_timestep`` is the time of one model step, ``action_repeat`` the control steps it
    spans (each action held that long: a coarse model, trained on ``generate --action-repeat``).
    """

    name: str
    mjcf: str
    control_timestep: float
    assets: dict[str, bytes] = field(default_factory=dict)
    action_repeat: int = 1

    def to_dict(self) -> dict:
        d = {"name": self.name, "mjcf": self.mjcf, "control_timestep": self.control_timestep,
             "assets": {k: base64.b64encode(v).decode("ascii") for k, v in self.assets.items()}}
        if self.action_repeat != 1:  # absent means 1 (checkpoints written before coarse steps)
            d["action_repeat"] = int(self.action_repeat)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SystemSpec:
        return cls(name=d["name"], mjcf=d["mjcf"], control_timestep=float(d["control_timestep"]),
                   assets={k: base64.b64decode(v) for k, v in d.get("assets", {}).items()},
                   action_repeat=int(d.get("action_repeat", 1)))

    def builder(self, limit_features: bool = False, periodic_hinges: bool = False) -> GraphBuilder:
        tree = KinematicTree.from_model(self.mjcf, self.name, self.assets)
        return GraphBuilder(tree, self.control_timestep, limit_features, periodic_hinges)


def dynamics_targets(tree: KinematicTree, qpos: torch.Tensor, qvel: torch.Tensor, qpos_next: torch.Tensor,
                     qvel_next: torch.Tensor, dt: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact inverse of :func:`integrate_prediction`: ``(a, c)``, each ``[B, nv]``."""
    acc = (qvel_next - qvel) / dt
    corr = differentiate_qpos(tree, qpos, qpos_next, dt) - qvel_next
    return acc, corr


def integrate_prediction(tree: KinematicTree, qpos: torch.Tensor, qvel: torch.Tensor, acc: torch.Tensor,
                         corr: torch.Tensor, dt: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Semi-implicit step in joint space: ``qvel' = qvel + dt a``, ``qpos' = qpos (+) dt (qvel' + c)``."""
    qvel_next = qvel + dt * acc
    return integrate_qpos(tree, qpos, qvel_next + corr, dt), qvel_next


@dataclass
class Transitions:
    """A batch of transitions of one system (tensors ``[B, ...]``)."""

    system: str
    qpos: torch.Tensor
    qvel: torch.Tensor
    action: torch.Tensor
    params: Params
    qpos_next: torch.Tensor
    qvel_next: torch.Tensor
    qpos_clean: torch.Tensor | None = None  # noise-free qpos, if set the position correction target's source
    static: StaticGraph | None = None  # precomputed per-rollout graph constants (see GraphBuilder.static_graph)


class ForwardModel(nn.Module):
    """Shared machinery: systems, stepping, rollouts, losses. Subclasses map states to normalized
    per-dof predictions and back."""

    solves = False  # whether the predictor is a constraint solver (takes test-time constraints)

    def __init__(self, config: ModelConfig, systems: list[SystemSpec]):
        super().__init__()
        config.validate()
        if not systems:
            raise ConfigError("a forward model needs at least one system")
        self.config = config
        self.systems: dict[str, SystemSpec] = {}
        self._builders: dict[str, GraphBuilder] = {}
        for s in systems:
            self.add_system(s)
        self.trained_systems = [s.name for s in systems]

    # ----------------------------------------------------------------------------- systems
    def add_system(self, spec: SystemSpec) -> None:
        """Make a system available (e.g. a swimmer with more links, for zero-shot evaluation)."""
        self.systems[spec.name] = spec
        self._builders[spec.name] = spec.builder(self.config.limit_features, self.config.periodic_hinges)

    def builder(self, system: str | None = None) -> GraphBuilder:
        if system is None:
            if len(self.systems) != 1:
                raise ConfigError(f"this model serves several systems {sorted(self.systems)}: name one")
            system = next(iter(self.systems))
        if system not in self._builders:
            raise ConfigError(f"system {system!r} is unknown to this model (it knows "
                              f"{sorted(self.systems)}); add it with add_system() for zero-shot use")
        return self._builders[system]

    def tree(self, system: str | None = None) -> KinematicTree:
        return self.builder(system).tree

    # ----------------------------------------------------------------------------- subclass API
    def accumulate_statistics(self, batch: Transitions) -> None:
        raise NotImplementedError

    def predict_normalized(self, batches: list[Transitions], options: SolveOptions | None = None
                           ) -> list[torch.Tensor]:
        """Normalized predictions for several batches (possibly of different systems);
        ``options``: test-time constraints and iterations (for a constraint solver)."""
        raise NotImplementedError

    def normalize_targets(self, batch: Transitions, acc: torch.Tensor, corr: torch.Tensor):
        """``(targets, mask)`` in the prediction's layout and units."""
        raise NotImplementedError

    def denormalize(self, system: str, pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dof ``(a, c)``, each ``[B, nv]``, from a normalized prediction."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------- dynamics
    def step(self, qpos: torch.Tensor, qvel: torch.Tensor, action: torch.Tensor, system: str | None = None,
             params: Params | None = None, static: StaticGraph | None = None,
             options: SolveOptions | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One control step: ``qpos [B, nq], qvel [B, nv], action [B, nu] -> (qpos', qvel')``.

        Differentiable with respect to states, actions and parameters (``params``: optional
        ``{key: [B, ...]}`` physical parameters, nominal if None). ``static``: the graph constants
        of these parameters from ``builder(system).static_graph`` (rollouts compute them once).
        ``options``: test-time constraints and iterations of a constraint solver
        (:meth:`solve_options`).
        """
        b = self.builder(system)
        name = b.tree.name if system is None else system
        static = b.static_graph(params, qpos.shape[0], qpos) if static is None else static
        lean = self.lean_step(name, static, qpos) if options is None else None
        if lean is not None:
            return compiled(lean.step)(qpos, qvel, action)
        batch = Transitions(name, qpos, qvel, action, static.params, qpos, qvel, static=static)
        pred = self.predict_normalized([batch], options)[0]
        acc, corr = self.denormalize(name, pred)
        return integrate_prediction(b.tree, qpos, qvel, acc, corr, b.control_timestep)

    def rollout(self, qpos: torch.Tensor, qvel: torch.Tensor, actions: torch.Tensor, system: str | None = None,
                params: Params | None = None, checkpoint: bool = False, constraints: Objective | None = None,
                iterations: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Roll out ``actions [B, H, nu]`` from ``qpos [B, nq], qvel [B, nv]``.

        Returns ``qpos [B, H+1, nq]`` and ``qvel [B, H+1, nv]`` (the initial state first).
        ``checkpoint=True`` recomputes each step's activations in the backward pass, so long
        differentiable rollouts fit in memory. A constraint solver (C-GNS) also takes test-time
        ``constraints`` (bound to the system: body and joint names checked; pins hold the start)
        and ``iterations`` solver steps per control step.
        """
        options = self.solve_options(constraints, iterations, qpos, system)
        static = self.builder(system).static_graph(params, qpos.shape[0], qpos)
        lean = self.lean_step(system, static, qpos) if options is None else None
        step = partial(self.step, system=system, params=None, static=static, options=options) if lean is None \
            else compiled(lean.step)
        qs, vs = [qpos], [qvel]
        for t in range(actions.shape[1]):
            if checkpoint and torch.is_grad_enabled():
                q, v = torch.utils.checkpoint.checkpoint(step, qs[-1], vs[-1], actions[:, t], use_reentrant=False)
            else:
                q, v = step(qs[-1], vs[-1], actions[:, t])
            qs.append(q)
            vs.append(v)
        return torch.stack(qs, 1), torch.stack(vs, 1)

    def lean_step(self, system: str | None, static: StaticGraph, like: torch.Tensor):
        """The lean step (:mod:`gndesign.lean`) of ``system`` bound to ``static``, or None where the
        reference path computes the step (this model kind, ``use_lean = False``, ``GNDESIGN_LEAN=0``)."""
        return None

    # ----------------------------------------------------------------------------- constraints
    def constraint_context(self, system: str | None = None) -> ConstraintContext:
        """What constraints on this system may refer to: its bodies, hinge and slide joints."""
        t = self.tree(system)
        joints = {n: int(t.jnt_qposadr[j]) for j, n in enumerate(t.joint_names)
                  if n and t.jnt_type[j] in (HINGE, SLIDE)}
        return ConstraintContext(num_nodes=t.nbody, node_names=list(t.body_names), node_kind="body",
                                 joints=joints, nq=t.nq, dim=3, margin=0.0)

    def constraint_quantities(self, qpos: torch.Tensor, qvel: torch.Tensor | None = None, system: str | None = None,
                              xpos: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """What a constraint sees of states ``qpos [B, nq]`` (``qvel [B, nv]``): also
        ``positions [B, nbody, 3]`` (body origins in the world frame, also called ``xpos``; from
        forward kinematics unless given)."""
        if xpos is None:
            xpos = forward_kinematics(self.tree(system), qpos).xpos
        return {"qpos": qpos, "positions": xpos, "xpos": xpos, **({} if qvel is None else {"qvel": qvel})}

    def _start_quantities(self, qpos: torch.Tensor, system: str | None, xpos: torch.Tensor | None = None) -> dict:
        return {f"{k}_0": v for k, v in self.constraint_quantities(qpos, None, system, xpos).items()}

    def constraint_frames(self, qpos: torch.Tensor, qvel: torch.Tensor | None = None,
                          system: str | None = None) -> list[dict[str, torch.Tensor]]:
        """The quantities of every step of a rollout ``qpos [B, T+1, nq]`` (``qvel [B, T+1, nv]``
        for constraints on velocities; pins refer to step 0), for
        :func:`gndesign.solver.violation_report`."""
        tree = self.tree(system)
        B, T1 = qpos.shape[:2]
        xpos = forward_kinematics(tree, qpos.reshape(B * T1, -1)).xpos.reshape(B, T1, tree.nbody, 3)
        start = self._start_quantities(qpos[:, 0], system, xpos[:, 0])
        return [{**self.constraint_quantities(qpos[:, t], None if qvel is None else qvel[:, t], system, xpos[:, t]),
                 **start} for t in range(T1)]

    def solve_options(self, constraints: Objective | None, iterations: int | None, qpos: torch.Tensor,
                      system: str | None = None) -> SolveOptions | None:
        """Test-time ``constraints`` bound to the system and ``iterations`` for a rollout from
        ``qpos [B, nq]`` (pins hold its start)."""
        options = solve_options(constraints, iterations, self.constraint_context(system),
                                lambda: self._start_quantities(qpos, system))
        if not self.solves:
            SolveOptions.refuse(options)
        return options

    # ----------------------------------------------------------------------------- training
    def raw_targets(self, batch: Transitions) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dof ``(a, c)`` targets; ``c`` from ``batch.qpos_clean`` when given."""
        b = self.builder(batch.system)
        q = batch.qpos if batch.qpos_clean is None else batch.qpos_clean
        return dynamics_targets(b.tree, q, batch.qvel, batch.qpos_next, batch.qvel_next, b.control_timestep)

    def targets(self, batch: Transitions) -> tuple[torch.Tensor, torch.Tensor]:
        return self.normalize_targets(batch, *self.raw_targets(batch))

    def forward(self, batches: list[Transitions], want_next: bool = False):
        """The training objective: mean squared error of normalized predictions over all valid
        outputs of all batches, and (if ``want_next``) the predicted next states ``[(qpos, qvel)]``
        for multi-step losses. Being ``forward``, it is what DDP wraps."""
        preds = self.predict_normalized(batches)
        total, count, nxt = 0.0, 0, []
        for batch, pred in zip(batches, preds, strict=True):
            target, mask = self.targets(batch)
            sq = (pred - target).pow(2) * mask
            total = total + sq.sum()
            count += int(mask.expand_as(sq).sum())
            if want_next:
                b = self.builder(batch.system)
                acc, corr = self.denormalize(batch.system, pred)
                nxt.append(integrate_prediction(b.tree, batch.qpos, batch.qvel, acc, corr, b.control_timestep))
        return total / max(count, 1), nxt

    def loss(self, batches: list[Transitions]) -> torch.Tensor:
        return self(batches)[0]

    def describe(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "systems": [self.systems[s].to_dict() for s in self.trained_systems]}


def _flat_params(params: Params) -> torch.Tensor:
    B = params[PARAM_KEYS[0]].shape[0]
    return torch.cat([params[k].reshape(B, -1) for k in PARAM_KEYS], dim=-1)


class GraphNetworkSimulator(PerSystemStatistics, ForwardModel):
    """The learned simulator: a physics front end (graph builders, normalizers, decoding,
    joint-space integration) and a predictor of per-edge normalized ``(a, c)`` in each dof slot.

    Args:
        solver: None for the forward predictor (an encode-process-decode network decoding the
            joint edges' predictions from the current graph), or the settings of a
            :class:`gndesign.solver.ConstraintSolver` (the C-GNS, :mod:`gndesign.cgns`), whose
            network scores candidates: edge features gain the candidate's normalized ``(a, c)``
            slots.
    """

    front = "articulated"

    def __init__(self, config: ModelConfig, systems: list[SystemSpec], solver: SolverConfig | None = None):
        super().__init__(config, systems)
        if config.message_passing_steps is None:  # resolved once, then saved with the model's config
            config.message_passing_steps = max(2, max(b.tree.depth() for b in self._builders.values()))
        if config.per_system_depth and solver is not None:
            raise ConfigError("model.per_system_depth is for forward models, not a C-GNS: leave it false")
        sizes = GraphBuilder.feature_sizes()
        # Targets are normalized per joint type (a slide's m/s^2 and a hinge's rad/s^2 differ); inputs
        # and targets per trained system too (PerSystemStatistics).
        self.init_statistics([s.name for s in systems], sizes, {"node": len(NODE_STATIC), "edge": len(EDGE_STATIC)},
                             [t for t in EDGE_TYPES if t != WELD], _CHANNELS * MAX_DOF, config.std_epsilon,
                             {s.name: len(self.tree(s.name).edge_type) * _CHANNELS * MAX_DOF for s in systems}
                             if config.edge_target_stats else None)

        def network(edge_in: int, edge_out: int) -> EncodeProcessDecode:
            return EncodeProcessDecode(
                node_in=sizes["node"], edge_in=edge_in, global_in=sizes["global"],
                latent_size=config.latent_size, mlp_hidden_size=config.mlp_hidden_size,
                mlp_layers=config.mlp_layers, message_passing_steps=config.message_passing_steps,
                shared_weights=config.shared_weights, aggregation=config.aggregation, edge_out=edge_out)

        slots = _CHANNELS * MAX_DOF
        self.solver = solver  # the C-GNS solver's settings, or None for the forward predictor
        self.solves = solver is not None
        self.register_load_state_dict_pre_hook(partial(upgrade_state_dict, old_network="core"))  # older layouts
        self.predictor = (network(sizes["edge"], slots) if solver is None else
                          ConstraintSolver(network(sizes["edge"] + slots, solver.energy_channels), solver))

    def add_system(self, spec: SystemSpec, statistics: str = "nearest") -> None:
        """:meth:`ForwardModel.add_system`; an untrained system's statistics: :meth:`adopt_statistics`."""
        super().add_system(spec)
        if hasattr(self, "_stat_keys"):  # not while __init__ adds the trained systems
            self.adopt_statistics(spec.name, statistics, lambda name: self.tree(spec.name).distance(self.tree(name)))

    def _edge_targets(self, batch: Transitions, acc, corr):
        b = self.builder(batch.system)
        return torch.cat([b.dofs_to_edges(acc), b.dofs_to_edges(corr)], dim=-1)  # [B, E, 12]

    def _slot_mask(self, system: str) -> torch.Tensor:
        m = self.builder(system).edge_dofs >= 0  # [E, 6]
        return torch.cat([m, m], dim=-1)  # [E, 12]

    def _type_stats(self, system: str, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per forward edge mean and std ``[E, 12]`` of its joint type's targets (welds: 0, 1): the system's
        own, else adopted (:meth:`adopt_statistics`); with ``model.edge_target_stats`` each trained edge's."""
        if self.config.edge_target_stats and system in self._stat_keys:
            return self.edge_target_stats(system, self._slot_mask(system).to(like.device), like)
        zeros = like.new_zeros(_CHANNELS * MAX_DOF)
        norms = self.target_norms(system)
        stats = {t: norms[t].stats(like) for t in EDGE_TYPES if t != WELD}
        means = torch.stack([stats[t][0] if t != WELD else zeros for t in EDGE_TYPES])
        stds = torch.stack([stats[t][1] if t != WELD else zeros + 1 for t in EDGE_TYPES])
        idx = self.builder(system).const("edge_type_index", like)
        return means[idx], stds[idx]

    @torch.no_grad()
    def accumulate_statistics(self, batch: Transitions) -> None:
        b = self.builder(batch.system)
        g = b.build_tensors(batch.qpos, batch.qvel, batch.action, batch.params, batch.static)
        self.accumulate_inputs(batch.system, {"node": g.x, "edge": g.edge_attr, "global": g.u})
        acc, corr = self.raw_targets(batch)
        tgt = self._edge_targets(batch, acc, corr)
        for e, t in enumerate(b.tree.edge_type):
            if t != WELD:
                self.accumulate_targets(batch.system, t, tgt[:, e])
        self.accumulate_edge_targets(batch.system, tgt)

    def _normalized(self, g: Graph, system: str) -> Graph:
        if self.node_norm.count == 0:
            raise RuntimeError("the model has no input statistics: accumulate_statistics() on training data first")
        st = self.input_stats(system, g.x)
        return g._replace(x=(g.x - st["node"][0]) / st["node"][1], u=(g.u - st["global"][0]) / st["global"][1],
                          edge_attr=(g.edge_attr - st["edge"][0]) / st["edge"][1])

    def processor_steps(self, system: str | None = None) -> int:
        """Message-passing steps for ``system``: all, or its tree's depth (``model.per_system_depth``)."""
        m = self.config.message_passing_steps
        return min(m, max(2, self.tree(system).depth())) if self.config.per_system_depth else m

    def lean_step(self, system: str | None, static: StaticGraph, like: torch.Tensor) -> LeanRollout | None:
        name = self.builder(system).tree.name if system is None else system
        if not LeanPlan.supports(self, name):
            return None
        return lean_plan(self, name, like).prepare(static)

    def predict_normalized(self, batches: list[Transitions], options: SolveOptions | None = None
                           ) -> list[torch.Tensor]:
        # A direct call with weights that take gradients keeps the reference path; the trainer's
        # unrolled loss takes the lean step itself (gndesign.forward_training.unrolled_loss).
        training = torch.is_grad_enabled() and any(p.requires_grad for p in self.predictor.parameters())
        if options is None and not training and all(LeanPlan.supports(self, x.system) for x in batches):
            return [self.lean_step(x.system, x.static or self.builder(x.system).static_graph(
                x.params, x.qpos.shape[0], x.qpos), x.qpos).predict(
                x.qpos, x.qvel, x.qpos.new_zeros(x.qpos.shape[0], self.tree(x.system).nu) if x.action is None
                else x.action) for x in batches]
        graphs = [self._normalized(self.builder(x.system).build_tensors(x.qpos, x.qvel, x.action, x.params,
                                                                        x.static), x.system) for x in batches]
        if self.solves:
            return [self._solve(x, g, options) for x, g in zip(batches, graphs, strict=True)]
        SolveOptions.refuse(options)
        preds, steps = [None] * len(batches), [self.processor_steps(x.system) for x in batches]
        for m in sorted(set(steps)):  # one pass per number of message-passing steps
            idx = [i for i, k in enumerate(steps) if k == m]
            out = self.predictor(concat_batches([graphs[i] for i in idx]), m).edge_attr
            for i, part in zip(idx, out.split([graphs[i].edge_attr.shape[0] for i in idx]), strict=True):
                per = part.reshape(batches[i].qpos.shape[0], -1, part.shape[-1])
                preds[i] = per[:, : per.shape[1] // 2]  # forward edges carry the joint's prediction
        return preds

    def normalize_targets(self, batch: Transitions, acc, corr):
        mean, std = self._type_stats(batch.system, acc)
        tgt = (self._edge_targets(batch, acc, corr) - mean) / std
        return tgt, self._slot_mask(batch.system).to(acc.device)

    def denormalize(self, system: str, pred: torch.Tensor):
        mean, std = self._type_stats(system, pred)
        per = (pred * std + mean) * self._slot_mask(system).to(pred.device)
        b = self.builder(system)
        return b.edges_to_dofs(per[..., :MAX_DOF]), b.edges_to_dofs(per[..., MAX_DOF:])

    # ----------------------------------------------------------------------------- the C-GNS
    def sigma(self, system: str, like: torch.Tensor) -> torch.Tensor:
        """The solver's unit: the largest displacement of a joint coordinate per normalized unit,
        ``max(dt^2 std_a, dt std_c)`` over the system's dofs."""
        _, std = self._type_stats(system, like)
        mask = self._slot_mask(system).to(like.device)
        dt = self.builder(system).control_timestep
        scale = torch.cat([std[:, :MAX_DOF] * dt * dt, std[:, MAX_DOF:] * dt], -1)
        return (scale * mask).max()

    def energy(self, graph: Graph, z: torch.Tensor) -> torch.Tensor:
        """The C-GNS's ``f_C`` per graph ``[B]`` of candidates ``z [B, E, 12]`` (the forward edges'
        slots) given the normalized current-state ``graph``."""
        cand = torch.cat([z, z], 1).reshape(-1, z.shape[-1])  # both directions of every joint edge
        out = self.predictor.network(graph._replace(edge_attr=torch.cat([graph.edge_attr, cand], -1))).edge_attr
        return out.pow(2).sum(-1).view(graph.num_graphs, -1).sum(1)

    def _solve(self, tr: Transitions, graph: Graph, options: SolveOptions | None) -> torch.Tensor:
        """The solver's normalized ``(a, c)`` ``[B, E, 12]``: the candidate next state is
        ``qvel' = qvel + dt a``, ``qpos' = qpos (+) dt (qvel' + c)``; the inertial guess is
        ``a = c = 0``."""
        b = self.builder(tr.system)
        mean, std = self._type_stats(tr.system, tr.qpos)
        mask = self._slot_mask(tr.system).to(tr.qpos.device).to(tr.qpos.dtype)
        z0 = (-mean / std * mask).expand(tr.qpos.shape[0], -1, -1)

        def quantities(z: torch.Tensor) -> dict:
            acc, corr = self.denormalize(tr.system, z * mask)
            qpos, qvel = integrate_prediction(b.tree, tr.qpos, tr.qvel, acc, corr, b.control_timestep)
            return self.constraint_quantities(qpos, qvel, tr.system)

        z = self.predictor.solve(lambda z: self.energy(graph, z * mask), z0, self.sigma(tr.system, tr.qpos),
                                 quantities, _per_scene_stiffness, options)
        return z * mask


def _per_scene_stiffness(bound: Objective, q: dict) -> torch.Tensor:
    # [B, 1, 1]: every slot of an articulated candidate moves every body.
    return active_stiffness(bound, q)[:, None, None]


class MLPDynamics(ForwardModel):
    """The usual model-based RL baseline: flat (joint coordinates, qvel, actuation, parameters) ->
    per-dof normalized ``(a, c)``. One system only (its input size is fixed)."""

    def __init__(self, config: ModelConfig, systems: list[SystemSpec]):
        super().__init__(config, systems)
        if len(systems) != 1:
            raise ConfigError("the MLP baseline serves exactly one system (its input size is fixed)")
        t = self.tree()
        self.in_size = t.num_edges * 7 + 2 * t.nv + _flat_params(self.builder().resolve_params(
            None, 1, torch.zeros(1, dtype=torch.float64))).shape[1]
        self.out_size = _CHANNELS * t.nv
        self.input_norm = Normalizer(self.in_size, config.std_epsilon)
        self.target_norm = Normalizer(self.out_size, config.std_epsilon)
        layers, size = [], self.in_size
        for _ in range(config.mlp_layers + 1):
            layers += [nn.Linear(size, config.mlp_hidden_size), nn.SiLU()]
            size = config.mlp_hidden_size
        layers.append(nn.Linear(size, self.out_size))
        self.net = nn.Sequential(*layers)

    def _inputs(self, x: Transitions) -> torch.Tensor:
        b = self.builder(x.system)
        B = x.qpos.shape[0]
        params = b.resolve_params(x.params, B, x.qpos)
        force = b.tree.generalized_actuation(x.action, params["actuator_gear"])
        return torch.cat([b.joint_coordinates(x.qpos, x.qvel).reshape(B, -1), x.qvel, force, _flat_params(params)], -1)

    @torch.no_grad()
    def accumulate_statistics(self, batch: Transitions) -> None:
        self.input_norm.accumulate(self._inputs(batch))
        self.target_norm.accumulate(torch.cat(self.raw_targets(batch), -1))

    def predict_normalized(self, batches: list[Transitions], options: SolveOptions | None = None
                           ) -> list[torch.Tensor]:
        SolveOptions.refuse(options)
        return [self.net(self.input_norm(self._inputs(x))) for x in batches]

    def normalize_targets(self, batch: Transitions, acc, corr):
        return self.target_norm(torch.cat([acc, corr], -1)), acc.new_ones(1, self.out_size)

    def denormalize(self, system: str, pred: torch.Tensor):
        out = self.target_norm.inverse(pred)
        nv = self.tree(system).nv
        return out[..., :nv], out[..., nv:]


def build_model(config: ModelConfig, systems: list[SystemSpec]) -> ForwardModel:
    """A forward model of the configured kind for these systems."""
    config.validate()
    return (GraphNetworkSimulator if config.kind == "gn" else MLPDynamics)(config, systems)
