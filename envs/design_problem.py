"""A design problem: the obstacle scene, a simulator (learned or MuJoCo) and the task's loss,
as the design optimizers (``planners.design``) see it: designs ``[B, K]`` -> named loss terms."""

from __future__ import annotations

import math
from pathlib import Path

from gndesign.errors import GndesignError


def load_scene_file(path: str | None, base: dict | None = None, **overrides):
    """A validated ``SceneConfig``: ``base`` (e.g. a model's training scene) or the defaults, updated
    with the keys of a JSON/YAML file, then with the ``overrides`` that are not ``None``."""
    import yaml

    from envs.obstacle_scene import SceneConfig

    values = dict(base or {})
    if path:
        p = Path(path)
        if not p.is_file():
            raise GndesignError(f"scene file {path} does not exist")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise GndesignError(f"scene file {path} must hold a mapping of SceneConfig keys")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    values.pop("dt", None)  # derived from timestep and substeps
    return SceneConfig.from_dict(values)


def design_terms(task, positions):
    """Named loss terms ``[B]`` of rollouts ``positions [B, T+1, N, 2]``: ``total`` (the task's smooth
    loss), each part of it, and the hard ``score`` of the final frame (not differentiable)."""
    import torch

    from envs.obstacle_scene import particle_quantities
    from gndesign.objectives import Sum

    final = positions[:, -1]
    q = particle_quantities(final)
    terms = {"total": task.objective(q)}
    if isinstance(task.objective, Sum):
        for part in task.objective.terms:
            terms[part.to_spec()["kind"]] = part(q).detach()
    terms["score"] = torch.as_tensor(task.score(final.detach()), dtype=final.dtype)
    return terms


class DesignScene:
    """A design problem wired from the scene (``envs``), a simulator and the optimizers.

    ``learned_loss`` and ``mujoco_loss`` map designs ``[B, K]`` to named terms (see
    :func:`design_terms`) plus ``intrusion`` (a penalty on obstacles reaching into the source region,
    which MuJoCo refuses) and ``feasible`` (0 for such designs: they never become the result).
    MuJoCo never simulates infeasible designs (their ``total`` is 2, above any feasible loss, plus the
    penalty). ``mujoco_calls`` counts ground-truth rollouts, ``learned_calls`` learned ones.

    Args:
        intrusion_weight: weight of the penalty ``relu(margin - clearance) / margin``, the clearance
            measured differentiably at points along the segments (``envs.obstacle_scene.source_clearance``).
    """

    def __init__(self, cfg, task, seed: int, model=None, intrusion_weight: float = 1.0, margin: float = 0.05):
        import torch

        from envs.obstacle_scene import initial_positions

        self.cfg, self.task, self.seed, self.model = cfg, task, seed, model
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
        import torch

        from envs.obstacle_scene import source_clearance

        clear = source_clearance(designs, self.cfg)
        return self.intrusion_weight * torch.relu(self.margin - clear) / self.margin

    def simulate(self, designs):
        """MuJoCo rollouts ``[B, T+1, N, 2]`` (float64 tensor) of valid ``designs [B, K]`` (or ``[K]``)."""
        import torch

        from envs.obstacle_scene import simulate

        d = designs.detach().cpu().double().numpy() if hasattr(designs, "detach") else designs
        pos = simulate(self.cfg, d, self.init)
        self.mujoco_calls += len(pos)
        return torch.as_tensor(pos)

    def learned_rollout(self, designs):
        """Learned rollouts ``[B, T+1, N, 2]`` (the model's dtype, differentiable w.r.t. ``designs [B, K]``)."""
        from envs.obstacle_scene import design_fk

        if self.model is None:
            raise GndesignError("no learned model: pass --model CKPT or pretrained:obstacle")
        B = designs.shape[0]
        vertices = design_fk(designs.to(self.dtype), self.cfg)
        self.learned_calls += B
        return self.model.rollout(self.init_t.expand(B, -1, -1), vertices, self.cfg.frames, checkpoint=True)

    def learned_loss(self, designs):
        import torch

        terms = design_terms(self.task, self.learned_rollout(designs))
        pen = self.intrusion(designs).to(terms["total"])
        terms["total"] = terms["total"] + pen
        terms["intrusion"] = pen.detach()
        terms["feasible"] = torch.as_tensor(self.clearance(designs) > 0, dtype=pen.dtype)
        return terms

    def mujoco_loss(self, designs):
        import torch

        ok = torch.as_tensor(self.clearance(designs) > 0)
        pen = self.intrusion(designs.detach().double())
        terms = {"total": 2.0 + pen}
        if ok.any():
            sim = design_terms(self.task, self.simulate(designs[ok]))
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
