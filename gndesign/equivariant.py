"""An E(n)-equivariant message-passing model of N-body systems (EGNN, Satorras et al. 2021).

Selected by ``model.net=egnn`` in the N-body config (:class:`gndesign.config.NBodyModelConfig`).
Everything the MLPs see is invariant to rotations, reflections and translations: node features
``h_i`` embed the mass, charge and speed ``|v_i|``; the message of edge ``(i, j)`` (sender ``j``)
is ``m_ij = phi_e(h_i, h_j, r_ij, |w_ij|, w_ij . d_ij / r_ij)`` with ``d_ij = x_i - x_j``,
``r_ij = |d_ij|`` and the relative velocity ``w_ij = v_i - v_j``. Vectors are built only from the
relative vectors: each of ``model.layers`` rounds moves the coordinates along them,

    delta_i = sum_j d_ij phi_x(m_ij) + w_ij phi_w(m_ij),   x_i <- x_i + delta_i,
    h_i <- h_i + phi_h(h_i, sum_j m_ij),

and the acceleration is ``acc_scale * sum of the rounds' delta_i``, so it rotates with the inputs
exactly (up to rounding), ignores translations and follows permutations of the particles. The
velocity differences let dissipative laws (damped springs) be represented. The message-sparsity
options of :class:`gndesign.nbody_model.NBodyGN` do not apply (``model.message`` must be ``standard``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from gndesign.config import NBodyModelConfig
from gndesign.nbody_laws import pair_inputs
from gndesign.nbody_model import NBodyGN, mlp
from gndesign.nn import EncodeProcessDecode, Graph, aggregate, build_mlp

EDGE_INVARIANTS = 3  # r, |w|, w . d / r


class EGNNLayer(nn.Module):
    def __init__(self, hidden: int, layers: int):
        super().__init__()
        self.edge = nn.Sequential(mlp(2 * hidden + EDGE_INVARIANTS, hidden, layers, hidden), nn.SiLU())
        self.vec = mlp(hidden, hidden, 1, 2)  # phi_x, phi_w
        self.node = mlp(2 * hidden, hidden, layers, hidden)

    def forward(self, h: Tensor, x: Tensor, v: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """New node features ``[B, N, H]`` and the coordinate update ``[B, N, D]``."""
        p = pair_inputs(x, v, h[..., 0], h[..., 0])
        d, r, w = p["d"], p["r"], p["w"]
        inv = torch.stack([r, w.norm(dim=-1), (w * d).sum(-1) / r], dim=-1)
        n = h.shape[-2]
        hi = h[..., :, None, :].expand(*h.shape[:-2], n, n, h.shape[-1])
        hj = h[..., None, :, :].expand_as(hi)
        msg = self.edge(torch.cat([hi, hj, inv], dim=-1)) * mask[..., None]
        coef = self.vec(msg) * mask[..., None]
        delta = (d * coef[..., :1] + w * coef[..., 1:]).sum(-2)
        return h + self.node(torch.cat([h, msg.sum(-2)], dim=-1)), delta


class NBodyEGNN(nn.Module):
    """EGNN acceleration model ``[B, N, D]`` of positions, velocities ``[B, N, D]``, masses and charges
    ``[B, N]``; the same interface as :class:`gndesign.nbody_model.NBodyGN` (``loss``, ``step``)."""

    def __init__(self, config: NBodyModelConfig, system: Mapping[str, Any]):
        super().__init__()
        self.config = config
        self.system = dict(system)
        self.dim = int(system["dim"])
        hidden = config.hidden_size
        self.embed = mlp(3, hidden, 1, hidden)
        self.layers = nn.ModuleList(EGNNLayer(hidden, config.mlp_layers) for _ in range(config.layers))
        self.register_buffer("acc_scale", torch.ones(()))

    def forward(self, x: Tensor, v: Tensor, mass: Tensor, charge: Tensor) -> Tensor:
        h = self.embed(torch.stack([mass, charge, v.norm(dim=-1)], dim=-1))
        n = x.shape[-2]
        mask = ~torch.eye(n, dtype=torch.bool, device=x.device)
        x0 = x
        for layer in self.layers:
            h, delta = layer(h, x, v, mask)
            x = x + delta
        return (x - x0) * self.acc_scale

    def loss(self, x: Tensor, v: Tensor, mass: Tensor, charge: Tensor, target: Tensor) -> tuple[Tensor, dict]:
        """Mean absolute error of the normalized accelerations (no message pressure)."""
        fit = ((self(x, v, mass, charge) - target) / self.acc_scale).abs().mean()
        return fit, {"fit": float(fit.detach()), "reg": 0.0}

    step = NBodyGN.step


class EquivariantParticleNet(nn.Module):
    """An E(2)-equivariant predictor of particle accelerations for scenes that gravity and walls
    make asymmetric (:class:`gndesign.particles.ParticleSimulator` with ``model.net=egnn``).

    The symmetry breakers are explicit inputs: the gravity direction ``g`` and a *set* of walls,
    each a unit normal ``n_w`` and an offset ``c_w`` (the wall is ``n_w . x = c_w``). An
    encode-process-decode graph network (:class:`gndesign.nn.EncodeProcessDecode`) sees only
    invariants:

    * nodes: per velocity ``v_c`` of the history ``|v_c|`` and ``v_c . g``, the node type, and the
      sum over walls of an MLP ``phi_w`` of the node-wall invariants ``f_w`` (the signed distance
      ``(n_w . x - c_w) / R`` clipped to ``[-1, 1]``, ``v_c . n_w``, ``n_w . g``);
    * edges (sender ``s``, receiver ``r``, ``d = (x_s - x_r) / R``): ``|d|``, ``d . g``, ``d . v_r``
      and ``d . v_s`` (the latest velocities);

    and gives the coefficients of an EGNN-style vector readout from its latents ``h``:

        a_r = sum_s d_sr psi_e(edge latent) + sum_c v_c psi_c(h_r) + g psi_g(h_r) + sum_w n_w psi_w(h_r, f_w).

    So the accelerations rotate, reflect and translate with the particles, the obstacle, gravity
    and the walls together (tested), and, the walls being a set, a scene that is its own mirror
    image (the obstacle scene about its centre line) gives mirrored predictions from mirrored
    inputs: a symmetry the plain GN has to learn from data.
    """

    def __init__(self, history: int, latent_size: int, mlp_hidden_size: int, mlp_layers: int,
                 message_passing_steps: int, aggregation: str = "sum", num_types: int = 2):
        super().__init__()
        L = latent_size
        self.wall_in = build_mlp(history + 2, mlp_hidden_size, L, mlp_layers, layer_norm=True)
        self.wall_out = build_mlp(L + history + 2, mlp_hidden_size, 1, mlp_layers, layer_norm=False)
        self.net = EncodeProcessDecode(
            node_in=2 * history + num_types + L, edge_in=4, global_in=0, latent_size=L,
            mlp_hidden_size=mlp_hidden_size, mlp_layers=mlp_layers, message_passing_steps=message_passing_steps,
            node_out=history + 1, edge_out=1, aggregation=aggregation, use_globals=False)

    def forward(self, pos: Tensor, vel: Tensor, types: Tensor, edge_index: Tensor, gravity: Tensor,
                normals: Tensor, offsets: Tensor, radius: float) -> Tensor:
        """Accelerations ``[B, M, 2]`` (in the velocities' units) of nodes at ``pos [B, M, 2]`` with
        velocity histories ``vel [B, C, M, 2]`` (oldest first, zero for kinematic nodes), one-hot
        ``types [M, T]``, edges ``[2, E]`` (flat indices ``b M + j``: sender, receiver), the gravity
        direction ``[2]`` (unit, or zero), wall normals ``[W, 2]`` (unit) and offsets ``[W]``."""
        B, C, M, _ = vel.shape
        W = normals.shape[0]
        v = vel.permute(0, 2, 1, 3)  # [B, M, C, 2]
        dist = ((pos @ normals.T - offsets) / radius).clamp(-1.0, 1.0)  # [B, M, W]
        walls = torch.cat([dist[..., None], (v @ normals.T).transpose(-1, -2),
                           (normals @ gravity).expand(B, M, W)[..., None]], -1)  # [B, M, W, C + 2]
        nodes = torch.cat([v.norm(dim=-1), v @ gravity, types.expand(B, -1, -1), self.wall_in(walls).sum(2)], -1)
        flat_pos, flat_v = pos.reshape(-1, 2), v[:, :, -1].reshape(-1, 2)
        s, r = edge_index
        d = (flat_pos.index_select(0, s) - flat_pos.index_select(0, r)) / radius  # [E, 2]
        edges = torch.cat([d.norm(dim=-1, keepdim=True), (d @ gravity)[:, None],
                           (d * flat_v.index_select(0, r)).sum(-1, keepdim=True),
                           (d * flat_v.index_select(0, s)).sum(-1, keepdim=True)], -1)
        batch = torch.arange(B, device=pos.device).repeat_interleave(M)
        latent = self.net.process(self.net.encode(Graph(nodes.reshape(B * M, -1), edges, None, edge_index, batch, B)))
        node_coef = self.net.node_decoder(latent.x).view(B, M, C + 1)
        h = latent.x.view(B, M, 1, -1).expand(-1, -1, W, -1)
        wall_coef = self.wall_out(torch.cat([h, walls], -1))  # [B, M, W, 1]
        acc = (v * node_coef[..., :C, None]).sum(2) + node_coef[..., C:] * gravity + (wall_coef * normals).sum(2)
        edge_coef = self.net.edge_decoder(latent.edge_attr)
        return acc + aggregate(d * edge_coef, r, B * M).view(B, M, 2)
