"""A set of constraints (a sum or scaling of :mod:`gndesign.constraints`): its terms, its binding
to a system, the stiffness of its penalty where it is active, and the report of its violations."""

from __future__ import annotations

from typing import Any

import torch

from gndesign.constraints import Constraint, ConstraintContext
from gndesign.errors import ConfigError
from gndesign.objectives import Objective, Product, Quantities, Scaled, Sum

__all__ = ["active_stiffness", "bind_constraints", "constraint_terms", "violations"]


def constraint_terms(obj: Objective | None) -> list[Constraint]:
    """The constraints inside a composition (sums and scalings of constraints)."""
    if obj is None:
        return []
    if isinstance(obj, Constraint):
        return [obj]
    if isinstance(obj, Sum):
        return [c for t in obj.terms for c in constraint_terms(t)]
    if isinstance(obj, Scaled):
        return constraint_terms(obj.term)
    raise ConfigError(f"{type(obj).__name__} objectives are not constraints (compose constraints with + and *)")


def bind_constraints(obj: Objective | None, ctx: ConstraintContext) -> Objective | None:
    """``obj`` with every constraint bound to ``ctx`` (see :meth:`Constraint.bind`)."""
    if obj is None:
        return None
    if isinstance(obj, Constraint):
        return obj.bind(ctx)
    if isinstance(obj, Sum):
        return Sum([bind_constraints(t, ctx) for t in obj.terms])
    if isinstance(obj, Scaled):
        return Scaled(bind_constraints(obj.term, ctx), obj.weight)
    if isinstance(obj, Product):
        raise ConfigError("a product of constraints is not a constraint: add them (a + b) instead")
    raise ConfigError(f"{type(obj).__name__} objectives are not constraints")


def _weighted_terms(obj: Objective | None, scale: float = 1.0) -> list[tuple[float, Constraint]]:
    if obj is None:
        return []
    if isinstance(obj, Constraint):
        return [(abs(scale) * obj.weight, obj)]
    if isinstance(obj, Sum):
        return [wc for t in obj.terms for wc in _weighted_terms(t, scale)]
    if isinstance(obj, Scaled):
        return _weighted_terms(obj.term, scale * obj.weight)
    raise ConfigError(f"{type(obj).__name__} objectives are not constraints")


@torch.no_grad()
def active_stiffness(obj: Objective | None, q: Quantities, num_nodes: int | None = None) -> torch.Tensor:
    """The curvature bound of the penalty where it is active at ``q``: the sum of the (scaled)
    weights of the constraints violated there (a squared hinge has no curvature where it is
    satisfied; every violation has a gradient of norm <= 1, a distance, so the penalty's curvature
    along it is at most twice this).

    Per batch element ``[B]`` (``num_nodes`` None: the weights of the constraints violated anywhere
    in the element), or per node ``[B, num_nodes]``: the weights of the constraints a node
    violates (constraints not on nodes, such as ``joint_limit``, count for every node of an
    element they are violated in). Solvers use it for a Gauss-Newton step that follows the
    penalty: stiff where a constraint acts, plain elsewhere. Needs bound (integer) node lists.
    """
    out = None
    for w, c in _weighted_terms(obj):
        v = c.violation(q).detach()
        B = v.shape[0]
        act = (v.reshape(B, -1) > 0).to(v.dtype if v.is_floating_point() else torch.float32)
        if out is None:
            out = act.new_zeros(B) if num_nodes is None else act.new_zeros(B, num_nodes)
        if num_nodes is None:
            out += w * act.amax(1)
        elif getattr(c, "joints", None) is not None or act.shape[1] == 0:
            out += w * act.amax(1, keepdim=True)
        else:
            idx = list(range(num_nodes)) if c.nodes is None else c._indices(c.nodes, num_nodes, "node")
            if act.shape[1] != len(idx):
                raise ConfigError(f"{c.kind} on {c.quantity!r} has {act.shape[1]} elements, not one per node "
                                  f"({len(idx)})")
            out.index_add_(1, torch.as_tensor(idx, device=act.device), w * act)
    if out is None:
        raise ConfigError("no constraints to measure the stiffness of")
    return out


def violations(obj: Objective | None, q: Quantities) -> list[dict[str, Any]]:
    """For every constraint in ``obj``: its spec and its largest and mean violation over the batch
    (in the quantity's units), e.g. the penetration of particles into an obstacle."""
    out = []
    for c in constraint_terms(obj):
        v = c.violation(q).detach()
        out.append({"spec": c.to_spec(), "max": float(v.max()) if v.numel() else 0.0,
                    "mean": float(v.mean()) if v.numel() else 0.0})
    return out
