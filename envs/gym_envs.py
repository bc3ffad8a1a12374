"""Gymnasium environments: dm_control tasks (true MuJoCo) and learned-model simulators.

    import gymnasium
    env = gymnasium.make("envs:gndesign/CartpoleSwingup-v0", render_mode="rgb_array")  # imports envs
    env = gymnasium.make("gndesign/Swimmer6-v0")  # once envs is imported, the short ids work too
    env = gymnasium.make("gndesign/Learned-v0", checkpoint="pretrained:cartpole", task="cartpole-swingup")

The ids are registered when :mod:`envs` is imported (``envs.GYM_IDS``).

Any task file works as ``task`` (:mod:`envs.task_files`; its own system, or the checkpoint's).
Observations are ``[qpos, qvel]`` plus the task parameters drawn per episode (the swimmer's target
x, y) as float64; actions are the actuators' controls within their ranges. Episodes last the
task's control steps (dm_control's 1000) and end by truncation.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from envs.tasks import Task, get_task

RENDER_SIZE = (240, 320)


def _obs_space(n: int) -> gym.spaces.Box:
    return gym.spaces.Box(-np.inf, np.inf, shape=(n,), dtype=np.float64)


def _action_space(ctrlrange: np.ndarray) -> gym.spaces.Box:
    return gym.spaces.Box(ctrlrange[:, 0].astype(np.float32), ctrlrange[:, 1].astype(np.float32), dtype=np.float32)


class _TaskEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, task: Task, render_mode: str | None = None):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.task = task
        self.render_mode = render_mode
        self.extra = len(task.observed_parameters())
        s = task.system
        self.observation_space = _obs_space(s.nq + s.nv + self.extra)
        self.action_space = _action_space(s.ctrlrange())

    def _obs(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        parts = [qpos, qvel] + ([self.task.observed_parameters()] if self.extra else [])
        return np.concatenate(parts).astype(np.float64)

    def _check_action(self, action) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64).reshape(self.action_space.shape)
        if not np.isfinite(a).all():
            raise ValueError(f"action contains NaN or infinite values: {a}")
        return np.clip(a, self.action_space.low, self.action_space.high)


class DmControlGymEnv(_TaskEnv):
    """A dm_control task (ground-truth MuJoCo) with the gymnasium 5-tuple API."""

    def __init__(self, task: str = "cartpole-swingup", render_mode: str | None = None):
        super().__init__(get_task(task), render_mode)
        self._env = None

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        if self._env is None or seed is not None:
            self._env = self.task.make_env(int(self.np_random.integers(2**31 - 1)))
        self._env.reset()
        self.task.sync_from_env(self._env)
        return self._obs(*self.task.state_from_env(self._env)), {}

    def step(self, action):
        ts = self._env.step(self._check_action(action))
        obs = self._obs(*self.task.state_from_env(self._env))
        return obs, float(ts.reward or 0.0), False, bool(ts.last()), {}

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return self._env.physics.render(*RENDER_SIZE, camera_id=0)


class LearnedGymEnv(_TaskEnv):
    """An environment whose step is a trained forward model (any system and checkpoint).

    The reward is the task's (dm_control's, computed on the learned state); initial states are
    drawn as for data generation. Rendering shows the learned state in MuJoCo's renderer.

    A checkpoint that steps ``k`` control steps at once (``generate --action-repeat k``) makes one
    env step ``k`` control steps with the action held (dm_control's action repeat): the reward
    is then ``k`` times the task's reward at the state reached (the model sees no state in
    between), so returns stay comparable per control step. ``episode_steps`` counts control
    steps and must be a multiple of ``k``; ``action_repeat``, if given, is the ``k`` the caller
    expects (a checkpoint with another is refused). ``self.action_repeat`` is the model's ``k``.
    """

    def __init__(self, checkpoint: str = "pretrained:cartpole", task: str = "cartpole-swingup",
                 episode_steps: int = 1000, render_mode: str | None = None, action_repeat: int | None = None):
        from gndesign.checkpoints import load_model, resolve_checkpoint
        from gndesign.coarse import check_divides, check_same_repeat, model_action_repeat

        t = get_task(task)
        super().__init__(t, render_mode)
        self.model, _ = load_model(resolve_checkpoint(checkpoint), "forward", system=t.system.name,
                                   allow_new_system=True)
        self.action_repeat = k = model_action_repeat(self.model, t.system.name)
        if action_repeat is not None:
            check_same_repeat(k, action_repeat, "action_repeat asks for",
                              f"use a checkpoint trained on --action-repeat {action_repeat} data, or action_repeat={k}")
        check_divides(k, episode_steps, "episode_steps")
        if t.system.name not in self.model.systems:
            from gndesign.simulator import SystemSpec

            self.model.add_system(SystemSpec(t.system.name, t.system.mjcf, t.system.control_timestep * k,
                                             t.system.assets, action_repeat=k))
        self.episode_steps = episode_steps
        self._renderer = None

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        rng = np.random.default_rng(int(self.np_random.integers(2**31 - 1)))
        self.task.set_params(self.task.draw_params(rng))
        q, v = self.task.initial_state(self.task.system.model, rng)
        self.q = torch.as_tensor(q, dtype=torch.float32)[None]
        self.v = torch.as_tensor(v, dtype=torch.float32)[None]
        self.t = 0
        return self._obs(q, v), {}

    def step(self, action):
        a = torch.as_tensor(self._check_action(action), dtype=torch.float32)[None]
        with torch.no_grad():
            self.q, self.v = self.model.step(self.q, self.v, a, self.task.system.name)
            reward = self.action_repeat * float(self.task.reward(self.q.double(), self.v.double(), a.double()))
        self.t += self.action_repeat
        q, v = self.q[0].double().numpy(), self.v[0].double().numpy()
        terminated = not (np.isfinite(q).all() and np.isfinite(v).all())
        return self._obs(q, v), reward, terminated, self.t >= self.episode_steps, {}

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        import mujoco

        m = self.task.system.model
        if self._renderer is None:
            self._renderer = mujoco.Renderer(m, *RENDER_SIZE)
            self._data = mujoco.MjData(m)
        self._data.qpos[:] = self.q[0].double().numpy()
        mujoco.mj_forward(m, self._data)
        self._renderer.update_scene(self._data, camera=0)
        return self._renderer.render()

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
