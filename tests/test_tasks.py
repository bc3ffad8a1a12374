"""Task rewards equal dm_control's get_reward; ground-truth dynamics equal mj_step."""

import mujoco
import numpy as np
import pytest
import torch

from envs.mujoco_dynamics import MujocoDynamics
from envs.tasks import get_task
from gndesign.errors import GndesignError


@pytest.mark.parametrize("name", ["cartpole-swingup", "swimmer6"])
def test_rewards_equal_dm_control_on_random_states(name):
    task = get_task(name)
    env = task.make_env(seed=1)
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(3):
        env.reset()
        task.sync_from_env(env)
        for _ in range(60):
            a = rng.uniform(-1, 1, size=env.action_spec().shape)
            ts = env.step(a)
            q, v = task.state_from_env(env)
            ours = task.reward(torch.tensor(q[None]), torch.tensor(v[None]), torch.tensor(a[None]))
            worst = max(worst, abs(float(ours) - ts.reward))
        # Random states (not only reachable ones) too.
        with env.physics.reset_context():
            env.physics.data.qpos[:] = rng.normal(size=env.physics.model.nq) * 2
            env.physics.data.qvel[:] = rng.normal(size=env.physics.model.nv) * 3
        q, v = task.state_from_env(env)
        a = rng.uniform(-1, 1, size=env.action_spec().shape)
        env.physics.data.ctrl[:] = a
        ref = env._task.get_reward(env.physics)
        ours = task.reward(torch.tensor(q[None]), torch.tensor(v[None]), torch.tensor(a[None]))
        worst = max(worst, abs(float(ours) - ref))
    assert worst < 1e-6


def test_task_cost_is_minus_the_return_and_differentiable():
    task = get_task("cartpole-swingup")
    qs = torch.randn(2, 4, 2, dtype=torch.float64)
    vs = torch.randn(2, 4, 2, dtype=torch.float64)
    a = torch.rand(2, 3, 1, dtype=torch.float64, requires_grad=True)
    cost = task.cost(qs, vs, a)
    manual = -sum(task.reward(qs[:, t + 1], vs[:, t + 1], a[:, t]) for t in range(3))
    assert torch.allclose(cost, manual)
    cost.sum().backward()
    assert torch.isfinite(a.grad).all()


def test_unknown_task():
    with pytest.raises(GndesignError, match="unknown task"):
        get_task("walker")


def test_mujoco_dynamics_equals_mj_step_with_substeps():
    task = get_task("swimmer6")
    dyn = MujocoDynamics(task.system)
    m = task.system.model
    rng = np.random.default_rng(0)
    q = np.tile(m.qpos0, (3, 1)) + 0.2 * rng.normal(size=(3, m.nq))
    v = rng.normal(size=(3, m.nv))
    a = rng.uniform(-1, 1, size=(3, 5, m.nu))
    qs, vs = dyn.rollout(torch.tensor(q), torch.tensor(v), torch.tensor(a))
    d = mujoco.MjData(m)
    for i in range(3):
        mujoco.mj_resetData(m, d)
        d.qpos[:], d.qvel[:] = q[i], v[i]
        for t in range(5):
            d.ctrl[:] = a[i, t]
            for _ in range(task.system.n_substeps):
                mujoco.mj_step(m, d)
            assert np.array_equal(d.qpos, qs[i, t + 1].numpy()) and np.array_equal(d.qvel, vs[i, t + 1].numpy())
    assert dyn.evaluations == 15
    with pytest.raises(ValueError, match="outside the control range"):
        dyn.rollout(torch.tensor(q), torch.tensor(v), torch.tensor(a) * 3)


def test_lockstep_batch_rewards_use_each_episodes_own_target():
    """Two swimmer episodes with different random targets step in lockstep: the task's batched
    reward equals each environment's own reward (a mixed-up target would not)."""
    from envs.control import DmControlBatch

    task = get_task("swimmer6")
    batch = DmControlBatch(task, seeds=[1, 2])
    q, v = batch.reset()
    assert q.shape == (2, task.system.model.nq) and task.target.shape == (2, 3)
    assert not torch.allclose(task.target[0], task.target[1])
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = torch.tensor(rng.uniform(-1, 1, size=(2, task.system.model.nu)), dtype=torch.float32)
        rewards, q, v = batch.step(a)
        ours = task.reward(q.double(), v.double(), a.double())
        assert np.allclose(ours.numpy(), rewards, atol=1e-5)
    # The cost's rows are episode-major: 3 sequences per episode score against their own target.
    qs, vs = q.double().repeat_interleave(3, 0)[:, None].expand(-1, 2, -1), v.double().repeat_interleave(3, 0)[:, None]
    costs = task.cost(qs, vs.expand(-1, 2, -1), torch.zeros(6, 1, task.system.model.nu, dtype=torch.float64))
    assert torch.allclose(costs.reshape(2, 3), -torch.as_tensor(rewards, dtype=torch.float64)[:, None].expand(2, 3),
                          atol=1e-5)
    with pytest.raises(ValueError, match="episodes' targets"):
        task.reward(q[:1].double(), v[:1].double(), a[:1].double())


def test_planner_settings_live_with_the_task():
    from planners import PLANNERS

    cartpole, alias, swimmer = get_task("cartpole-swingup"), get_task("cartpole"), get_task("swimmer6")
    assert cartpole.planning_horizon == alias.planning_horizon == 120  # 60 steps cannot keep the pole up
    assert swimmer.planning_horizon == 30 and cartpole.replan_every == swimmer.replan_every == 1
    for task in (cartpole, swimmer):
        assert set(task.planner_options) == set(PLANNERS)
    assert cartpole.planner_options["gradient"] == {"iterations": 5, "restarts": 8, "lr": 0.3}
