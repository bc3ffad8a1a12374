"""Adaptive MPC: online identification refits at its interval, recovers the parameters of a system
the learned model itself simulates, and plans with them; mismatched true systems; bad input."""

import copy
import math

import numpy as np
import pytest
import torch

from envs.control import DmControlBatch
from envs.tasks import get_task
from gndesign.checkpoints import load_model
from gndesign.dynamics import LearnedDynamics
from gndesign.errors import GndesignError
from gndesign.identify import elements, params_from_factors, parse_scales, scale_groups
from planners import make_planner
from planners.adaptive import OnlineIdentification
from planners.mpc import run_mpc_lockstep
from workflows.plan import plan_episodes

TRUE = {"body_mass[cart]": 1.2, "body_mass[pole_1]": 0.85}


class ModelEnvironment:
    """The learned model itself (float64) with known parameters as the 'true' system."""

    def __init__(self, model, params):
        self.model, self.params = model, params

    def reset(self):
        self.q = torch.tensor([[0.1, 2.5]], dtype=torch.float64)
        self.v = torch.tensor([[0.0, 0.5]], dtype=torch.float64)
        return self.q.float(), self.v.float()

    def step(self, actions):
        with torch.no_grad():
            q, v = self.model.step(self.q, self.v, actions.double(), "cartpole", params=self.params)
        self.q, self.v = q.float().double(), v.float().double()  # what the controller sees is all there is
        return [0.0], self.q.float(), self.v.float()


@pytest.fixture(scope="module")
def cartpole():
    model, _ = load_model("pretrained:cartpole", "forward", system="cartpole")
    return model


def test_refits_at_the_interval_and_recover_the_parameters(cartpole):
    tree = cartpole.tree("cartpole")
    elems = elements(tree, ["mass"])
    log_f = torch.log(torch.tensor([[TRUE[e.name] for e in elems]], dtype=torch.float64))
    nominal = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in tree.nominal.items()}
    truth = params_from_factors(nominal, elems, log_f)
    env = ModelEnvironment(copy.deepcopy(cartpole).double(), truth)
    dynamics = LearnedDynamics(cartpole, "cartpole")
    adapt = OnlineIdentification(dynamics, ["mass"], refit_every=10, iterations=20, prior=0.0)  # no pull to nominal
    planner = make_planner("random", dynamics, lambda q, v, a: -a.pow(2).sum((1, 2)), 5, seed=0, samples=4)
    rec = run_mpc_lockstep(env, planner, 35, replan_every=1, adapt=adapt)[0]
    assert [r["t"] for r in rec.refits] == [10, 20, 30]
    assert [r["transitions"] for r in rec.refits] == [10, 20, 30]
    assert [r["kept"] for r in rec.refits] == [10, 20, 30]  # online refits fit every transition (ONLINE_KEEP)
    for name, f in rec.refits[-1]["factors"].items():  # exactly identifiable: the model made the data
        assert f == pytest.approx(TRUE[name], rel=1e-3)
    assert dynamics.params is not None
    for key in ("body_mass", "body_inertia"):
        assert torch.allclose(dynamics.params[key].double(), truth[key][0], rtol=1e-3)
    adapt.reset()  # a new episode plans with the nominal values again
    assert dynamics.params is None and adapt.refits == [] and adapt.transitions == []
    trimmed = OnlineIdentification(dynamics, ["mass"], refit_every=10, iterations=20, prior=0.0, keep=0.8)
    rec = run_mpc_lockstep(env, planner, 15, replan_every=1, adapt=trimmed)[0]
    assert [r["kept"] for r in rec.refits] == [8]
    with pytest.raises(GndesignError, match="--keep must be a fraction"):
        OnlineIdentification(dynamics, ["mass"], refit_every=10, keep=1.5)


def test_k_step_transitions_need_the_action_held(cartpole):
    dynamics = LearnedDynamics(cartpole, "cartpole")
    dynamics.action_repeat = 4  # as a 4-step model would be
    adapt = OnlineIdentification(dynamics, ["mass"], refit_every=8)
    q, v = torch.zeros(1, 2), torch.zeros(1, 2)
    held, other = torch.tensor([[0.5]]), torch.tensor([[-0.5]])
    for t in range(4):  # held: one model step
        adapt.observe(t, q + t, v, held, q + t + 1, v)
    assert len(adapt.transitions) == 1
    start, _, action, end, _ = adapt.transitions[0]
    assert start.tolist() == [0.0, 0.0] and end.tolist() == [4.0, 4.0] and action.tolist() == [0.5]
    for t in range(4, 8):  # the action changes inside the model step: not a transition of the model
        adapt.observe(t, q, v, held if t < 6 else other, q, v)
    assert len(adapt.transitions) == 1
    with pytest.raises(GndesignError, match="--refit-every"):
        OnlineIdentification(dynamics, ["mass"], refit_every=6)


def test_scaled_parameters_reach_the_true_environment():
    task = get_task("cartpole-swingup")
    nominal = task.system.nominal_params()
    physical = scale_groups(nominal, parse_scales("mass=1.25,damping=0.8"))
    np.testing.assert_allclose(physical["body_mass"], 1.25 * nominal["body_mass"])
    np.testing.assert_allclose(physical["body_inertia"], 1.25 * nominal["body_inertia"])
    np.testing.assert_allclose(physical["dof_damping"], 0.8 * nominal["dof_damping"])
    np.testing.assert_allclose(physical["actuator_gear"], nominal["actuator_gear"])
    env = DmControlBatch(task, [0, 1], physical=physical)
    env.reset()
    for e in env.envs:
        np.testing.assert_allclose(e.env.physics.model.body_mass, physical["body_mass"])


def test_adaptive_plan_records_its_refits():
    r = plan_episodes("cartpole-swingup", "pretrained:cartpole-k8", "gradient", 1, 100, steps=48, replan_every=8,
                      horizon=64, options={"iterations": 1, "restarts": 2}, progress=False,
                      policy="pretrained:cartpole-policy", adapt="mass", refit_every=16, scale_params="mass=1.25")
    refits = r["episodes"][0]["refits"]
    assert [f["t"] for f in refits] == [16, 32] and [f["transitions"] for f in refits] == [2, 4]
    assert r["adapt"] == {"groups": ["mass"], "refit_every": 16} and r["scale_params"] == {"mass": 1.25}
    assert all(math.isfinite(f) for f in refits[-1]["factors"].values())


@pytest.mark.parametrize("kwargs, match", [
    ({"model": "mujoco", "adapt": "mass"}, "learned --model"),
    ({"adapt": "mass", "lockstep": 2, "episodes": 2}, "one episode at a time"),
    ({"adapt": "inertia"}, "unknown parameter group"),
    ({"known_params": True}, "give --scale-params"),
    ({"known_params": True, "scale_params": "mass=1.25", "adapt": "mass"}, "exclude each other"),
    ({"scale_params": "mass=-1"}, "positive factor"),
    ({"scale_params": "mass"}, "GROUP=FACTOR"),
])
def test_bad_adaptive_options(kwargs, match):
    args = {"model": "pretrained:cartpole-k8", "episodes": 1} | kwargs
    with pytest.raises(GndesignError, match=match):
        plan_episodes("cartpole-swingup", args.pop("model"), "gradient", args.pop("episodes"), 0, steps=8,
                      replan_every=8, horizon=64, progress=False, **args)
