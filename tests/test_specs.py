"""The one registry of objective and constraint kinds: it knows every kind, every spec round-trips,
and it sits above both libraries (neither imports the other)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gndesign.constraints import Constraint
from gndesign.objectives import Affine, IntervalDistance, Objective, Residual, SoftInside, Tolerance
from gndesign.specs import CONSTRAINTS, from_spec, known_kinds, parse_constraint

ROOT = Path(__file__).resolve().parents[1]

# One example of every kind, on quantities that `_quantities` provides.
_RES = Residual("x", target=[1.0, 0.5], weight=2.0, norm="smooth_abs")
_TOL = Tolerance("x", bounds=(-0.5, 0.5), margin=1.0, sigmoid="long_tail", offset=0.5, scale=0.5)
EXAMPLES = {
    "residual": _RES,
    "tolerance": _TOL,
    "affine": Affine("x", offset=1.0, scale=-2.0, reduce="sum"),
    "soft_inside": SoftInside("x", bounds=(0.0, 1.0), sharpness=0.2),
    "interval_distance": IntervalDistance("x", bounds=(0.0, 0.5), norm="quadratic"),
    "halfplane": parse_constraint("halfplane normal=1,1 offset=0.5 margin=0.1 weight=3"),
    "wall": parse_constraint("wall axis=z lower=-1 upper=0.2 nodes=0,2"),
    "disk": parse_constraint("disk center=0.5,0.5 radius=0.4 keep=in"),
    "box": parse_constraint("box lower=-1,0 upper=1,0.5 weight=2"),
    "pin": parse_constraint("pin nodes=1 at=0.5,0.5"),
    "joint_limit": parse_constraint("joint_limit joints=0,1 lower=-0.2,-1 upper=0.2 quantity=x"),
    "sum": _RES + _TOL,
    "product": _RES * _TOL,
    "scaled": 0.25 * _RES,
}


def _quantities() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"x": torch.randn(4, 2, generator=g, dtype=torch.float64),
            "positions": torch.randn(4, 3, 2, generator=g, dtype=torch.float64)}


def _subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _subclasses(sub)
    return out


def test_the_registry_knows_every_kind():
    assert set(known_kinds()) == set(EXAMPLES)
    assert {kind for kind, obj in EXAMPLES.items() if isinstance(obj, Constraint)} == set(CONSTRAINTS)
    # Every public objective class of the library has an example here, so a new kind must be added.
    library = {c for c in _subclasses(Objective) if c.__module__ in ("gndesign.objectives", "gndesign.constraints")
               and not c.__name__.startswith("_") and c is not Constraint}
    assert library == {type(obj) for obj in EXAMPLES.values()}


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_every_kind_round_trips_through_its_spec(kind):
    obj, q = EXAMPLES[kind], _quantities()
    spec = obj.to_spec()
    assert spec["kind"] == kind
    again = from_spec(spec)
    assert type(again) is type(obj) and again.to_spec() == spec
    assert torch.equal(again(q), obj(q))


def test_objectives_do_not_import_constraints_and_neither_imports_the_registry():
    code = ("import sys, gndesign.objectives\n"
            "assert 'gndesign.constraints' not in sys.modules, 'objectives imports constraints'\n"
            "import gndesign.constraints\n"
            "assert 'gndesign.specs' not in sys.modules, 'constraints import the registry'\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
