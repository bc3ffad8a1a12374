"""The message-passing model of N-body systems of Cranmer et al. 2020, with sparse messages.

One graph per frame: the N particles are nodes, every ordered pair ``(i, j)``, ``i != j``, an edge
from sender ``j`` to receiver ``i``. The edge model ``phi_e`` maps the pair's inputs (the receiver
minus sender displacement ``d [D]``, the distance ``r``, the relative velocity ``w [D]``, the masses
``m1, m2`` and charges ``q1, q2``: :data:`PAIR_FEATURES`) to a message; messages are summed per
receiver; the node model ``phi_v(m_i, q_i, sum)`` predicts the acceleration (in units of the data's
acceleration spread). Translation invariance holds by construction (only differences enter).

``model.readout=force`` builds Newton's second law in: ``phi_v(sum)`` predicts the net force and
``a_i = F_i / m_i``. The node model no longer sees the receiver, so a message cannot carry the pair
force divided by (or otherwise transformed with) the receiver's mass or charge and undo that in the
node: with the default readout the messages of the 1/r^k laws drift towards ``F / m_i`` and those
of the charges towards a charge-dependent mixture, neither a linear transform of the force.

Message sparsity (``model.message``): ``standard`` (``message_size`` components, no pressure),
``l1`` (``l1_weight`` times the mean L1 norm of the messages added to the loss), ``bottleneck``
(``message_size`` = the spatial dimension) and ``kl`` (the edge model outputs a mean and log
variance per component; training samples the message and adds ``kl_weight`` times its KL divergence
to N(0, 1); evaluation uses the mean). The edge function may be replaced by any callable of the pair
features (:meth:`NBodyGN.edge_override`), which is how the symbolic model of :mod:`gndesign.distill`
is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from gndesign.config import NBodyModelConfig
from gndesign.nbody_laws import pair_inputs


def pair_feature_names(dim: int) -> list[str]:
    """Names of the edge model's inputs, in order (also the symbols formulas use)."""
    axes = "xyz"[:dim]
    return [f"d{a}" for a in axes] + ["r"] + [f"w{a}" for a in axes] + ["m1", "m2", "q1", "q2"]


def mlp(n_in: int, hidden: int, layers: int, n_out: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    for k in range(layers):
        mods += [nn.Linear(n_in if k == 0 else hidden, hidden), nn.ReLU()]
    mods.append(nn.Linear(hidden if layers else n_in, n_out))
    return nn.Sequential(*mods)


def pair_features(x: Tensor, v: Tensor, mass: Tensor, charge: Tensor) -> tuple[Tensor, Tensor]:
    """Edge inputs ``[B, N, N, F]`` (:func:`pair_feature_names`) and the off-diagonal mask ``[N, N]``."""
    p = pair_inputs(x, v, mass, charge)
    feats = torch.cat([p["d"], p["r"][..., None], p["w"], p["m1"][..., None], p["m2"][..., None],
                       p["q1"][..., None], p["q2"][..., None]], dim=-1)
    return feats, p["mask"]


class NBodyGN(nn.Module):
    """``phi_v(m_i, q_i, sum_j phi_e(pair_ij))`` -> acceleration ``[B, N, D]``.

    ``system``: the dataset's system description (``law``, ``dim``, ...), recorded in checkpoints.
    """

    def __init__(self, config: NBodyModelConfig, system: Mapping[str, Any]):
        super().__init__()
        self.config = config
        self.system = dict(system)
        self.dim = int(system["dim"])
        self.message_size = self.dim if config.message == "bottleneck" else config.message_size
        n_pair = len(pair_feature_names(self.dim))
        n_edge_out = 2 * self.message_size if config.message == "kl" else self.message_size
        self.edge = mlp(n_pair, config.hidden_size, config.mlp_layers, n_edge_out)
        self.receiver_inputs = 0 if config.readout == "force" else 2  # m_i, q_i
        self.node = mlp(self.receiver_inputs + self.message_size, config.hidden_size, config.mlp_layers, self.dim)
        self.register_buffer("acc_scale", torch.ones(()))
        self.edge_override: Callable[[Tensor], Tensor] | None = None  # a distilled edge function
        self.node_override: Callable[[Tensor], Tensor] | None = None  # a distilled node function (force readout)

    def messages(self, feats: Tensor, sample: bool = False) -> tuple[Tensor, Tensor | None]:
        """Messages ``[..., M]`` of pair features ``[..., F]`` and, for ``kl``, the log variances."""
        if self.edge_override is not None:
            return self.edge_override(feats), None
        out = self.edge(feats)
        if self.config.message != "kl":
            return out, None
        mu, logvar = out[..., : self.message_size], out[..., self.message_size:]
        if sample:
            mu = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return mu, logvar

    def forward(self, x: Tensor, v: Tensor, mass: Tensor, charge: Tensor, sample: bool = False,
                return_messages: bool = False):
        """Accelerations ``[B, N, D]`` of positions and velocities ``[B, N, D]``, masses and charges
        ``[B, N]``; with ``return_messages`` also ``(messages [B, N, N, M], logvar or None, mask)``."""
        feats, mask = pair_features(x, v, mass, charge)
        msg, logvar = self.messages(feats, sample)
        agg = (msg * mask[..., None]).sum(-2)
        if self.receiver_inputs:
            out = self.node(torch.cat([mass[..., None], charge[..., None], agg], dim=-1)) * self.acc_scale
        else:  # the net force, in units of the acceleration spread times a unit mass: a = F / m
            out = (self.node_override or self.node)(agg) * self.acc_scale / mass[..., None]
        if return_messages:
            return out, (msg, logvar, mask)
        return out

    def loss(self, x: Tensor, v: Tensor, mass: Tensor, charge: Tensor, target: Tensor) -> tuple[Tensor, dict]:
        """Mean absolute error of the normalized accelerations plus the sparsity term."""
        pred, (msg, logvar, mask) = self(x, v, mass, charge, sample=self.training, return_messages=True)
        fit = ((pred - target) / self.acc_scale).abs().mean()
        edges = mask.sum() * msg.shape[0]
        cfg = self.config
        if cfg.message == "l1":
            reg = cfg.l1_weight * (msg.abs().sum(-1) * mask).sum() / edges
        elif cfg.message == "kl":
            kl = 0.5 * (msg**2 + logvar.exp() - logvar - 1.0) if self.training else 0.5 * msg**2
            reg = cfg.kl_weight * (kl.sum(-1) * mask).sum() / edges
        else:
            reg = torch.zeros((), dtype=pred.dtype, device=pred.device)
        return fit + reg, {"fit": float(fit.detach()), "reg": float(reg.detach())}

    def step(self, x: Tensor, v: Tensor, mass: Tensor, charge: Tensor, dt: float, steps: int,
             substeps: int = 1) -> tuple[Tensor, Tensor]:
        """Roll out ``steps`` frames of ``dt`` from ``x, v [B, N, D]`` with the model's accelerations
        (velocity Verlet, as the ground truth): positions and velocities ``[steps + 1, B, N, D]``."""
        from gndesign.nbody_laws import verlet

        xs, vs, _ = verlet(lambda xx, vv: self(xx, vv, mass, charge), x, v, dt, steps, substeps)
        return xs, vs
