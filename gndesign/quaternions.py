"""Quaternion algebra in torch, batched and differentiable: ``(w, x, y, z)`` as in MuJoCo.

Products and rotation matrices go through constant bilinear tables (two tensor ops per call, which
matters in per-step rollouts); the exponential and logarithm have finite values and gradients at
the identity.
"""

from __future__ import annotations

import torch

__all__ = ["axis_angle_quat", "quat_conj", "quat_exp", "quat_log", "quat_mul", "quat_normalize", "quat_rotate",
           "quat_to_mat"]

_SMALL = 1e-6


def _bilinear_table(name: str, like: torch.Tensor) -> torch.Tensor:
    """Constant tables ``[16, k]`` that turn the outer product ``q_a q_b`` of quaternions into the
    Hamilton product (``"mul"``, k=4) or a rotation matrix (``"mat"``, k=9): two tensor ops instead
    of thirty element-wise ones, which matters in per-step rollouts."""
    key = (name, like.dtype, like.device)
    if key not in _TABLES:
        t = torch.zeros(4, 4, 4 if name == "mul" else 9, dtype=torch.float64)
        if name == "mul":  # (a*b)_k = sum_ij T_ijk a_i b_j
            for i, j, k, sign in _HAMILTON:
                t[i, j, k] = sign
        else:  # R = (w^2 - |u|^2) I + 2 u u^T + 2 w [u]_x, valid for unit quaternions
            for r in range(3):
                t[0, 0, 4 * r] = 1.0
                for a in range(1, 4):
                    t[a, a, 4 * r] -= 1.0
                for c in range(3):
                    t[r + 1, c + 1, 3 * r + c] += 2.0
            for r, c, a, sign in ((0, 1, 3, -1), (0, 2, 2, 1), (1, 0, 3, 1), (1, 2, 1, -1), (2, 0, 2, -1),
                                  (2, 1, 1, 1)):
                t[0, a, 3 * r + c] += sign
                t[a, 0, 3 * r + c] += sign
        _TABLES[key] = t.reshape(16, -1).to(dtype=like.dtype, device=like.device)
    return _TABLES[key]


# Hamilton product terms (i, j, k, sign): component k of a*b gets sign * a_i * b_j.
_HAMILTON = [(0, 0, 0, 1), (1, 1, 0, -1), (2, 2, 0, -1), (3, 3, 0, -1),
             (0, 1, 1, 1), (1, 0, 1, 1), (2, 3, 1, 1), (3, 2, 1, -1),
             (0, 2, 2, 1), (1, 3, 2, -1), (2, 0, 2, 1), (3, 1, 2, 1),
             (0, 3, 3, 1), (1, 2, 3, 1), (2, 1, 3, -1), (3, 0, 3, 1)]
_TABLES: dict = {}


def _outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = torch.broadcast_tensors(a, b)
    return (a[..., :, None] * b[..., None, :]).reshape(a.shape[:-1] + (16,))


def quat_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``a * b`` of ``[..., 4]`` quaternions."""
    return _outer(a, b) @ _bilinear_table("mul", a)


def quat_conj(q: torch.Tensor) -> torch.Tensor:
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


def quat_normalize(q: torch.Tensor) -> torch.Tensor:
    return q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def quat_to_mat(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[..., 3, 3]`` of unit quaternions ``[..., 4]``."""
    return (_outer(q, q) @ _bilinear_table("mat", q)).reshape(q.shape[:-1] + (3, 3))


def quat_rotate(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate vectors ``[..., 3]`` by unit quaternions ``[..., 4]``."""
    w = q[..., :1]
    u = q[..., 1:]
    t = 2.0 * torch.cross(u, v, dim=-1)
    return v + w * t + torch.cross(u, t, dim=-1)


def _sinc(x: torch.Tensor) -> torch.Tensor:
    """``sin(x) / x`` with a finite value and gradient at 0."""
    small = x.abs() < _SMALL
    safe = torch.where(small, torch.ones_like(x), x)
    return torch.where(small, 1.0 - x * x / 6.0, torch.sin(safe) / safe)


def quat_exp(rotvec: torch.Tensor) -> torch.Tensor:
    """Unit quaternion ``[..., 4]`` of the rotation by ``|rotvec|`` about ``rotvec``."""
    angle = _safe_norm(rotvec)
    half = 0.5 * angle
    return torch.cat([torch.cos(half), 0.5 * _sinc(half) * rotvec], dim=-1)


def quat_log(q: torch.Tensor) -> torch.Tensor:
    """Rotation vector ``[..., 3]`` of a unit quaternion (the shorter way round)."""
    q = torch.where(q[..., :1] < 0, -q, q)
    s = _safe_norm(q[..., 1:])
    angle = 2.0 * torch.atan2(s, q[..., :1])
    # angle / s -> 2 / w as s -> 0
    small = s < _SMALL
    scale = torch.where(small, 2.0 / q[..., :1].clamp_min(_SMALL),
                        angle / torch.where(small, torch.ones_like(s), s))
    return scale * q[..., 1:]


def _safe_norm(v: torch.Tensor) -> torch.Tensor:
    """``|v|`` keeping its last dim, with a zero (not NaN) gradient at ``v = 0``."""
    sq = (v * v).sum(-1, keepdim=True)
    small = sq < _SMALL**4
    return torch.where(small, torch.zeros_like(sq), torch.sqrt(torch.where(small, 1.0, sq)))


def axis_angle_quat(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Quaternions ``[..., 4]`` rotating by ``angle [...]`` about unit ``axis [3]``."""
    half = 0.5 * angle[..., None]
    return torch.cat([torch.cos(half), torch.sin(half) * axis], dim=-1)
