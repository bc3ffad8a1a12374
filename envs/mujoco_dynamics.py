"""Ground-truth MuJoCo as planner dynamics: batched, not differentiable (the oracle)."""

from __future__ import annotations

import mujoco
import numpy as np
import torch
from mujoco import rollout as mj_rollout

from envs.systems import System
from gndesign.dynamics import Dynamics


class MujocoDynamics(Dynamics):
    """Roll action sequences out in MuJoCo itself (``mujoco.rollout``, threaded C++).

    Each control step holds the action for ``n_substeps`` physics steps, exactly as the
    dm_control environment does, so sampling planners on this dynamics are a fair oracle.
    """

    differentiable = False

    def __init__(self, system: System, model: mujoco.MjModel | None = None, threads: int = 1):
        m = model or system.model
        super().__init__(m.nq, m.nv, m.nu, torch.as_tensor(system.ctrlrange()), system.control_timestep)
        self.model = m
        self.n_substeps = system.n_substeps
        self.spec = int(mujoco.mjtState.mjSTATE_FULLPHYSICS)
        self.datas = [mujoco.MjData(m) for _ in range(max(1, threads))]
        self._template = mujoco.MjData(m)
        self._nstate = mujoco.mj_stateSize(m, self.spec)
        # Offsets of qpos and qvel inside a full-physics state vector (time comes first).
        self._q0 = 1
        self._v0 = 1 + m.nq

    def _initial_states(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        d = self._template
        out = np.empty((qpos.shape[0], self._nstate))
        for i in range(qpos.shape[0]):
            mujoco.mj_resetData(self.model, d)
            d.qpos[:], d.qvel[:] = qpos[i], qvel[i]
            mujoco.mj_getState(self.model, d, out[i], self.spec)
        return out

    def rollout(self, qpos: torch.Tensor, qvel: torch.Tensor, actions: torch.Tensor):
        self.check_actions(actions)
        B, H, _ = actions.shape
        q = qpos.detach().cpu().double().numpy()
        v = qvel.detach().cpu().double().numpy()
        ctrl = np.repeat(actions.detach().cpu().double().numpy(), self.n_substeps, axis=1)
        state, _ = mj_rollout.rollout(self.model, self.datas, self._initial_states(q, v), ctrl)
        state = state[:, self.n_substeps - 1::self.n_substeps]  # the state after each control step
        qs = np.concatenate([q[:, None], state[..., self._q0:self._q0 + self.nq]], axis=1)
        vs = np.concatenate([v[:, None], state[..., self._v0:self._v0 + self.nv]], axis=1)
        self.evaluations += B * H
        return torch.as_tensor(qs, dtype=qpos.dtype), torch.as_tensor(vs, dtype=qvel.dtype)
