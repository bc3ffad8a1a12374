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
