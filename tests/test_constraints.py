"""Test-time constraints: zero when satisfied, positive and differentiable when violated, composable,
declared as data (strings, YAML, specs), bound to systems with clear errors."""

import math

import pytest
import torch

from gndesign.constraint_sets import active_stiffness, bind_constraints, constraint_terms, violations
from gndesign.constraints import Box, ConstraintContext, Disk, Pin
from gndesign.errors import ConfigError
from gndesign.objectives import Residual, Sum
from gndesign.specs import from_spec, known_kinds, load_constraints, parse_constraint, parse_constraints

# (spec, points that satisfy it, points that violate it by `depth` at worst); margin 0 unless given.
CASES = [
    ("halfplane normal=0,2 offset=1.0", [[0.0, 1.5], [5.0, 1.0]], [[0.0, 0.5]], 0.5),
    ("halfplane normal=1,1 offset=0 margin=0.1", [[1.0, 1.0]], [[0.0, 0.0]], 0.1),
    ("wall axis=x lower=-1 upper=1", [[0.0, 9.0], [1.0, -3.0]], [[1.5, 0.0], [-1.25, 0.0]], 0.5),
    ("wall axis=z upper=2.0 margin=0.05", [[0.0, 1.9]], [[0.0, 2.0]], 0.05),
    ("disk center=1.0,0.5 radius=0.3", [[1.0, 0.85], [3.0, 3.0]], [[1.0, 0.5], [1.1, 0.5]], 0.3),
    ("disk center=0,0 radius=1 keep=in margin=0.1", [[0.5, 0.0], [0.0, -0.85]], [[2.0, 0.0]], 1.1),
    ("box lower=-1,0 upper=1,0.5", [[0.0, 0.6], [1.2, 0.2]], [[0.0, 0.25], [0.9, 0.1]], 0.25),
    ("box lower=-1,0 upper=1,0.5 keep=in", [[0.0, 0.25], [1.0, 0.5]], [[2.0, 0.25], [0.0, -1.0]], 1.0),
    ("pin nodes=1 at=0.5,0.5", [[9.0, 9.0], [0.5, 0.5]], [[0.0, 0.0], [0.5, 1.5]], 1.0),
]


def _q(points):
    return {"positions": torch.tensor([points], dtype=torch.float64)}


@pytest.mark.parametrize("spec, ok, bad, depth", CASES, ids=[c[0] for c in CASES])
def test_zero_when_satisfied_positive_and_differentiable_when_violated(spec, ok, bad, depth):
    c = parse_constraint(spec + " weight=3")
    if isinstance(c, Pin):  # node 1 is pinned; node 0 is free (anything goes)
        ok, bad = [ok], [bad]
    else:
        ok, bad = [[p] for p in ok], [[p] for p in bad]
    for pts in ok:
        x = torch.tensor(pts, dtype=torch.float64, requires_grad=True)
        value = c({"positions": x[None]})
        value.sum().backward()
        assert value.item() == 0.0 and torch.all(x.grad == 0), (spec, pts)
    worst = 0.0
    for pts in bad:
        x = torch.tensor(pts, dtype=torch.float64, requires_grad=True)
        value = c({"positions": x[None]})
        (g,) = torch.autograd.grad(value.sum(), x)
        assert value.item() > 0 and torch.isfinite(g).all() and g.abs().sum() > 0, (spec, pts)
        # A squared hinge: weight * violation^2; gradient descent reduces it.
        v = c.violation({"positions": x[None].detach()})
        assert value.item() == pytest.approx(3 * float(v.pow(2).sum()))
        assert c({"positions": (x - 1e-3 * g)[None]}).item() < value.item()
        worst = max(worst, float(c.max_violation({"positions": x[None].detach()})))
    assert worst == pytest.approx(depth)


def test_box_signed_distance_is_exact():
    box = Box(lower=[-1.0, 0.0], upper=[1.0, 0.5])
    x = torch.tensor([[0.0, 0.1], [2.0, 1.5], [0.0, 0.9], [-0.95, 0.25]], dtype=torch.float64)
    assert box.signed_distance(x).tolist() == pytest.approx([-0.1, math.sqrt(2.0), 0.4, -0.05])


def test_joint_limits_by_name_and_index():
    ctx = ConstraintContext(joints={"slider": 0, "hinge_1": 1}, nq=2)
    c = bind_constraints(parse_constraint("joint_limit joints=slider,1 lower=-1,-0.5 upper=1 weight=2"), ctx)
    assert c.joints == [0, 1]
    q = torch.tensor([[0.0, 0.0], [1.5, -1.0]], requires_grad=True)
    value = c({"qpos": q})
    assert value[0] == 0 and value[1].item() == pytest.approx(2 * (0.5**2 + 0.5**2))
    value.sum().backward()
    assert q.grad[1].tolist() == pytest.approx([2 * 2 * 0.5, -2 * 2 * 0.5])


def test_pin_without_a_point_holds_the_start():
    c = parse_constraint("pin nodes=0,2")
    x0 = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]])
    moved = x0 + torch.tensor([[[0.3, 0.4], [5.0, 5.0], [0.0, 0.0]]])
    assert c({"positions": x0, "positions_0": x0}).item() == 0
    assert c({"positions": moved, "positions_0": x0}).item() == pytest.approx(0.25)  # |(0.3, 0.4)|^2
    with pytest.raises(ConfigError, match="positions_0"):
        c({"positions": moved})


def test_composition_adds_and_specs_round_trip(tmp_path):
    a = parse_constraint("disk center=0,0 radius=1 weight=2")
    b = parse_constraint("wall axis=x upper=0.2 weight=5")
    q = _q([[0.5, 0.0], [0.1, 3.0], [0.9, 0.9]])
    assert torch.allclose((a + b)(q), a(q) + b(q))
    assert torch.allclose((0.5 * a)(q), 0.5 * a(q))
    # The stiffness counts the (scaled) weights of the constraints violated, per element or per node:
    # the disk holds node 0, the wall nodes 0 and 2.
    assert active_stiffness(a + 0.5 * b, q).tolist() == [4.5]
    assert active_stiffness(a + 0.5 * b, q, 3).tolist() == [[4.5, 0.0, 2.5]]
    assert constraint_terms(a + b) == [a, b]
    for obj in (a, b, a + b, 0.5 * a + b):
        again = from_spec(obj.to_spec())
        assert again.to_spec() == obj.to_spec() and torch.allclose(again(q), obj(q))
    # The same constraints from strings, spec mappings and a YAML file.
    items = ["disk center=0,0 radius=1 weight=2", b.to_spec()]
    assert torch.allclose(parse_constraints(items)(q), (a + b)(q))
    path = tmp_path / "c.yaml"
    path.write_text("constraints:\n  - disk center=0,0 radius=1 weight=2\n"
                    "  - {kind: wall, axis: x, upper: 0.2, weight: 5}\n")
    assert torch.allclose(load_constraints(path)(q), (a + b)(q))
    # Constraints mix with other objectives (one library).
    mixed = a + Residual("positions", weight=0.0)
    assert torch.allclose(from_spec(mixed.to_spec())(q), a(q))
    assert {"disk", "box", "pin", "halfplane", "wall", "joint_limit", "residual"} <= set(known_kinds())


def test_parsing_types_and_the_default_margin():
    c = parse_constraint("pin nodes=3 at=1,2")
    assert c.nodes == [3] and c.at == [1.0, 2.0]
    d = parse_constraint("disk center=1.0,0.5 radius=0.3 weight=100")
    assert isinstance(d, Disk) and d.weight == 100 and d.margin is None
    bound = bind_constraints(d, ConstraintContext(num_nodes=4, dim=2, margin=0.05))
    assert bound.margin == 0.05 and d.margin is None  # binding copies
    q = _q([[1.0, 0.82]])  # 0.32 from the centre: outside the disk, inside it plus the radius 0.05
    assert d(q).item() == 0 and bound.max_violation(q).item() == pytest.approx(0.03)
    explicit = bind_constraints(parse_constraint("disk center=1,0.5 radius=0.3 margin=0"), ConstraintContext(margin=1))
    assert explicit.margin == 0
    report = violations(bound + parse_constraint("wall axis=x upper=0.9"), q)
    assert [r["spec"]["kind"] for r in report] == ["disk", "wall"]
    assert report[0]["max"] == pytest.approx(0.03) and report[1]["max"] == pytest.approx(0.1)


@pytest.mark.parametrize("text, message", [
    ("blob x=1", "unknown constraint kind 'blob'; choose one of halfplane, wall, disk, box, pin, joint_limit"),
    ("disk center=1,2 radius", "malformed constraint .* expected key=value, got 'radius'"),
    ("disk center=1,2 radius=1 radius=2", "radius given twice"),
    ("disk center=1,2 radius=1 weight=-1", "non-negative"),
    ("disk center=1,2 radius=1 weight=nan", "finite"),
    ("disk center=1,2 radius=1 weight=inf", "finite"),
    ("disk center=1,2 radius=1 weight=heavy", "weight must be a number"),
    ("disk center=1,2", "disk needs center=cx,cz and radius=r"),
    ("disk center=1,2 radius=0", "radius must be positive"),
    ("disk center=1,2 radius=1 keep=sideways", "keep must be 'out'"),
    ("disk center=1,2 radius=1 colour=red", "disk has no option 'colour'; its options: weight, quantity"),
    ("box lower=1,0 upper=0,1", "must be below upper"),
    ("halfplane normal=0,0", "normal must not be zero"),
    ("wall axis=x", "lower= and/or upper="),
    ("wall axis=w upper=1", "axis must be"),
    ("pin at=1,2", "pin needs nodes"),
    ("pin nodes=-1", "indices"),
    ("joint_limit joints=slider", "lower= and/or upper="),
    ("joint_limit joints=0,1 lower=0,0,0", "1 or 2 values"),
    ("", "a constraint is a string"),
])
def test_bad_specs_are_refused_with_clear_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_constraint(text)


def test_references_to_things_that_do_not_exist_are_refused(tmp_path):
    particles = ConstraintContext(num_nodes=4, node_kind="particle", dim=2)
    with pytest.raises(ConfigError, match=r"particle 7, which does not exist \(there are 4: 0-3\)"):
        bind_constraints(parse_constraint("pin nodes=1,7"), particles)
    with pytest.raises(ConfigError, match="center has 3 coordinates but the points have 2"):
        bind_constraints(parse_constraint("disk center=0,0,1 radius=1"), particles)
    bodies = ConstraintContext(num_nodes=3, node_names=["world", "cart", "pole_1"], node_kind="body",
                               joints={"slider": 0, "hinge_1": 1}, nq=2, dim=3)
    assert bind_constraints(parse_constraint("pin nodes=cart,2"), bodies).nodes == [1, 2]
    with pytest.raises(ConfigError, match="body 'pole', which does not exist .*known body names: world, cart, pole_1"):
        bind_constraints(parse_constraint("wall axis=x upper=1 nodes=pole"), bodies)
    with pytest.raises(ConfigError, match="joint 'hinge', which does not exist .*known joints: slider, hinge_1"):
        bind_constraints(parse_constraint("joint_limit joints=hinge upper=1"), bodies)
    with pytest.raises(ConfigError, match="qpos index 5, which does not exist"):
        bind_constraints(parse_constraint("joint_limit joints=5 upper=1"), bodies)
    with pytest.raises(ConfigError, match="bind it to a system first"):
        parse_constraint("pin nodes=cart")(_q([[0.0, 0.0]]))
    with pytest.raises(ConfigError, match="node 3, which does not exist"):  # unbound: checked on use
        parse_constraint("pin nodes=3 at=0,0")(_q([[0.0, 0.0]]))
    with pytest.raises(ConfigError, match="'xpos', which is not available"):
        parse_constraint("pin nodes=0 at=0,0 quantity=xpos")(_q([[0.0, 0.0]]))
    with pytest.raises(ConfigError, match="product of constraints"):
        bind_constraints(parse_constraint("pin nodes=0") * parse_constraint("pin nodes=1"), particles)
    with pytest.raises(ConfigError, match="not constraints"):
        active_stiffness(Sum([Residual("x")]), {})
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text("obstacles: []\n")
    with pytest.raises(ConfigError, match="one key 'constraints'"):
        load_constraints(bad_file)
    with pytest.raises(ConfigError, match="missing.yaml does not exist"):
        load_constraints(tmp_path / "missing.yaml")
