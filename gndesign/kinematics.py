"""Differentiable, batched forward kinematics and joint-space integration in torch.

These functions reproduce MuJoCo's ``mj_kinematics`` (body poses), ``mj_objectVelocity`` (body
velocities at the body frame origin, world orientation) and ``mj_integratePos`` /
``mj_differentiatePos`` (quaternions for ball and free joints) for every joint type, batched over
states and differentiable with respect to them. Quaternions are ``(w, x, y, z)`` as in MuJoCo
(their algebra: :mod:`gndesign.quaternions`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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


# --------------------------------------------------------------------------------- lean kinematics
class _Take:
    """``x.index_select(dim, idx)`` for a constant index, as a view where it is a range."""

    def __init__(self, idx, device, dim: int = 1):
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        self.dim, self.n = dim, len(idx)
        self.index = torch.as_tensor(idx, device=device)
        if self.n and np.array_equal(idx, np.arange(idx[0], idx[0] + self.n)):
            self.range = (int(idx[0]), self.n)
        else:
            self.range = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.range is not None:
            return x.narrow(self.dim, *self.range)
        return x.index_select(self.dim, self.index)


def _skew(a: np.ndarray) -> np.ndarray:
    return np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]], dtype=np.float64)


def _quat_mat(q) -> np.ndarray:
    return quat_to_mat(torch.as_tensor(np.asarray(q, dtype=np.float64))).numpy()


class LeanKinematics:
    """Forward kinematics of one tree as rigid transforms: every joint's transform at once, each
    body's joints composed slot by slot, then one matrix product per tree level.

    :meth:`__call__` returns ``S [B, nbody, 3, 6]``: the world rotation matrix (columns 0-2), the
    body origin (3), the angular (4) and linear (5) velocity of the body origin, and the hinge angles
    ``[B, n_hinge]`` relative to ``qpos0`` (edge features reuse them)."""

    def __init__(self, tree, dtype, device):
        t = tree
        nb, nj = t.nbody, len(t.jnt_type)
        kw = dict(dtype=dtype, device=device)
        self.nbody = nb

        def T(a, **extra):
            return torch.as_tensor(np.asarray(a), **(extra or kw))

        types = list(t.jnt_type)
        self.jbody = [int(b) for b in t.jnt_body]
        self.by_type = {ty: [j for j in range(nj) if types[j] == ty] for ty in (HINGE, SLIDE, BALL, FREE)}
        order = [j for ty in (HINGE, SLIDE, BALL, FREE) for j in self.by_type[ty]]
        self.perm = None if order == list(range(nj)) else _Take(np.argsort(order), device)
        h, s, bl, fr = (self.by_type[k] for k in (HINGE, SLIDE, BALL, FREE))
        self.types = {ty for ty in types}
        qa, da = t.jnt_qposadr, t.jnt_dofadr
        self.h_q = _Take([qa[j] for j in h], device)
        self.h_q0 = T([t.qpos0[qa[j]] for j in h])
        axes = np.asarray(t.jnt_axis, dtype=np.float64)
        self.h_K = T(np.stack([_skew(axes[j]) for j in h]) if h else np.zeros((0, 3, 3)))
        self.h_K2 = self.h_K @ self.h_K
        self.h_p = T(np.asarray(t.jnt_pos)[h].reshape(-1, 3))
        self.s_q = _Take([qa[j] for j in s], device)
        self.s_q0 = T([t.qpos0[qa[j]] for j in s])
        self.s_axis = T(axes[s].reshape(-1, 3))
        self.b_q = _Take(np.array([qa[j] + np.arange(4) for j in bl]).reshape(-1), device)
        self.b_p = T(np.asarray(t.jnt_pos)[bl].reshape(-1, 3))
        self.f_q = _Take(np.array([qa[j] + np.arange(7) for j in fr]).reshape(-1), device)
        self.eye = torch.eye(3, **kw)
        # Bodies 1..nb-1 ("local" index b-1): constant frame C (identity for free bodies).
        CR = np.stack([np.eye(3) for _ in range(nb - 1)]) if nb > 1 else np.zeros((0, 3, 3))
        Ct = np.zeros((max(nb - 1, 0), 3))
        slots: list[list[tuple[int, int]]] = []  # per slot: (local body, joint)
        for b in range(1, nb):
            joints = [j for j in range(nj) if self.jbody[j] == b]
            if not (joints and types[joints[0]] == FREE):
                CR[b - 1], Ct[b - 1] = _quat_mat(t.body_quat[b]), t.body_pos[b]
            for k, j in enumerate(joints):
                while len(slots) <= k:
                    slots.append([])
                slots[k].append((b - 1, j))
        self.CR, self.Ct = T(CR), T(Ct)
        self.slots = [(_Take([b for b, _ in sl], device), _Take([j for _, j in sl], device), len(sl) == nb - 1)
                      for sl in slots]
        self.slot_perm = _Take(np.argsort([j for sl in slots for _, j in sl]), device)
        # membership [nb-1, nj] and per-joint body (local index)
        member = [[float(self.jbody[j] == b) for j in range(nj)] for b in range(1, nb)]
        self.member = T(np.array(member).reshape(nb - 1, nj))
        self.jlocal = _Take([self.jbody[j] - 1 for j in range(nj)], device)
        self.axis = T(axes.reshape(-1, 3))
        self.jpos = T(np.asarray(t.jnt_pos, dtype=np.float64).reshape(-1, 3))
        self.is_h = T([[float(ty == HINGE)] for ty in types]).reshape(nj, 1)
        self.is_s = T([[float(ty == SLIDE)] for ty in types]).reshape(nj, 1)
        self.is_bf = T([[float(ty in (BALL, FREE))] for ty in types]).reshape(nj, 1)
        self.is_f = T([[float(ty == FREE)] for ty in types]).reshape(nj, 1)
        self.is_rot = self.is_h + self.is_bf - self.is_f  # hinge or ball: lever arm about the anchor
        # dof gathers: a joint's first dof (hinge/slide), its 3 rotational dofs (ball: d..d+2, free: d+3..)
        self.d1 = _Take([da[j] for j in range(nj)], device)
        self.d3 = _Take(np.array([da[j] + (3 if types[j] == FREE else 0) + np.arange(3) if types[j] in (BALL, FREE)
                                  else np.zeros(3, dtype=np.int64) for j in range(nj)]).reshape(-1), device)
        self.dlin = _Take(np.array([da[j] + np.arange(3) if types[j] == FREE else np.zeros(3, dtype=np.int64)
                                    for j in range(nj)]).reshape(-1), device)
        # tree levels: bodies (local index) per depth, the index of each one's parent in the previous level
        depth = [0] * nb
        for b in range(1, nb):
            depth[b] = depth[int(t.body_parent[b])] + 1
        levels = [[b for b in range(1, nb) if depth[b] == d] for d in range(1, max(depth) + 1)] if nb > 1 else []
        self.levels = []
        prev = [0]
        for lv in levels:
            parents = [prev.index(int(t.body_parent[b])) for b in lv]
            self.levels.append((_Take([b - 1 for b in lv], device), _Take(parents, device)))
            prev = lv
        self.body_perm = _Take(np.argsort([b for lv in levels for b in lv]), device)
        world = torch.zeros(1, 1, 3, 6, **kw)
        world[..., :3] = self.eye
        self.world = world

    def __call__(self, qpos: torch.Tensor, qvel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, types = qpos.shape[0], self.types
        Rs, ts = [], []
        ang = self.h_q(qpos) - self.h_q0  # [B, nh]
        if HINGE in types:
            s, c = torch.sin(ang)[..., None, None], torch.cos(ang)[..., None, None]
            R = self.eye + s * self.h_K + (1 - c) * self.h_K2
            Rs.append(R)
            ts.append(self.h_p - (R * self.h_p[:, None, :]).sum(-1))
        if SLIDE in types:
            Rs.append(self.eye.expand(B, len(self.by_type[SLIDE]), 3, 3))
            ts.append(self.s_axis * (self.s_q(qpos) - self.s_q0)[..., None])
        if BALL in types:
            R = quat_to_mat(quat_normalize(self.b_q(qpos).view(B, -1, 4)))
            Rs.append(R)
            ts.append(self.b_p - (R * self.b_p[:, None, :]).sum(-1))
        if FREE in types:
            fq = self.f_q(qpos).view(B, -1, 7)
            Rs.append(quat_to_mat(quat_normalize(fq[..., 3:])))
            ts.append(fq[..., :3])
        Rj, tj = (torch.cat(Rs, 1), torch.cat(ts, 1)) if len(Rs) > 1 else (Rs[0], ts[0])
        if self.perm is not None:
            Rj, tj = self.perm(Rj), self.perm(tj)
        # compose each body's joints in order: G = C o L_1 o L_2 ...; keep every joint's G (after it)
        GR, Gt = self.CR.expand(B, -1, -1, -1), self.Ct.expand(B, -1, -1)
        jR, jt = [], []
        for bodies, joints, full in self.slots:
            R0, t0 = (GR, Gt) if full else (bodies(GR), bodies(Gt))
            nR = R0 @ joints(Rj)
            nt = (R0 @ joints(tj)[..., None])[..., 0] + t0
            jR.append(nR)
            jt.append(nt)
            if full:
                GR, Gt = nR, nt
            else:
                GR, Gt = GR.index_copy(1, bodies.index, nR), Gt.index_copy(1, bodies.index, nt)
        JR = self.slot_perm(torch.cat(jR, 1) if len(jR) > 1 else jR[0])
        Jt = self.slot_perm(torch.cat(jt, 1) if len(jt) > 1 else jt[0])
        # per joint: world-of-parent-frame axis, anchor and velocity contributions
        axis = (JR * self.axis[:, None, :]).sum(-1)
        anchor = (JR * self.jpos[:, None, :]).sum(-1) + Jt
        a = axis * self.d1(qvel)[..., None]
        omega = a if types == {HINGE} else a * self.is_h
        if types & {BALL, FREE}:
            omega = omega + (self.jlocal(GR) @ self.d3(qvel).view(B, -1, 3, 1))[..., 0] * self.is_bf
        lever = torch.cross(omega, self.jlocal(Gt) - anchor, dim=-1)
        lin = lever * self.is_rot if FREE in types else lever
        if SLIDE in types:
            lin = lin + (a if types == {SLIDE} else a * self.is_s)
        if FREE in types:
            lin = lin + self.dlin(qvel).view(B, -1, 3) * self.is_f
        local = torch.cat([GR, Gt[..., None], (self.member @ omega)[..., None], (self.member @ lin)[..., None]], -1)
        out, prev = [], None
        for bodies, pidx in self.levels:
            L = bodies(local)
            if prev is None:
                S = L
            else:
                P = pidx(prev)
                Y = P[..., :3] @ L
                tp, wp, vp = P[..., 3], P[..., 4], P[..., 5]
                d = Y[..., 3]
                S = torch.cat([Y[..., :3], (tp + d)[..., None], (wp + Y[..., 4])[..., None],
                               (vp + torch.cross(wp, d, dim=-1) + Y[..., 5])[..., None]], -1)
            out.append(S)
            prev = S
        S = self.body_perm(torch.cat(out, 1)) if len(out) > 1 else out[0]
        return torch.cat([self.world.expand(B, 1, 3, 6), S], 1), ang


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


__all__ = ["BodyKinematics", "LeanKinematics", "differentiate_qpos", "forward_kinematics", "integrate_qpos",
           "quat_integrate"]
