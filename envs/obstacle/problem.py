"""A design problem on the obstacle scene: scene, simulator (learned or MuJoCo) and a goal's loss,
as the design optimizers (``planners.design``) see it: designs ``[B, K]`` -> named loss terms."""

from __future__ import annotations

import math

import torch

from envs.obstacle.goals import DesignGoal, particle_quantities
from envs.obstacle.scene import SceneConfig, design_fk, initial_positions, load_scene_file, source_clearance
from envs.obstacle.simulation import simulate
from gndesign.errors import GndesignError
from gndesign.objectives import Sum


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
    """

    def __init__(self, cfg: SceneConfig, goal: DesignGoal, seed: int, model=None, intrusion_weight: float = 1.0,
                 margin: float = 0.05):
        self.cfg, self.goal, self.seed, self.model = cfg, goal, seed, model
        self.init = initial_positions(cfg, seed)
        self.dtype = next(model.parameters()).dtype if model is not None else torch.float32
        self.init_t = torch.as_tensor(self.init, dtype=self.dtype)
        self.intrusion_weight, self.margin = intrusion_weight, margin
        self.mujoco_calls = self.learned_calls = 0

    def clearance(self, designs):
        """``[B]`` exact gap between the obstacle and the source region's balls (numpy; > 0: valid)."""
        return self.cfg.design_clearance(designs.detach().cpu().double().numpy().reshape(-1, self.cfg.segments))

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

    def learned_rollout(self, designs):
        """Learned rollouts ``[B, T+1, N, 2]`` (the model's dtype, differentiable w.r.t. ``designs [B, K]``)."""
        if self.model is None:
            raise GndesignError("no learned model: pass --model CKPT or pretrained:obstacle")
        B = designs.shape[0]
        vertices = design_fk(designs.to(self.dtype), self.cfg)
        self.learned_calls += B
        return self.model.rollout(self.init_t.expand(B, -1, -1), vertices, self.cfg.frames, checkpoint=True)

    def learned_loss(self, designs):
        terms = design_terms(self.goal, self.learned_rollout(designs))
        pen = self.intrusion(designs).to(terms["total"])
        terms["total"] = terms["total"] + pen
        terms["intrusion"] = pen.detach()
        terms["feasible"] = torch.as_tensor(self.clearance(designs) > 0, dtype=pen.dtype)
        return terms

    def mujoco_loss(self, designs):
        ok = torch.as_tensor(self.clearance(designs) > 0)
        pen = self.intrusion(designs.detach().double())
        terms = {"total": 2.0 + pen}
        if ok.any():
            sim = design_terms(self.goal, self.simulate(designs[ok]))
            for k, v in sim.items():
                terms[k] = torch.full_like(pen, math.nan) if k not in terms else terms[k]
                terms[k] = terms[k].clone()
                terms[k][ok] = v.to(pen) + (pen[ok] if k == "total" else 0.0)
        terms["intrusion"] = pen
        terms["feasible"] = ok.to(pen.dtype)
        return terms


def absolute_angles(design):
    """Absolute segment angles ``[B, K]`` of designs (first angle, then relative joint angles)."""
    return design.cumsum(-1)


def load_design_model(model: str, cfg_path: str | None, segments: int | None):
    """The particle simulator and the scene to design in (the model's own scene unless a scene file
    says otherwise, which must then match the model's physics)."""
    from gndesign.checkpoints import load_model

    _, blob = load_model(model, "particles")
    base = dict(blob["scene"])
    try:
        cfg = load_scene_file(cfg_path, base, segments=segments)
    except GndesignError:
        if cfg_path:
            raise
        # The model's scene lacks SceneConfig keys (data from elsewhere): defaults, checked below.
        cfg = load_scene_file(None, segments=segments)
    sim, _ = load_model(model, "particles", scene=cfg.to_dict())
    return sim, cfg
