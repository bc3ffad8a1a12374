"""Tasks as data: task files round-trip, the shipped tasks equal today's rewards (and dm_control's),
any MJCF takes a task file (judged in true MuJoCo), bad files fail in one line naming field and file."""

import json

import mujoco
import numpy as np
import pytest
import torch
import yaml

from envs.task_files import HARD_WEIGHT, TaskFileError, load_task_file, save_task_file, shipped_tasks, task_from_dict
from envs.tasks import get_task
from gndesign.kinematics import forward_kinematics
from gndesign.objectives import Affine, Tolerance
from gndesign.specs import from_spec
from workflows.cli import main

ARM_XML = """
<mujoco>
  <option timestep="0.01"/>
  <worldbody>
    <body name="upper" pos="0 0 1"><joint name="shoulder" type="hinge" axis="0 1 0" damping="0.1"/>
      <geom type="capsule" fromto="0 0 0 0.5 0 0" size="0.04" mass="1"/>
      <body name="lower" pos="0.5 0 0"><joint name="elbow" type="hinge" axis="0 1 0" range="-2 2" limited="true"
          damping="0.1"/>
        <geom type="capsule" fromto="0 0 0 0.5 0 0" size="0.04" mass="1"/>
        <site name="hand" pos="0.5 0 0"/>
      </body>
    </body>
  </worldbody>
  <actuator><motor joint="shoulder" gear="5" ctrlrange="-1 1" ctrllimited="true"/>
    <motor joint="elbow" gear="5" ctrlrange="-1 1" ctrllimited="true"/></actuator>
</mujoco>
"""

ARM_TASK = {
    "name": "arm-reach",
    "description": "bring the hand to a target drawn per episode",
    "system": "arm.xml",
    "episode_steps": 50,
    "control_timestep": 0.02,
    "planning": {"horizon": 10, "replan_every": 2},
    "parameters": {"target": {"value": [0.5, 0.0, 1.0], "range": [[0.2, 0.8], None, [0.6, 1.4]]}},
    "quantities": {"hand_to_target": {"vector": {"from": {"site": "hand"}, "to": "target"}},
                   "effort": {"ctrl": "all"}, "elbow": {"qpos": ["elbow"]}},
    "cost": {"kind": "sum", "terms": [{"kind": "residual", "quantity": "hand_to_target", "weight": 1.0},
                                      {"kind": "residual", "quantity": "effort", "weight": 0.01}]},
    "initial_state": {"qpos": {"shoulder": {"uniform": [-0.5, 0.5]}, "elbow": {"uniform": "range"}},
                      "qvel": {"*": {"normal": [0, 0.1]}}},
    "constraints": [{"constraint": "joint_limit joints=elbow lower=-1.5 upper=1.5 weight=10", "mode": "penalty"},
                    {"constraint": "wall axis=z lower=0.7 nodes=lower quantity=xpos", "mode": "hard"}],
}


@pytest.fixture()
def arm(tmp_path):
    (tmp_path / "arm.xml").write_text(ARM_XML)
    path = tmp_path / "arm.yaml"
    path.write_text(yaml.safe_dump(ARM_TASK, sort_keys=False))
    return path


# The rewards of the Python task classes these files replace, verbatim (today's rewards).
def _old_cartpole_reward(task, qpos, qvel, action):
    kin = forward_kinematics(task.tree, qpos)
    q = {"pole_cos": kin.xmat[:, 2:, 2, 2], "cart_position": qpos[:, 0], "control": action[:, :1],
         "angular_vel": qvel[:, 1:]}
    upright = Affine("pole_cos", offset=0.5, scale=0.5, reduce="mean")
    centered = Tolerance("cart_position", margin=2, offset=0.5, scale=0.5)
    small_control = Tolerance("control", margin=1, value_at_margin=0, sigmoid="quadratic", offset=0.8,
                              scale=0.2, reduce="mean")
    small_velocity = Tolerance("angular_vel", margin=5, reduce="min", offset=0.5, scale=0.5)
    return (upright * small_control * small_velocity * centered)(q)


def _old_swimmer_reward(task, target, qpos):
    m = task.system.model
    nose = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "nose")
    nose_body, nose_pos = int(m.geom_bodyid[nose]), torch.as_tensor(m.geom_pos[nose], dtype=torch.float64)
    head = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "head")
    size = float(m.geom_size[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "target"), 0])
    kin = forward_kinematics(task.tree, qpos)
    tip = kin.xpos[:, nose_body] + (kin.xmat[:, nose_body] @ nose_pos[:, None])[..., 0]
    local = ((target - tip)[:, None, :] @ kin.xmat[:, head])[:, 0, :2]
    dist = torch.sqrt((local * local).sum(-1) + 1e-12)
    return Tolerance("d", bounds=(0, size), margin=5 * size, sigmoid="long_tail")({"d": dist})


def test_shipped_task_files_round_trip(tmp_path):
    assert {"cartpole-swingup", "swimmerN", "arm-reach", "arm-hold"} <= set(shipped_tasks())
    for name in ("cartpole-swingup", "swimmer6", "swimmer9", "arm-reach", "arm-hold"):
        task = get_task(name)
        out = save_task_file(task.spec, tmp_path / f"{name}.yaml")
        again = load_task_file(out)
        assert again.to_dict() == task.spec.to_dict()
        assert from_spec(again.objective).to_spec() == from_spec(task.spec.objective).to_spec()
        save_task_file(again, tmp_path / "twice.yaml")
        assert (tmp_path / "twice.yaml").read_text() == out.read_text()


@pytest.mark.parametrize("name", ["cartpole-swingup", "swimmer6", "swimmer4"])
def test_tasks_from_files_equal_todays_rewards(name, tmp_path):
    # Read back from a written copy, so the file (not the in-memory spec) is what is tested.
    task = get_task(str(save_task_file(get_task(name).spec, tmp_path / "t.yaml")))
    rng = np.random.default_rng(1)
    B, nq, nv, nu = 64, task.system.nq, task.system.nv, task.system.nu
    qpos = torch.tensor(rng.normal(size=(B, nq)) * 2)
    qvel = torch.tensor(rng.normal(size=(B, nv)) * 3)
    action = torch.tensor(rng.uniform(-1.5, 1.5, size=(B, nu)))
    if name.startswith("swimmer"):
        targets = torch.tensor(rng.uniform(-2, 2, size=(4, 3)))
        task.set_params({"target": targets})  # 4 episodes in lockstep, 16 rows each
        old = _old_swimmer_reward(task, targets.repeat_interleave(16, 0), qpos)
    else:
        old = _old_cartpole_reward(task, qpos, qvel, action)
    new = task.reward(qpos, qvel, action)
    assert new.shape == (B,) and old.std() > 0.01
    assert torch.allclose(new, old, atol=1e-12, rtol=0)


def test_task_file_rewards_equal_dm_control_through_the_env(tmp_path):
    """A swimmer task read from a file syncs each episode's target from dm_control's model and
    scores every step as dm_control does."""
    task = get_task(str(save_task_file(get_task("swimmer6").spec, tmp_path / "s.yaml")))
    env = task.make_env(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(2):
        env.reset()
        task.sync_from_env(env)
        assert task.target.shape == (3,)
        for _ in range(20):
            a = rng.uniform(-1, 1, size=task.system.nu)
            ts = env.step(a)
            q, v = task.state_from_env(env)
            ours = task.reward(torch.tensor(q[None]), torch.tensor(v[None]), torch.tensor(a[None]))
            assert abs(float(ours) - ts.reward) < 1e-6


def test_mjcf_task_file_is_judged_in_mujoco(arm):
    task = get_task(arm)
    assert task.system.control_timestep == pytest.approx(0.02) and task.system.n_substeps == 2
    assert (task.planning_horizon, task.replan_every, task.episode_steps) == (10, 2, 50)
    env = task.make_env(seed=0)
    env.reset()
    task.sync_from_env(env)
    target = task.target.numpy()
    assert 0.2 <= target[0] <= 0.8 and target[1] == 0 and 0.6 <= target[2] <= 1.4 and target[0] != 0.5
    q0 = env.physics.data.qpos.copy()
    assert abs(q0[0]) <= 0.5 and abs(q0[1]) <= 2
    steps = 0
    while True:
        a = np.array([0.3, -0.2])
        ts = env.step(a)
        steps += 1
        q, v = task.state_from_env(env)
        hand = env.physics.data.site_xpos[0]
        cost = 0.5 * np.sum((target - hand) ** 2) + 0.01 * 0.5 * np.sum(a ** 2)
        cost += 10 * max(0.0, abs(q[1]) - 1.5) ** 2
        assert ts.reward == pytest.approx(-cost, abs=1e-9)
        if ts.last():
            break
    assert steps == 50
    # The hard constraint is in the planning cost only: the forearm's origin 0.19 below z = 0.7
    # costs HARD_WEIGHT * 0.19^2 more (but the reward does not see it).
    qs = torch.zeros(1, 2, 2, dtype=torch.float64)
    low = qs.clone()
    low[:, 1, 0] = 1.4  # shoulder rotated down: the forearm's origin at z = 1 - 0.5 sin(1.4)
    a = torch.zeros(1, 1, 2, dtype=torch.float64)
    v = torch.zeros(1, 2, 2, dtype=torch.float64)
    z = 1 - 0.5 * np.sin(1.4)
    hard = float(task.cost(low, v, a)) + float(task.reward(low[:, 1], v[:, 1], a[:, 0]))
    assert hard == pytest.approx(HARD_WEIGHT * (0.7 - z) ** 2, rel=1e-9)


def test_plan_an_mjcf_with_a_task_file_and_list_tasks(arm, tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert main(["plan", str(arm.parent / "arm.xml"), "--task", str(arm), "--model", "mujoco", "--planner", "cem",
                 "--control-steps", "20", "--set", "planner.population=16", "--set", "planner.iterations=2",
                 "--out", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["task"] == "arm-reach" and result["horizon"] == 10 and result["replan_every"] == 2
    assert len(result["episodes"][0]["rewards"]) == 20 and result["control_timestep"] == pytest.approx(0.02)
    capsys.readouterr()
    assert main(["tasks", "--json"]) == 0
    names = [r["name"] for r in json.loads(capsys.readouterr().out)]
    assert "cartpole-swingup" in names and "swimmerN" in names
    assert main(["tasks", "--show", "swimmer7"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["system"] == "swimmer7" and shown["dm_control"] == ["swimmer", "swimmer7"]
    assert main(["tasks", "--check", str(arm)]) == 0
    assert json.loads(capsys.readouterr().out)["judge"] == "mujoco"


def test_gym_envs_take_task_files(arm):
    from gymnasium.utils.env_checker import check_env

    from envs.gym_envs import DmControlGymEnv

    env = DmControlGymEnv(task=str(arm))
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2 + 2 + 2,)  # qpos, qvel, the target's drawn x and z
    assert np.allclose(obs[4:], env.task.target.numpy()[[0, 2]])


def _bad(tmp_path, change, name="bad.yaml"):
    spec = json.loads(json.dumps(ARM_TASK))
    change(spec)
    (tmp_path / "arm.xml").write_text(ARM_XML)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("change, field, words", [
    (lambda s: s["cost"]["terms"].append({"kind": "velocityy", "quantity": "effort"}), "cost", "velocityy"),
    (lambda s: s.update(rewardd=1), "rewardd", "unknown key"),
    (lambda s: s["quantities"].update(tip={"site": "hand"}), "quantities.tip", "quantity kind"),
    (lambda s: s["quantities"]["hand_to_target"]["vector"].update({"from": {"site": "hnd"}}),
     "quantities.hand_to_target.vector.from", "site 'hnd' is not in arm"),
    (lambda s: s["quantities"].update(e={"qvel": ["wrist"]}), "quantities.e.qvel", "joint 'wrist' is not in arm"),
    (lambda s: s["quantities"].update(e={"xpos": ["hand_body"]}), "quantities.e.xpos", "body 'hand_body'"),
    (lambda s: s["quantities"].update(e={"ctrl": ["motor9"]}), "quantities.e.ctrl", "actuator 'motor9'"),
    (lambda s: s["parameters"]["target"].update(range=[[0.8, 0.2], None, None]), "parameters.target.range[0]",
     "empty range"),
    (lambda s: s["parameters"]["target"].update(range=[[0, float("inf")], None, None]), "parameters.target.range[0]",
     "finite"),
    (lambda s: s["parameters"]["target"].update(value=[0, float("nan"), 1]), "parameters.target.value", "finite"),
    (lambda s: s["initial_state"]["qpos"].update(wrist={"uniform": [0, 1]}), "initial_state.qpos.wrist",
     "no joint of arm"),
    (lambda s: s["initial_state"]["qpos"].update(shoulder={"uniform": "range"}), "initial_state.qpos.shoulder",
     "no limits"),
    (lambda s: s["constraints"].append({"constraint": "wall axis=z lower=0 nodes=hand_body quantity=xpos"}),
     "constraints[2]", "hand_body"),
    (lambda s: s.update(control_timestep=0.015), "control_timestep", "not a multiple"),
    (lambda s: s.update(system="missing.xml"), "system", "missing.xml"),
    (lambda s: s.update(policy={"observe": ["hand_to_targt"]}), "policy.observe", "'hand_to_targt' is not a quantity"),
    (lambda s: s.update(policy={"observe": ["effort"]}), "policy.observe", "not its own action"),
    (lambda s: s.update(policy={"see": ["elbow"]}), "policy", "expected {observe"),
    (lambda s: s.update(policy={"observe": ["hand_to_target"], "ignore": ["wrist"]}), "policy.ignore",
     "joint 'wrist' is not in arm"),
])
def test_bad_task_files_fail_in_one_line_naming_field_and_file(tmp_path, capsys, change, field, words):
    path = _bad(tmp_path, change)
    with pytest.raises(TaskFileError) as e:
        get_task(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and f": {field}: " in msg and words in msg
    assert main(["tasks", "--check", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"gndesign: error: task file {path}: {field}: ")


def test_task_file_form_errors(tmp_path):
    with pytest.raises(TaskFileError, match="reward: give exactly one of reward and cost"):
        task_from_dict({"name": "x", "system": "cartpole", "quantities": {"a": {"qpos": ["slider"]}}}, "t.yaml")
    with pytest.raises(TaskFileError, match="task file t.yaml: quantities: missing"):
        task_from_dict({"name": "x", "system": "cartpole", "reward": {"kind": "affine", "quantity": "a"}}, "t.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(TaskFileError, match="must hold a mapping"):
        load_task_file(tmp_path / "list.yaml")
    with pytest.raises(TaskFileError, match="does not exist"):
        get_task(tmp_path / "nope.yaml")


def test_arm_hold_targets_are_within_reach_and_judged_in_the_vertical_plane():
    """arm-hold: targets drawn per episode lie within the arm's reach (0.9 m from the shoulder at
    z = 1.2), and the reward measures the hand's distance in the x-z plane, gravity acting."""
    task = get_task("arm-hold")
    assert task.system.name == "arm-vertical" and task.system.model.opt.gravity[2] < 0
    for seed in range(20):
        env = task.make_env(seed=seed)
        env.reset()
        task.sync_from_env(env)
        tx, ty, tz = task.target.numpy()
        assert ty == 0 and np.hypot(tx, tz - 1.2) < 0.9
    hand = env.physics.data.site_xpos[0]
    d = np.linalg.norm((task.target.numpy() - hand)[[0, 2]])
    q, v = (torch.as_tensor(x)[None] for x in task.state_from_env(env))
    near = 1 / (((d - 0.05) / 1.0) ** 2 * (1 / 0.1 - 1) + 1)
    assert float(task.reward(q, v, torch.zeros(1, 2, dtype=q.dtype))) == pytest.approx(near, abs=1e-9)


def test_shipped_mjcf_example_is_judged_with_its_own_reward():
    """arm-reach: an MJCF the registry does not hold, its task file next to it; the environment's
    reward is the task's reward of the state each step reaches, with that episode's target."""
    task = get_task("arm-reach")
    assert task.system.name == "arm" and task.domain is None and task.episode_steps == 150
    env = task.make_env(seed=1)
    env.reset()
    task.sync_from_env(env)
    hand = env.physics.data.site_xpos[0]
    rng = np.random.default_rng(0)
    for _ in range(10):
        a = rng.uniform(-1, 1, size=2)
        ts = env.step(a)
        hand = env.physics.data.site_xpos[0]
        d = np.linalg.norm((task.target.numpy() - hand)[:2])
        near = 1.0 if d <= 0.05 else 1 / (((d - 0.05) / 1.0) ** 2 * (1 / 0.1 - 1) + 1)
        effort = np.mean(0.8 + 0.2 * np.where(np.abs(a) < 1, 1 - a ** 2, 0))
        assert ts.reward == pytest.approx(near * effort, abs=1e-9)
