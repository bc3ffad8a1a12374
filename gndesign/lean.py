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
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from gndesign.graphs import EDGE_DYNAMIC, EDGE_STATIC, NODE_STATIC, GraphBuilder
from gndesign.kinematics import LeanKinematics
from gndesign.quaternions import quat_exp, quat_mul, quat_normalize
from gndesign.tree import FREE, HINGE, MAX_DOF, SLIDE

_COORD = 7  # joint-coordinate columns per edge (see graphs.EDGE_DYNAMIC)


def lean_enabled() -> bool:
    """Whether the lean path is on (``GNDESIGN_LEAN=0`` switches every model to the reference path)."""
    return os.environ.get("GNDESIGN_LEAN", "1") != "0"


_COMPILED: dict = {}


def compiled(fn):
    """``fn`` through ``torch.compile`` (static shapes) when ``GNDESIGN_COMPILE=1``, else ``fn``.

    Optional: the first call of a new shape compiles (about a minute on a CPU core; TorchInductor's
    on-disk cache makes a second start take seconds). Any compile failure falls back to eager
    with one warning."""
    if os.environ.get("GNDESIGN_COMPILE", "0") != "1" or _COMPILED.get("failed"):
        return fn
    if "step" not in _COMPILED:
        _COMPILED["step"] = torch.compile(_call, dynamic=False)

    def run(*args):
        if _COMPILED.get("failed"):
            return fn(*args)
        try:
            return _COMPILED["step"](fn, *args)
        except Exception as exc:  # noqa: BLE001 (any compiler error: fall back to eager)
            _COMPILED["failed"] = True
            warnings.warn(f"torch.compile of the lean step failed ({type(exc).__name__}: {exc}); "
                          "running eagerly", RuntimeWarning, stacklevel=2)
            return fn(*args)
    return run


def _call(fn, *args):
    return fn(*args)


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
        # joint features (q, qvel, force, limit columns of the edges) from
        # r = [qpos, sin, cos, qvel, force, relu(past)] where past = qpos @ lim_A + qvel @ lim_V + lim_b
        limited = [(e, j) for e, (j, et) in enumerate(zip(t.edge_joint, t.edge_type, strict=True))
                   if b.limit_features and j >= 0 and et in (HINGE, SLIDE) and t.jnt_limited[j]]
        nl = len(limited)
        R0 = nq + 2 * nh + 2 * nv
        R = R0 + 4 * nl
        sel = np.zeros((R, E, _COORD + 2 * MAX_DOF))
        off = np.zeros((E, _COORD + 2 * MAX_DOF))
        # past = [lo - q, q - hi] now (columns 0..2nl) and after dt at the current velocity (2nl..4nl)
        lim_A, lim_V, lim_b = np.zeros((nq, 4 * nl)), np.zeros((nv, 4 * nl)), np.zeros(4 * nl)
        for k, (e, j) in enumerate(limited):
            a, d = int(t.jnt_qposadr[j]), int(t.jnt_dofadr[j])
            for c, sign, bound in ((2 * k, -1.0, t.jnt_range[j, 0]), (2 * k + 1, 1.0, -t.jnt_range[j, 1])):
                lim_A[a, c] = lim_A[a, 2 * nl + c] = sign
                lim_V[d, 2 * nl + c] = sign * b.control_timestep
                lim_b[c] = lim_b[2 * nl + c] = bound
            sel[R0 + 2 * k, e, 3] = sel[R0 + 2 * k + 1, e, 4] = 1.0
            sel[R0 + 2 * nl + 2 * k, e, 5] = sel[R0 + 2 * nl + 2 * k + 1, e, 6] = 1.0
        self.lim_A, self.lim_V, self.lim_b = (torch.as_tensor(x, **kw) for x in (lim_A, lim_V, lim_b))
        self.limited = bool(limited)
        for e, (j, et) in enumerate(zip(t.edge_joint, t.edge_type, strict=True)):
            if j < 0:
                continue
            a = int(t.jnt_qposadr[j])
            if et in (HINGE, SLIDE):
                scale = b.coordinate_scale(j)
                sel[a, e, 0], off[e, 0] = scale, -t.qpos0[a] * scale
            if et == HINGE:
                h = hinges.index(j)
                sel[nq + h, e, 1] = sel[nq + nh + h, e, 2] = 1.0
            elif et != SLIDE:
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
        # [2E, 2N]: each edge's sender among the first N rows of a [2N, ...] stack, its receiver among the last N
        gather = np.concatenate([g2[:2 * E], g2[2 * E:]], 1)
        self.gather = torch.as_tensor(gather, **kw)
        self.gather_forward = torch.as_tensor(gather[:E], **kw)  # the forward edges only
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
        stats = m.input_stats(plan.system, like)
        mean, std = stats["node"]
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
        mean, std = stats["edge"]
        enc = _mlp_layers(net.edge_encoder)
        W, c = _fold(enc[0][1], mean, std)
        Wd = W[:, Fs_e:]
        assert Wd.shape[1] == len(EDGE_DYNAMIC)
        joint_W = Wd[:, 4:4 + _COORD + 2 * MAX_DOF]
        E = p.E
        self.edge_A = (F.linear(static.edge, W[:, :Fs_e]) + (c + enc[0][2]) + F.linear(p.off, joint_W)
                       ).transpose(0, 1).contiguous()
        self.edge_flag = Wd[:, -1]
        self.edge_M = (p.sel @ joint_W.T).view(-1, E, H).transpose(0, 1).contiguous()  # [E, R, H]
        self.edge_disp = Wd[:, 0:3].T
        self.edge_dist = Wd[:, 3]
        self.edge_rest = enc[1:]
        gain = m.builder(p.system).const("actuator_gain", like)
        self.moment = p.builder.tree.actuator_moment(static.params["actuator_gear"]) * gain[:, None]
        # globals: static, encoded once
        self.u = net.global_encoder((static.u - stats["global"][0]) / stats["global"][1])
        L = net.latent_size
        self.blocks = []
        for i in range(m.processor_steps(plan.system)):  # shared weights: one block applied M times
            g = net.processor[0 if net.shared_weights else i]
            eb, nb, gb = g.edge_block, g.node_block, g.global_block
            el, nl = _mlp_layers(eb.mlp), _mlp_layers(nb.mlp)
            We, Wn = el[0][1], nl[0][1]
            self.blocks.append(dict(
                We=We[:, :L], We_s=We[:, L:2 * L], We_r=We[:, 2 * L:3 * L], We_u=We[:, 3 * L:], be=el[0][2],
                Wn=Wn[:, :L], Wn_a=Wn[:, L:2 * L], Wn_u=Wn[:, 2 * L:], bn=nl[0][2],
                edge=el[1:], node=nl[1:], glob=_mlp_layers(gb.mlp),
                inc=p.incidence_mean if nb.aggregation == "mean" else p.incidence,
                glob_agg=gb.aggregation))
        b0 = self.blocks[0] if self.blocks else None
        self.u_terms = None if b0 is None else (F.linear(self.u, b0["We_u"], b0["be"]),
                                                F.linear(self.u, b0["Wn_u"], b0["bn"]))
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
        B, N = qpos.shape[0], p.N
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
        r = [qpos, torch.sin(ang), torch.cos(ang), qvel, force]
        if p.limited:
            r.append(F.relu(torch.addmm(p.lim_b, qpos, p.lim_A) + qvel @ p.lim_V))
        r = torch.cat(r, -1)
        common = self.edge_A + torch.matmul(r, self.edge_M) + dist * self.edge_dist
        pd = disp @ self.edge_disp
        e = _run(self.edge_rest, torch.cat([common + pd, common - pd + self.edge_flag], 0))
        return self.process(x, e)

    def process(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """The processor and the decoder on encoded nodes ``x [N, B, L]`` and edges ``e [2E, B, L]``.

        What the decoder does not read is not computed: the last step updates the forward edges
        only (no reverse edges, nodes or globals), as their values reach no output."""
        p, u = self.plan, self.u
        N, B, L, E = x.shape[0], x.shape[1], x.shape[2], p.E
        for i, blk in enumerate(self.blocks):
            # the globals' share of the first layers, once per graph (the first block's: per rollout);
            # the nodes' share of the edges' first layer, once per node, then gathered (sender, receiver)
            edge_u, node_u = self.u_terms if i == 0 else (F.linear(u, blk["We_u"], blk["be"]),
                                                           F.linear(u, blk["Wn_u"], blk["bn"]))
            P = torch.cat([F.linear(x, blk["We_s"]), F.linear(x, blk["We_r"])]).view(2 * N, -1)
            last = i == len(self.blocks) - 1
            if last:
                e = e[:E]
            g = ((p.gather_forward if last else p.gather) @ P).view(e.shape[0], B, -1)
            e2 = _run(blk["edge"], F.linear(e, blk["We"]) + g + edge_u)
            if last:
                e = e + e2
                break
            agg = (blk["inc"] @ e2.view(2 * E, B * L)).view(N, B, L)
            x2 = _run(blk["node"], F.linear(x, blk["Wn"]) + F.linear(agg, blk["Wn_a"]) + node_u)
            ga = blk["glob_agg"]
            ge, gx = ((e2.mean(0), x2.mean(0)) if ga == "mean" else (e2.sum(0), x2.sum(0)) if ga == "sum"
                      else (e2.amax(0), x2.amax(0)))
            u2 = _run(blk["glob"], torch.cat([u, ge, gx], -1))
            x, e, u = x + x2, e + e2, u + u2
        return _run(self.decoder, e[:E]).transpose(0, 1)

    def step(self, qpos: torch.Tensor, qvel: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One control step ``(qpos', qvel')``."""
        if action.shape != (qpos.shape[0], self.moment.shape[1]) or qpos.shape[0] != self.B:
            raise ValueError(f"action must be [{self.B}, {self.moment.shape[1]}] for states [{self.B}, ...], "
                             f"got {list(action.shape)} and {list(qpos.shape)}")
        return self.integrate(qpos, qvel, self.predict(qpos, qvel, action))

    def integrate(self, qpos: torch.Tensor, qvel: torch.Tensor, pred: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """The next state ``(qpos', qvel')`` from a normalized prediction ``pred [B, E, 12]``
        (``denormalize`` and ``integrate_prediction``)."""
        p = self.plan
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
