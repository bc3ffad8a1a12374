"""The ground-truth environment for MPC: a dm_control task behind the planners' protocol."""

from __future__ import annotations

import logging

import numpy as np
import torch

from envs.tasks import Task
from gndesign import gl
from gndesign.datasets.params import apply_params

log = logging.getLogger(__name__)

#: Why rendering failed in this process (None: it has not): later calls return None at once.
_render_failure: str | None = None


def render_or_none(render, *args, **kwargs) -> np.ndarray | None:
    """``render(*args, **kwargs)``, or None when rendering fails (no OpenGL backend, a broken
    driver): the first failure logs one warning that no video will be written, later calls return
    None without trying again. A frame is optional output: it never fails a run."""
    global _render_failure
    if _render_failure is None:
        try:
            return render(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any rendering failure means the same: no frames
            _render_failure = gl.problem() or " ".join(f"{type(e).__name__}: {e}".split())
            log.warning("cannot render (%s): no video will be written; set MUJOCO_GL=egl (GPU) or osmesa (CPU, "
                        "libOSMesa) for videos", _render_failure)
    return None


class DmControlEnvironment:
    """``reset() -> (qpos, qvel)``, ``step(action) -> (reward, qpos, qvel)`` on dm_control.

    The task's context (e.g. the swimmer's random target) is synchronized at every reset, so the
    planner's differentiable reward always equals the environment's. ``physical``: physical
    parameters (keys of :data:`gndesign.datasets.params.PARAM_KEYS`) written into the simulated
    system instead of its nominal ones.
    """

    def __init__(self, task: Task, seed: int, dtype=torch.float32, physical: dict | None = None):
        self.task = task
        self.env = task.make_env(seed)
        self.dtype = dtype
        if physical is not None:  # e.g. heavier bodies than nominal: a system the model must adapt to
            model = self.env.physics.model
            apply_params(getattr(model, "ptr", model), physical, inplace=True)  # dm_control wraps its MjModel

    def _state(self):
        q, v = self.task.state_from_env(self.env)
        return torch.as_tensor(q, dtype=self.dtype), torch.as_tensor(v, dtype=self.dtype)

    def reset(self):
        self.env.reset()
        self.task.sync_from_env(self.env)
        return self._state()

    def step(self, action: torch.Tensor):
        a = np.asarray(action.detach().cpu().numpy(), dtype=np.float64)
        ts = self.env.step(a)
        return float(ts.reward or 0.0), *self._state()

    def render(self, height: int = 240, width: int = 320, camera_id: int = 0) -> np.ndarray | None:
        """An RGB frame ``[height, width, 3]``, or None when rendering is impossible (warned once:
        see :func:`render_or_none`)."""
        return render_or_none(self.env.physics.render, height=height, width=width, camera_id=camera_id)


class DmControlBatch:
    """``E`` dm_control episodes (seeds ``seeds``) stepped in lockstep, for
    :func:`planners.mpc.run_mpc_lockstep`: ``reset() -> (qpos [E, nq], qvel [E, nv])``,
    ``step(actions [E, nu]) -> (rewards [E], qpos, qvel)``. The task's context (the swimmers'
    targets) becomes one entry per episode."""

    def __init__(self, task: Task, seeds: list[int], dtype=torch.float32, physical: dict | None = None):
        if not seeds:
            raise ValueError("DmControlBatch needs at least one seed")
        self.task = task
        self.envs = [DmControlEnvironment(task, seed, dtype, physical) for seed in seeds]

    def reset(self):
        states = [env.reset() for env in self.envs]
        self.task.sync_from_envs([env.env for env in self.envs])
        return torch.stack([q for q, _ in states]), torch.stack([v for _, v in states])

    def step(self, actions: torch.Tensor):
        if actions.shape[0] != len(self.envs):
            raise ValueError(f"{actions.shape[0]} actions for {len(self.envs)} environments")
        out = [env.step(a) for env, a in zip(self.envs, actions, strict=True)]
        return [r for r, _, _ in out], torch.stack([q for _, q, _ in out]), torch.stack([v for _, _, v in out])

    def render(self, height: int = 240, width: int = 320, camera_id: int = 0, episode: int = 0):
        return self.envs[episode].render(height, width, camera_id)
