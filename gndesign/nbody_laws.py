"""Pairwise force laws of the N-body systems (Cranmer et al. 2020) and their integrator.

One home for the physics both the ground-truth simulator (:mod:`envs.nbody`) and the distillation
(:mod:`gndesign.distill`, which needs the true pair forces) use. Every law is a central pair force
on particle ``i`` from particle ``j`` as a function of the displacement ``d = x_i - x_j`` [D], the
distance ``r = |d|``, the relative velocity ``w = v_i - v_j``, the masses and the charges:

============  =====================================================  =========================
law           force on i from j                                      potential of the pair
============  =====================================================  =========================
``spring``    ``-2 (r - 1) d / r``                                   ``(r - 1)^2``
``r1``        ``-m_i m_j d / r^2``                                   ``m_i m_j log r``
``r2``        ``-m_i m_j d / r^3``                                   ``-m_i m_j / r``
``charge``    ``q_i q_j d / r^3``                                    ``q_i q_j / r``
``damped``    ``-2 (r - 1) d / r - b (w . d) d / r^2`` (b=DAMPING)   spring's (dissipative)
``disc``      ``-2 (r - 1) d / r`` for ``r > DISC_RADIUS``, else 0  (discontinuous)
============  =====================================================  =========================

Arrays are numpy or torch (the same code): positions ``x [..., N, D]``, velocities ``v [..., N,
D]``, masses and charges ``[..., N]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

LAWS = ("spring", "r1", "r2", "charge", "damped", "disc")
CONSERVATIVE = ("spring", "r1", "r2", "charge")
DAMPING = 0.5  # b of the damped springs' dashpot along the bond
DISC_RADIUS = 2.0  # the discontinuous law's spring acts beyond this distance only

#: The true force on i from j as sympy text (symbols: dx, dy, dz, r, wx.., m1, m2, q1, q2), per component.
TRUE_LAW_TEXT = {
    "spring": "-2*(r - 1)*{d}/r",
    "r1": "-m1*m2*{d}/r**2",
    "r2": "-m1*m2*{d}/r**3",
    "charge": "q1*q2*{d}/r**3",
    "damped": "-2*(r - 1)*{d}/r - " + f"{DAMPING}" + "*(wdotd)*{d}/r**2",
    "disc": "-2*(r - 1)*{d}/r*Heaviside(r - " + f"{DISC_RADIUS}" + ")",
}


def _lib(a: Any):
    import torch

    return torch if isinstance(a, torch.Tensor) else np


def pair_inputs(x, v, mass, charge) -> dict[str, Any]:
    """The pair quantities of every ordered pair ``(i, j)``: ``d [..., N, N, D]`` (``x_i - x_j``),
    ``r [..., N, N]`` (1 on the diagonal, where nothing acts), ``w [..., N, N, D]`` (``v_i - v_j``),
    ``m1, m2, q1, q2 [..., N, N]`` (receiver i, sender j) and the off-diagonal mask ``[N, N]``."""
    lib = _lib(x)
    n = x.shape[-2]
    d = x[..., :, None, :] - x[..., None, :, :]
    w = v[..., :, None, :] - v[..., None, :, :]
    eye = lib.eye(n, dtype=bool) if lib is np else lib.eye(n, dtype=lib.bool, device=x.device)
    r2 = (d * d).sum(-1)
    r = lib.sqrt(lib.where(eye, lib.ones_like(r2), r2))
    m1, m2 = mass[..., :, None] + 0 * r, mass[..., None, :] + 0 * r
    q1, q2 = charge[..., :, None] + 0 * r, charge[..., None, :] + 0 * r
    return {"d": d, "r": r, "w": w, "m1": m1, "m2": m2, "q1": q1, "q2": q2, "mask": ~eye}


def law_forces(law: str, p: dict[str, Any], damping: float = DAMPING) -> Any:
    """The force on i from j ``[..., N, N, D]`` of ``law`` given :func:`pair_inputs` ``p`` (zero on
    the diagonal)."""
    d, r = p["d"], p["r"]
    rr = r[..., None]
    if law in ("spring", "damped", "disc"):
        f = -2.0 * (rr - 1.0) * d / rr
        if law == "damped":
            f = f - damping * (p["w"] * d).sum(-1)[..., None] * d / rr**2
        if law == "disc":
            f = f * (rr > DISC_RADIUS)
    elif law == "r1":
        f = -(p["m1"] * p["m2"])[..., None] * d / rr**2
    elif law == "r2":
        f = -(p["m1"] * p["m2"])[..., None] * d / rr**3
    elif law == "charge":
        f = (p["q1"] * p["q2"])[..., None] * d / rr**3
    else:
        raise ValueError(f"unknown force law {law!r}; known: {', '.join(LAWS)}")
    return f * p["mask"][..., None]


def accelerations(law: str, x, v, mass, charge, damping: float = DAMPING):
    """``a_i = sum_j F_ij / m_i`` ``[..., N, D]``."""
    f = law_forces(law, pair_inputs(x, v, mass, charge), damping)
    return f.sum(-2) / mass[..., None]


def energy(law: str, x, v, mass, charge) -> Any:
    """Kinetic plus pair potential energy ``[...]`` of a conservative law (and of the springs of
    ``damped``, which only loses energy)."""
    p = pair_inputs(x, v, mass, charge)
    r, mask = p["r"], p["mask"]
    lib = _lib(x)
    if law in ("spring", "damped"):
        u = (r - 1.0) ** 2
    elif law == "r1":
        u = p["m1"] * p["m2"] * lib.log(r)
    elif law == "r2":
        u = -p["m1"] * p["m2"] / r
    elif law == "charge":
        u = p["q1"] * p["q2"] / r
    else:
        raise ValueError(f"law {law!r} has no potential energy (conservative laws: {', '.join(CONSERVATIVE)})")
    potential = 0.5 * (u * mask).sum((-1, -2))
    kinetic = 0.5 * (mass * (v * v).sum(-1)).sum(-1)
    return kinetic + potential


def verlet(accel: Callable[[Any, Any], Any], x, v, dt: float, steps: int, substeps: int = 1):
    """Velocity Verlet: ``steps`` frames of ``dt``, each ``substeps`` steps of ``h = dt / substeps``:
    ``v' = v + h/2 a(x, v)``, ``x += h v'``, ``v = v' + h/2 a(x, v' + h/2 a(x, v'))`` (a
    velocity-dependent force sees the half-step velocity advanced by its previous acceleration,
    exact Verlet for forces of positions only). Returns positions, velocities and accelerations at
    frames ``0..steps`` ``[steps + 1, ..., N, D]`` (numpy or torch, as the inputs)."""
    lib = _lib(x)
    h = dt / substeps
    a = accel(x, v)
    xs, vs, as_ = [x], [v], [a]
    for _ in range(steps):
        for _ in range(substeps):
            vh = v + 0.5 * h * a
            x = x + h * vh
            a = accel(x, vh + 0.5 * h * a)
            v = vh + 0.5 * h * a
        xs.append(x)
        vs.append(v)
        as_.append(accel(x, v))
    return lib.stack(xs), lib.stack(vs), lib.stack(as_)
