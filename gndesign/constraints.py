"""Test-time constraints: differentiable penalties, declared as data, on the objective library.

Every constraint is an :class:`gndesign.objectives.Objective` over named, batched quantities
(``positions [B, N, D]`` of particles or bodies, ``qpos [B, nq]`` of an articulated system, ...)
whose value per batch element is ``weight * sum(violation ** 2)``: exactly zero when the
constraint holds, positive and differentiable (a squared hinge: continuous gradient) when it is
violated. ``violation`` is a non-negative distance in the quantity's units (metres, radians): how
far an element is on the wrong side, e.g. ``margin - signed_distance`` for an obstacle, where
``margin`` is the particle radius (a particle touches an obstacle when its centre is one radius
away). Constraints compose like every objective (``a + b``, ``2.0 * a``) and round-trip through
``to_spec()`` / :func:`gndesign.specs.from_spec` (which also parses the command-line syntax).

The kinds, their options and the command-line syntax: :mod:`gndesign.specs`.

Binding
-------
:meth:`Constraint.bind` (:func:`gndesign.constraint_sets.bind_constraints` for a sum of them)
checks a constraint against the system it will act on (number of particles or body names, joint
names, dimension) and fills in the default margin; references to particles, bodies or joints that
do not exist raise :class:`gndesign.errors.ConfigError` naming them and what exists.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from gndesign.errors import ConfigError
from gndesign.objectives import Objective, Quantities, check_weight, get_quantity

__all__ = [
    "Box",
    "Constraint",
    "ConstraintContext",
    "Disk",
    "HalfPlane",
    "JointLimit",
    "Pin",
    "Wall",
]

AXES = {"x": 0, "y": 1, "z": 2}


@dataclass
class ConstraintContext:
    """What a constraint may refer to, for :meth:`Constraint.bind`.

    Args:
        num_nodes: particles (or bodies) in ``positions``-like quantities.
        node_names: names of the nodes (bodies of an articulated system), if they have names.
        node_kind: how errors call the nodes ("particle", "body").
        joints: joint name -> qpos index, for ``joint_limit`` (hinge and slide joints).
        nq: length of ``qpos``.
        dim: the spatial dimension of ``positions``-like quantities (2 for particles).
        margin: the default clearance (the particle radius; 0 for bodies).
    """

    num_nodes: int | None = None
    node_names: Sequence[str] | None = None
    node_kind: str = "node"
    joints: Mapping[str, int] | None = None
    nq: int | None = None
    dim: int | None = None
    margin: float = 0.0


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{what} must be finite, got {value!r}")
    return float(value)


def _vector(value: Any, what: str) -> list[float]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) == 0:
        raise ConfigError(f"{what} must be a list of numbers (e.g. 1.0,0.5), got {value!r}")
    return [_number(v, what) for v in value]


def _weight(value: Any, kind: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{kind}: weight must be a number, got {value!r}")
    check_weight(value, f"{kind}: ")
    return float(value)


def _refs(value: Any, what: str) -> list[int | str] | None:
    """Node or joint references: indices (non-negative ints) or names."""
    if value is None:
        return None
    if isinstance(value, int | str) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, Sequence) or len(value) == 0:
        raise ConfigError(f"{what} must be a non-empty list of indices or names, got {value!r}")
    out: list[int | str] = []
    for v in value:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int | str) or (isinstance(v, int) and v < 0):
            raise ConfigError(f"{what} must be indices (>= 0) or names, got {v!r}")
        out.append(v)
    return out


def _safe_norm(v: torch.Tensor) -> torch.Tensor:
    """``|v|`` over the last dimension with a zero (not NaN) gradient at ``v = 0``."""
    sq = v.pow(2).sum(-1)
    nonzero = sq > 0
    return torch.where(nonzero, torch.where(nonzero, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))


@dataclass
class Constraint(Objective):
    """A penalty ``weight * sum(violation(q) ** 2)`` per batch element (zero iff satisfied).

    Subclasses define :meth:`violation` (non-negative ``[B, ...]``) and their fields; ``kind`` is
    the name used in specs.
    """

    kind: ClassVar[str] = ""
    default_quantity: ClassVar[str] = "positions"

    weight: float = 1.0
    quantity: str | None = None
    nodes: list[int | str] | None = None
    margin: float | None = None

    def __post_init__(self):
        self.weight = _weight(self.weight, self.kind)
        if self.quantity is None:
            self.quantity = self.default_quantity
        if not isinstance(self.quantity, str) or not self.quantity:
            raise ConfigError(f"{self.kind}: quantity must be a name, got {self.quantity!r}")
        self.nodes = _refs(self.nodes, f"{self.kind}: nodes")
        if self.margin is not None:
            self.margin = _number(self.margin, f"{self.kind}: margin")
            if self.margin < 0:
                raise ConfigError(f"{self.kind}: margin must be >= 0, got {self.margin}")
        self.check()

    def check(self) -> None:
        """Validate the kind's own fields (raise :class:`ConfigError`)."""

    # -- evaluation ------------------------------------------------------------------------
    def violation(self, q: Quantities) -> torch.Tensor:
        """How far each element is on the wrong side, ``[B, ...]``, >= 0 (0 where satisfied)."""
        raise NotImplementedError

    def __call__(self, q: Quantities) -> torch.Tensor:
        v = self.violation(q)
        return self.weight * v.pow(2).reshape(v.shape[0], -1).sum(1)

    def max_violation(self, q: Quantities) -> torch.Tensor:
        """The largest violation per batch element ``[B]`` (in the quantity's units)."""
        v = self.violation(q)
        return v.reshape(v.shape[0], -1).amax(1) if v[0].numel() else v.new_zeros(v.shape[0])

    @property
    def m(self) -> float:
        return 0.0 if self.margin is None else self.margin

    def points(self, q: Quantities) -> torch.Tensor:
        """The constrained elements of the quantity, ``[B, n, D]``."""
        x = get_quantity(q, self.quantity)
        if x.dim() != 3:
            raise ConfigError(f"{self.kind} acts on points [batch, nodes, dim]; quantity {self.quantity!r} has "
                              f"shape {list(x.shape)}")
        if self.nodes is None:
            return x
        idx = self._indices(self.nodes, x.shape[1], "node")
        return x[:, idx]

    def _indices(self, refs: Sequence[int | str], size: int, what: str) -> list[int]:
        names = [r for r in refs if isinstance(r, str)]
        if names:
            raise ConfigError(f"{self.kind} refers to {what}s by name ({', '.join(names)}): bind it to a system "
                              "first (gndesign.constraint_sets.bind_constraints)")
        bad = [r for r in refs if r >= size]
        if bad:
            raise ConfigError(f"{self.kind} refers to {what} {bad[0]}, which does not exist (there are {size}: "
                              f"0-{size - 1})")
        return list(refs)

    def _dim_check(self, vec: Sequence[float], dim: int, name: str) -> None:
        if len(vec) != dim:
            raise ConfigError(f"{self.kind}: {name} has {len(vec)} coordinates but the points have {dim}")

    # -- specs and binding -----------------------------------------------------------------
    def to_spec(self) -> dict:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"kind": self.kind, **{k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}}

    def bind(self, ctx: ConstraintContext) -> Constraint:
        """A copy with node names resolved to indices, references checked against ``ctx`` and
        the default margin filled in."""
        out = dataclasses.replace(self)
        if out.margin is None:
            out.margin = float(ctx.margin)
        if out.nodes is not None:
            out.nodes = _resolve(out.nodes, ctx.num_nodes, ctx.node_names, ctx.node_kind, self.kind)
        if ctx.dim is not None:
            out.check_dim(ctx.dim)
        return out

    def check_dim(self, dim: int) -> None:
        """Refuse vectors whose length is not the points' dimension ``dim``."""


def _resolve(refs: Sequence[int | str], size: int | None, names: Sequence[str] | None, what: str,
             kind: str) -> list[int]:
    out = []
    for r in refs:
        if isinstance(r, str):
            if names is None or r not in names:
                known = (f" (known {what} names: {', '.join(names)})" if names
                         else f" ({what}s have no names: use indices)")
                raise ConfigError(f"{kind} refers to {what} {r!r}, which does not exist{known}")
            out.append(list(names).index(r))
        else:
            if size is not None and r >= size:
                raise ConfigError(f"{kind} refers to {what} {r}, which does not exist (there are {size}: "
                                  f"0-{size - 1})")
            out.append(r)
    return out


@dataclass
class HalfPlane(Constraint):
    """Keep the points on the side ``normal . x >= offset + margin`` (a wall of any direction)."""

    kind: ClassVar[str] = "halfplane"
    normal: list[float] | None = None
    offset: float = 0.0

    def check(self) -> None:
        if self.normal is None:
            raise ConfigError("halfplane needs normal=nx,nz (the direction of the allowed side)")
        self.normal = _vector(self.normal, "halfplane: normal")
        if math.hypot(*self.normal) == 0:
            raise ConfigError("halfplane: normal must not be zero")
        self.offset = _number(self.offset, "halfplane: offset")

    def check_dim(self, dim: int) -> None:
        self._dim_check(self.normal, dim, "normal")

    def violation(self, q: Quantities) -> torch.Tensor:
        x = self.points(q)
        self.check_dim(x.shape[-1])
        n = torch.as_tensor(self.normal, dtype=x.dtype, device=x.device)
        d = x @ (n / n.norm()) - self.offset
        return torch.relu(self.m - d)


@dataclass
class Wall(Constraint):
    """Keep one coordinate in ``[lower + margin, upper - margin]`` (an axis-aligned wall, or a pair)."""

    kind: ClassVar[str] = "wall"
    axis: int | str = 0
    lower: float | None = None
    upper: float | None = None

    def check(self) -> None:
        if isinstance(self.axis, str):
            if self.axis.lower() not in AXES:
                raise ConfigError(f"wall: axis must be 0, 1, 2, x, y or z, got {self.axis!r}")
            self.axis = self.axis.lower()
        elif isinstance(self.axis, bool) or not isinstance(self.axis, int) or self.axis < 0:
            raise ConfigError(f"wall: axis must be 0, 1, 2, x, y or z, got {self.axis!r}")
        if self.lower is None and self.upper is None:
            raise ConfigError("wall needs lower= and/or upper= (the allowed coordinate range)")
        if self.lower is not None:
            self.lower = _number(self.lower, "wall: lower")
        if self.upper is not None:
            self.upper = _number(self.upper, "wall: upper")
        if self.lower is not None and self.upper is not None and self.lower > self.upper:
            raise ConfigError(f"wall: lower ({self.lower}) must not exceed upper ({self.upper})")

    def axis_index(self, dim: int) -> int:
        a = self.axis
        if isinstance(a, str):
            a = min(AXES[a], dim - 1) if a != "x" else 0  # 2-d data is (x, z): y and z are both axis 1
        if a >= dim:
            raise ConfigError(f"wall: axis {self.axis!r} does not exist for {dim}-d points")
        return a

    def check_dim(self, dim: int) -> None:
        self.axis_index(dim)

    def violation(self, q: Quantities) -> torch.Tensor:
        x = self.points(q)
        c = x[..., self.axis_index(x.shape[-1])]
        v = torch.zeros_like(c)
        if self.lower is not None:
            v = v + torch.relu(self.lower + self.m - c)
        if self.upper is not None:
            v = v + torch.relu(c - self.upper + self.m)
        return v


def _keep(value: Any, kind: str) -> str:
    if value not in ("out", "in"):
        raise ConfigError(f"{kind}: keep must be 'out' (an obstacle) or 'in' (a region to stay in), got {value!r}")
    return value


class _Shape(Constraint):
    """An obstacle (``keep="out"``) or a region (``keep="in"``) given by its signed distance
    ``[B, n]`` (negative inside); subclasses declare the ``keep`` field, ``anchor`` (the field
    whose length is the shape's dimension), :meth:`check_geometry` and :meth:`signed_distance`."""

    keep: str
    anchor: ClassVar[str]
    usage: ClassVar[str]  # what the shape needs, for the error when a field is missing

    def check(self) -> None:
        common = {f.name for f in dataclasses.fields(Constraint)}
        if any(getattr(self, f.name) is None for f in dataclasses.fields(self) if f.name not in common):
            raise ConfigError(f"{self.kind} needs {self.usage}")
        self.check_geometry()
        self.keep = _keep(self.keep, self.kind)

    def check_geometry(self) -> None:
        raise NotImplementedError

    def check_dim(self, dim: int) -> None:
        self._dim_check(getattr(self, self.anchor), dim, self.anchor)

    def signed_distance(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def violation(self, q: Quantities) -> torch.Tensor:
        x = self.points(q)
        self.check_dim(x.shape[-1])
        d = self.signed_distance(x)
        return torch.relu(self.m - d) if self.keep == "out" else torch.relu(d + self.m)


@dataclass
class Disk(_Shape):
    """A round obstacle (``keep=out``) or region (``keep=in``): ``|x - center| - radius`` is the
    signed distance; the points keep ``margin`` outside (inside) it. A ball in 3-d."""

    kind: ClassVar[str] = "disk"
    anchor: ClassVar[str] = "center"
    usage: ClassVar[str] = "center=cx,cz and radius=r"
    center: list[float] | None = None
    radius: float | None = None
    keep: str = "out"

    def check_geometry(self) -> None:
        self.center = _vector(self.center, "disk: center")
        self.radius = _number(self.radius, "disk: radius")
        if self.radius <= 0:
            raise ConfigError(f"disk: radius must be positive, got {self.radius}")

    def signed_distance(self, x: torch.Tensor) -> torch.Tensor:
        c = torch.as_tensor(self.center, dtype=x.dtype, device=x.device)
        diff = x - c
        # At the very centre the distance has no gradient: leave along the last axis (up), so a
        # solver can never get stuck there.
        up = torch.zeros_like(c)
        up[-1] = 1e-12
        diff = torch.where((diff == 0).all(-1, keepdim=True), diff + up, diff)
        return _safe_norm(diff) - self.radius


@dataclass
class Box(_Shape):
    """An axis-aligned box ``[lower, upper]`` as an obstacle (``keep=out``) or region (``keep=in``),
    with its exact signed distance (negative inside)."""

    kind: ClassVar[str] = "box"
    anchor: ClassVar[str] = "lower"
    usage: ClassVar[str] = "lower=x0,z0 and upper=x1,z1 (opposite corners)"
    lower: list[float] | None = None
    upper: list[float] | None = None
    keep: str = "out"

    def check_geometry(self) -> None:
        self.lower = _vector(self.lower, "box: lower")
        self.upper = _vector(self.upper, "box: upper")
        if len(self.lower) != len(self.upper):
            raise ConfigError(f"box: lower and upper have {len(self.lower)} and {len(self.upper)} coordinates")
        if any(lo >= hi for lo, hi in zip(self.lower, self.upper, strict=True)):
            raise ConfigError(f"box: lower {self.lower} must be below upper {self.upper} in every coordinate")

    def signed_distance(self, x: torch.Tensor) -> torch.Tensor:
        lo = torch.as_tensor(self.lower, dtype=x.dtype, device=x.device)
        hi = torch.as_tensor(self.upper, dtype=x.dtype, device=x.device)
        r = x - (lo + hi) / 2
        # |r| with the gradient +1 (not 0) at r = 0: a point at the centre still has a way out.
        qd = r * torch.where(r >= 0, 1.0, -1.0).to(r.dtype) - (hi - lo) / 2
        return _safe_norm(torch.relu(qd)) + qd.amax(-1).clamp_max(0)


@dataclass
class Pin(Constraint):
    """Nodes held at a point: ``violation = |x_i - target|``.

    ``at``: the point (every pinned node the same point); without it, each node's own position in
    the quantity ``<quantity>_0`` (its position at the start of the rollout). ``margin`` is unused.
    """

    kind: ClassVar[str] = "pin"
    at: list[float] | None = None

    def check(self) -> None:
        if self.nodes is None:
            raise ConfigError("pin needs nodes=i,j,... (the nodes to hold)")
        if self.at is not None:
            self.at = _vector(self.at, "pin: at")

    def check_dim(self, dim: int) -> None:
        if self.at is not None:
            self._dim_check(self.at, dim, "at")

    def violation(self, q: Quantities) -> torch.Tensor:
        x = self.points(q)
        if self.at is not None:
            self.check_dim(x.shape[-1])
            target = torch.as_tensor(self.at, dtype=x.dtype, device=x.device)
        else:
            ref = get_quantity(q, f"{self.quantity}_0")
            target = ref[:, self._indices(self.nodes, ref.shape[1], "node")]
        return _safe_norm(x - target)


@dataclass
class JointLimit(Constraint):
    """``lower + margin <= qpos[j] <= upper - margin`` for the given joints (hinge and slide).

    ``joints``: joint names (resolved by :meth:`bind`) or qpos indices. ``lower`` and
    ``upper``: one number for every joint or one per joint; either may be left out.
    """

    kind: ClassVar[str] = "joint_limit"
    default_quantity: ClassVar[str] = "qpos"
    joints: list[int | str] | None = None
    lower: float | list[float] | None = None
    upper: float | list[float] | None = None

    def check(self) -> None:
        if self.nodes is not None:
            raise ConfigError("joint_limit takes joints=..., not nodes=...")
        self.joints = _refs(self.joints, "joint_limit: joints")
        if self.joints is None:
            raise ConfigError("joint_limit needs joints=name,... (joint names or qpos indices)")
        if self.lower is None and self.upper is None:
            raise ConfigError("joint_limit needs lower= and/or upper=")
        n = len(self.joints)
        for name in ("lower", "upper"):
            v = getattr(self, name)
            if v is None:
                continue
            v = _vector(v, f"joint_limit: {name}")
            if len(v) not in (1, n):
                raise ConfigError(f"joint_limit: {name} needs 1 or {n} values (one per joint), got {len(v)}")
            setattr(self, name, v[0] if len(v) == 1 else v)
        if self.lower is not None and self.upper is not None:
            lo = self.lower if isinstance(self.lower, list) else [self.lower] * n
            hi = self.upper if isinstance(self.upper, list) else [self.upper] * n
            if any(a > b for a, b in zip(lo, hi, strict=True)):
                raise ConfigError(f"joint_limit: lower {self.lower} must not exceed upper {self.upper}")

    def bind(self, ctx: ConstraintContext) -> Constraint:
        out = dataclasses.replace(self)
        if out.margin is None:
            out.margin = 0.0
        names = list(ctx.joints) if ctx.joints else None
        idx = []
        for r in out.joints:
            if isinstance(r, str):
                if names is None or r not in names:
                    known = f" (known joints: {', '.join(names)})" if names else " (no named hinge or slide joints)"
                    raise ConfigError(f"joint_limit refers to joint {r!r}, which does not exist{known}")
                idx.append(int(ctx.joints[r]))
            else:
                if ctx.nq is not None and r >= ctx.nq:
                    raise ConfigError(f"joint_limit refers to qpos index {r}, which does not exist (nq = {ctx.nq})")
                idx.append(r)
        out.joints = idx
        return out

    def violation(self, q: Quantities) -> torch.Tensor:
        x = get_quantity(q, self.quantity)
        x = x[:, self._indices(self.joints, x.shape[1], "qpos index")]
        v = torch.zeros_like(x)
        if self.lower is not None:
            v = v + torch.relu(torch.as_tensor(self.lower, dtype=x.dtype, device=x.device) + self.m - x)
        if self.upper is not None:
            v = v + torch.relu(x - torch.as_tensor(self.upper, dtype=x.dtype, device=x.device) + self.m)
        return v
