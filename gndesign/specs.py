"""Objectives and constraints as data: the one registry of kinds, specs and the constraint syntax.

Every objective of :mod:`gndesign.objectives` and every constraint of :mod:`gndesign.constraints`
has a ``kind`` and a ``to_spec()`` (a plain dict, so YAML works); :func:`from_spec` builds it
back. The kinds are registered here, above both modules, so that neither imports the other.

Kinds
-----
``halfplane``  ``normal=nx,nz offset=b``: keep ``normal . x >= offset + margin`` (normal normalized).
``wall``       ``axis=x lower=a upper=b``: keep ``a + margin <= x_axis <= b - margin`` (either side
               may be left out). Axes: ``0, 1, 2`` or ``x, y, z`` (in 2-d data ``(x, z)``, both
               ``y`` and ``z`` name the second coordinate).
``disk``       ``center=cx,cz radius=r keep=out``: a round obstacle (a ball in 3-d); ``keep=in``
               keeps the elements inside instead.
``box``        ``lower=x0,z0 upper=x1,z1 keep=out``: an axis-aligned box obstacle (``keep=in``: a
               region the elements must stay in).
``pin``        ``nodes=0,3 [at=x,z]``: the nodes stay at the point ``at`` (every pinned node the
               same point), or, without ``at``, where they were at the start of the rollout (the
               quantity ``<quantity>_0`` the solver provides).
``joint_limit`` ``joints=slider,1 lower=-1 upper=1`` on ``qpos``: bounds on joint coordinates,
               by joint name (hinge and slide joints) or qpos index; ``lower``/``upper`` one number
               or one per joint.

Common options: ``weight`` (default 1; finite, >= 0), ``quantity`` (default ``positions``;
``qpos`` for ``joint_limit``), ``nodes`` (the elements it applies to: indices, or body names for
articulated systems; default all; node 0 of an articulated system is the fixed world body),
``margin`` (clearance added to every distance; default: the particle radius the solver binds, 0
for articulated systems).

Syntax
------
On the command line one constraint is one string, ``KIND key=value ...``; a value with commas is
a list (``center=1.0,0.5``), numbers are numbers and anything else a name::

    "disk center=1.0,0.5 radius=0.3 weight=100"
    "pin nodes=0,3"
    "wall axis=x upper=1.2 nodes=cart quantity=xpos"
    "joint_limit joints=slider lower=-0.5 upper=0.5 weight=10"

A YAML file holds a list (or ``{constraints: [...]}``) of such strings or of spec mappings
(``{kind: disk, center: [1.0, 0.5], radius: 0.3}``); see :func:`load_constraints`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

from gndesign.constraints import Box, Constraint, Disk, HalfPlane, JointLimit, Pin, Wall
from gndesign.errors import ConfigError
from gndesign.io import read_yaml
from gndesign.objectives import (
    Affine,
    IntervalDistance,
    Objective,
    Product,
    Residual,
    Scaled,
    SoftInside,
    Sum,
    Tolerance,
    check_weight,
)

__all__ = ["CONSTRAINTS", "from_spec", "known_kinds", "load_constraints", "parse_constraint", "parse_constraints",
           "register_kind"]


#: The constraint kinds: kind -> class.
CONSTRAINTS: dict[str, type[Constraint]] = {c.kind: c for c in (HalfPlane, Wall, Disk, Box, Pin, JointLimit)}


def _factory(cls: type[Constraint]):
    """``cls(**fields)``, refusing unknown fields by name (a dataclass's TypeError does not say
    which options exist)."""
    fields = [f.name for f in dataclasses.fields(cls)]

    def make(**kw) -> Constraint:
        unknown = [k for k in kw if k not in fields]
        if unknown:
            raise ConfigError(f"{cls.kind} has no option {unknown[0]!r}; its options: {', '.join(fields)}")
        return cls(**kw)

    return make


_KINDS: dict = {"residual": Residual, "tolerance": Tolerance, "affine": Affine, "soft_inside": SoftInside,
                "interval_distance": IntervalDistance,
                **{kind: _factory(cls) for kind, cls in CONSTRAINTS.items()}}
_COMPOSITES = ("sum", "product", "scaled")


def register_kind(kind: str, factory) -> None:
    """Make ``from_spec({"kind": kind, **fields})`` call ``factory(**fields)`` (e.g. a dataclass, or a
    function that validates the fields and names the bad ones)."""
    if kind in _COMPOSITES or (kind in _KINDS and _KINDS[kind] is not factory):
        raise ValueError(f"objective kind {kind!r} is already registered")
    _KINDS[kind] = factory


def known_kinds() -> list[str]:
    """Every kind :func:`from_spec` accepts (the test-time constraints included)."""
    return sorted([*_KINDS, *_COMPOSITES])


def from_spec(spec: Mapping) -> Objective:
    """Build an objective from its ``to_spec()`` dict (e.g. loaded from YAML)."""
    if not isinstance(spec, Mapping) or "kind" not in spec:
        raise ConfigError(f"an objective spec is a mapping with a 'kind', got {spec!r}")
    kind = spec["kind"]
    rest = {k: v for k, v in spec.items() if k != "kind"}
    if kind in ("sum", "product"):
        terms = [from_spec(t) for t in rest.get("terms", [])]
        if not terms:
            raise ConfigError(f"a {kind} objective needs at least one term")
        return (Sum if kind == "sum" else Product)(terms)
    if kind == "scaled":
        check_weight(float(rest.get("weight", 1.0)))
        return Scaled(from_spec(rest["term"]), float(rest.get("weight", 1.0)))
    if kind not in _KINDS:
        raise ConfigError(f"unknown objective kind {kind!r}; choose one of {', '.join(known_kinds())}")
    try:
        return _KINDS[kind](**rest)
    except TypeError as e:
        raise ConfigError(f"bad {kind} objective {dict(rest)}: {e}") from None


def _scalar(text: str) -> Any:
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def parse_constraint(text: str) -> Objective:
    """One constraint from a string ``"KIND key=value ..."`` (see the module docstring)."""
    if not isinstance(text, str) or not text.split():
        raise ConfigError(f"a constraint is a string 'KIND key=value ...', got {text!r}")
    kind, *tokens = text.split()
    spec: dict[str, Any] = {"kind": kind}
    for tok in tokens:
        key, sep, value = tok.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"malformed constraint {text!r}: expected key=value, got {tok!r}")
        if key in spec:
            raise ConfigError(f"malformed constraint {text!r}: {key} given twice")
        spec[key] = [_scalar(v) for v in value.split(",")] if "," in value else _scalar(value)
    if kind not in CONSTRAINTS:
        raise ConfigError(f"unknown constraint kind {kind!r}; choose one of {', '.join(CONSTRAINTS)}")
    return from_spec(spec)


def parse_constraints(items: Sequence[str | Mapping] | None) -> Objective | None:
    """The sum of several constraints given as strings or spec mappings (None if there are none)."""
    terms = []
    for item in items or []:
        terms.append(parse_constraint(item) if isinstance(item, str) else from_spec(item))
    if not terms:
        return None
    return terms[0] if len(terms) == 1 else Sum(terms)


def load_constraints(path: str | os.PathLike) -> Objective | None:
    """Constraints from a YAML file: a list of strings / spec mappings, or ``{constraints: [...]}``."""
    raw = read_yaml(path, "constraint file", ConfigError)
    if isinstance(raw, Mapping):
        if set(raw) != {"constraints"}:
            raise ConfigError(f"constraint file {path}: expected a list or a mapping with one key 'constraints', "
                              f"got keys {sorted(raw)}")
        raw = raw["constraints"]
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ConfigError(f"constraint file {path} must hold a list of constraints")
    return parse_constraints(raw)

