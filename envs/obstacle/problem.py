"""A design problem on the obstacle scene: scene, simulator (learned or MuJoCo) and a goal's loss,
as the design optimizers (``planners.design``) see it: designs ``[B, K]`` -> named loss terms."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import torch

from envs.obstacle.goals import DesignGoal, particle_quantities
from envs.obstacle.scene import (
    SceneConfig,
    design_fk,
    initial_positions,
    load_scene_file,
    obstacle_points,
    obstacle_segments,
    source_clearance,
)
from envs.obstacle.simulation import simulate
from gndesign.constraint_sets import bind_constraints
from gndesign.constraints import ConstraintContext
from gndesign.errors import ConfigError, GndesignError
from gndesign.objectives import Objective, Sum

#: Frames per chunk of a damped rollout (:func:`damped_rollout`; at least the model's history).
DAMPING_FRAMES = 10
#: How a learned loss's minibatch of balls is drawn (:class:`DesignProblem`'s ``minibatch``).
MINIBATCHES = ("random", "stratified")
#: Spacing of the points the design constraints see along the obstacle [m].
CONSTRAINT_SPACING = 0.01


def design_terms(goal: DesignGoal, positions: torch.Tensor) -> dict[str, torch.Tensor]:
    """Named loss terms ``[B]`` of rollouts ``positions [B, T+1, N, 2]``: ``total`` (the goal's smooth
    loss), each part of it, and the hard ``score`` of the final frame (not differentiable)."""
    final = positions[:, -1]
    q = particle_quantities(final)
    terms = {"total": goal.objective(q)}
    if isinstance(goal.objective, Sum):
        for part in goal.objective.terms:
            terms[part.to_spec()["kind"]] = part(q).detach()
    terms["score"] = torch.as_tensor(goal.score(final.detach()), dtype=final.dtype)
    return terms


class DesignProblem:
    """A design problem: the scene ``cfg``, a ``goal``, the initial layout of ``seed`` and a simulator
    (the learned particle ``model``, or MuJoCo when it is ``None``).

    ``learned_loss`` and ``mujoco_loss`` map designs ``[B, K]`` to named terms (see
    :func:`design_terms`) plus ``intrusion`` (a penalty on obstacles reaching into the source region,
    which MuJoCo refuses) and ``feasible`` (0 for such designs: they never become the result).
    MuJoCo never simulates infeasible designs (their ``total`` is 2, above any feasible loss, plus the
    penalty). ``mujoco_calls`` counts ground-truth rollouts, ``learned_calls`` learned ones.

    Args:
        intrusion_weight: weight of the penalty ``relu(margin - clearance) / margin``, the clearance
            measured differentiably at points along the segments (:func:`envs.obstacle.scene.source_clearance`).
        constraints: design constraints (:mod:`gndesign.constraints`, e.g. ``box ... keep=out``) on
            the quantities of :meth:`design_quantities` (``positions``: points along the obstacle;
            default margin: the obstacle's radius); their penalty joins ``total`` for every simulator.
        nodes: how the learned model sees the obstacle: ``spacing`` (points along it at the model's
            training spacing, :func:`envs.obstacle.scene.obstacle_points`: the same node density
            for every ``K`` and for bars) or ``native`` (the model's own nodes per chain segment).
        last_frames: the learned loss averages the goal's smooth loss over this many last frames.
        temperature: the learned loss's soft edges start this many times as wide and anneal
            (geometrically, :meth:`anneal`) to 1.
        particles: learned rollouts during optimization use a random subset of this many balls
            (a new one per :meth:`anneal` call; ``None``: all), a cheaper, noisier gradient;
            :meth:`full_loss` scores with all of them.
        minibatch: how that subset is drawn: ``random`` (uniformly) or ``stratified`` (one ball from
            each of ``particles`` strata of the starting layout, :func:`layout_strata`: columns in x,
            cells in z within each, so every part of the stream is in every minibatch).
        grad_horizon: damp the gradient through time (``None``: off): learned rollouts that need a
            gradient run in chunks of :data:`DAMPING_FRAMES` frames, and the gradient crossing each
            chunk boundary is scaled by ``exp(-DAMPING_FRAMES / grad_horizon)`` (forward values unchanged,
            :func:`damped_rollout`). Through 150 frames of colliding balls the exact gradient grows with
            the rollout's length far past the loss's slope at any usable step (chaos), and a step along
            it lowers the loss no more often than a random one; damped, it is a descent direction more
            often (``scripts/bench_design_gradients.py``).
    """

    def __init__(self, cfg: SceneConfig, goal: DesignGoal, seed: int, model=None, intrusion_weight: float = 1.0,
                 margin: float = 0.05, constraints: Objective | None = None, nodes: str = "spacing",
                 last_frames: int = 1, temperature: float = 1.0, particles: int | None = None,
                 minibatch: str = "random", grad_horizon: float | None = None):
        self.cfg, self.goal, self.seed, self.model = cfg, goal, seed, model
        self.init = initial_positions(cfg, seed)
        self.dtype = next(model.parameters()).dtype if model is not None else torch.float32
        self.init_t = torch.as_tensor(self.init, dtype=self.dtype)
        self.intrusion_weight, self.margin = intrusion_weight, margin
        self.mujoco_calls = self.learned_calls = 0
        if nodes not in ("spacing", "native"):
            raise ConfigError(f"nodes must be spacing or native, got {nodes!r}")
        if nodes == "native" and cfg.obstacle != "chain":
            raise ConfigError("native obstacle nodes need a chain obstacle; use nodes=spacing")
        if not (isinstance(last_frames, int) and 1 <= last_frames <= cfg.frames + 1):
            raise ConfigError(f"last_frames must be an integer in [1, {cfg.frames + 1}], got {last_frames!r}")
        if not (math.isfinite(temperature) and temperature >= 1):
            raise ConfigError(f"temperature must be a number >= 1, got {temperature!r}")
        if particles is not None and not (isinstance(particles, int) and 1 <= particles <= cfg.n_particles):
            raise ConfigError(f"particles must be an integer in [1, {cfg.n_particles}], got {particles!r}")
        check_descent_options(minibatch, grad_horizon)
        self.grad_horizon = grad_horizon
        self.nodes, self.last_frames, self.temperature0, self.particles = nodes, last_frames, temperature, particles
        self.strata = None
        if minibatch == "stratified" and particles is not None and particles < cfg.n_particles:
            self.strata = layout_strata(self.init, particles)
        self.temperature = temperature
        self.subset = None
        self.rng = np.random.default_rng(seed)
        # The screen's cheap stage (:meth:`screen_loss`): one fixed subset, from a generator of its own.
        self.screen_subset = None
        if particles is not None and particles < cfg.n_particles:
            self.screen_subset = torch.as_tensor(np.sort(np.random.default_rng([seed, 1]).choice(
                cfg.n_particles, particles, replace=False)))
        self.node_model, self.spacing = model, None
        if model is not None and nodes == "spacing":
            # The model interpolates m nodes per segment it is given; handing it the points
            # themselves (one node per "segment") keeps its training node density at any K.
            self.spacing = node_spacing(model)
            self.node_model = copy.copy(model)
            self.node_model.config = dataclasses.replace(model.config, obstacle_points=1)
        self.constraints = None
        if constraints is not None:
            ctx = ConstraintContext(num_nodes=None, node_kind="obstacle point", dim=2, margin=cfg.obstacle_radius)
            self.constraints = bind_constraints(constraints, ctx)
            self.constraint_penalty(torch.as_tensor(cfg.default_design())[None])  # unknown quantities fail here

    # ------------------------------------------------------------------ constraints
    def design_quantities(self, designs: torch.Tensor) -> dict[str, torch.Tensor]:
        """What design constraints see of ``designs [B, D]``: :meth:`segment_quantities` of their capsules."""
        return self.segment_quantities(obstacle_segments(designs, self.cfg))

    def segment_quantities(self, seg: torch.Tensor) -> dict[str, torch.Tensor]:
        """What design constraints see of capsules ``seg [B, S, 2, 2]``: ``positions`` (= ``obstacle``)
        ``[B, P, 2]`` points along them (at most :data:`CONSTRAINT_SPACING` apart, ends included),
        ``span`` ``[B, 1, 2]`` the obstacle's extent in x and z (a footprint budget: ``wall axis=x
        upper=W quantity=span margin=0``) and ``length`` ``[B, 1, 1]`` its total length (fixed by
        the scene: a length budget holds or fails for every design alike)."""
        lengths = (seg[..., 1, :] - seg[..., 0, :]).norm(dim=-1)  # [B, S]
        n = max(1, math.ceil(float(lengths.detach().max()) / CONSTRAINT_SPACING - 1e-9)) if seg.numel() else 1
        t = torch.linspace(0, 1, n + 1, dtype=seg.dtype)[:, None]
        pts = (seg[..., None, 0, :] + (seg[..., None, 1, :] - seg[..., None, 0, :]) * t).flatten(1, 2)
        span = (pts.amax(1) - pts.amin(1))[:, None]
        return {"positions": pts, "obstacle": pts, "span": span, "length": lengths.sum(-1)[:, None, None]}

    def constraint_penalty(self, designs: torch.Tensor) -> torch.Tensor:
        """``[B]`` penalty of the design constraints (zero when all hold; differentiable)."""
        return self.segments_penalty(obstacle_segments(designs, self.cfg))

    def segments_penalty(self, seg: torch.Tensor) -> torch.Tensor:
        """``[B]`` penalty of the design constraints on capsules ``seg [B, S, 2, 2]`` (e.g. the ones
        MuJoCo built, :func:`envs.obstacle.geometry.mujoco_segments`: the verdict)."""
        if self.constraints is None:
            return torch.zeros(len(seg), dtype=seg.dtype)
        return self.constraints(self.segment_quantities(seg))

    # ------------------------------------------------------------------ the learned loss's schedule
    def anneal(self, fraction: float) -> None:
        """Move the learned loss's schedule to ``fraction`` of the run (0 start, 1 end): the
        temperature goes geometrically from its start to 1, and a new subset of balls is drawn."""
        f = min(max(float(fraction), 0.0), 1.0)
        self.temperature = self.temperature0 ** (1 - f)
        if self.strata is not None:
            self.subset = torch.as_tensor(np.sort([self.rng.choice(s) for s in self.strata]))
        elif self.particles is not None and self.particles < self.cfg.n_particles:
            self.subset = torch.as_tensor(np.sort(self.rng.choice(self.cfg.n_particles, self.particles, replace=False)))

    def clearance(self, designs):
        """``[B]`` exact gap between the obstacle and the source region's balls (numpy; > 0: valid)."""
        return self.cfg.design_clearance(designs.detach().cpu().double().numpy().reshape(-1, self.cfg.design_dim))

    def intrusion(self, designs):
        """``[B]`` differentiable penalty, zero for obstacles at least ``margin`` clear of the source."""
        clear = source_clearance(designs, self.cfg)
        return self.intrusion_weight * torch.relu(self.margin - clear) / self.margin

    def simulate(self, designs):
        """MuJoCo rollouts ``[B, T+1, N, 2]`` (float64 tensor) of valid ``designs [B, K]`` (or ``[K]``)."""
        d = designs.detach().cpu().double().numpy() if hasattr(designs, "detach") else designs
        pos = simulate(self.cfg, d, self.init)
        self.mujoco_calls += len(pos)
        return torch.as_tensor(pos)

    def model_obstacle(self, designs):
        """What the learned model is given for ``designs [B, D]``: nodes ``[B, P, 2]`` (``spacing``)
        or chain vertices ``[B, K+1, 2]`` (``native``)."""
        d = designs.to(self.dtype)
        return design_fk(d, self.cfg) if self.spacing is None else obstacle_points(d, self.cfg, self.spacing)

    def learned_rollout(self, designs, subset=None, checkpoint: bool = True):
        """Learned rollouts ``[B, T+1, N, 2]`` (the model's dtype, differentiable w.r.t. ``designs [B, D]``)
        of all balls, or of the balls ``subset`` (indices)."""
        if self.model is None:
            raise GndesignError("no learned model: pass --model CKPT or pretrained:obstacle")
        B = designs.shape[0]
        init = (self.init_t if subset is None else self.init_t[subset]).expand(B, -1, -1)
        self.learned_calls += B
        if self.grad_horizon is not None and torch.is_grad_enabled():
            factor = math.exp(-DAMPING_FRAMES / self.grad_horizon)
            return damped_rollout(self.node_model, init, self.model_obstacle(designs), self.cfg.frames, factor,
                                  checkpoint)
        return self.node_model.rollout(init, self.model_obstacle(designs), self.cfg.frames, checkpoint=checkpoint)

    def learned_loss(self, designs, full: bool = False, subset=None):
        """Named terms of learned rollouts (during optimization: the balls' subset, the annealed
        temperature, the last frames; ``full``: the final frame at temperature 1, of all balls or
        of the balls ``subset``)."""
        subset = subset if full else self.subset
        pos = self.learned_rollout(designs, subset, checkpoint=self.particles is None)
        terms = design_terms(self.goal, pos)
        if not full and (self.last_frames > 1 or self.temperature != 1):
            terms["total"] = self.goal.frames_loss(pos[:, -self.last_frames:], self.temperature)
        return self._penalized(designs, terms)

    def full_loss(self, designs):
        """:meth:`learned_loss` of all balls at temperature 1 (the final selection among candidates)."""
        return self.learned_loss(designs, full=True)

    def screen_loss(self, designs):
        """:meth:`full_loss` of a fixed subset of ``particles`` balls (the same for every call): the cheap
        first stage of the gradient optimizer's screen (with ``particles`` None or all balls: ``full_loss``)."""
        return self.learned_loss(designs, full=True, subset=self.screen_subset)

    def _penalized(self, designs, terms):
        pen = self.intrusion(designs).to(terms["total"])
        con = self.constraint_penalty(designs).to(terms["total"])
        terms["total"] = terms["total"] + pen + con
        terms["intrusion"] = pen.detach()
        terms["constraints"] = con.detach()
        terms["feasible"] = torch.as_tensor(self.clearance(designs) > 0, dtype=pen.dtype)
        return terms

    def mujoco_loss(self, designs):
        ok = torch.as_tensor(self.clearance(designs) > 0)
        pen = self.intrusion(designs.detach().double())
        con = self.constraint_penalty(designs.detach().double())
        pen = pen + con
        terms = {"total": 2.0 + pen}
        if ok.any():
            sim = design_terms(self.goal, self.simulate(designs[ok]))
            for k, v in sim.items():
                terms[k] = torch.full_like(pen, math.nan) if k not in terms else terms[k]
                terms[k] = terms[k].clone()
                terms[k][ok] = v.to(pen) + (pen[ok] if k == "total" else 0.0)
        terms["intrusion"] = pen - con
        terms["constraints"] = con
        terms["feasible"] = ok.to(pen.dtype)
        return terms


def check_descent_options(minibatch: str = "random", grad_horizon: float | None = None) -> None:
    """A :class:`ConfigError` for a ``minibatch`` or ``grad_horizon`` that :class:`DesignProblem` cannot
    use (checkable before a model or scene is loaded)."""
    if minibatch not in MINIBATCHES:
        raise ConfigError(f"minibatch must be {' or '.join(MINIBATCHES)}, got {minibatch!r}")
    if grad_horizon is not None and not (isinstance(grad_horizon, (int, float)) and not isinstance(grad_horizon, bool)
                                         and math.isfinite(grad_horizon) and grad_horizon > 0):
        raise ConfigError(f"grad_horizon must be a positive number of frames (or None: off), got {grad_horizon!r}")


def damped_rollout(model, init: torch.Tensor, obstacle: torch.Tensor, frames: int, factor: float,
                   checkpoint: bool = True, chunk: int = DAMPING_FRAMES) -> torch.Tensor:
    """``model.rollout(init, obstacle, frames)`` in chunks of ``chunk`` frames (at least the model's
    history), each started from the previous one's last frames ``h`` as ``factor * h + (1 - factor) *
    h.detach()``: the same positions ``[B, frames+1, N, 2]``, but every gradient path from a frame
    back to an earlier one is scaled by ``factor`` per chunk boundary it crosses (truncated
    backpropagation through time at ``factor`` = 0; the exact gradient at 1). The design's own
    influence (the obstacle nodes, given to every chunk) is not damped."""
    keep = model.history + 1
    chunk = max(chunk, keep)
    history, parts, done = init, [], 0
    while done < frames:
        n = min(chunk, frames - done)
        pos = model.rollout(history, obstacle, n, checkpoint=checkpoint)
        parts.append(pos if not parts else pos[:, 1:])
        done += n
        if done < frames:
            tail = pos[:, -keep:]
            history = factor * tail + (1 - factor) * tail.detach()
    return torch.cat(parts, 1)


def layout_strata(init: np.ndarray, k: int) -> list[np.ndarray]:
    """``k`` disjoint groups of ball indices that cover the layout ``init [N, 2]`` (``1 <= k <= N``):
    about ``sqrt(k)`` columns of equal size in x, each split into equal cells in z (the columns'
    shares of the ``k`` cells as equal as possible; every cell holds at least one ball)."""
    n = len(init)
    if not 1 <= k <= n:
        raise ConfigError(f"need 1 <= strata <= {n} balls, got {k}")
    cols = max(1, round(math.sqrt(k)))
    strata = []
    for col, cells in zip(np.array_split(np.argsort(init[:, 0], kind="stable"), cols),
                          (len(c) for c in np.array_split(np.arange(k), cols)), strict=True):
        strata += np.array_split(col[np.argsort(init[col, 1], kind="stable")], cells)
    return strata


def node_spacing(model) -> float:
    """The gap between the obstacle nodes a particle model was trained with [m]: its training
    segment length over its nodes per segment (``model.training_segment_length``, set by
    :func:`load_design_model`, else the scene's ``segment_length``), else its ``obstacle_spacing``."""
    length = getattr(model, "training_segment_length", None) or model.scene.get("segment_length")
    if length:
        return float(length) / model.config.obstacle_points
    return float(model.config.obstacle_spacing * model.scene["particle_radius"])


def absolute_angles(design):
    """Absolute segment angles ``[B, K]`` of designs (first angle, then relative joint angles)."""
    return design.cumsum(-1)


def prior_map(cfg: SceneConfig):
    """What the smoothness prior penalizes differences of: a chain's absolute segment angles (its
    bends); for bars, each coordinate kind in its own row (neighbouring bars alike)."""
    if cfg.obstacle == "bars":
        return lambda d: d.reshape(*d.shape[:-1], -1, 3).transpose(-1, -2)
    return absolute_angles


def load_design_model(model: str, cfg_path: str | None, segments: int | None, obstacle: str | None = None):
    """The particle simulator and the scene to design in (the model's own scene unless a scene file
    says otherwise, which must then match the model's physics)."""
    from gndesign.checkpoints import load_model

    _, blob = load_model(model, "particles")
    base = dict(blob["scene"])
    try:
        cfg = load_scene_file(cfg_path, base, segments=segments, obstacle=obstacle)
    except GndesignError:
        if cfg_path:
            raise
        # The model's scene lacks SceneConfig keys (data from elsewhere): defaults, checked below.
        cfg = load_scene_file(None, segments=segments, obstacle=obstacle)
    sim, _ = load_model(model, "particles", scene=cfg.to_dict())
    for p in sim.parameters():  # the design takes gradients, the weights never do
        p.requires_grad_(False)
    if "segment_length" in base:
        sim.training_segment_length = float(base["segment_length"])
    return sim, cfg
