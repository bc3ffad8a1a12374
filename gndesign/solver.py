"""The C-GNS predictor: a learned constraint, minimized by unrolled gradient descent.

A simulator is a physics front end (:class:`gndesign.particles.ParticleSimulator`,
:class:`gndesign.simulator.GraphNetworkSimulator`) plus a predictor. The forward predictor is an
encode-process-decode network that maps the current state's graph to the prediction; the
:class:`ConstraintSolver` (Rubanova et al. 2022) instead scores candidate predictions ``z`` with
its network (the learned constraint ``f_C(z) >= 0``) and returns the result of ``N`` steps of
gradient descent on it, with a learned step size, from the front end's inertial guess. The front
end says how a candidate enters the network's graph and what the constraints see of it.

Test-time (user) constraints are an argument of every solve (:class:`SolveOptions`), never state
of the model, so a rollout with constraints can recompute its steps in the backward pass
(activation checkpointing). :func:`violation_report` judges any rollout against constraints.
See :mod:`gndesign.cgns` for the method and its units.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gndesign.config import SolverConfig
from gndesign.constraint_sets import bind_constraints, constraint_terms
from gndesign.constraints import ConstraintContext
from gndesign.errors import ConfigError
from gndesign.io import check_finite
from gndesign.nn import EncodeProcessDecode
from gndesign.objectives import Objective

__all__ = [
    "ConstraintSolver",
    "SolveOptions",
    "divergence_cause",
    "gradient_descent",
    "penalty_descent",
    "solve_options",
    "upgrade_state_dict",
    "violation_report",
]

Energy = Callable[[Tensor], Tensor]
Quantities = dict[str, Tensor]


def gradient_descent(energy: Energy, z0: Tensor, step_size: Tensor | float, iterations: int,
                     create_graph: bool | None = None, record: bool = True) -> tuple[Tensor, list[float]]:
    """``iterations`` steps ``z <- z - step_size * grad energy(z)`` from ``z0``.

    Args:
        energy: ``z -> [B]`` (or a scalar); the batch elements' energies are summed, so each
            element descends on its own energy.
        step_size: a float or a (learned) scalar tensor.
        create_graph: keep the graph of every step so the result is differentiable with respect
            to ``step_size``, the energy's parameters and ``z0`` (training, design). Default: when
            gradients are enabled. Without it every step is detached (test time, low memory).

        record: record the energies (one device synchronization per step).

    Returns:
        ``(z, energies)``: the final candidate (``z0``'s shape) and the total energy before each
        step (floats, for diagnostics; empty without ``record``).
    """
    if create_graph is None:
        create_graph = torch.is_grad_enabled()
    energies = []
    with torch.enable_grad():
        z = z0 if (create_graph and z0.requires_grad) else z0.detach().clone().requires_grad_(True)
        for _ in range(iterations):
            e = energy(z).sum()
            if record:
                energies.append(float(e.detach()))
            (g,) = torch.autograd.grad(e, z, create_graph=create_graph)
            z = z - step_size * g
            if not create_graph:
                z = z.detach().requires_grad_(True)
    return (z if create_graph else z.detach()), energies


def penalty_descent(energy: Energy, penalty: Callable[[Tensor], tuple[Tensor, Tensor]], z0: Tensor,
                    step_size: Tensor | float, iterations: int, create_graph: bool | None = None) -> Tensor:
    """``iterations`` steps of gradient descent on ``energy(z) + P(z)`` for a stiff penalty ``P``
    (forward-backward splitting with a Gauss-Newton proximal step on ``P``)::

        y       = z - eta * grad energy(z)                         (the plain learned step)
        z_next  = y - eta / (1 + 2 eta W(y)) * grad P(y)

    ``penalty(y)`` returns ``(P(y) [B], W(y))``: the penalty and the curvature bound of its
    squared hinges where they are active at ``y`` (per element, broadcasting against ``z``; zero
    where every constraint holds). The second line is the exact proximal step of the penalty's
    Gauss-Newton model at ``y`` (for a hinge of unit-gradient violation ``v`` and weight ``W``:
    ``v -> v / (1 + 2 eta W)``), so any weight is stable, a stiff penalty projects onto its
    feasible side, and it never slows the descent on ``energy``: elements no constraint acts on
    take the plain step, exactly as without constraints. The fixed points are the stationary
    points of ``energy + P``, as for plain gradient descent. ``create_graph``: as in
    :func:`gradient_descent` (``W`` is piecewise constant and carries no gradient).
    """
    if create_graph is None:
        create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        z = z0 if (create_graph and z0.requires_grad) else z0.detach().clone().requires_grad_(True)
        for _ in range(iterations):
            (g,) = torch.autograd.grad(energy(z).sum(), z, create_graph=create_graph)
            y = z - step_size * g
            if not create_graph:
                y = y.detach().requires_grad_(True)
            p, W = penalty(y)
            if p.requires_grad:
                (gp,) = torch.autograd.grad(p.sum(), y, create_graph=create_graph, allow_unused=True)
            else:  # the penalty does not depend on the candidate
                gp = None
            z = y if gp is None else y - step_size / (1 + 2 * step_size * W.detach()) * gp
            if not create_graph:
                z = z.detach().requires_grad_(True)
    return z if create_graph else z.detach()


@dataclass
class SolveOptions:
    """Test-time settings of the solves of one step or rollout (an argument, never model state).

    Attributes:
        constraints: user constraints bound to the front end (:func:`solve_options`), or None.
        start: quantities at the rollout's start (``positions_0``, ``qpos_0``...; pins without
            ``at`` hold them).
        iterations: solver steps per solve (None: :meth:`ConstraintSolver.default_iterations`).
    """

    constraints: Objective | None = None
    start: Quantities = field(default_factory=dict)
    iterations: int | None = None

    @staticmethod
    def refuse(options: SolveOptions | None) -> None:
        """Refuse test-time settings for a forward predictor (it has no solve to apply them to)."""
        if options is not None:
            raise ConfigError("test-time constraints and solver iterations need a C-GNS (a constraint solver); this "
                              "simulator predicts the next state directly: train one with `gndesign train --model "
                              "cgns`")


def solve_options(constraints: Objective | None, iterations: int | None, context: ConstraintContext,
                  start: Callable[[], Quantities]) -> SolveOptions | None:
    """The :class:`SolveOptions` of a rollout: ``constraints`` bound to ``context`` (bad references
    and objectives that are not constraints are refused here, not mid-rollout), ``start()`` the
    quantities at its start (computed only with constraints). None without constraints and
    iterations: the trained settings."""
    if constraints is None and iterations is None:
        return None
    if iterations is not None and iterations < 0:
        raise ConfigError(f"solver iterations must be >= 0, got {iterations}")
    bound = bind_constraints(constraints, context)
    constraint_terms(bound)
    return SolveOptions(bound, start() if bound is not None else {}, iterations)


class ConstraintSolver(nn.Module):
    """The C-GNS predictor: the learned constraint's ``network`` (decoding an ``energy_channels``
    vector per node or edge: ``f_C`` is the sum of their squared norms, the front end says over
    which), the learned step size ``eta = softplus(step_param)`` and the iteration counts.

    Args:
        network: the energy network (its inputs: the current state's features and the candidate's).
        config: iterations, initial step size (``step_param`` starts at its ``softplus^-1``).
    """

    def __init__(self, network: EncodeProcessDecode, config: SolverConfig):
        super().__init__()
        config.validate()
        self.config = config
        # Registered before the network: the parameters keep the order of the checkpoints written
        # before the solver was a module of its own (gradient clipping sums over them in order).
        self.step_param = nn.Parameter(torch.tensor(math.log(math.expm1(config.step_size))),
                                       requires_grad=config.learn_step_size)
        self.network = network

    def step_size(self) -> Tensor:
        """The learned step size ``eta = softplus(p) > 0``."""
        return F.softplus(self.step_param)

    def default_iterations(self) -> int:
        """In training ``config.iterations``, or with ``config.iterations_min`` a number drawn
        uniformly from ``[iterations_min, iterations]`` (torch's global generator: reproducible
        with the training seed, resumed exactly); in eval mode ``config.test_iterations`` (if set),
        else ``config.iterations``."""
        s = self.config
        if self.training:
            if s.iterations_min and s.iterations_min < s.iterations:
                return int(torch.randint(s.iterations_min, s.iterations + 1, ()))
            return s.iterations
        return s.test_iterations or s.iterations

    def solve(self, energy: Energy, z0: Tensor, sigma: Tensor, quantities: Callable[[Tensor], Quantities],
              stiffness: Callable[[Objective, Quantities], Tensor], options: SolveOptions | None = None) -> Tensor:
        """Gradient descent on ``energy(z) [B]`` from ``z0`` (the candidate's shape), with the
        test-time constraints (if any) by :func:`penalty_descent` on
        ``energy(z) + U(quantities(z)) / sigma^2``.

        Args:
            sigma: the world-unit displacement of one unit of ``z`` (scales ``U``).
            quantities: what the constraints see of a candidate (``positions``, ``qpos``...).
            stiffness: the weights of the constraints active at these quantities, broadcasting
                against ``z`` (:func:`gndesign.constraints.active_stiffness`, per element or node).
            options: test-time constraints and iterations (None: the trained settings).
        """
        n = self.default_iterations() if options is None or options.iterations is None else options.iterations
        eta = self.step_size().to(z0.dtype)
        if options is None or options.constraints is None:
            z, _ = gradient_descent(energy, z0, eta, n, record=False)
            return z
        bound, inv = options.constraints, 1.0 / sigma.to(z0.dtype).pow(2)
        weights: list[Tensor] = []

        def penalty(z: Tensor) -> tuple[Tensor, Tensor]:
            q = {**options.start, **quantities(z)}
            W = stiffness(bound, q).to(z0.dtype)
            if W.numel():
                weights.append(W.detach().amax())
            return bound(q) * inv, W

        z = penalty_descent(energy, penalty, z0, eta, n)
        if not bool(torch.isfinite(z).all()):
            check_finite(z, "the constrained solve's prediction", divergence_cause(weights, inv, z0.dtype))
        return z


def divergence_cause(weights: list[Tensor], inv_sigma2: Tensor, dtype: torch.dtype) -> str:
    """Why a constrained solve went non-finite, in numbers: the largest active constraint weight
    (``weights``: the largest of each penalty evaluation) times ``1 / sigma^2`` (the penalty's
    scale) against the dtype's range."""
    big = torch.finfo(dtype).max
    w = max((float(x) for x in weights if not math.isnan(float(x))), default=0.0)
    scale = float(inv_sigma2.max())
    limit = big * 1e-6 / scale
    if not math.isfinite(w * scale) or w > limit:
        return (f"the largest active constraint weight {w:.3g} times 1/sigma^2 = {scale:.3g} overflows {dtype} "
                f"(largest number {big:.3g}): use weights below {limit:.1g}")
    return (f"the constraint weights are moderate (largest {w:.3g}), so the model itself diverged under these "
            "constraints: try fewer solver iterations (--iterations) or constraints the start state satisfies")


def upgrade_state_dict(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any,
                       old_network: str) -> None:
    """A ``load_state_dict`` pre-hook of a simulator (register it with
    ``functools.partial(upgrade_state_dict, old_network=...)``): renames, in place, the keys written
    before the simulator held a predictor. Its network ``{old_network}.*`` becomes ``predictor.*``
    (forward) or ``predictor.network.*`` (``module.solves``: a C-GNS), the C-GNS ``step_param``
    becomes ``predictor.step_param``. Newer keys are left alone."""
    network = f"{prefix}predictor.network." if module.solves else f"{prefix}predictor."
    old = f"{prefix}{old_network}."
    for key in [k for k in state_dict if k.startswith(old) or k == f"{prefix}step_param"]:
        new = f"{prefix}predictor.step_param" if key == f"{prefix}step_param" else network + key[len(old):]
        state_dict[new] = state_dict.pop(key)


@torch.no_grad()
def violation_report(constraints: Objective, context: ConstraintContext, frames: Sequence[Mapping[str, Tensor]]
                     ) -> dict[str, Any]:
    """How much a rollout violates ``constraints`` (bound to ``context``, the front end's
    ``constraint_context``): ``frames`` are the quantities of its states (the front end's
    ``constraint_frames``; pins refer to the first). For each constraint its spec, the largest and
    mean violation (metres or radians; for particles against obstacles: the penetration of the
    particles' surface) and the largest per frame; ``max`` over all of them. Any model's rollout
    (forward or C-GNS, or the ground truth) may be judged."""
    bound = bind_constraints(constraints, context)
    out = []
    for c in constraint_terms(bound):
        per_step = []
        total, count = 0.0, 0
        for q in frames:
            v = c.violation(q).detach().double()
            per_step.append(float(v.max()) if v.numel() else 0.0)
            total += float(v.sum())
            count += v.numel()
        out.append({"spec": c.to_spec(), "max": max(per_step, default=0.0), "mean": total / max(count, 1),
                    "per_step_max": per_step})
    return {"constraints": out, "max": max((r["max"] for r in out), default=0.0)}
