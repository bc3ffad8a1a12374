"""The obstacle-design particle scene (the "physics" side): its configuration, geometry and checks.

A planar (x-z) MuJoCo scene. ``N`` balls start at rest in a source region, fall under gravity onto
an obstacle, bounce and settle on the floor between two walls. Each ball has two slide joints
(world x and z) and no rotation, so its state is its centre ``(x, z)``. The obstacle is a
kinematic chain of ``K`` rigid capsules hanging from a fixed anchor; its design is the ``K`` joint
angles: the first segment's angle to the horizontal (counter-clockwise, radians), then each
segment's angle relative to the previous one. :func:`design_fk` gives the chain's vertices
differentiably in torch; :func:`design_to_mjcf` places the capsules exactly there.

Every design inside the joint ranges is a valid scene: :meth:`SceneConfig.validate` bounds the
region the chain can sweep (interval bounds on each segment's absolute angle) and refuses
configurations in which some design would cut the floor or a wall or reach into the source region.

The rest of the package: :mod:`envs.obstacle.simulation` (MuJoCo rollouts, datasets),
:mod:`envs.obstacle.goals` (what a design should achieve) and :mod:`envs.obstacle.problem` (a
design problem: scene, simulator and goal together).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import mujoco
import numpy as np
import torch

from envs.obstacle.geometry import min_cos, min_sin, segment_box_distance
from gndesign.errors import ConfigError, GndesignError
from gndesign.io import read_yaml_mapping
from gndesign.particles import chain_intervals, chain_points

# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SceneConfig:
    """Everything that defines the scene (lengths in metres, angles in radians, times in seconds).

    Why these values (all measured on the default scene, see the closing note of issue 5):

    * Scale. What a learned simulator sees is ``g dt^2 / r`` (here 0.02 radii per frame^2): balls
      of radius 0.05 released at most 3 m up move over 1.05 radii per frame in only 5% of the
      particle-frames (at most 1.5, in free fall), so proximity edges of a few radii resolve
      every collision; 150 frames of 0.01 s are enough to fall, be redirected and settle.
    * Capacity. 100 balls cover about 1 m^2; a bin of a fifth of the 6 m floor (1.2 m) holds 80
      of them only as a pile, so balls and floor are frictional (0.8, no rotation: they stop and
      stack) while the obstacle is slippery (0.05, through geom priority), a chute that throws the
      stream sideways.
    * Authority. The anchor sits just left of the source, so the chain (4 x 0.45 m) can run under
      the whole stream and throw it right, 1-2.5 m from where it would land; hanging straight down
      (the default design) it leaves the stream alone.
    * Every design in the joint ranges keeps the chain above the floor and between the walls
      (checked by :meth:`validate` with interval bounds). Some (about 12% of uniform draws) curl
      up into the source region; :meth:`check_design` refuses those, :meth:`design_clearance`
      measures it, :func:`envs.obstacle.simulation.sample_design` draws only clear ones.
    * MuJoCo: 2 ms steps, 5 per frame, stiff critically damped contacts (``solref`` 5 ms): no
      bounce; resting balls overlap by under 0.2% of a diameter (up to about 15% in hard
      impacts); about 0.15 s per 100-ball episode on one core.
    """

    n_particles: int = 100
    particle_radius: float = 0.05
    # Inner faces of the walls and the floor surface.
    x_min: float = -3.0
    x_max: float = 3.0
    floor: float = 0.0
    wall_height: float = 4.0
    # Source region (ball centres): a box above the obstacle; balls start at rest on a jittered grid.
    source_x: tuple[float, float] = (-0.55, 0.55)
    source_z: tuple[float, float] = (2.0, 3.0)
    grid_spacing: float = 2.2  # grid pitch in particle radii (>= 2 keeps balls apart)
    # The obstacle: a chain of capsules from the anchor ("chain"), or as many free bars ("bars").
    obstacle: str = "chain"
    segments: int = 4
    anchor: tuple[float, float] = (-0.65, 1.9)
    segment_length: float = 0.45
    obstacle_radius: float = 0.04
    first_angle_range: tuple[float, float] = (-math.pi, 0.0)
    joint_range: tuple[float, float] = (-math.pi / 2, math.pi / 2)
    # Physics.
    timestep: float = 0.002
    substeps: int = 5
    frames: int = 150
    gravity: tuple[float, float] = (0.0, -9.81)
    friction: float = 0.8  # balls, floor and walls
    obstacle_friction: float = 0.05  # ball-obstacle contacts (the obstacle's geoms have priority)
    solref: tuple[float, float] = (0.005, 1.0)
    density: float = 1000.0

    def __post_init__(self):
        for name in ("source_x", "source_z", "anchor", "first_angle_range", "joint_range", "gravity", "solref"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
                raise ConfigError(f"scene {name} must be a pair of numbers, got {value!r}")
            setattr(self, name, (float(value[0]), float(value[1])))

    # ------------------------------------------------------------------ derived
    @property
    def dt(self) -> float:
        """The frame period: ``timestep * substeps``."""
        return self.timestep * self.substeps

    @property
    def width(self) -> float:
        return self.x_max - self.x_min

    @property
    def design_dim(self) -> int:
        """Design coordinates: ``K`` joint angles (chain) or ``3 K`` (bars: centre x, z, angle each)."""
        return self.segments * (3 if self.obstacle == "bars" else 1)

    @property
    def total_length(self) -> float:
        return self.segments * self.segment_length

    def joint_ranges(self) -> np.ndarray:
        """``[D, 2]`` lower and upper bound of each design coordinate (:attr:`design_dim` ``D``).

        Chain: the first segment's angle, then the relative joint angles. Bars: per bar its centre
        ``x`` (the bar clear of the walls at any angle), centre ``z`` (clear of the floor, at most
        the anchor's height) and angle (``first_angle_range``)."""
        if self.obstacle == "bars":
            h = self.segment_length / 2 + self.obstacle_radius + 0.02
            bar = [(self.x_min + h, self.x_max - h), (self.floor + h, self.anchor[1]), self.first_angle_range]
            return np.array(bar * self.segments, dtype=np.float64)
        return np.array([self.first_angle_range] + [self.joint_range] * (self.segments - 1), dtype=np.float64)

    def default_design(self) -> np.ndarray:
        """``[K]`` the default obstacle: the chain hanging straight down from the anchor.

        The anchor sits left of the source region, so a hanging chain barely touches the stream:
        the balls land below the source, as without an obstacle, away from
        :data:`envs.obstacle.goals.BENCHMARK_TARGETS`.
        """
        angle = float(np.clip(-math.pi / 2, *self.first_angle_range))
        if self.obstacle == "bars":  # the hanging chain cut into its segments
            z = self.anchor[1] - self.segment_length * (np.arange(self.segments) + 0.5)
            return np.stack([np.full(self.segments, self.anchor[0]), z, np.full(self.segments, angle)], 1).reshape(-1)
        design = np.zeros(self.segments)
        design[0] = angle
        return design

    def segment_angle_bounds(self) -> np.ndarray:
        """``[K, 2]`` interval bounds on each segment's absolute angle over all designs in range."""
        r = self.joint_ranges()
        return np.cumsum(r, axis=0)

    def reach_bounds(self) -> tuple[float, float, float, float]:
        """``(x_lo, x_hi, z_lo, z_hi)``: a box holding the chain's centre line for every design."""
        x_lo = x_hi = self.anchor[0]
        z_lo = z_hi = self.anchor[1]
        for lo, hi in self.segment_angle_bounds():
            x_lo += self.segment_length * min_cos(lo, hi)
            x_hi += self.segment_length * -min_cos(lo + math.pi, hi + math.pi)
            z_lo += self.segment_length * min_sin(lo, hi)
            z_hi += self.segment_length * -min_sin(lo + math.pi, hi + math.pi)
        # The anchor is on the chain too (the bounds above start from it but can move off it).
        ax, az = self.anchor
        return min(x_lo, ax), max(x_hi, ax), min(z_lo, az), max(z_hi, az)

    # ------------------------------------------------------------------ checks
    def validate(self) -> SceneConfig:
        """Refuse impossible scenes with a message saying what is wrong and how to fix it."""
        if int(self.n_particles) != self.n_particles or self.n_particles < 1:
            raise ConfigError(f"the scene needs at least one particle (n_particles={self.n_particles}); "
                              "set n_particles >= 1")
        if int(self.segments) != self.segments or self.segments < 1:
            raise ConfigError(f"the obstacle needs at least one segment (segments={self.segments}); set segments >= 1")
        if self.segments > MAX_SEGMENTS:
            raise ConfigError(f"segments={self.segments} is more than {MAX_SEGMENTS}: each would be shorter than "
                              "the balls resolve; use fewer segments")
        if self.obstacle not in OBSTACLES:
            raise ConfigError(f"unknown obstacle {self.obstacle!r}; choose one of {', '.join(OBSTACLES)}")
        positive = ("particle_radius", "segment_length", "obstacle_radius", "timestep", "wall_height", "density")
        for name in positive:
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"scene {name} must be a positive number, got {v}")
        if int(self.substeps) != self.substeps or self.substeps < 1:
            raise ConfigError(f"scene substeps must be a positive integer, got {self.substeps}")
        if int(self.frames) != self.frames or self.frames < 1:
            raise ConfigError(f"scene frames must be a positive integer, got {self.frames}")
        for name in ("friction", "obstacle_friction"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"scene {name} must be non-negative, got {getattr(self, name)}")
        if not (self.solref[0] >= 2 * self.timestep and self.solref[1] > 0):
            raise ConfigError(f"scene solref {self.solref} must have a time constant >= 2 timesteps "
                              f"({2 * self.timestep}) and a positive damping ratio; raise solref[0] or lower timestep")
        if not self.x_max - self.x_min > 4 * self.particle_radius:
            raise ConfigError(f"the walls x_min={self.x_min}, x_max={self.x_max} leave no room for the balls; "
                              "set x_max - x_min to several ball diameters")
        if self.grid_spacing < 2.0:
            raise ConfigError(f"grid_spacing={self.grid_spacing} (in radii) < 2 lets balls overlap at the start")
        for name in ("first_angle_range", "joint_range"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ConfigError(f"scene {name} {getattr(self, name)} must satisfy lower <= upper")
        r = self.particle_radius
        (sx0, sx1), (sz0, sz1) = self.source_x, self.source_z
        if not (sx0 <= sx1 and sz0 <= sz1):
            raise ConfigError(f"source region x={self.source_x}, z={self.source_z} must satisfy lower <= upper")
        if sx0 - r < self.x_min or sx1 + r > self.x_max:
            raise ConfigError(f"source region x={self.source_x} (balls of radius {r}) is outside the walls "
                              f"[{self.x_min}, {self.x_max}]; move or narrow the source region")
        if sz0 - r < self.floor or sz1 + r > self.floor + self.wall_height:
            raise ConfigError(f"source region z={self.source_z} must lie above the floor ({self.floor}) and below the "
                              f"top of the walls ({self.floor + self.wall_height})")
        cells = len(_grid_cells(self))
        if cells < self.n_particles:
            raise ConfigError(f"the source region holds {cells} balls at grid_spacing={self.grid_spacing} radii but "
                              f"n_particles={self.n_particles}; enlarge source_x/source_z or use fewer particles")
        ax, az = self.anchor
        if not (self.x_min < ax < self.x_max and self.floor < az):
            raise ConfigError(f"obstacle anchor {self.anchor} must lie between the walls and above the floor")
        ro = self.obstacle_radius
        if self.obstacle == "bars":
            r_ = self.joint_ranges()[:3]
            if not (r_[:, 0] < r_[:, 1]).all():
                raise ConfigError(f"bars of length {self.segment_length:g} leave no room between the walls, floor "
                                  f"and anchor height {self.anchor[1]:g}; use more (shorter) bars or raise the anchor")
            if self.anchor[1] + self.segment_length / 2 + ro >= self.floor + self.wall_height:
                raise ConfigError("bars near the anchor's height would reach over the walls; lower the anchor")
        else:
            self._check_reach()
        if not self.design_clearance(self.default_design()) > 0:
            raise ConfigError("the default design reaches into the source region; raise source_z or move the anchor")
        return self

    def _check_reach(self) -> None:
        """Refuse chains some design in the joint ranges would push through the floor or a wall."""
        ro = self.obstacle_radius
        x_lo, x_hi, z_lo, z_hi = self.reach_bounds()
        if z_lo - ro <= self.floor:
            raise ConfigError(f"some designs in the joint ranges put obstacle segments through the floor (the chain "
                              f"reaches z={z_lo - ro:.3f} <= floor {self.floor}); raise the anchor, shorten "
                              f"segment_length or narrow the joint ranges")
        if x_lo - ro <= self.x_min or x_hi + ro >= self.x_max:
            raise ConfigError(f"some designs in the joint ranges put obstacle segments through a wall (the chain "
                              f"reaches x in [{x_lo - ro:.3f}, {x_hi + ro:.3f}], walls at {self.x_min}, {self.x_max}); "
                              "move the anchor, shorten segment_length or narrow the joint ranges")

    def check_design(self, design: np.ndarray | torch.Tensor) -> np.ndarray:
        """Return ``design`` as a float64 array ``[B, D]`` (or ``[D]``) or raise if it is outside the ranges."""
        d = design.detach().cpu().numpy() if isinstance(design, torch.Tensor) else np.asarray(design, dtype=np.float64)
        D = self.design_dim
        if d.shape[-1:] != (D,) or d.ndim not in (1, 2):
            what = f"of this scene is {self.segments} bars x (x, z, angle)" if self.obstacle == "bars" else (
                f"is {D} joint angles")
            raise ConfigError(f"a design {what} ([{D}] or [B, {D}]), got shape {d.shape}")
        if not np.all(np.isfinite(d)):
            raise ConfigError("design angles must be finite")
        r = self.joint_ranges()
        flat = d.reshape(-1, D)
        bad = (flat < r[:, 0] - 1e-9) | (flat > r[:, 1] + 1e-9)
        if bad.any():
            b, k = (int(i) for i in np.argwhere(bad)[0])
            what = f"coordinate {k} = {flat[b, k]:.4f} is outside its range" if self.obstacle == "bars" else (
                f"angle {k} = {flat[b, k]:.4f} rad is outside its joint range")
            raise ConfigError(f"design {what} [{r[k, 0]:.4f}, {r[k, 1]:.4f}]; clip or squash designs into the ranges")
        clear = self.design_clearance(flat)
        if not np.all(clear > 0):
            b = int(np.argmin(clear))
            raise ConfigError(f"design {np.round(flat[b], 4).tolist()} puts the obstacle into the source region "
                              f"(the balls would start inside it); keep the chain below z={self.source_z[0]:g}")
        return d

    def design_clearance(self, design: np.ndarray) -> np.ndarray:
        """``[B]`` (or scalar) gap between the obstacle's capsules and the balls of the source region
        (positive: clear). Designs with a non-positive gap are refused by :meth:`check_design`."""
        d = np.asarray(design, dtype=np.float64)
        seg = obstacle_segments(torch.as_tensor(d.reshape(-1, self.design_dim)), self).numpy()  # [B, S, 2, 2]
        a, b = seg[..., 0, :], seg[..., 1, :]
        lo = np.array([self.source_x[0], self.source_z[0]])
        hi = np.array([self.source_x[1], self.source_z[1]])
        dist = segment_box_distance(a, b, lo, hi).min(-1)
        out = dist - self.obstacle_radius - self.particle_radius
        return out.reshape(d.shape[:-1])

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON/YAML); includes the derived frame period ``dt``."""
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        d["dt"] = self.dt
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SceneConfig:
        """The validated scene described by ``d`` (e.g. a dataset's stored :meth:`to_dict`)."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"a scene description is a mapping, got {type(d).__name__}")
        d = dict(d)
        dt = d.pop("dt", None)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown scene keys {unknown}; known keys: {', '.join(sorted(names | {'dt'}))}")
        cfg = cls(**d)
        if dt is not None and abs(float(dt) - cfg.dt) > 1e-12:
            raise ConfigError(f"scene dt={dt} disagrees with timestep*substeps={cfg.dt}; "
                              "set only timestep and substeps")
        return cfg.validate()


# ----------------------------------------------------------------------------------------------
# Design -> geometry
# ----------------------------------------------------------------------------------------------


MAX_SEGMENTS = 256
OBSTACLES = ("chain", "bars")


def obstacle_segments(design: torch.Tensor, cfg: SceneConfig) -> torch.Tensor:
    """Differentiable forward kinematics of either obstacle: ``design [B, D]`` -> the capsules'
    end points ``[B, S, 2, 2]`` (segment ``s`` from ``[..., s, 0, :]`` to ``[..., s, 1, :]``, (x, z)).

    Chain: consecutive vertices of :func:`design_fk`. Bars: bar ``j`` has centre
    ``design[3j: 3j+2]`` and angle ``design[3j+2]``, length ``segment_length``."""
    if design.shape[-1] != cfg.design_dim:
        raise ConfigError(f"a design of this scene has {cfg.design_dim} coordinates, got shape {tuple(design.shape)}")
    if cfg.obstacle != "bars":
        v = design_fk(design, cfg)
        return torch.stack([v[..., :-1, :], v[..., 1:, :]], -2)
    bars = design.reshape(*design.shape[:-1], cfg.segments, 3)
    half = cfg.segment_length / 2 * torch.stack([torch.cos(bars[..., 2]), torch.sin(bars[..., 2])], -1)
    return torch.stack([bars[..., :2] - half, bars[..., :2] + half], -2)


def obstacle_points(design: torch.Tensor, cfg: SceneConfig, spacing: float) -> torch.Tensor:
    """``[B, P, 2]`` points along the obstacle, at most ``spacing`` apart (differentiable, a fixed linear
    map of :func:`obstacle_segments`; ``P`` depends on the scene, not the design).

    Chain: evenly spaced in arc length along the whole chain (vertices are not necessarily among
    them), so the point density does not depend on ``K``; bars: evenly along each bar, ends
    included. A learned particle model sees the obstacle as such points (its training spacing)."""
    seg = obstacle_segments(design, cfg)
    if cfg.obstacle == "bars":
        n = chain_intervals(cfg.segment_length, spacing)
        t = torch.linspace(0, 1, n + 1, dtype=seg.dtype, device=seg.device)[:, None]
        pts = seg[..., None, 0, :] + (seg[..., None, 1, :] - seg[..., None, 0, :]) * t  # [B, S, n+1, 2]
        return pts.flatten(-3, -2)
    vertices = torch.cat([seg[..., 0, :], seg[..., -1:, 1, :]], -2)
    return chain_points(vertices, chain_intervals(cfg.total_length, spacing))


def design_fk(design: torch.Tensor, cfg: SceneConfig) -> torch.Tensor:
    """Differentiable forward kinematics: ``design [B, K]`` -> chain vertices ``[B, K+1, 2]`` (x, z).

    Vertex 0 is the anchor, vertex ``k`` the end of segment ``k``. Angles are not checked against
    the joint ranges here (optimizers call this inside their loop); see :meth:`SceneConfig.check_design`.
    """
    if cfg.obstacle == "bars":
        raise ConfigError("a scene of free bars has no chain vertices; use obstacle_segments")
    if design.shape[-1] != cfg.segments:
        raise ConfigError(f"a design is {cfg.segments} joint angles, got shape {tuple(design.shape)}")
    angles = torch.cumsum(design, dim=-1)
    steps = cfg.segment_length * torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)
    anchor = torch.tensor(cfg.anchor, dtype=design.dtype, device=design.device)
    anchor = anchor.expand(*design.shape[:-1], 1, 2)
    return torch.cat([anchor, anchor + torch.cumsum(steps, dim=-2)], dim=-2)


def source_clearance(design: torch.Tensor, cfg: SceneConfig, points_per_segment: int = 64) -> torch.Tensor:
    """Differentiable ``[B]`` gap between the obstacle and the source region's balls (positive: clear).

    A penalty for optimizers (e.g. ``relu(margin - clearance)``), so designs do not curl up into
    the source; sampled along each segment, so it may exceed :meth:`SceneConfig.design_clearance`
    (the exact value that :meth:`SceneConfig.check_design` uses) by up to ``L / (2 points)``.
    """
    seg = obstacle_segments(design, cfg)  # [B, S, 2, 2]
    t = torch.linspace(0, 1, points_per_segment + 1, dtype=seg.dtype, device=seg.device)[:, None]
    pts = seg[..., None, 0, :] + (seg[..., None, 1, :] - seg[..., None, 0, :]) * t  # [B, S, P+1, 2]
    lo = torch.tensor([cfg.source_x[0], cfg.source_z[0]], dtype=seg.dtype, device=seg.device)
    hi = torch.tensor([cfg.source_x[1], cfg.source_z[1]], dtype=seg.dtype, device=seg.device)
    outside = torch.clamp(torch.maximum(lo - pts, pts - hi), min=0.0)
    # Outside the box: Euclidean distance; inside: minus the depth (keeps a gradient pointing out).
    depth = torch.minimum(pts - lo, hi - pts).min(-1).values
    dist = torch.where(outside.amax(-1) > 0, torch.sqrt((outside**2).sum(-1) + 1e-30), -depth)
    return dist.flatten(-2).min(-1).values - cfg.obstacle_radius - cfg.particle_radius


def _fk_numpy(cfg: SceneConfig, design: np.ndarray) -> np.ndarray:
    return obstacle_segments(torch.as_tensor(design, dtype=torch.float64)[None], cfg)[0].numpy()


def design_to_mjcf(cfg: SceneConfig, design: np.ndarray | torch.Tensor | None = None) -> str:
    """The scene's MJCF for one ``design [D]`` (the default design if ``None``).

    The obstacle's capsules are static world geoms placed by ``fromto`` at the end points of
    :func:`obstacle_segments` (written with full float precision); ball ``i`` is body ``ball{i}`` with slide
    joints ``ball{i}_x`` and ``ball{i}_z``, so ``qpos`` is ``[x0, z0, x1, z1, ...]``.
    """
    cfg.validate()
    design = cfg.default_design() if design is None else cfg.check_design(design)
    if design.ndim != 1:
        raise ConfigError(f"design_to_mjcf takes one design [D], got shape {design.shape}")
    v = _fk_numpy(cfg, design)
    r, ro = cfg.particle_radius, cfg.obstacle_radius
    wall_t = max(4 * r, 0.1)  # thick walls and floor: fast balls cannot tunnel through
    zc = cfg.floor + cfg.wall_height / 2
    xc = (cfg.x_min + cfg.x_max) / 2
    half_w = cfg.width / 2 + 2 * wall_t
    f = repr
    lines = [
        '<mujoco model="obstacle_scene">',
        f'  <option timestep="{f(cfg.timestep)}" gravity="{f(cfg.gravity[0])} 0 {f(cfg.gravity[1])}" '
        'integrator="implicitfast" cone="pyramidal"/>',
        "  <size memory=\"16M\"/>",
        "  <default>",
        f'    <geom friction="{f(cfg.friction)} 0.005 0.0001" solref="{f(cfg.solref[0])} {f(cfg.solref[1])}" '
        'condim="3" rgba="0.6 0.6 0.6 1"/>',
        '    <joint limited="false" damping="0" armature="0"/>',
        "  </default>",
        "  <worldbody>",
        f'    <geom name="floor" type="box" pos="{f(xc)} 0 {f(cfg.floor - wall_t)}" size="{f(half_w)} 1 {f(wall_t)}"/>',
        f'    <geom name="wall_left" type="box" pos="{f(cfg.x_min - wall_t)} 0 {f(zc)}" '
        f'size="{f(wall_t)} 1 {f(cfg.wall_height / 2)}"/>',
        f'    <geom name="wall_right" type="box" pos="{f(cfg.x_max + wall_t)} 0 {f(zc)}" '
        f'size="{f(wall_t)} 1 {f(cfg.wall_height / 2)}"/>',
    ]
    for k in range(cfg.segments):
        (x0, z0), (x1, z1) = v[k]
        lines.append(f'    <geom name="segment{k}" type="capsule" size="{f(ro)}" '
                     f'fromto="{f(float(x0))} 0 {f(float(z0))} {f(float(x1))} 0 {f(float(z1))}" priority="1" '
                     f'friction="{f(cfg.obstacle_friction)} 0.005 0.0001" rgba="0.8 0.3 0.2 1"/>')
    for i in range(cfg.n_particles):
        lines += [
            f'    <body name="ball{i}">',
            f'      <joint name="ball{i}_x" type="slide" axis="1 0 0"/>',
            f'      <joint name="ball{i}_z" type="slide" axis="0 0 1"/>',
            f'      <geom type="sphere" size="{f(r)}" density="{f(cfg.density)}" rgba="0.2 0.4 0.8 1"/>',
            "    </body>",
        ]
    lines += ["  </worldbody>", "</mujoco>", ""]
    return "\n".join(lines)


def make_model(cfg: SceneConfig, design: np.ndarray | torch.Tensor | None = None) -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_string(design_to_mjcf(cfg, design))


# ----------------------------------------------------------------------------------------------
# Initial layouts and scene files
# ----------------------------------------------------------------------------------------------


def _grid_cells(cfg: SceneConfig) -> np.ndarray:
    """``[C, 2]`` centres of the source grid cells (pitch ``grid_spacing`` radii)."""
    pitch = cfg.grid_spacing * cfg.particle_radius
    (x0, x1), (z0, z1) = cfg.source_x, cfg.source_z
    nx = int(math.floor((x1 - x0) / pitch + 1e-9)) + 1
    nz = int(math.floor((z1 - z0) / pitch + 1e-9)) + 1
    xs = x0 + (x1 - x0 - (nx - 1) * pitch) / 2 + pitch * np.arange(nx)
    zs = z0 + (z1 - z0 - (nz - 1) * pitch) / 2 + pitch * np.arange(nz)
    return np.stack(np.meshgrid(xs, zs, indexing="ij"), -1).reshape(-1, 2)


def initial_positions(cfg: SceneConfig, seed: int | np.random.Generator) -> np.ndarray:
    """``[N, 2]`` ball centres at rest in the source region: a random subset of a grid with pitch
    ``grid_spacing`` radii, each jittered so that balls stay at least ``0.1 r`` apart."""
    cfg.validate()
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    cells = _grid_cells(cfg)
    chosen = cells[np.sort(rng.choice(len(cells), size=cfg.n_particles, replace=False))]
    slack = max(0.0, (cfg.grid_spacing - 2.1) / 2) * cfg.particle_radius
    jitter = rng.uniform(-slack, slack, size=chosen.shape)
    pos = chosen + jitter
    (x0, x1), (z0, z1) = cfg.source_x, cfg.source_z
    return np.clip(pos, [x0, z0], [x1, z1])


def load_scene_file(path: str | None, base: dict | None = None, **overrides) -> SceneConfig:
    """A validated ``SceneConfig``: ``base`` (e.g. a model's training scene) or the defaults, updated
    with the keys of a JSON/YAML file, then with the ``overrides`` that are not ``None``.

    A ``segments`` override keeps the obstacle's total length (``segment_length`` scaled by the old
    over the new ``K``) unless a ``segment_length`` is given too (override or file)."""
    values = dict(base or {})
    from_file = read_yaml_mapping(path, "scene file") if path else {}
    values.update(from_file)
    given = {k: v for k, v in overrides.items() if v is not None}
    # K is resolution, not reach: a new number of segments keeps the obstacle's total length.
    K = given.get("segments")
    if K is not None and "segment_length" not in given and "segment_length" not in from_file:
        if isinstance(K, bool) or not isinstance(K, int) or not 1 <= K <= MAX_SEGMENTS:
            raise ConfigError(f"segments must be an integer in [1, {MAX_SEGMENTS}], got {K!r}")
        old = SceneConfig()
        total = float(values.get("segments", old.segments)) * float(values.get("segment_length", old.segment_length))
        given["segment_length"] = total / K
    values.update(given)
    values.pop("dt", None)  # derived from timestep and substeps
    try:
        return SceneConfig.from_dict(values)
    except (TypeError, ValueError) as e:
        where = f"scene file {path}" if path else "the scene"
        raise GndesignError(f"{where} has a value of the wrong type ({e}); scene values are numbers (see the "
                            "defaults in envs/obstacle/scene.py)") from None
