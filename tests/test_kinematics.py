"""Torch kinematics equal MuJoCo's (mj_kinematics, mj_objectVelocity, mj_integratePos) to 1e-5."""

import mujoco
import numpy as np
import pytest
import torch
from conftest import ALL_JOINTS_XML

from envs.systems import get_system
from gndesign.fkcheck import FK_TOLERANCE, check_forward_kinematics, random_states
from gndesign.kinematics import differentiate_qpos, forward_kinematics, integrate_qpos
from gndesign.quaternions import quat_exp, quat_log
from gndesign.tree import KinematicTree

SYSTEMS = ["pendulum", "cartpole", "acrobot", "swimmer3", "swimmer6", "cheetah"]


@pytest.mark.parametrize("name", SYSTEMS)
def test_fk_matches_mujoco_on_registered_systems(name):
    model = get_system(name).model
    err = check_forward_kinematics(model, num_states=32, seed=1)
    assert err["ok"], err
    assert err["max"] < FK_TOLERANCE


def test_fk_matches_mujoco_with_free_and_ball_joints():
    model = mujoco.MjModel.from_xml_string(ALL_JOINTS_XML)
    err = check_forward_kinematics(model, num_states=64, seed=2)
    assert err["max"] < FK_TOLERANCE, err
    # Every quantity was actually compared on a non-trivial model.
    assert err["num_states"] == 64


def test_fk_float32_is_within_tolerance():
    model = mujoco.MjModel.from_xml_string(ALL_JOINTS_XML)
    tree = KinematicTree.from_model(model)
    qpos, qvel = random_states(model, np.random.default_rng(0), 8)
    f32 = torch.float32
    kin = forward_kinematics(tree, torch.tensor(qpos, dtype=f32), torch.tensor(qvel, dtype=f32))
    data = mujoco.MjData(model)
    for i in range(8):
        data.qpos[:] = qpos[i]
        mujoco.mj_kinematics(model, data)
        assert np.abs(kin.xpos[i].numpy() - data.xpos).max() < FK_TOLERANCE


def test_check_detects_a_wrong_tree():
    """The checker itself can fail: a tree with a moved joint anchor does not pass."""
    model = mujoco.MjModel.from_xml_string(ALL_JOINTS_XML)
    tree = KinematicTree.from_model(model)
    tree.jnt_pos = tree.jnt_pos + 0.01
    assert not check_forward_kinematics(model, tree, num_states=8)["ok"]


def test_integrate_and_differentiate_are_inverse_and_differentiable():
    model = mujoco.MjModel.from_xml_string(ALL_JOINTS_XML)
    tree = KinematicTree.from_model(model)
    qpos, qvel = random_states(model, np.random.default_rng(3), 5)
    q = torch.tensor(qpos)
    v = torch.tensor(qvel, requires_grad=True)
    dt = torch.tensor([0.01, 0.02, 0.005, 0.01, 0.03])  # per-state timesteps
    q2 = integrate_qpos(tree, q, v, dt)
    v_back = differentiate_qpos(tree, q, q2, dt)
    assert torch.allclose(v_back, v, atol=1e-10)
    q2.sum().backward()
    assert torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0


def test_quaternion_exp_log_gradients_are_finite_at_zero():
    r = torch.zeros(2, 3, requires_grad=True)
    q = quat_exp(r)
    assert torch.allclose(q, torch.tensor([[1.0, 0, 0, 0]] * 2))
    (q.sum() + quat_log(q).sum()).backward()
    assert torch.isfinite(r.grad).all()
    r2 = torch.tensor([[0.3, -1.2, 2.0]])
    assert torch.allclose(quat_log(quat_exp(r2)), r2, atol=1e-6)


def test_fk_rejects_wrong_shapes():
    tree = KinematicTree.from_model(mujoco.MjModel.from_xml_string(ALL_JOINTS_XML))
    with pytest.raises(ValueError, match="qpos must be"):
        forward_kinematics(tree, torch.zeros(3, tree.nq + 1))
