"""Coarse model steps (action repeat k): data, exact inverse, checkpoint k, validation, planners, MPC, gym."""

import gymnasium
import numpy as np
import pytest
import torch
from test_planners import PointMass, quadratic_cost

import envs  # noqa: F401  (registers the gym ids)
from envs.generate import generate_dataset, rollout
from envs.systems import get_system
from gndesign.checkpoints import load_model
from gndesign.config import ModelConfig, load_config
from gndesign.datasets.trajectories import TrajectoryDataset
from gndesign.dynamics import LearnedDynamics
from gndesign.errors import ConfigError, GndesignError
from gndesign.forward_training import system_spec
from gndesign.simulator import SystemSpec, build_model, dynamics_targets, integrate_prediction
from gndesign.training import train
from planners import make_planner
from planners.mpc import run_mpc
from workflows.evaluate import evaluate_trajectories
from workflows.plan import plan_episodes

SMALL = ModelConfig(latent_size=16, mlp_hidden_size=16, mlp_layers=1, message_passing_steps=2)
TINY = ["model.latent_size=16", "model.mlp_hidden_size=16", "model.mlp_layers=1", "train.steps=3",
        "train.batch_size=16", "train.stats_transitions=200"]


@pytest.fixture(scope="module")
def cartpole_k2(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "cartpole_k2"
    generate_dataset("cartpole", episodes=4, steps=40, seed=0, out_dir=out, progress=False, action_repeat=2)
    return out


@pytest.fixture(scope="module")
def checkpoint_k2(cartpole_k2, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "k2"
    cfg = load_config(None, TINY)
    cfg.data = [str(cartpole_k2)]
    train(cfg, run, progress=False)
    return str(run / "checkpoints" / "latest.pt")


def test_k_step_data_holds_actions_and_keeps_every_kth_state(cartpole_k2, cartpole_data):
    """The same episode as k = 1 up to the held actions: MuJoCo stepped at the base rate under the
    repeated actions, every k-th state kept; the meta says k and the coarse timing."""
    ds, base = TrajectoryDataset.load(cartpole_k2), TrajectoryDataset.load(cartpole_data)
    system = get_system("cartpole")
    assert ds.action_repeat == 2 and base.action_repeat == 1 and "action_repeat" not in base.meta
    assert ds.steps == 20 and ds.n_substeps == 2 * system.n_substeps
    assert ds.control_timestep == pytest.approx(2 * system.control_timestep)
    assert ds.meta["base_control_timestep"] == pytest.approx(system.control_timestep)
    # Same draws as k = 1: the held action is the first of each pair; same parameters and start.
    np.testing.assert_array_equal(ds.action, base.action[:4, ::2])
    np.testing.assert_array_equal(ds.qpos[:, 0], base.qpos[:4, 0])
    ep = ds.episode(1)
    model = ds.build_model(1)
    q, v = rollout(system, model, ep["qpos"][0], ep["qvel"][0], np.repeat(ep["action"], 2, axis=0))
    np.testing.assert_array_equal(q[::2], ep["qpos"])
    np.testing.assert_array_equal(v[::2], ep["qvel"])


@pytest.mark.parametrize("k", [2, 3])
def test_k_step_targets_are_the_exact_inverse(k, tmp_path):
    """With perfect predictions (targets from the data) a k-step model reproduces k-repeated data."""
    out = tmp_path / f"swimmer_k{k}"
    generate_dataset("swimmer4", episodes=2, steps=12, seed=1, out_dir=out, progress=False, action_repeat=k)
    ds = TrajectoryDataset.load(out)
    model = build_model(SMALL, [system_spec(ds)])
    assert model.systems[ds.system].action_repeat == k
    tree, dt = model.tree(), ds.control_timestep
    q = torch.as_tensor(ds.qpos, dtype=torch.float64)
    v = torch.as_tensor(ds.qvel, dtype=torch.float64)
    qs, vs, qn, vn = (x.reshape(-1, x.shape[-1]) for x in (q[:, :-1], v[:, :-1], q[:, 1:], v[:, 1:]))
    acc, corr = dynamics_targets(tree, qs, vs, qn, vn, dt)
    q2, v2 = integrate_prediction(tree, qs, vs, acc, corr, dt)
    assert torch.allclose(q2, qn, atol=1e-10) and torch.allclose(v2, vn, atol=1e-10)


def test_spec_round_trip_keeps_k_and_old_specs_read_as_one():
    spec = SystemSpec("cartpole", "<mujoco/>", 0.02, action_repeat=2)
    assert SystemSpec.from_dict(spec.to_dict()).action_repeat == 2
    old = SystemSpec("cartpole", "<mujoco/>", 0.01).to_dict()
    assert "action_repeat" not in old and SystemSpec.from_dict(old).action_repeat == 1


def test_checkpoint_stores_k_and_evaluate_refuses_other_data(checkpoint_k2, cartpole_k2, cartpole_data):
    net, _ = load_model(checkpoint_k2, "forward", system="cartpole")
    assert net.systems["cartpole"].action_repeat == 2
    result = evaluate_trajectories(checkpoint_k2, str(cartpole_k2), "1,5")
    assert result["action_repeat"] == 2 and all(result["finite"].values())
    with pytest.raises(GndesignError, match="action repeat 2\\) but the dataset .* has action repeat 1") as e:
        evaluate_trajectories(checkpoint_k2, str(cartpole_data), "1,5")
    assert "\n" not in str(e.value)


def test_training_refuses_mixed_k(cartpole_k2, cartpole_data, tmp_path):
    cfg = load_config(None, TINY)
    cfg.data = [str(cartpole_k2), str(cartpole_data)]
    with pytest.raises(GndesignError, match="different --action-repeat"):
        train(cfg, tmp_path / "mixed", progress=False)


def test_generate_refuses_k_that_does_not_divide_the_steps(tmp_path):
    with pytest.raises(ConfigError, match="not a multiple of the action repeat 4: use 8 or 12"):
        generate_dataset("cartpole", episodes=1, steps=10, seed=0, out_dir=tmp_path / "x", progress=False,
                         action_repeat=4)
    with pytest.raises(ConfigError, match="action repeat must be an integer >= 1"):
        generate_dataset("cartpole", episodes=1, steps=10, seed=0, out_dir=tmp_path / "y", progress=False,
                         action_repeat=0)
    assert not (tmp_path / "x").exists()


class CoarsePointMass(PointMass):
    """The point mass seen by a model that steps ``k`` control steps of 0.1 s at once."""

    def __init__(self, differentiable: bool, k: int):
        super().__init__(differentiable)
        self.control_timestep, self.action_repeat = 0.1 * k, k


@pytest.mark.parametrize("name", ["gradient", "cem", "mppi", "random"])
def test_planners_give_the_same_plan_in_control_steps_through_both_paths(name):
    """A k = 1 model: identical to the plain path. A k = 2 model over H control steps: the
    H / 2-step plan of the same model, each action held two control steps."""
    opts = {"gradient": {"iterations": 5, "restarts": 2}, "cem": {"population": 16, "elites": 4, "iterations": 2},
            "mppi": {"samples": 16, "iterations": 2}, "random": {"samples": 32}}[name]
    diff = name == "gradient"
    start = (torch.zeros(1), torch.zeros(1))
    plain = make_planner(name, PointMass(diff), quadratic_cost(0.5), 6, seed=3, **opts).plan(*start)
    one = make_planner(name, CoarsePointMass(diff, 1), quadratic_cost(0.5), 6, seed=3, **opts).plan(*start)
    assert torch.equal(plain.actions, one.actions) and plain.cost == one.cost
    fine = make_planner(name, CoarsePointMass(diff, 1), quadratic_cost(0.5), 3, seed=3, **opts)
    fine.dynamics.control_timestep = 0.2
    coarse = make_planner(name, CoarsePointMass(diff, 2), quadratic_cost(0.5), 6, seed=3, **opts)
    a, b = fine.plan(*start), coarse.plan(*start)
    assert b.actions.shape == (6, 1) and coarse.horizon == 3 and coarse.control_horizon == 6
    assert torch.equal(b.actions, a.actions.repeat_interleave(2, 0)) and a.cost == b.cost


def test_planner_refuses_horizon_and_replanning_that_k_does_not_divide():
    with pytest.raises(ConfigError, match="planning horizon \\(7 control steps\\) is not a multiple of the action "
                                          "repeat 2: use 6 or 8"):
        make_planner("cem", CoarsePointMass(False, 2), quadratic_cost(0.5), 7)
    planner = make_planner("cem", CoarsePointMass(False, 2), quadratic_cost(0.5), 8, population=8, elites=2,
                           iterations=1)

    class Env:
        def reset(self):
            return torch.zeros(1), torch.zeros(1)

        def step(self, a):
            raise AssertionError("must not act")

    with pytest.raises(ConfigError, match="replanning interval"):
        run_mpc(Env(), planner, 4, replan_every=3)


def test_mpc_holds_each_coarse_action_and_warm_starts_in_model_steps():
    """MPC with a k = 2 model: the executed actions come in equal pairs; replanning every 4
    control steps makes one decision per 4 steps."""
    planner = make_planner("cem", CoarsePointMass(False, 2), quadratic_cost(0.5), 8, population=32, elites=4,
                           iterations=2)

    class Env:
        def reset(self):
            self.v = torch.zeros(1)
            return torch.zeros(1), self.v

        def step(self, a):
            self.v = self.v + 0.1 * a
            return -float((self.v - 0.5) ** 2), torch.zeros(1), self.v

    rec = run_mpc(Env(), planner, 12, replan_every=4)
    acts = np.array(rec.actions)[:, 0]
    assert len(rec.latencies) == 3 and np.array_equal(acts[::2], acts[1::2])
    assert planner.warm.shape[-2:] == (4, 1)  # the warm start stays in model steps


def test_mpc_with_a_k2_model_runs_on_cartpole(checkpoint_k2):
    out = plan_episodes("cartpole-swingup", checkpoint_k2, "gradient", 1, 0, steps=6, replan_every=2, horizon=8,
                        options={"iterations": 2, "restarts": 1}, progress=False)
    ep = out["episodes"][0]
    assert out["action_repeat"] == 2 and ep["steps"] == 6 and ep["decisions"] == 3
    acts = np.array(ep["actions"])
    assert np.array_equal(acts[::2], acts[1::2]) and np.isfinite(ep["return"])
    with pytest.raises(GndesignError, match="action repeat 2\\) but --action-repeat asks for 4"):
        plan_episodes("cartpole-swingup", checkpoint_k2, "gradient", 1, 0, steps=4, action_repeat=4, progress=False)
    with pytest.raises(ConfigError, match="--horizon \\(9 control steps\\)"):
        plan_episodes("cartpole-swingup", checkpoint_k2, "gradient", 1, 0, steps=4, horizon=9, progress=False)
    with pytest.raises(ConfigError, match="--replan-every \\(3 control steps\\)"):
        plan_episodes("cartpole-swingup", checkpoint_k2, "gradient", 1, 0, steps=4, replan_every=3, horizon=8,
                      progress=False)


def test_learned_dynamics_reports_k(checkpoint_k2):
    net, _ = load_model(checkpoint_k2, "forward", system="cartpole")
    dyn = LearnedDynamics(net, "cartpole")
    assert dyn.action_repeat == 2 and dyn.control_timestep == pytest.approx(2 * get_system("cartpole").control_timestep)


def test_learned_gym_env_steps_k_control_steps(checkpoint_k2):
    env = gymnasium.make("gndesign/Learned-v0", checkpoint=checkpoint_k2, task="cartpole-swingup", episode_steps=6)
    assert env.unwrapped.action_repeat == 2
    env.reset(seed=0)
    truncated = [env.step(env.action_space.sample())[3] for _ in range(3)]
    assert truncated == [False, False, True] and env.unwrapped.t == 6
    env.close()
    with pytest.raises(ConfigError, match="episode_steps \\(5 control steps\\)"):
        gymnasium.make("gndesign/Learned-v0", checkpoint=checkpoint_k2, task="cartpole-swingup", episode_steps=5)
    with pytest.raises(GndesignError, match="action repeat 2\\) but action_repeat asks for 1"):
        gymnasium.make("gndesign/Learned-v0", checkpoint=checkpoint_k2, task="cartpole-swingup", episode_steps=6,
                       action_repeat=1)


def test_shipped_k8_cartpole_steps_eight_held_control_steps_like_mujoco(tmp_path):
    """pretrained:cartpole-k8 (the demo's model) is an 8-step model, refuses k = 1 use, and predicts
    MuJoCo's state 8 held control steps ahead on unseen episodes (validation rmse 0.0009 rad/m)."""
    net, _ = load_model("pretrained:cartpole-k8", "forward", system="cartpole")
    dyn = LearnedDynamics(net, "cartpole")
    assert dyn.action_repeat == 8 and dyn.control_timestep == pytest.approx(0.08)
    generate_dataset("cartpole", episodes=2, steps=80, seed=123, out_dir=tmp_path / "d", progress=False,
                     action_repeat=8)
    ds = TrajectoryDataset.load(tmp_path / "d")
    q, v, a = (torch.as_tensor(np.asarray(x), dtype=torch.float32) for x in (ds.qpos, ds.qvel, ds.action))
    with torch.no_grad():
        qs, _ = net.rollout(q[:, 0], v[:, 0], a[:, :1], "cartpole")
    assert (qs[:, -1] - q[:, 1]).abs().max() < 0.01
    with pytest.raises(GndesignError, match="action repeat 8\\) but --action-repeat asks for 1"):
        plan_episodes("cartpole-swingup", "pretrained:cartpole-k8", "gradient", 1, 0, steps=8, action_repeat=1,
                      progress=False)
