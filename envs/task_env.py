"""True MuJoCo as the judge of a task file that names no dm_control task.

:class:`MujocoTaskEnv` has the part of dm_control's environment API the planners' ground truth
(:mod:`envs.control`) and the gymnasium environments use: ``reset()``, ``step(action)`` returning a
time step with ``reward`` and ``last()``, ``physics.data``, ``physics.model``, ``physics.render``
and ``action_spec()``. Each episode draws the task's parameters (written into the model where a
parameter reads a model field, so a target shows where it is) and its initial state; the reward
is the task's own, computed in float64 on the state each step reaches.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import mujoco
import numpy as np
import torch

from envs.task_files import MODEL_FIELDS


@dataclass
class TimeStep:
    reward: float | None
    is_last: bool

    def last(self) -> bool:
        return self.is_last


class _Physics:
    def __init__(self, model: mujoco.MjModel):
        self.model = model
        self.data = mujoco.MjData(model)
        self._renderer = None

    def render(self, height: int = 240, width: int = 320, camera_id: int = -1) -> np.ndarray:
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, height, width)
        self._renderer.update_scene(self.data, camera=camera_id if camera_id < self.model.ncam else -1)
        return self._renderer.render()


class MujocoTaskEnv:
    """One episode after another of ``task`` in true MuJoCo (``task.episode_steps`` control steps
    of ``task.system.n_substeps`` MuJoCo steps each); ``seed`` seeds parameters and initial states."""

    def __init__(self, task, seed: int | None = None):
        self.task = task
        self.rng = np.random.default_rng(seed)
        self.physics = _Physics(copy.deepcopy(task.system.model))
        self.ctrlrange = task.system.ctrlrange()
        self.task_params: dict[str, np.ndarray] = {}
        self.t = 0

    def action_spec(self):
        from dm_env.specs import BoundedArray  # dm_control's spec type

        return BoundedArray((self.task.system.nu,), np.float64, self.ctrlrange[:, 0], self.ctrlrange[:, 1])

    def reset(self) -> TimeStep:
        m, d = self.physics.model, self.physics.data
        self.task_params = self.task.draw_params(self.rng)
        for name, p in self.task.spec.parameters.items():
            if isinstance(p["value"], dict):
                fld, obj = next(iter(p["value"].items()))
                getattr(m, fld)[mujoco.mj_name2id(m, getattr(mujoco.mjtObj, f"mjOBJ_{MODEL_FIELDS[fld].upper()}"),
                                                  obj)] = self.task_params[name]
        mujoco.mj_resetData(m, d)
        d.qpos[:], d.qvel[:] = self.task.initial_state(m, self.rng)
        mujoco.mj_forward(m, d)
        self.t = 0
        return TimeStep(None, False)

    def step(self, action) -> TimeStep:
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), self.ctrlrange[:, 0], self.ctrlrange[:, 1])
        m, d = self.physics.model, self.physics.data
        d.ctrl[:] = a
        mujoco.mj_step(m, d, nstep=self.task.system.n_substeps)
        mujoco.mj_forward(m, d)  # positions derived from the new state (as dm_control's physics.step)
        self.t += 1
        params = {k: torch.as_tensor(v) for k, v in self.task_params.items()}
        with torch.no_grad():
            r = self.task.reward(torch.as_tensor(d.qpos)[None], torch.as_tensor(d.qvel)[None],
                                 torch.as_tensor(a)[None], params)
        return TimeStep(float(r), self.t >= self.task.episode_steps)
