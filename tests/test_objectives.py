"""The objective library: dm_control-equal tolerances, composition, specs as data, bad input."""

import numpy as np
import pytest
import torch
from dm_control.utils import rewards

from gndesign.errors import ConfigError
from gndesign.objectives import SIGMOIDS, Affine, IntervalDistance, Residual, SoftInside, Tolerance, tolerance
from gndesign.specs import from_spec


@pytest.mark.parametrize("sigmoid", SIGMOIDS)
def test_tolerance_equals_dm_control(sigmoid):
    x = np.linspace(-4, 4, 401)
    v = 0.0 if sigmoid in ("linear", "quadratic", "cosine") else 0.1
    for bounds, margin in (((0, 0), 1.0), ((-0.5, 1.0), 2.0), ((0, 0), 0.0)):
        ours = tolerance(torch.tensor(x), bounds, margin, sigmoid, v).numpy()
        ref = rewards.tolerance(x, bounds=bounds, margin=margin, sigmoid=sigmoid, value_at_margin=v)
        assert np.allclose(ours, ref, atol=1e-12), (sigmoid, bounds, margin)


def test_tolerance_is_differentiable_outside_bounds():
    x = torch.tensor([2.0, -3.0], requires_grad=True)
    tolerance(x, (0, 1), margin=1.0, sigmoid="long_tail").sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad != 0).all()


def test_composition_and_specs_round_trip():
    q = {"a": torch.tensor([[1.0, 2.0], [0.0, 0.0]]), "b": torch.tensor([0.5, -1.0])}
    obj = Residual("a", target=1.0, weight=2.0) + 3.0 * Tolerance("b", margin=1.0) * Affine("b", offset=1.0)
    value = obj(q)
    expected_res = 2.0 * 0.5 * torch.tensor([0.0 + 1.0, 1.0 + 1.0])
    expected_tol = tolerance(q["b"], (0, 0), 1.0) * (1.0 + q["b"])
    assert torch.allclose(value, expected_res + 3.0 * expected_tol)
    again = from_spec(obj.to_spec())
    assert torch.allclose(again(q), value)


def test_residual_norms_at_their_limits():
    q = {"x": torch.tensor([[0.0], [3.0]])}
    assert Residual("x", norm="l1")(q).tolist() == [0.0, 3.0]
    smooth = Residual("x", norm="smooth_abs", smoothing=0.1)(q)
    assert smooth[0] == 0 and abs(float(smooth[1]) - (np.sqrt(9.01) - 0.1)) < 1e-6


@pytest.mark.parametrize("spec, message", [
    ({"kind": "bogus"}, "unknown objective kind"),
    ({"kind": "residual", "quantity": "x", "weight": -1.0}, "non-negative"),
    ({"kind": "residual", "quantity": "x", "weight": float("nan")}, "finite"),
    ({"kind": "tolerance", "quantity": "x", "sigmoid": "wavy"}, "unknown sigmoid"),
    ({"kind": "sum", "terms": []}, "at least one term"),
    ({"kind": "residual", "quantity": "x", "colour": 1}, "bad residual objective"),
    ("residual", "mapping"),
])
def test_bad_specs_are_refused(spec, message):
    with pytest.raises(ConfigError, match=message):
        from_spec(spec)


def test_missing_quantity_names_what_is_available():
    with pytest.raises(ConfigError, match="'y'.*available: x"):
        Residual("y")({"x": torch.zeros(2)})


def test_soft_inside_and_interval_distance_at_their_limits():
    x = torch.tensor([[0.4, 0.5, 0.6], [5.0, 6.0, -4.0], [0.0, 1.0, 3.0]], dtype=torch.float64)
    q = {"x": x}
    soft = SoftInside("x", bounds=(0.0, 1.0), sharpness=0.05)
    frac = soft(q)
    assert frac[0] > 0.99 and frac[1] < 1e-9  # all inside / all far outside
    assert abs(float(frac[2]) - (0.5 + 0.5 + 0.0) / 3) < 1e-6  # on a bound counts one half
    cost = SoftInside("x", bounds=(0.0, 1.0), sharpness=0.05, offset=1.0, scale=-1.0)
    assert torch.allclose(cost(q), 1 - frac)
    dist = IntervalDistance("x", bounds=(0.0, 1.0))
    assert torch.allclose(dist(q), torch.tensor([0.0, (4.0 + 5.0 + 4.0) / 3, 2.0 / 3], dtype=torch.float64))
    quad = IntervalDistance("x", bounds=(0.0, 1.0), norm="quadratic", reduce="sum", weight=2.0)
    assert quad(q)[1].item() == pytest.approx(16.0 + 25.0 + 16.0)
    # Gradients point inwards from outside; none inside the interval for the distance.
    xg = x.clone().requires_grad_(True)
    (dist({"x": xg}) - soft({"x": xg})).sum().backward()
    assert xg.grad[1, 0] > 0 and xg.grad[1, 2] < 0
    for obj in (soft, cost, dist, quad):
        assert torch.allclose(from_spec(obj.to_spec())(q), obj(q))


@pytest.mark.parametrize("spec, message", [
    ({"kind": "soft_inside", "quantity": "x", "bounds": (1.0, 0.0)}, "lower <= upper"),
    ({"kind": "soft_inside", "quantity": "x", "sharpness": 0.0}, "sharpness"),
    ({"kind": "interval_distance", "quantity": "x", "bounds": "wide"}, "pair of numbers"),
    ({"kind": "interval_distance", "quantity": "x", "norm": "cubic"}, "unknown norm"),
    ({"kind": "interval_distance", "quantity": "x", "weight": -1.0}, "non-negative"),
])
def test_bad_interval_objectives_are_refused(spec, message):
    with pytest.raises(ConfigError, match=message):
        from_spec(spec)


def test_registry_lists_every_kind_and_refuses_clashes():
    from gndesign.specs import register_kind

    with pytest.raises(ConfigError, match="unknown objective kind 'bogus'; choose one of .*disk.*residual"):
        from_spec({"kind": "bogus"})
    with pytest.raises(ValueError, match="already registered"):
        register_kind("residual", dict)
    with pytest.raises(ValueError, match="already registered"):
        register_kind("sum", dict)
