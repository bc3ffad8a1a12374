"""The lean step: the learned articulated simulator's step for a fixed topology.

An articulated system's graph never changes during a rollout, so everything that does not depend
on the state is computed once per rollout (:meth:`LeanPlan.prepare`): static node and edge
features, their normalization and their share of the encoders' first layers, the encoded globals,
the gather and aggregation matrices, the folded normalization of the dynamic features, the
denormalization of the decoder. A step (:meth:`LeanRollout.step`) is then a few dozen tensor
operations: forward kinematics as rigid transforms vectorized over all joints and over the
tree's depth, the dynamic features as a handful of matrix products, the processor on dense
``[B, nodes, L]`` / ``[B, edges, L]`` tensors (gathers and sums as products with constant
incidence matrices), the decoder on the forward edges only, and the joint-space integration.

It computes exactly what the reference path (:meth:`gndesign.graphs.GraphBuilder.build_tensors`,
:class:`gndesign.nn.EncodeProcessDecode`, ``denormalize``, ``integrate_prediction``) computes, up
to the order of floating-point operations (``tests/test_lean.py`` checks values and gradients).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from gndesign.graphs import EDGE_DYNAMIC, EDGE_STATIC, NODE_STATIC, GraphBuilder
from gndesign.quaternions import quat_exp, quat_mul, quat_normalize, quat_to_mat
from gndesign.tree import BALL, FREE, HINGE, MAX_DOF, SLIDE

_COORD = 7  # joint-coordinate columns per edge (see graphs.EDGE_DYNAMIC)


def lean_enabled() -> bool:
    """Whether the lean path is on (``GNDESIGN_LEAN=0`` switches every model to the reference path)."""
    return os.environ.get("GNDESIGN_LEAN", "1") != "0"


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


def _mlp_layers(mlp) -> list:
    """``[(kind, weight, bias)]`` of an MLP built by :func:`gndesign.nn.build_mlp`."""
    out = []
    for layer in mlp:
        if isinstance(layer, torch.nn.Linear):
            out.append(("linear", layer.weight, layer.bias))
        elif isinstance(layer, torch.nn.LayerNorm):
            out.append(("ln", layer))
        elif isinstance(layer, torch.nn.SiLU):
            out.append(("silu",))
        else:
            out.append(("module", layer))
    return out


def _run(layers: list, h: torch.Tensor) -> torch.Tensor:
    """Apply MLP layers to ``h [..., F]`` (as one ``[rows, F]`` matrix: one addmm per linear layer)."""
    shape = h.shape[:-1]
    h = h.reshape(-1, h.shape[-1])
    for op in layers:
        if op[0] == "linear":
            h = F.linear(h, op[1], op[2])
        elif op[0] == "silu":
            h = F.silu(h)
        elif op[0] == "ln":
            h = F.layer_norm(h, op[1].normalized_shape, op[1].weight, op[1].bias, op[1].eps)
        else:
            h = op[1](h)
    return h.view(shape + h.shape[-1:])


def _fold(weight: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``W ((x - m) / s) = (W / s) x - W (m / s)``: the folded weight and the constant."""
    return weight / std, -(weight @ (mean / std))


class LeanPlan:
    """The constants of one system's lean step (in one dtype and device): kinematics, feature
    selection, gather/aggregation and decoding matrices. :meth:`prepare` binds it to a batch of
    parameters and the model's current weights."""

    def __init__(self, model, system: str, dtype, device):
        b: GraphBuilder = model.builder(system)
        t = b.tree
        kw = dict(dtype=dtype, device=device)
        self.model, self.system, self.builder = model, system, b
        self.kin = LeanKinematics(t, dtype, device)
        N, E, nq, nv = t.nbody, t.num_edges, t.nq, t.nv
        self.N, self.E, self.nq, self.nv = N, E, nq, nv
        hinges = self.kin.by_type[HINGE]
        nh = len(hinges)
        ed = t.edge_dofs()
        # joint features (q, qvel, force columns of the edges) from r = [qpos, sin, cos, qvel, force]
        R = nq + 2 * nh + 2 * nv
        sel = np.zeros((R, E, _COORD + 2 * MAX_DOF))
        off = np.zeros((E, _COORD + 2 * MAX_DOF))
        for e, (j, et) in enumerate(zip(t.edge_joint, t.edge_type, strict=True)):
            if j < 0:
                continue
            a = int(t.jnt_qposadr[j])
            if et == HINGE:
                h = hinges.index(j)
                sel[a, e, 0], off[e, 0] = 1.0, -t.qpos0[a]
                sel[nq + h, e, 1] = sel[nq + nh + h, e, 2] = 1.0
            elif et == SLIDE:
                scale = 0.0 if (not t.jnt_limited[j] and t.jnt_stiffness[j] == 0) else 1.0
                sel[a, e, 0], off[e, 0] = scale, -t.qpos0[a] * scale
            else:
                a += 3 if et == FREE else 0
                for k in range(4):
                    sel[a + k, e, 3 + k] = 1.0
            for k, d in enumerate(ed[e]):
                if d >= 0:
                    sel[nq + 2 * nh + d, e, _COORD + k] = 1.0
                    sel[nq + 2 * nh + nv + d, e, _COORD + MAX_DOF + k] = 1.0
        self.sel = torch.as_tensor(sel.reshape(R * E, -1), **kw)
        self.off = torch.as_tensor(off, **kw)
        ei = t.edge_index()
        disp = np.zeros((E, N))
        for e in range(E):
            if ei[0, e] != 0:
                disp[e, ei[1, e]] += 1.0
                disp[e, ei[0, e]] -= 1.0
        self.disp_T = torch.as_tensor(disp.T.copy(), **kw)
        g2 = np.zeros((4 * E, N))
        inc = np.zeros((N, 2 * E))
        for k in range(2 * E):
            g2[k, ei[0, k]] = 1.0
            g2[2 * E + k, ei[1, k]] = 1.0
            inc[ei[1, k], k] = 1.0
        self.gather = torch.as_tensor(g2, **kw)
        self.incidence = torch.as_tensor(inc, **kw)
        self.incidence_mean = torch.as_tensor(inc / np.maximum(inc.sum(1, keepdims=True), 1.0), **kw)
        self.nonworld = torch.as_tensor((np.arange(N) > 0).astype(np.float64)[:, None, None], **kw)
        self.root = 1 if N > 1 else 0
        gvec = np.asarray(t.gravity, dtype=np.float64)
        gn = float(np.linalg.norm(gvec))
        self.up = torch.as_tensor(-gvec / gn if gn > 0 else np.array([0.0, 0.0, 1.0]), **kw)
        # decoding: [B, E*12] -> [B, 2 nv] (acceleration, then correction)
        dec = np.zeros((E * 2 * MAX_DOF, 2 * nv))
        for e in range(E):
            for k, d in enumerate(ed[e]):
                if d >= 0:
                    dec[e * 2 * MAX_DOF + k, d] = 1.0
                    dec[e * 2 * MAX_DOF + MAX_DOF + k, nv + d] = 1.0
        self.decode_sel = torch.as_tensor(dec, **kw)
        # integration: linear coordinates, then quaternions (ball, free)
        lin = np.zeros((nv, nq))
        qi, oi = [], []
        for j, et in enumerate(t.jnt_type):
            a, d = int(t.jnt_qposadr[j]), int(t.jnt_dofadr[j])
            if et in (HINGE, SLIDE):
                lin[d, a] = 1.0
            elif et == FREE:
                lin[d:d + 3, a:a + 3] = np.eye(3)
                qi.append(a + 3 + np.arange(4))
                oi.append(d + 3 + np.arange(3))
            else:
                qi.append(a + np.arange(4))
                oi.append(d + np.arange(3))
        self.lin = torch.as_tensor(lin, **kw)
        self.quat_q = torch.as_tensor(np.array(qi, dtype=np.int64).reshape(-1, 4), device=device)
        self.quat_v = torch.as_tensor(np.array(oi, dtype=np.int64).reshape(-1, 3), device=device)
        self.dt = b.control_timestep

    @staticmethod
    def supports(model, system: str | None) -> bool:
        """Whether the lean step computes this model's step (else the reference path does)."""
        net = getattr(model, "predictor", None)
        if getattr(model, "solves", True) or net is None or not lean_enabled():
            return False
        if getattr(model, "use_lean", True) is False:
            return False
        blocks = list(net.processor)
        if (net.global_encoder is None or net.edge_decoder is None or not net.use_globals
                or net.node_decoder is not None or net.global_decoder is not None):
            return False
        if any(g.node_block.aggregation not in ("sum", "mean") or g.global_block is None
               or g.global_block.aggregation not in ("sum", "mean", "max") for g in blocks):
            return False
        tree = model.builder(system).tree
        return tree.nbody > 1 and len(tree.jnt_type) > 0

    def prepare(self, static) -> LeanRollout:
        return LeanRollout(self, static)


class LeanRollout:
    """A lean step bound to the per-rollout constants ``static`` (a
    :class:`gndesign.graphs.StaticGraph`) and the model's current weights."""

    def __init__(self, plan: LeanPlan, static):
        m, net = plan.model, plan.model.predictor
        self.plan, p = plan, plan
        B = static.num_graphs
        self.B = B
        like = static.node
        Fs_n, Fs_e = len(NODE_STATIC), len(EDGE_STATIC)
        # nodes: static share of the first layer, the dynamic weights folded into [18, H]
        mean, std = m.node_norm.stats(like)
        enc = _mlp_layers(net.node_encoder)
        W, c = _fold(enc[0][1], mean, std)
        self.node_A = (F.linear(static.node, W[:, :Fs_n]) + (c + enc[0][2])).transpose(0, 1).contiguous()
        Wd = W[:, Fs_n:]
        H = W.shape[0]
        zeros = Wd.new_zeros(3, H)
        self.node_W = torch.cat([Wd[:, 4:7].T, Wd[:, 7:10].T, zeros, Wd[:, 0:3].T + p.up[:, None] * Wd[:, 3][None],
                                 Wd[:, 13:16].T, Wd[:, 10:13].T], 0)
        self.node_rel = -Wd[:, 0:3].T
        self.node_rest = enc[1:]
        # edges
        mean, std = m.edge_norm.stats(like)
        enc = _mlp_layers(net.edge_encoder)
        W, c = _fold(enc[0][1], mean, std)
        Wd = W[:, Fs_e:]
        assert Wd.shape[1] == len(EDGE_DYNAMIC)
        joint_W = Wd[:, 4:4 + _COORD + 2 * MAX_DOF]
        E = p.E
        self.edge_A = (F.linear(static.edge, W[:, :Fs_e]) + (c + enc[0][2]) + F.linear(p.off, joint_W)
                       ).transpose(0, 1).contiguous()
        self.edge_flag = Wd[:, -1]
        self.edge_M = (p.sel @ joint_W.T).reshape(-1, E * H)
        self.edge_disp = Wd[:, 0:3].T
        self.edge_dist = Wd[:, 3]
        self.edge_rest = enc[1:]
        gain = m.builder(p.system).const("actuator_gain", like)
        self.moment = p.builder.tree.actuator_moment(static.params["actuator_gear"]) * gain[:, None]
        # globals: static, encoded once
        self.u = net.global_encoder(m.global_norm(static.u))
        self.blocks = []
        for g in net.processor:
            eb, nb, gb = g.edge_block, g.node_block, g.global_block
            L = net.latent_size
            el = _mlp_layers(eb.mlp)
            We = el[0][1]
            self.blocks.append(dict(
                We=We[:, :3 * L], Wu=We[:, 3 * L:], be=el[0][2],
                edge=el[1:], node=_mlp_layers(nb.mlp), glob=_mlp_layers(gb.mlp),
                inc=p.incidence_mean if nb.aggregation == "mean" else p.incidence,
                glob_agg=gb.aggregation))
        self.decoder = _mlp_layers(net.edge_decoder)
        tmean, tstd = m._type_stats(p.system, like)
        mask = m._slot_mask(p.system).to(device=like.device, dtype=like.dtype)
        self.dec_W = p.decode_sel * (tstd * mask).reshape(-1, 1)
        self.dec_c = (tmean * mask).reshape(-1) @ p.decode_sel
        self.H = H

    def predict(self, qpos: torch.Tensor, qvel: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Normalized ``(a, c)`` per forward edge ``[B, E, 12]`` (what ``predict_normalized`` gives).

        Latents are node-major (``[N, B, L]``, ``[2E, B, L]``) so that gathers and sums over the
        fixed topology are single matrix products with constant incidence matrices."""
        p = self.plan
        B, E, N, H = qpos.shape[0], p.E, p.N, self.H
        S, ang = p.kin(qpos, qvel)
        # nodes
        Fn = S.permute(1, 0, 3, 2).reshape(N, B, 18)
        root = S[:, p.root, :, 3] @ self.node_rel
        x = _run(self.node_rest, torch.addcmul(self.node_A + Fn @ self.node_W, p.nonworld, root))
        # edges
        xpos = S[..., 3].transpose(1, 2)  # [B, 3, N]
        disp = (xpos @ p.disp_T).permute(2, 0, 1)  # [E, B, 3]
        dist = disp.norm(dim=-1, keepdim=True)
        force = torch.bmm(action[:, None], self.moment)[:, 0]
        r = torch.cat([qpos, torch.sin(ang), torch.cos(ang), qvel, force], -1)
        common = self.edge_A + (r @ self.edge_M).view(B, E, H).transpose(0, 1) + dist * self.edge_dist
        pd = disp @ self.edge_disp
        e = _run(self.edge_rest, torch.cat([common + pd, common - pd + self.edge_flag], 0))
        u = self.u
        L = e.shape[-1]
        for blk in self.blocks:
            g = (p.gather @ x.view(N, B * L)).view(2, 2 * E, B, L)
            h = torch.cat([e, g[0], g[1]], -1)
            e2 = _run(blk["edge"], F.linear(h, blk["We"]) + F.linear(u, blk["Wu"], blk["be"]))
            agg = (blk["inc"] @ e2.view(2 * E, B * L)).view(N, B, L)
            x2 = _run(blk["node"], torch.cat([x, agg, u.expand(N, B, L)], -1))
            ga = blk["glob_agg"]
            ge, gx = ((e2.mean(0), x2.mean(0)) if ga == "mean" else (e2.sum(0), x2.sum(0)) if ga == "sum"
                      else (e2.amax(0), x2.amax(0)))
            u2 = _run(blk["glob"], torch.cat([u, ge, gx], -1))
            x, e, u = x + x2, e + e2, u + u2
        return _run(self.decoder, e[:E]).transpose(0, 1)

    def step(self, qpos: torch.Tensor, qvel: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One control step ``(qpos', qvel')``."""
        p = self.plan
        if action.shape != (qpos.shape[0], self.moment.shape[1]) or qpos.shape[0] != self.B:
            raise ValueError(f"action must be [{self.B}, {self.moment.shape[1]}] for states [{self.B}, ...], "
                             f"got {list(action.shape)} and {list(qpos.shape)}")
        pred = self.predict(qpos, qvel, action)
        ac = pred.reshape(pred.shape[0], -1) @ self.dec_W + self.dec_c
        qvel_next = qvel + p.dt * ac[:, :p.nv]
        v = qvel_next + ac[:, p.nv:]
        qpos_next = qpos + (v @ p.lin) * p.dt
        if p.quat_q.shape[0]:
            q = qpos[:, p.quat_q]
            newq = quat_normalize(quat_mul(q, quat_exp(v[:, p.quat_v] * p.dt)))
            qpos_next = qpos_next.index_copy(1, p.quat_q.reshape(-1), newq.reshape(qpos.shape[0], -1))
        return qpos_next, qvel_next


def lean_plan(model, system: str, like: torch.Tensor) -> LeanPlan:
    """The model's (cached) :class:`LeanPlan` of ``system`` in ``like``'s dtype and device."""
    cache = model.__dict__.setdefault("_lean_plans", {})
    key = (system, like.dtype, like.device)
    if key not in cache:
        cache[key] = LeanPlan(model, system, like.dtype, like.device)
    return cache[key]


__all__ = ["LeanKinematics", "LeanPlan", "LeanRollout", "lean_enabled", "lean_plan", "reference_path"]


class reference_path:  # noqa: N801 (used as a context manager, like torch.no_grad)
    """``with reference_path(model):`` steps, rolls out and trains ``model`` on the reference path
    (graph objects, :class:`gndesign.nn.EncodeProcessDecode`); ``model.use_lean = False`` does the
    same for good, ``GNDESIGN_LEAN=0`` for every model."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.before = self.model.__dict__.get("use_lean", True)
        self.model.use_lean = False
        return self.model

    def __exit__(self, *exc):
        self.model.use_lean = self.before
        return False
