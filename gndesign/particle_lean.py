"""The lean particle rollout: the learned particle simulator's frames with per-rollout constants.

:class:`gndesign.particles.ParticleSimulator` builds a :class:`gndesign.nn.Graph` every frame and
runs the generic encode-process-decode network on it. Along a rollout the obstacle does not move,
so much of that work is the same every frame; :class:`LeanParticles` does it once per rollout:

* the obstacle nodes' encoded latents (their features: zero velocities, walls, type), the
  obstacle-obstacle edges (neighbour search among obstacle nodes), their encoded latents and the
  hop distances along them;
* the normalization of velocities folded into the node encoder's first layer, the node type into
  its bias.

A frame (:meth:`LeanParticles.step`) then does one neighbour search outside autograd (the same
``cKDTree`` search as the reference, :func:`gndesign.graphs.radius_pairs`), builds every index
with numpy (:meth:`LeanParticles.plan`), and runs a few dozen tensor operations: the particles'
features in two products, the dynamic edges' features from one gather, the processor on flat
``[rows, L]`` tensors (a node's share of the edge MLP's first layer projected before the gather),
decoding and semi-implicit integration.

Message passing only computes what reaches a particle: with ``M`` processor steps, a node's latent
after step ``m`` is needed only if it is at most ``M - m`` hops from a particle, and an edge's only
if its receiver is. Obstacle nodes are ordered by their hop distance to the particles (particles
first), edges by their receiver's, so each step works on a prefix of the rows: obstacle nodes out
of reach (e.g. before the particles arrive) cost nothing, the last step updates particles only.
Nothing that is dropped could change a particle's prediction, so the values (and gradients) are
those of the reference path up to the order of floating-point operations
(``tests/test_lean_particles.py``).

Gradient checkpointing (``checkpoint=True``) recomputes a frame's activations in the backward
pass; it costs a second forward pass, so the lean rollout checkpoints only the frames whose saved
activations would take the total over :data:`CHECKPOINT_BUDGET` bytes (measured on the first frame).

``torch.compile`` is not used here: the frames' shapes change with the neighbours (edges, reachable
obstacle nodes), and compiling the first 150-frame rollout had not finished after 10 minutes
(``GNDESIGN_COMPILE=1`` only concerns the articulated lean step).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor

from gndesign.graphs import radius_pairs
from gndesign.nn import aggregate

__all__ = ["CHECKPOINT_BUDGET", "LeanParticles"]

CHECKPOINT_BUDGET = 1 << 30  # bytes of saved activations a checkpointed lean rollout keeps at most (about)


def _ops(layers) -> list:
    """MLP layers as ``(function, args)`` pairs (functional calls: no module hooks)."""
    ops = []
    for layer in layers:
        if isinstance(layer, torch.nn.Linear):
            ops.append((_linear, (layer.weight.t(), layer.bias)))
        elif isinstance(layer, torch.nn.LayerNorm):
            ops.append((F.layer_norm, (layer.normalized_shape, layer.weight, layer.bias, layer.eps)))
        elif isinstance(layer, torch.nn.SiLU):
            ops.append((F.silu, ()))
        else:
            ops.append((lambda h, mod: mod(h), (layer,)))
    return ops


def _linear(h: Tensor, weight_t: Tensor, bias: Tensor | None) -> Tensor:
    return h.mm(weight_t) if bias is None else torch.addmm(bias, h, weight_t)


def _rows(t: Tensor, n: int) -> Tensor:
    """The first ``n`` rows of ``t`` (``t`` itself when that is all of them: no autograd node)."""
    return t if n == t.shape[0] else t[:n]


def _tail(mlp) -> list:
    """The layers of an MLP after its first (linear) one."""
    return _ops(list(mlp)[1:])


def _apply(ops: list, h: Tensor) -> Tensor:
    for fn, args in ops:
        h = fn(h, *args)
    return h


class _Plan:
    """One frame's indices (CPU numpy built, on the model's device): see :meth:`LeanParticles.plan`."""

    __slots__ = ("edge_pos", "pairs", "receivers", "obs_rows", "oo_rows", "edges", "nodes", "dynamic")

    def __init__(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)


class LeanParticles:
    """The lean frames of a :class:`gndesign.particles.ParticleSimulator` (forward predictor)
    around one obstacle per scene.

    Args:
        model: the simulator (its current weights and statistics are read here: build a new one
            after changing them).
        obs_nodes: obstacle nodes ``[B, P, 2]`` (may require grad; fixed for the rollout).
        particles: ``N``, the particles per scene.
    """

    def __init__(self, model, obs_nodes: Tensor, particles: int):
        net = model.predictor
        self.model, self.R, self.M = model, model.R, net.message_passing_steps
        self.B, self.P, self.N = obs_nodes.shape[0], obs_nodes.shape[1], particles
        self.device = obs_nodes.device
        C, like = model.history, obs_nodes
        self.C = C
        vm, vs = model.vel_normalizer.stats(like)
        self.acc_mean, self.acc_std = model.acc_normalizer.stats(like)
        W, b = net.node_encoder[0].weight, net.node_encoder[0].bias
        Wv = W[:, :2 * C] / vs.repeat(C)
        PARTICLE, OBSTACLE = model.node_types
        shift = b - Wv @ vm.repeat(C)
        self.node_w = torch.cat([Wv, W[:, 2 * C:2 * C + 3]], 1).t()
        self.node_b = shift + W[:, 2 * C + 3 + PARTICLE]
        self.node_tail = _tail(net.node_encoder)
        first = net.edge_encoder[0]  # on [d / R, |d| / R] of displacements d: 1 / R folded in
        self.edge_w, self.edge_b, self.eps = (first.weight / self.R).t(), first.bias, 1e-12 * self.R ** 2
        self.edge_tail = _tail(net.edge_encoder)
        s = model.scene
        self.wall_w = like.new_tensor([[0.0, 1.0, -1.0], [1.0, 0.0, 0.0]]) / self.R  # pos @ wall_w + wall_b
        self.wall_b = like.new_tensor([-s["floor"], -s["x_min"], s["x_max"]]) / self.R
        self.blocks = []
        for m in range(self.M):
            gn = net.processor[0 if net.shared_weights else m]
            eb, nb = gn.edge_block, gn.node_block
            We, L = eb.mlp[0].weight, net.latent_size
            Wn = nb.mlp[0].weight
            # one product of the node latents: [sender share | receiver share | node MLP's own share]
            # the node latents' shares of the edge MLP's first layer: [sender | receiver] columns
            self.blocks.append((torch.cat([We[:, L:2 * L], We[:, 2 * L:]], 0).t(), Wn[:, :L].t(), We[:, :L].t(),
                                eb.mlp[0].bias, _tail(eb.mlp), Wn[:, L:].t(), nb.mlp[0].bias, _tail(nb.mlp),
                                nb.aggregation, We.shape[0]))
        self.decode = _ops(list(net.node_decoder))
        # Static: the obstacle nodes' latents, obstacle-obstacle edges, their latents, hop distances.
        self.obs_flat = obs_nodes.reshape(-1, 2)
        walls = model._walls(obs_nodes).reshape(-1, 3)
        h = F.linear(walls, W[:, 2 * C:2 * C + 3], shift + W[:, 2 * C + 3 + OBSTACLE])
        self.h_obs = _apply(self.node_tail, h)
        obs_np = obs_nodes.detach().cpu().double().numpy()
        pairs = radius_pairs(obs_np, self.R)  # [K, 2] flat b P + j
        oo = np.concatenate([pairs, pairs[:, ::-1]]) if len(pairs) else np.zeros((0, 2), np.int64)
        self.oo = np.ascontiguousarray(oo, dtype=np.int64)  # directed (sender, receiver)
        self.hops = self._hops(pairs)
        idx = torch.as_tensor(self.oo.T.copy(), device=self.device)
        self.enc_oo = self._encode_edges(self.obs_flat, idx[0], idx[1])
        self._obs_np = obs_np

    # ------------------------------------------------------------------------------ constants
    def _hops(self, pairs: np.ndarray) -> np.ndarray:
        """``[B, P, P]`` hop distances along obstacle-obstacle edges up to ``M - 1`` (further: inf,
        which is all that :meth:`plan` needs)."""
        B, P = self.B, self.P
        adj = np.zeros((B * P, P))
        adj[pairs[:, 0], pairs[:, 1] % P] = adj[pairs[:, 1], pairs[:, 0] % P] = 1.0
        adj = adj.reshape(B, P, P)
        out = np.where(np.eye(P, dtype=bool), 0.0, np.inf)[None].repeat(B, 0)
        reach = out == 0
        for k in range(1, self.M):
            reach = reach | (reach.astype(np.float64) @ adj > 0)
            out[reach & np.isinf(out)] = k
        return out

    def _encode_edges(self, pos: Tensor, senders: Tensor, receivers: Tensor) -> Tensor:
        d = pos.index_select(0, senders) - pos.index_select(0, receivers)
        feats = torch.cat([d, (d.pow(2).sum(-1, keepdim=True) + self.eps).sqrt()], -1)
        return _apply(self.edge_tail, torch.addmm(self.edge_b, feats, self.edge_w))

    # ------------------------------------------------------------------------------ per frame
    def plan(self, x: Tensor) -> _Plan:
        """The indices of the frame with particles at ``x [B, N, 2]`` (outside autograd): the
        neighbour search, the obstacle nodes within ``M`` hops of a particle ordered by distance,
        the edges ordered by their receiver's distance, and the rows each processor step updates."""
        B, N, P, M = self.B, self.N, self.P, self.M
        xs = x.detach().cpu().numpy().astype(np.float64)
        pairs = radius_pairs(np.concatenate([xs, self._obs_np], 1), self.R)  # flat b (N + P) + j
        g, loc = np.divmod(pairs, N + P) if B > 1 else (0, pairs)
        is_p = loc < N
        flat = np.where(is_p, g * N + loc, g * P + loc - N)  # particle index, or obstacle index g P + j
        pp = is_p[:, 0] & is_p[:, 1]
        a, c = flat[pp].T
        mixed = flat[~pp & (is_p[:, 0] | is_p[:, 1])]  # (particle, obstacle node): i < j puts particles first
        po_p, po_o = mixed[:, 0], mixed[:, 1]
        none = np.zeros(0, np.int64)
        if len(po_o):
            # Hop distance of each obstacle node to the nearest particle; the reachable ones, nearest first.
            touched = np.unique(po_o)
            tb, tj = np.divmod(touched, P)
            first = np.flatnonzero(np.diff(tb, prepend=-1))
            dist = np.full((B, P), np.inf)
            dist[tb[first]] = np.minimum.reduceat(self.hops[tb, tj], first, axis=0) + 1
            dist = dist.reshape(-1)
            kept = np.flatnonzero(dist <= M)
            kept = kept[np.argsort(dist[kept], kind="stable")]
            rank = np.full(B * P, -1, np.int64)
            rank[kept] = np.arange(len(kept)) + B * N
            oo = self.oo
            keep_oo = np.flatnonzero(dist[oo[:, 1]] <= M - 1)
            oo_dist = dist[oo[keep_oo, 1]]
            order = np.argsort(oo_dist, kind="stable")
            keep_oo, oo_dist = keep_oo[order], oo_dist[order]
            oo_s, oo_r = rank[oo[keep_oo, 0]], rank[oo[keep_oo, 1]]
            po_rank = rank[po_o]
            kept_dist = dist[kept]
        else:
            kept = keep_oo = oo_s = oo_r = po_rank = none
            oo_dist = kept_dist = np.zeros(0)
        # Edges: particle-particle, obstacle->particle, particle->obstacle (the dynamic ones), then the
        # static obstacle-obstacle ones whose receiver is within M - 1 hops, by the receiver's distance.
        E0, n_po = 2 * len(a) + len(po_o), len(po_o)
        edges = [E0 + (n_po + int(np.count_nonzero(oo_dist <= M - m)) if m < M else 0) for m in range(1, M + 1)]
        nodes = [B * N + int(np.count_nonzero(kept_dist <= M - m)) for m in range(0, M + 1)]
        o = po_o + B * N  # obstacle nodes in [particles | obstacle nodes] order
        parts = [a, c, o, po_p, c, a, po_p, o, a, c, po_rank, po_p, oo_s, c, a, po_p, po_rank, oo_r, kept, keep_oo]
        flat_idx = torch.from_numpy(np.concatenate(parts).astype(np.int64, copy=False)).to(self.device)
        D, E = E0 + n_po, E0 + n_po + len(oo_s)
        cuts = np.cumsum([D, D, E, E, len(kept), len(keep_oo)])[:-1].tolist()
        pos_s, pos_r, send, recv, obs_rows, oo_rows = flat_idx.tensor_split(cuts)
        pairs = torch.stack([2 * send, 2 * recv + 1], 1).view(-1)  # see latent()
        return _Plan(edge_pos=(pos_s, pos_r), pairs=pairs, receivers=recv, obs_rows=obs_rows, oo_rows=oo_rows,
                     edges=edges, nodes=nodes, dynamic=D)

    def latent(self, x: Tensor, vels: list[Tensor], plan: _Plan) -> Tensor:
        """The particles' latents ``[B N, L]`` after the processor, for particles at ``x [B, N, 2]``
        with velocities ``vels`` (``C`` tensors ``[B, N, 2]``, oldest first)."""
        B, N = x.shape[:2]
        xf = x.reshape(B * N, 2)
        walls = torch.addmm(self.wall_b, xf, self.wall_w).clamp(-1.0, 1.0)
        feats = torch.cat([torch.cat(vels, -1).reshape(B * N, -1), walls], -1)
        h = _apply(self.node_tail, torch.addmm(self.node_b, feats, self.node_w))
        if len(plan.obs_rows):
            h = torch.cat([h, self.h_obs.index_select(0, plan.obs_rows)], 0)
        e = self._encode_edges(torch.cat([xf, self.obs_flat], 0), plan.edge_pos[0], plan.edge_pos[1])
        if len(plan.oo_rows):
            e = torch.cat([e, self.enc_oo.index_select(0, plan.oo_rows)], 0)
        for m, (w_pair, w_self, w_edge, b_edge, edge_tail, w_agg, b_node, node_tail, agg, H) in enumerate(self.blocks):
            ne, nn_ = plan.edges[m], plan.nodes[m + 1]
            e = _rows(e, ne)
            # rows 2 i and 2 i + 1: node i's shares as a sender and as a receiver; one gather for both
            pair = h.mm(w_pair).view(-1, H).index_select(0, plan.pairs[:2 * ne]).view(ne, 2, H).sum(1)
            upd = _apply(edge_tail, torch.addmm(b_edge, e, w_edge) + pair)
            h = _rows(h, nn_)
            hn = torch.addmm(h.mm(w_self), aggregate(upd, plan.receivers[:ne], nn_, agg), w_agg) + b_node
            h = h + _apply(node_tail, hn)
            e = e + upd
        return h

    def normalized(self, x: Tensor, vels: list[Tensor], plan: _Plan) -> Tensor:
        """The normalized accelerations ``[B, N, 2]`` (what ``predict_normalized`` gives)."""
        return _apply(self.decode, self.latent(x, vels, plan)).view(x.shape)

    def step(self, x: Tensor, vels: list[Tensor], plan: _Plan) -> Tensor:
        """The next positions ``[B, N, 2]``: ``x + v + a`` (``v = vels[-1]``, ``a`` the denormalized
        :meth:`normalized`), in the order of operations of :func:`gndesign.particles.integrate`, so
        that a rollout and a training loss unrolled from the same predictions agree bit for bit."""
        return x + vels[-1] + (self.normalized(x, vels, plan) * self.acc_std + self.acc_mean)

    # ------------------------------------------------------------------------------ rollout
    def rollout(self, history: Tensor, steps: int, checkpoint: bool = False,
                budget: float = CHECKPOINT_BUDGET) -> Tensor:
        """Positions ``[B, steps+1, N, 2]`` from a history ``[B, C+1, N, 2]`` (see
        :meth:`gndesign.particles.ParticleSimulator.rollout`); ``checkpoint``: recompute the
        activations of the frames past ``budget`` bytes of saved activations in the backward pass."""
        frames = list(history.unbind(1))
        vels = [frames[k + 1] - frames[k] for k in range(self.C)]
        x = frames[-1]
        out = [x]
        step = self.step
        ckpt = checkpoint and torch.is_grad_enabled()
        saved, per_row = 0.0, None
        for _ in range(steps):
            plan = self.plan(x)
            rows = plan.dynamic + len(plan.oo_rows) + plan.nodes[0]
            if ckpt and per_row is not None and saved + per_row * rows > budget:
                nxt = torch.utils.checkpoint.checkpoint(step, x, vels, plan, use_reentrant=False)
            elif ckpt and per_row is None:
                count = [0]

                def pack(t, count=count):
                    count[0] += t.numel() * t.element_size()
                    return t

                with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                    nxt = step(x, vels, plan)
                per_row = count[0] / max(rows, 1)
                saved += count[0]
            else:
                nxt = step(x, vels, plan)
                saved += (per_row or 0.0) * rows
            vels = vels[1:] + [nxt - x]
            x = nxt
            out.append(x)
        return torch.stack(out, 1)
