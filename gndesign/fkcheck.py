"""Check the torch kinematics against MuJoCo on random states (``gndesign inspect --check-fk``)."""

from __future__ import annotations

import mujoco
import numpy as np
import torch

from gndesign.kinematics import differentiate_qpos, forward_kinematics, integrate_qpos
from gndesign.tree import KinematicTree

FREE_ID, BALL_ID = int(mujoco.mjtJoint.mjJNT_FREE), int(mujoco.mjtJoint.mjJNT_BALL)

#: The tolerance the project promises (float64 kinematics agree far more closely).
FK_TOLERANCE = 1e-5


def random_states(model: mujoco.MjModel, rng: np.random.Generator, n: int):
    """``n`` random (qpos ``[n, nq]``, qvel ``[n, nv]``) pairs covering every joint's range.

    Hinge and slide coordinates are drawn around ``qpos0`` (within the range when limited),
    quaternions uniformly on the unit sphere, velocities from a unit normal.
    """
    qpos = np.tile(model.qpos0, (n, 1))
    for j in range(model.njnt):
        a, t = model.jnt_qposadr[j], model.jnt_type[j]
        if t == mujoco.mjtJoint.mjJNT_FREE:
            qpos[:, a:a + 3] += rng.normal(size=(n, 3))
            a += 3
        if t in (mujoco.mjtJoint.mjJNT_FREE, mujoco.mjtJoint.mjJNT_BALL):
            quat = rng.normal(size=(n, 4))
            qpos[:, a:a + 4] = quat / np.linalg.norm(quat, axis=1, keepdims=True)
        elif model.jnt_limited[j]:
            qpos[:, a] = rng.uniform(*model.jnt_range[j], size=n)
        else:
            qpos[:, a] += rng.uniform(-np.pi, np.pi, size=n)
    return qpos, rng.normal(size=(n, model.nv))


def check_forward_kinematics(model: mujoco.MjModel, tree: KinematicTree | None = None,
                             num_states: int = 64, seed: int = 0, dt: float = 0.01) -> dict:
    """Maximum absolute errors of the torch kinematics against MuJoCo on random states.

    Compares body positions and rotation matrices (``mj_kinematics``), centres of mass,
    body-origin and centre-of-mass velocities (``mj_objectVelocity`` for ``mjOBJ_XBODY`` and
    ``mjOBJ_BODY``), ``mj_integratePos`` and ``mj_differentiatePos``, all in float64.

    Returns:
        ``{"position": ..., "rotation": ..., ..., "max": ..., "num_states": n, "ok": bool}``.
    """
    tree = tree or KinematicTree.from_model(model)
    qpos, qvel = random_states(model, np.random.default_rng(seed), num_states)
    q, v = torch.from_numpy(qpos), torch.from_numpy(qvel)
    with torch.no_grad():
        kin = forward_kinematics(tree, q, v)
        q_next = integrate_qpos(tree, q, v, dt).numpy()
        v_back = differentiate_qpos(tree, q, torch.from_numpy(q_next), dt).numpy()
    err = dict.fromkeys(["position", "rotation", "com", "angular_velocity", "linear_velocity",
                         "com_velocity", "integrate", "differentiate"], 0.0)
    data = mujoco.MjData(model)
    res = np.zeros(6)

    def upd(key, a, b):
        err[key] = max(err[key], float(np.abs(np.asarray(a) - np.asarray(b)).max(initial=0.0)))

    for i in range(num_states):
        data.qpos[:], data.qvel[:] = qpos[i], qvel[i]
        mujoco.mj_kinematics(model, data)
        mujoco.mj_comPos(model, data)
        mujoco.mj_comVel(model, data)
        upd("position", kin.xpos[i], data.xpos)
        upd("rotation", kin.xmat[i].reshape(-1, 9), data.xmat)
        upd("com", kin.xipos[i], data.xipos)
        for b in range(model.nbody):
            mujoco.mj_objectVelocity(model, data, mujoco.mjtObj.mjOBJ_XBODY, b, res, 0)
            upd("angular_velocity", kin.angvel[i, b], res[:3])
            upd("linear_velocity", kin.linvel[i, b], res[3:])
            mujoco.mj_objectVelocity(model, data, mujoco.mjtObj.mjOBJ_BODY, b, res, 0)
            upd("com_velocity", kin.comvel[i, b], res[3:])
        expected = qpos[i].copy()
        mujoco.mj_integratePos(model, expected, qvel[i], dt)
        upd("integrate", _canonical_quats(model, q_next[i]), _canonical_quats(model, expected))
        upd("differentiate", v_back[i], qvel[i])
    err["max"] = max(err.values())
    err["num_states"] = num_states
    err["ok"] = bool(err["max"] <= FK_TOLERANCE)
    return err


def _canonical_quats(model: mujoco.MjModel, qpos: np.ndarray) -> np.ndarray:
    """Flip quaternions to ``w >= 0`` (``q`` and ``-q`` are the same rotation)."""
    qpos = qpos.copy()
    for j in range(model.njnt):
        t, a = model.jnt_type[j], model.jnt_qposadr[j]
        if t in (FREE_ID, BALL_ID):
            a += 3 if t == FREE_ID else 0
            if qpos[a] < 0:
                qpos[a:a + 4] *= -1
    return qpos

