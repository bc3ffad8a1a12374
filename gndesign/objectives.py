"""One library of differentiable objectives and constraints for planners, design and solvers.

An objective maps named, batched quantities (a dict of tensors ``[B, ...]`` computed by a task
or a scene) to a value per batch element ``[B]``. Objectives are small composable pieces,
declared as data:

* :class:`Residual`: ``weight * norm(quantity - target)`` (quadratic, L1, smooth-abs / pseudo-Huber),
  the MuJoCo MPC way of writing costs;
* :class:`Tolerance`: dm_control's smooth tolerance reward (1 inside ``bounds``, decaying over
  ``margin`` with one of its sigmoids), equal to ``dm_control.utils.rewards.tolerance``;
* :class:`SoftInside` (a soft fraction of elements inside an interval) and :class:`IntervalDistance`
  (their distance to it), for particle scenes;
* :class:`Sum` and :class:`Product` of objectives (``a + b``, ``a * b``, ``2.0 * a`` also work);
* the test-time constraints of :mod:`gndesign.constraints` (half-planes, walls, disks, boxes, pins,
  joint limits: squared-hinge penalties, zero when satisfied), objectives too.

Every objective round-trips through ``to_spec()`` / :func:`gndesign.specs.from_spec` (plain dicts, so
YAML works); :mod:`gndesign.specs` holds the registry of kinds, this module knows none of it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from gndesign.errors import ConfigError

Quantities = Mapping[str, torch.Tensor]
NORMS = ("quadratic", "l1", "smooth_abs")
SIGMOIDS = ("gaussian", "hyperbolic", "long_tail", "reciprocal", "cosine", "linear", "quadratic", "tanh_squared")


def _sigmoid(x: torch.Tensor, value_at_1: float, kind: str) -> torch.Tensor:
    """dm_control's sigmoids: 1 at ``x = 0`` and ``value_at_1`` at ``|x| = 1``."""
    if kind in ("cosine", "linear", "quadratic"):
        if not 0 <= value_at_1 < 1:
            raise ConfigError(f"value_at_margin must be in [0, 1) for the {kind} sigmoid, got {value_at_1}")
    elif not 0 < value_at_1 < 1:
        raise ConfigError(f"value_at_margin must be in (0, 1) for the {kind} sigmoid, got {value_at_1}")
    if kind == "gaussian":
        scale = math.sqrt(-2 * math.log(value_at_1))
        return torch.exp(-0.5 * (x * scale) ** 2)
    if kind == "hyperbolic":
        scale = math.acosh(1 / value_at_1)
        return 1 / torch.cosh(x * scale)
    if kind == "long_tail":
        scale = math.sqrt(1 / value_at_1 - 1)
        return 1 / ((x * scale) ** 2 + 1)
    if kind == "reciprocal":
        scale = 1 / value_at_1 - 1
        return 1 / (x.abs() * scale + 1)
    if kind == "cosine":
        s = x * (math.acos(2 * value_at_1 - 1) / math.pi)
        return torch.where(s.abs() < 1, (1 + torch.cos(math.pi * s)) / 2, torch.zeros_like(s))
    if kind == "linear":
        s = x * (1 - value_at_1)
        return torch.where(s.abs() < 1, 1 - s, torch.zeros_like(s))
    if kind == "quadratic":
        s = x * math.sqrt(1 - value_at_1)
        return torch.where(s.abs() < 1, 1 - s * s, torch.zeros_like(s))
    if kind == "tanh_squared":
        scale = math.atanh(math.sqrt(1 - value_at_1))
        return 1 - torch.tanh(x * scale) ** 2
    raise ConfigError(f"unknown sigmoid {kind!r}; choose one of {', '.join(SIGMOIDS)}")


def tolerance(x: torch.Tensor, bounds: tuple[float, float] = (0.0, 0.0), margin: float = 0.0,
              sigmoid: str = "gaussian", value_at_margin: float = 0.1) -> torch.Tensor:
    """dm_control's ``rewards.tolerance`` in torch (elementwise, differentiable outside bounds)."""
    lower, upper = bounds
    if lower > upper:
        raise ConfigError(f"tolerance bounds must satisfy lower <= upper, got {bounds}")
    if margin < 0:
        raise ConfigError(f"tolerance margin must be non-negative, got {margin}")
    in_bounds = (lower <= x) & (x <= upper)
    if margin == 0:
        return in_bounds.to(x.dtype)
    d = torch.where(x < lower, lower - x, x - upper) / margin
    return torch.where(in_bounds, torch.ones_like(x), _sigmoid(d, value_at_margin, sigmoid))


class Objective:
    """A differentiable function of named quantities: ``objective(q) -> [B]``."""

    def __call__(self, q: Quantities) -> torch.Tensor:
        raise NotImplementedError

    def to_spec(self) -> dict:
        raise NotImplementedError

    def __add__(self, other: Objective) -> Objective:
        return Sum([self, other])

    def __mul__(self, other: Objective | float) -> Objective:
        if isinstance(other, int | float):
            return Scaled(self, float(other))
        return Product([self, other])

    __rmul__ = __mul__


def get_quantity(q: Quantities, name: str) -> torch.Tensor:
    """``q[name]``, or a :class:`ConfigError` naming the quantities that are available."""
    if name not in q:
        raise ConfigError(f"objective refers to quantity {name!r}, which is not available "
                          f"(available: {', '.join(sorted(q))})")
    return q[name]


def _reduce(x: torch.Tensor, how: str) -> torch.Tensor:
    """Reduce all but the batch dimension."""
    flat = x.reshape(x.shape[0], -1)
    if how == "mean":
        return flat.mean(1)
    if how == "sum":
        return flat.sum(1)
    if how == "min":
        return flat.min(1).values
    if how == "max":
        return flat.max(1).values
    if how == "prod":
        return flat.prod(1)
    raise ConfigError(f"unknown reduction {how!r}; choose mean, sum, min, max or prod")


def _norm(r: torch.Tensor, how: str, smoothing: float) -> torch.Tensor:
    """Elementwise penalty of a residual ``r``: half its square, its absolute value, or the
    pseudo-Huber ``sqrt(r^2 + p^2) - p`` with width ``p = smoothing`` (``smooth_abs``)."""
    if how == "quadratic":
        return 0.5 * r * r
    if how == "l1":
        return r.abs()
    return torch.sqrt(r * r + smoothing * smoothing) - smoothing


@dataclass
class Residual(Objective):
    """``weight * reduce(norm(quantity - target))``: a cost (lower is better)."""

    quantity: str
    target: float | list[float] = 0.0
    weight: float = 1.0
    norm: str = "quadratic"  # quadratic | l1 | smooth_abs
    smoothing: float = 0.1  # the smooth_abs (pseudo-Huber) transition width
    reduce: str = "sum"

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ConfigError(f"unknown norm {self.norm!r}; choose quadratic, l1 or smooth_abs")
        check_weight(self.weight)

    def __call__(self, q: Quantities) -> torch.Tensor:
        x = get_quantity(q, self.quantity)
        r = x - torch.as_tensor(self.target, dtype=x.dtype, device=x.device)
        return self.weight * _reduce(_norm(r, self.norm, self.smoothing), self.reduce)

    def to_spec(self) -> dict:
        return {"kind": "residual", **{k: getattr(self, k) for k in
                                       ("quantity", "target", "weight", "norm", "smoothing", "reduce")}}


@dataclass
class Tolerance(Objective):
    """``reduce(tolerance(transform(quantity)))``: a reward in [0, 1] (higher is better).

    ``offset`` and ``scale`` give an affine rescaling ``offset + scale * tolerance``, as dm_control
    writes e.g. ``(1 + centered) / 2``.
    """

    quantity: str
    bounds: tuple[float, float] = (0.0, 0.0)
    margin: float = 0.0
    sigmoid: str = "gaussian"
    value_at_margin: float = 0.1
    reduce: str = "mean"
    offset: float = 0.0
    scale: float = 1.0

    def __post_init__(self):
        self.bounds = (float(self.bounds[0]), float(self.bounds[1]))
        if self.sigmoid not in SIGMOIDS:
            raise ConfigError(f"unknown sigmoid {self.sigmoid!r}; choose one of {', '.join(SIGMOIDS)}")

    def __call__(self, q: Quantities) -> torch.Tensor:
        x = get_quantity(q, self.quantity)
        t = tolerance(x, self.bounds, self.margin, self.sigmoid, self.value_at_margin)
        return self.offset + self.scale * _reduce(t, self.reduce)

    def to_spec(self) -> dict:
        return {"kind": "tolerance", **{k: getattr(self, k) for k in
                                        ("quantity", "bounds", "margin", "sigmoid", "value_at_margin",
                                         "reduce", "offset", "scale")}}


@dataclass
class Affine(Objective):
    """``offset + scale * reduce(quantity)``, e.g. dm_control's ``(cos(angle) + 1) / 2``."""

    quantity: str
    offset: float = 0.0
    scale: float = 1.0
    reduce: str = "mean"

    def __call__(self, q: Quantities) -> torch.Tensor:
        return self.offset + self.scale * _reduce(get_quantity(q, self.quantity), self.reduce)

    def to_spec(self) -> dict:
        return {"kind": "affine", "quantity": self.quantity, "offset": self.offset, "scale": self.scale,
                "reduce": self.reduce}


@dataclass
class SoftInside(Objective):
    """``offset + scale * reduce(sigmoid((x - lo) / s) * sigmoid((hi - x) / s))``: a soft count of
    elements inside ``bounds = (lo, hi)``, e.g. the fraction of particles inside a bin.

    ``sharpness`` ``s`` is the width of the sigmoid margin: an element ``3 s`` inside both bounds
    counts about 0.95, one on a bound 0.5, one ``3 s`` outside 0.05. Unlike :class:`Tolerance` the
    gradient does not vanish just inside the bounds, so elements near an edge are pulled inwards.
    ``offset=1, scale=-1`` turns it into a cost (the soft fraction outside).
    """

    quantity: str
    bounds: tuple[float, float] = (0.0, 1.0)
    sharpness: float = 0.1
    reduce: str = "mean"
    offset: float = 0.0
    scale: float = 1.0

    def __post_init__(self):
        self.bounds = _check_bounds(self.bounds, "soft_inside")
        if not (math.isfinite(self.sharpness) and self.sharpness > 0):
            raise ConfigError(f"soft_inside sharpness must be a positive number, got {self.sharpness}")

    def __call__(self, q: Quantities) -> torch.Tensor:
        x = get_quantity(q, self.quantity)
        lo, hi = self.bounds
        inside = torch.sigmoid((x - lo) / self.sharpness) * torch.sigmoid((hi - x) / self.sharpness)
        return self.offset + self.scale * _reduce(inside, self.reduce)

    def to_spec(self) -> dict:
        return {"kind": "soft_inside", **{k: getattr(self, k) for k in
                                          ("quantity", "bounds", "sharpness", "reduce", "offset", "scale")}}


@dataclass
class IntervalDistance(Objective):
    """``weight * reduce(norm(distance of quantity to [lo, hi]))``: a cost, zero inside ``bounds``.

    ``norm`` is ``l1`` (the distance), ``quadratic`` (half its square) or ``smooth_abs``
    (pseudo-Huber with width ``smoothing``), as for :class:`Residual`.
    """

    quantity: str
    bounds: tuple[float, float] = (0.0, 0.0)
    weight: float = 1.0
    norm: str = "l1"
    smoothing: float = 0.1
    reduce: str = "mean"

    def __post_init__(self):
        self.bounds = _check_bounds(self.bounds, "interval_distance")
        if self.norm not in NORMS:
            raise ConfigError(f"unknown norm {self.norm!r}; choose quadratic, l1 or smooth_abs")
        check_weight(self.weight)

    def __call__(self, q: Quantities) -> torch.Tensor:
        x = get_quantity(q, self.quantity)
        lo, hi = self.bounds
        d = torch.relu(lo - x) + torch.relu(x - hi)
        return self.weight * _reduce(_norm(d, self.norm, self.smoothing), self.reduce)

    def to_spec(self) -> dict:
        return {"kind": "interval_distance", **{k: getattr(self, k) for k in
                                                ("quantity", "bounds", "weight", "norm", "smoothing", "reduce")}}


def _check_bounds(bounds, kind: str) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ConfigError(f"{kind} bounds must be a pair of numbers (lower, upper), got {bounds!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ConfigError(f"{kind} bounds must be finite with lower <= upper, got {bounds!r}")
    return lo, hi


@dataclass
class Sum(Objective):
    terms: list[Objective] = field(default_factory=list)

    def __call__(self, q: Quantities) -> torch.Tensor:
        return sum(t(q) for t in self.terms)

    def to_spec(self) -> dict:
        return {"kind": "sum", "terms": [t.to_spec() for t in self.terms]}


@dataclass
class Product(Objective):
    terms: list[Objective] = field(default_factory=list)

    def __call__(self, q: Quantities) -> torch.Tensor:
        out = self.terms[0](q)
        for t in self.terms[1:]:
            out = out * t(q)
        return out

    def to_spec(self) -> dict:
        return {"kind": "product", "terms": [t.to_spec() for t in self.terms]}


@dataclass
class Scaled(Objective):
    term: Objective
    weight: float = 1.0

    def __call__(self, q: Quantities) -> torch.Tensor:
        return self.weight * self.term(q)

    def to_spec(self) -> dict:
        return {"kind": "scaled", "weight": self.weight, "term": self.term.to_spec()}


def check_weight(w: float, owner: str = "") -> None:
    """Refuse a weight that is negative or not finite (``owner`` prefixes the message, e.g. ``"disk: "``)."""
    if not math.isfinite(w) or w < 0:
        raise ConfigError(f"{owner}weights must be finite and non-negative, got {w}")
