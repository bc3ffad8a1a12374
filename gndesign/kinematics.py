"""Differentiable, batched forward kinematics and joint-space integration in torch.

These functions reproduce MuJoCo's ``mj_kinematics`` (body poses), ``mj_objectVelocity`` (body
velocities at the body frame origin, world orientation) and ``mj_integratePos`` /
``mj_differentiatePos`` (quaternions for ball and free joints) for every joint type, batched over
states and differentiable with respect to them. Quaternions are ``(w, x, y, z)`` as in MuJoCo
(their algebra: :mod:`gndesign.quaternions`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gndesign.quaternions import (
    axis_angle_quat,
    quat_conj,
    quat_exp,
    quat_log,
    quat_mul,
    quat_normalize,
    quat_rotate,
    quat_to_mat,
)
from gndesign.tree import BALL, FREE, HINGE, SLIDE, KinematicTree


# --------------------------------------------------------------------------------- kinematics
@dataclass
class BodyKinematics:
    """World-frame body quantities for a batch of states.

    Attributes:
        xpos: ``[B, nbody, 3]`` body frame origins.
        xquat: ``[B, nbody, 4]`` body orientations.
        xmat: ``[B, nbody, 3, 3]`` body rotation matrices.
        linvel: ``[B, nbody, 3]`` linear velocities of the body frame origins (if qvel given).
        angvel: ``[B, nbody, 3]`` angular velocities (if qvel given).
        xipos: ``[B, nbody, 3]`` centres of mass (MuJoCo's ``xipos``).
        comvel: ``[B, nbody, 3]`` linear velocities of the centres of mass (if qvel given); with
            ``angvel`` this is MuJoCo's ``mj_objectVelocity(mjOBJ_BODY)``, while ``linvel`` with
            ``angvel`` is ``mj_objectVelocity(mjOBJ_XBODY)``.
    """

    xpos: torch.Tensor
    xquat: torch.Tensor
    xmat: torch.Tensor
    xipos: torch.Tensor
    linvel: torch.Tensor | None = None
    angvel: torch.Tensor | None = None
    comvel: torch.Tensor | None = None


def forward_kinematics(tree: KinematicTree, qpos: torch.Tensor,
                       qvel: torch.Tensor | None = None) -> BodyKinematics:
    """Body poses (and velocities) from generalized coordinates, as MuJoCo computes them.

    Args:
        tree: the kinematic tree.
        qpos: ``[B, nq]`` generalized coordinates.
        qvel: optional ``[B, nv]`` generalized velocities.

    Returns:
        :class:`BodyKinematics` with ``[B, nbody, ...]`` tensors; the world body is at the origin.
    """
    if qpos.dim() != 2 or qpos.shape[1] != tree.nq:
        raise ValueError(f"qpos must be [batch, {tree.nq}], got {list(qpos.shape)}")
    if qvel is not None and (qvel.dim() != 2 or qvel.shape != (qpos.shape[0], tree.nv)):
        raise ValueError(f"qvel must be [{qpos.shape[0]}, {tree.nv}], got {list(qvel.shape)}")
    B, dtype, dev = qpos.shape[0], qpos.dtype, qpos.device

    body_pos, body_quat, jnt_pos, jnt_axis, qpos0, body_ipos = tree.tensors(
        ("body_pos", "body_quat", "jnt_pos", "jnt_axis", "qpos0", "body_ipos"), dtype, dev)
    zeros3 = qpos.new_zeros(B, 3)
    xpos = [zeros3]
    xquat = [qpos.new_zeros(B, 4) + qpos.new_tensor([1.0, 0.0, 0.0, 0.0])]
    lin, ang = [zeros3], [zeros3]
    joints_of = [[] for _ in range(tree.nbody)]
    for j, b in enumerate(tree.jnt_body):
        joints_of[int(b)].append(j)

    for b in range(1, tree.nbody):
        p = int(tree.body_parent[b])
        joints = joints_of[b]
        # (type, world axis, world anchor, dof slice) of each joint, for the velocities
        motion = []
        if joints and tree.jnt_type[joints[0]] == FREE:
            j = joints[0]
            a = int(tree.jnt_qposadr[j])
            pos = qpos[:, a:a + 3]
            quat = quat_normalize(qpos[:, a + 3:a + 7])
            motion.append((FREE, None, None, int(tree.jnt_dofadr[j])))
        else:
            pos = xpos[p] + quat_rotate(xquat[p], body_pos[b].expand(B, 3))
            quat = quat_mul(xquat[p], body_quat[b].expand(B, 4))
            for j in joints:
                jt = tree.jnt_type[j]
                a, d = int(tree.jnt_qposadr[j]), int(tree.jnt_dofadr[j])
                anchor = pos + quat_rotate(quat, jnt_pos[j].expand(B, 3))
                axis = quat_rotate(quat, jnt_axis[j].expand(B, 3))
                if jt == SLIDE:
                    pos = pos + axis * (qpos[:, a:a + 1] - qpos0[a])
                elif jt == HINGE:
                    quat = quat_mul(quat, axis_angle_quat(jnt_axis[j], qpos[:, a] - qpos0[a]))
                    pos = anchor - quat_rotate(quat, jnt_pos[j].expand(B, 3))
                elif jt == BALL:
                    quat = quat_mul(quat, quat_normalize(qpos[:, a:a + 4]))
                    pos = anchor - quat_rotate(quat, jnt_pos[j].expand(B, 3))
                else:  # MuJoCo only allows a free joint as a body's first joint
                    raise ValueError(f"joint {tree.joint_names[j]}: a free joint must come first")
                motion.append((jt, axis, anchor, d))
            quat = quat_normalize(quat)
        xpos.append(pos)
        xquat.append(quat)

        if qvel is not None:
            # Only free and ball joints need the body's rotation matrix here.
            rot = quat_to_mat(quat) if any(m[0] in (FREE, BALL) for m in motion) else None
            if motion and motion[0][0] == FREE:
                d = motion[0][3]
                v, w = qvel[:, d:d + 3], (rot @ qvel[:, d + 3:d + 6, None])[..., 0]
            else:
                w = ang[p]
                v = lin[p] + torch.cross(ang[p], pos - xpos[p], dim=-1)
                for jt, axis, anchor, d in motion:
                    if jt == SLIDE:
                        v = v + axis * qvel[:, d:d + 1]
                        continue
                    if jt == HINGE:
                        omega = axis * qvel[:, d:d + 1]
                    else:  # ball: MuJoCo's dofs are the final body frame's axes
                        omega = (rot @ qvel[:, d:d + 3, None])[..., 0]
                    w = w + omega
                    v = v + torch.cross(omega, pos - anchor, dim=-1)
            lin.append(v)
            ang.append(w)

    xquat_t = torch.stack(xquat, dim=1)
    xpos_t = torch.stack(xpos, dim=1)
    xmat = quat_to_mat(xquat_t)
    com_offset = (xmat @ body_ipos[..., None])[..., 0]
    out = BodyKinematics(xpos=xpos_t, xquat=xquat_t, xmat=xmat, xipos=xpos_t + com_offset)
    if qvel is not None:
        out.linvel = torch.stack(lin, dim=1)
        out.angvel = torch.stack(ang, dim=1)
        out.comvel = out.linvel + torch.cross(out.angvel, com_offset, dim=-1)
    return out


# --------------------------------------------------------------------------------- integration
def quat_integrate(q: torch.Tensor, omega_local: torch.Tensor, dt) -> torch.Tensor:
    """MuJoCo's ``mju_quatIntegrate``: rotate by ``omega * dt`` in the local frame, normalize."""
    return quat_normalize(quat_mul(q, quat_exp(omega_local * _as_col(dt, omega_local))))


def _as_col(dt, like: torch.Tensor) -> torch.Tensor:
    """``dt`` (a float or ``[B]``) shaped to broadcast against ``[B, ...]``."""
    dt = torch.as_tensor(dt, dtype=like.dtype, device=like.device)
    return dt.reshape(dt.shape + (1,) * (like.dim() - dt.dim())) if dt.dim() else dt


def _joint_slices(tree: KinematicTree):
    """Per joint: (type, qpos address, dof address)."""
    return [(t, int(tree.jnt_qposadr[j]), int(tree.jnt_dofadr[j]))
            for j, t in enumerate(tree.jnt_type)]


def integrate_qpos(tree: KinematicTree, qpos: torch.Tensor, qvel: torch.Tensor, dt) -> torch.Tensor:
    """MuJoCo's ``mj_integratePos``: advance ``qpos [B, nq]`` by ``qvel [B, nv]`` over ``dt``.

    Hinge and slide coordinates move linearly; ball and free quaternions rotate by the local
    angular velocity and are renormalized. ``dt`` is a float or ``[B]``.
    """
    pieces = []
    for t, a, d in _joint_slices(tree):
        if t in (HINGE, SLIDE):
            pieces.append(qpos[:, a:a + 1] + _as_col(dt, qpos[:, :1]) * qvel[:, d:d + 1])
        elif t == BALL:
            pieces.append(quat_integrate(qpos[:, a:a + 4], qvel[:, d:d + 3], dt))
        else:
            pieces.append(qpos[:, a:a + 3] + _as_col(dt, qpos[:, :3]) * qvel[:, d:d + 3])
            pieces.append(quat_integrate(qpos[:, a + 3:a + 7], qvel[:, d + 3:d + 6], dt))
    return torch.cat(pieces, dim=1) if pieces else qpos


def differentiate_qpos(tree: KinematicTree, qpos1: torch.Tensor, qpos2: torch.Tensor, dt) -> torch.Tensor:
    """MuJoCo's ``mj_differentiatePos``: the ``qvel [B, nv]`` that integrates ``qpos1`` into
    ``qpos2`` over ``dt`` (the exact inverse of :func:`integrate_qpos`)."""
    pieces = []
    for t, a, _ in _joint_slices(tree):
        inv_dt = 1.0 / _as_col(dt, qpos1[:, :1])
        if t in (HINGE, SLIDE):
            pieces.append((qpos2[:, a:a + 1] - qpos1[:, a:a + 1]) * inv_dt)
            continue
        if t == FREE:
            pieces.append((qpos2[:, a:a + 3] - qpos1[:, a:a + 3]) * inv_dt)
            a += 3
        q1 = quat_normalize(qpos1[:, a:a + 4])
        q2 = quat_normalize(qpos2[:, a:a + 4])
        pieces.append(quat_log(quat_mul(quat_conj(q1), q2)) * inv_dt)
    return torch.cat(pieces, dim=1) if pieces else qpos1.new_zeros(qpos1.shape[0], 0)


__all__ = ["BodyKinematics", "differentiate_qpos", "forward_kinematics", "integrate_qpos", "quat_integrate"]
