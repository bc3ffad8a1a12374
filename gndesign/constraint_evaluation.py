"""Measuring how rollouts meet constraints: per-frame violation arrays and the disturbance before contact.

Whatever model produced a rollout (a learned simulator, MuJoCo), these functions judge it with bound
constraint terms (:func:`gndesign.constraints.constraint_terms` of
:func:`gndesign.constraints.bind_constraints`): the largest violation per rollout, frame (and
particle), from which a benchmark computes penetration depths, how many rollouts reach a
constraint (:func:`grown_terms`: violated with a margin grown by a tolerance) and how much the
constraint moved things before they came near it (:func:`mean_before_first`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor

from gndesign.constraint_sets import constraint_terms
from gndesign.kinematics import forward_kinematics
from gndesign.tree import KinematicTree


def grown_terms(bound, extra: float) -> list:
    """The terms of the bound constraints ``bound`` with their margin grown by ``extra`` (same
    units as the violation): violated when within ``extra`` of violating ``bound`` (near contact)."""
    return [dataclasses.replace(c, margin=c.m + extra) for c in constraint_terms(bound)]


@torch.no_grad()
def particle_violation(terms: Sequence, positions: Tensor) -> Tensor:
    """``[B, T+1, N]`` float64: the largest violation over ``terms`` of each particle of the
    rollouts ``positions [B, T+1, N, 2]`` at each frame (pins refer to frame 0)."""
    frames = range(positions.shape[1])
    return torch.stack([torch.stack([c.violation({"positions": positions[:, t], "positions_0": positions[:, 0]})
                                     for t in frames], 1) for c in terms]).amax(0).double()


@torch.no_grad()
def body_violation(terms: Sequence, tree: KinematicTree, qpos: Tensor) -> Tensor:
    """``[E, T+1]``: the largest violation over ``terms`` of the articulated rollouts
    ``qpos [E, T+1, nq]`` at each step, over all bodies (pins refer to step 0). Terms see
    ``qpos``, ``positions``/``xpos`` (body origins ``[E*(T+1), nbody, 3]``) and the same with ``_0``."""
    E, T1 = qpos.shape[:2]
    xpos = forward_kinematics(tree, qpos.reshape(E * T1, -1)).xpos
    x0 = forward_kinematics(tree, qpos[:, 0]).xpos.repeat_interleave(T1, 0)
    q = {"positions": xpos, "xpos": xpos, "qpos": qpos.reshape(E * T1, -1), "positions_0": x0, "xpos_0": x0,
         "qpos_0": qpos[:, 0].repeat_interleave(T1, 0)}
    return torch.stack([c.violation(q).reshape(E * T1, -1).amax(1) for c in terms]).amax(0).reshape(E, T1)


def mean_before_first(values: Tensor, events: Tensor) -> float:
    """The mean of ``values [B, T+1, ...]`` over frames ``1 <= t`` before the first frame at which
    ``events`` (bool, same shape) holds, independently per rollout and trailing index (all frames
    when it never holds); 0.0 when no frame qualifies. E.g. how far a constraint moved particles
    (``values``: distance to the unconstrained rollout) before they came near it (``events``)."""
    T1 = events.shape[1]
    first = torch.where(events.any(1), events.double().argmax(1),
                        torch.full_like(events[:, 0], T1, dtype=torch.long))
    frames = torch.arange(T1).reshape(1, T1, *[1] * (events.dim() - 2))
    before = (frames < first.unsqueeze(1)) & (frames >= 1)
    return float(values[before].mean()) if before.any() else 0.0
