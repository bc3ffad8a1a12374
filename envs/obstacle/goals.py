"""Design goals of the obstacle scene (dm_control's Task side): what the balls' final positions should be.

:class:`BinGoal` (the fraction of balls whose centre lies in a bin ``[target_x - width/2, target_x +
width/2]`` on the floor) and :class:`SideGoal` (the fraction in the outer fifth of the floor on one
side). Each has a smooth, differentiable loss written with :mod:`gndesign.objectives` and an exact
hard score. (Not to be confused with the control tasks of :mod:`envs.tasks`: a goal scores a design
by where the particles end up, nothing is controlled over time.)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from envs.obstacle.scene import SceneConfig
from gndesign.errors import ConfigError
from gndesign.objectives import Affine, IntervalDistance, Objective, SoftInside

# Bin centres (x, metres) of the default scene's benchmark: away from where the balls land without an
# obstacle or with the default design (below the source, x in [-1, 1]: the default scores 0 on each),
# reachable by throwing the stream right (CEM on MuJoCo, 96 rollouts, finds designs scoring 0.83-0.96).
# The bin against the right wall (2.4, like the side goal) is harder: about 0.7.
BENCHMARK_TARGETS = (1.2, 1.5, 1.8, 2.0, 2.2)


def particle_quantities(positions: torch.Tensor) -> dict[str, torch.Tensor]:
    """Named quantities of final positions ``[B, N, 2]``: ``x`` and ``z``, each ``[B, N]``, and
    ``positions`` itself (the name test-time constraints, :mod:`gndesign.constraints`, act on: a
    constraint bound to the scene is a design penalty on these quantities)."""
    if positions.ndim != 3 or positions.shape[-1] != 2:
        raise ConfigError(f"particle positions must be [B, N, 2], got {tuple(positions.shape)}")
    return {"x": positions[..., 0], "z": positions[..., 1], "positions": positions}


class DesignGoal:
    """A goal for the particles' final positions: a differentiable ``loss`` and an exact ``score``.

    Attributes:
        objective: the loss as an objective over :func:`particle_quantities` (lower is better).
        region: ``(lo, hi)`` the x-interval the score counts.
    """

    name: str
    objective: Objective
    region: tuple[float, float]

    def loss(self, positions: torch.Tensor) -> torch.Tensor:
        """``[B]`` smooth loss of final positions ``[B, N, 2]`` (torch, differentiable)."""
        return self.objective(particle_quantities(positions))

    def objective_at(self, temperature: float = 1.0) -> Objective:
        """The loss with its soft edges ``temperature`` times as wide (1: :attr:`objective`)."""
        return self.objective

    def frames_loss(self, frames: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """``[B]`` smooth loss averaged over frames ``[B, F, N, 2]`` (e.g. a rollout's last ``F``),
        with :meth:`objective_at` ``temperature`` (annealed towards 1 by the design problem)."""
        if frames.ndim != 4 or frames.shape[-1] != 2:
            raise ConfigError(f"frames must be [B, F, N, 2], got {tuple(frames.shape)}")
        B, F = frames.shape[:2]
        q = particle_quantities(frames.reshape(B * F, *frames.shape[2:]))
        return self.objective_at(temperature)(q).reshape(B, F).mean(1)

    def score(self, positions: np.ndarray | torch.Tensor) -> np.ndarray:
        """``[B]`` exact fraction of balls whose centre lies in :attr:`region` (``[B, N, 2]`` or ``[N, 2]``)."""
        p = positions.detach().cpu().numpy() if isinstance(positions, torch.Tensor) else np.asarray(positions)
        if p.shape[-1] != 2 or p.ndim not in (2, 3):
            raise ConfigError(f"particle positions must be [B, N, 2] or [N, 2], got {p.shape}")
        x = p[..., 0]
        lo, hi = self.region
        return ((x >= lo) & (x <= hi)).mean(-1)

    def to_dict(self) -> dict[str, Any]:
        """The goal as plain data; its ``task`` key is the name ``gndesign design --task`` takes (and
        design.json records), a user-facing spelling kept as it was."""
        raise NotImplementedError


class BinGoal(DesignGoal):
    """Put the balls into the bin ``[target_x - width/2, target_x + width/2]`` on the floor.

    Loss: the soft fraction of balls outside the bin (sigmoid margins of ``sharpness``, default one
    ball radius) plus ``distance_weight`` times the mean distance of the balls to the bin divided by
    the floor width (so balls far away still pull the design). Score: the exact fraction inside.
    """

    name = "bin"

    def __init__(self, cfg: SceneConfig, target_x: float, width: float | None = None,
                 sharpness: float | None = None, distance_weight: float = 1.0):
        cfg.validate()
        width = cfg.width / 5 if width is None else float(width)
        if not (0 < width <= cfg.width / 5 + 1e-12):
            raise ConfigError(f"the bin width must be in (0, {cfg.width / 5:g}] (a fifth of the floor), got {width}")
        target_x = float(target_x)
        if not math.isfinite(target_x):
            raise ConfigError(f"the bin's centre target_x must be a finite number of metres, got {target_x}")
        lo, hi = target_x - width / 2, target_x + width / 2
        if not (cfg.x_min - 1e-12 <= lo and hi <= cfg.x_max + 1e-12):
            raise ConfigError(f"the target bin [{lo:g}, {hi:g}] is outside the floor [{cfg.x_min:g}, {cfg.x_max:g}]; "
                              f"choose target_x in [{cfg.x_min + width / 2:g}, {cfg.x_max - width / 2:g}]")
        self.cfg, self.target_x, self.width = cfg, target_x, width
        self.sharpness = cfg.particle_radius if sharpness is None else float(sharpness)
        self.distance_weight = float(distance_weight)
        self.region = (lo, hi)
        self.objective = self.objective_at(1.0)

    def objective_at(self, temperature: float = 1.0) -> Objective:
        if not temperature > 0:
            raise ConfigError(f"the loss temperature must be positive, got {temperature}")
        lo, hi = self.region
        return (SoftInside("x", (lo, hi), sharpness=self.sharpness * temperature, offset=1.0, scale=-1.0)
                + IntervalDistance("x", (lo, hi), weight=self.distance_weight / self.cfg.width))

    def to_dict(self) -> dict[str, Any]:
        return {"task": "bin", "target_x": self.target_x, "width": self.width, "sharpness": self.sharpness,
                "distance_weight": self.distance_weight}


class SideGoal(DesignGoal):
    """Push the balls as far as possible to one side (``right``: towards ``x_max``).

    Loss: the balls' mean distance from that wall divided by the floor width (in [0, 1]), which
    keeps pulling every ball all the way. Score: the exact fraction of balls in the outer fifth of
    the floor on that side.
    """

    name = "side"

    def __init__(self, cfg: SceneConfig, side: str = "right"):
        cfg.validate()
        if side not in ("left", "right"):
            raise ConfigError(f"side must be 'left' or 'right', got {side!r}")
        self.cfg, self.side = cfg, side
        w = cfg.width
        if side == "right":
            self.region = (cfg.x_max - w / 5, cfg.x_max)
            self.objective = Affine("x", offset=cfg.x_max / w, scale=-1.0 / w)
        else:
            self.region = (cfg.x_min, cfg.x_min + w / 5)
            self.objective = Affine("x", offset=-cfg.x_min / w, scale=1.0 / w)

    def to_dict(self) -> dict[str, Any]:
        return {"task": "side", "side": self.side}


GOALS = {"bin": BinGoal, "side": SideGoal}


def get_design_goal(name: str, cfg: SceneConfig | None = None, **kwargs) -> DesignGoal:
    """``get_design_goal("bin", cfg, target_x=1.5)`` or ``get_design_goal("side", cfg, side="left")``."""
    if name not in GOALS:
        raise ConfigError(f"unknown obstacle task {name!r}; choose one of {', '.join(GOALS)}")
    try:
        return GOALS[name](cfg or SceneConfig(), **kwargs)
    except TypeError as e:
        raise ConfigError(f"bad arguments for the {name} task {kwargs}: {e}") from None
