"""Plain geometry helpers of the obstacle scene (no scene configuration): distances and interval
bounds used by :mod:`envs.obstacle.scene`, and the obstacle's capsules read back from a MuJoCo model."""

from __future__ import annotations

import math

import mujoco
import numpy as np


def segment_box_distance(a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Distance ``[...]`` between segments ``a -> b`` (``[..., 2]``) and the box ``[lo, hi]`` (0 if they meet)."""
    # The distance to a convex box is convex along the segment: minimize it by ternary search.
    t_lo = np.zeros(a.shape[:-1])
    t_hi = np.ones(a.shape[:-1])

    def dist(t):
        p = a + (b - a) * t[..., None]
        return np.linalg.norm(np.maximum(0.0, np.maximum(lo - p, p - hi)), axis=-1)

    for _ in range(60):
        m1 = t_lo + (t_hi - t_lo) / 3
        m2 = t_hi - (t_hi - t_lo) / 3
        left = dist(m1) <= dist(m2)
        t_hi = np.where(left, m2, t_hi)
        t_lo = np.where(left, t_lo, m1)
    return dist((t_lo + t_hi) / 2)


def min_cos(lo: float, hi: float) -> float:
    """``min cos(a)`` over ``a in [lo, hi]``."""
    # cos is minimal (-1) at odd multiples of pi.
    k = math.ceil((lo - math.pi) / (2 * math.pi))
    if math.pi + 2 * math.pi * k <= hi:
        return -1.0
    return min(math.cos(lo), math.cos(hi))


def min_sin(lo: float, hi: float) -> float:
    """``min sin(a)`` over ``a in [lo, hi]``."""
    return min_cos(lo - math.pi / 2, hi - math.pi / 2)


def mujoco_segments(model: mujoco.MjModel) -> np.ndarray:
    """``[S, 2, 2]`` end points (x, z) of the obstacle's capsules as MuJoCo holds them (``segment{k}``
    geoms, from their position, orientation and half-length): the ground truth :func:`obstacle_segments`
    must equal."""
    out = []
    for k in range(model.ngeom):
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, k) or ""
        if name.startswith("segment"):
            mat = np.empty(9)
            mujoco.mju_quat2Mat(mat, model.geom_quat[k])
            axis = mat.reshape(3, 3)[:, 2] * model.geom_size[k, 1]
            p = model.geom_pos[k]
            out.append([(p + axis)[[0, 2]], (p - axis)[[0, 2]]])  # fromto: the geom z axis points back
    return np.array(out).reshape(-1, 2, 2)
