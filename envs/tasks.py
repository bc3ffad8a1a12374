"""Control tasks with differentiable rewards equal to dm_control's.

A :class:`Task` pairs a system with a reward written in the shared objective library
(:mod:`gndesign.objectives`) over named quantities computed differentiably from the state by torch
forward kinematics. As in dm_control, the reward of a step is evaluated on the state the step
reaches and the action that was applied: ``r_t = R(qpos_{t+1}, qvel_{t+1}, a_t)``. Task context
that is not part of the dynamics (the swimmer's target) lives in the task.
"""

from __future__ import annotations

import mujoco
import numpy as np
import torch

from envs.systems import System, get_system
from gndesign.constraints import ConstraintContext
from gndesign.errors import GndesignError
from gndesign.kinematics import forward_kinematics
from gndesign.objectives import Affine, Objective, Tolerance
from gndesign.tree import HINGE, SLIDE, KinematicTree

#: Each planner's options, shared by the tasks unless one overrides :attr:`Task.planner_options`
#: (the command line: ``--set planner.KEY=VALUE``). The gradient planner spends a quarter of CEM's
#: and MPPI's model evaluations per decision (8 x 6 rollouts against 64 x 3).
PLANNER_OPTIONS = {
    "gradient": {"iterations": 5, "restarts": 8, "lr": 0.3},
    "cem": {"population": 64, "elites": 8, "iterations": 3},
    "mppi": {"samples": 64, "iterations": 3, "temperature": 0.1},
    "random": {"samples": 512},
}


class Task:
    """A system, a differentiable reward and the dm_control environment that judges it.

    Attributes:
        system: the registered system.
        reward_objective: the reward as an objective over :meth:`quantities`.
        episode_steps: dm_control's episode length in control steps.
        planning_horizon: the MPC horizon in control steps.
        replan_every: MPC replans every this many control steps.
        planner_options: each planner's options, by planner name (copy before changing them).

    The planner settings live with the task, as in MuJoCo MPC: a horizon that solves one task
    fails another.
    """

    domain: str
    task: str
    episode_steps = 1000
    planning_horizon = 30
    replan_every = 1
    planner_options = PLANNER_OPTIONS

    def __init__(self, system: System):
        self.system = system
        self.tree = KinematicTree.from_model(system.model, system.name)
        self.reward_objective = self.build_reward()

    def build_reward(self) -> Objective:
        raise NotImplementedError

    def quantities(self, qpos: torch.Tensor, qvel: torch.Tensor, action: torch.Tensor) -> dict[str, torch.Tensor]:
        """The reward's named quantities, plus the state under the names test-time constraints use
        (:mod:`gndesign.constraints`): ``qpos [B, nq]``, ``qvel [B, nv]`` and ``positions`` (also
        ``xpos``) ``[B, nbody, 3]``, the body origins in the world frame."""
        raise NotImplementedError

    def state_quantities(self, qpos: torch.Tensor, qvel: torch.Tensor, kin=None) -> dict[str, torch.Tensor]:
        """``qpos``, ``qvel``, ``positions`` and ``xpos`` (see :meth:`quantities`); ``kin``: the
        forward kinematics of ``qpos`` if already computed."""
        xpos = (kin if kin is not None else forward_kinematics(self.tree, qpos)).xpos
        return {"qpos": qpos, "qvel": qvel, "positions": xpos, "xpos": xpos}

    def constraint_context(self) -> ConstraintContext:
        """What constraints on this task's quantities may name: bodies, hinge and slide joints
        (bind them with :func:`gndesign.constraints.bind_constraints` to use them as planner costs)."""
        t = self.tree
        joints = {n: int(t.jnt_qposadr[j]) for j, n in enumerate(t.joint_names)
                  if n and t.jnt_type[j] in (HINGE, SLIDE)}
        return ConstraintContext(num_nodes=t.nbody, node_names=list(t.body_names), node_kind="body",
                                 joints=joints, nq=t.nq, dim=3, margin=0.0)

    def reward(self, qpos: torch.Tensor, qvel: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``[B]`` rewards of reaching ``qpos [B, nq], qvel [B, nv]`` with ``action [B, nu]``."""
        return self.reward_objective(self.quantities(qpos, qvel, action))

    def cost(self, qpos: torch.Tensor, qvel: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Planner cost ``[B]``: minus the return of ``actions [B, H, nu]`` along the rollout
        ``qpos [B, H+1, nq], qvel [B, H+1, nv]`` (all steps scored in one batched call)."""
        B, H = actions.shape[:2]
        r = self.reward(qpos[:, 1:].reshape(B * H, -1), qvel[:, 1:].reshape(B * H, -1),
                        actions.reshape(B * H, -1))
        return -r.reshape(B, H).sum(1)

    # ------------------------------------------------------------------- ground truth
    def make_env(self, seed: int | None = None):
        """The dm_control environment (true MuJoCo) this task is judged in."""
        from dm_control import suite

        return suite.load(self.domain, self.task, task_kwargs={"random": seed})

    def sync_from_env(self, env) -> None:
        """Read task context (e.g. a target position) from a freshly reset environment."""

    def sync_from_envs(self, envs) -> None:
        """Read the context of ``E`` freshly reset environments that run in lockstep: per-episode
        context becomes a batch of ``E``, and the reward reads its rows episode-major (``B`` rows
        are ``E`` blocks of ``B / E``, as :meth:`planners.base.Planner.evaluate` lays them out)."""

    def state_from_env(self, env) -> tuple[np.ndarray, np.ndarray]:
        return env.physics.data.qpos.copy(), env.physics.data.qvel.copy()


class CartpoleSwingup(Task):
    """dm_control ``cartpole/swingup``: upright x centered x small control x small velocity."""

    domain, task = "cartpole", "swingup"
    #: A 60-step (0.6 s) horizon swings the cartpole up but cannot keep it balanced, even planning
    #: on true MuJoCo; 120 steps can.
    planning_horizon = 120

    def __init__(self):
        super().__init__(get_system("cartpole"))

    def build_reward(self) -> Objective:
        upright = Affine("pole_cos", offset=0.5, scale=0.5, reduce="mean")
        centered = Tolerance("cart_position", margin=2, offset=0.5, scale=0.5)
        small_control = Tolerance("control", margin=1, value_at_margin=0, sigmoid="quadratic", offset=0.8,
                                  scale=0.2, reduce="mean")
        small_velocity = Tolerance("angular_vel", margin=5, reduce="min", offset=0.5, scale=0.5)
        return upright * small_control * small_velocity * centered

    def quantities(self, qpos, qvel, action):
        kin = forward_kinematics(self.tree, qpos)
        return {"pole_cos": kin.xmat[:, 2:, 2, 2], "cart_position": qpos[:, 0], "control": action[:, :1],
                "angular_vel": qvel[:, 1:], **self.state_quantities(qpos, qvel, kin)}


class SwimmerTask(Task):
    """dm_control ``swimmer/swimmerN``: bring the nose to the target (long-tail tolerance)."""

    domain = "swimmer"

    def __init__(self, n_links: int = 6):
        self.task = f"swimmer{n_links}"
        self.n_links = n_links
        system = get_system(f"swimmer{n_links}")
        m = system.model
        nose = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "nose")
        target = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "target")
        self.nose_body = int(m.geom_bodyid[nose])
        self.nose_pos = torch.as_tensor(m.geom_pos[nose], dtype=torch.float64)
        self.head_body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "head")
        self.target_size = float(m.geom_size[target, 0])
        self.target_geom = target
        self.target = torch.as_tensor(m.geom_pos[target], dtype=torch.float64)
        super().__init__(system)

    def make_env(self, seed: int | None = None):
        from dm_control import suite

        return suite.load("swimmer", self.task, task_kwargs={"random": seed})

    def build_reward(self) -> Objective:
        s = self.target_size
        return Tolerance("nose_to_target_dist", bounds=(0, s), margin=5 * s, sigmoid="long_tail")

    def set_target(self, xyz) -> None:
        """The target ``[3]``, or ``[E, 3]``: one per episode of a lockstep batch."""
        xyz = torch.as_tensor(np.asarray(xyz, dtype=np.float64))
        if xyz.shape[-1:] != (3,) or xyz.dim() > 2:
            raise ValueError(f"a swimmer target is [3] or [episodes, 3], got {list(xyz.shape)}")
        self.target = xyz

    def sync_from_env(self, env) -> None:
        self.set_target(env.physics.model.geom_pos[self.target_geom])

    def sync_from_envs(self, envs) -> None:
        self.set_target(np.stack([env.physics.model.geom_pos[self.target_geom] for env in envs]))

    def _targets(self, like: torch.Tensor) -> torch.Tensor:
        """The target for each of ``like``'s rows: ``[3]``, or ``[B, 3]`` for a batch of episodes."""
        target = self.target.to(like)
        if target.dim() == 1:
            return target
        B, E = like.shape[0], target.shape[0]
        if B % E:
            raise ValueError(f"{B} rows cannot be split among the {E} episodes' targets")
        return target.repeat_interleave(B // E, 0)

    def quantities(self, qpos, qvel, action):
        kin = forward_kinematics(self.tree, qpos)
        R_nose = kin.xmat[:, self.nose_body]
        nose = kin.xpos[:, self.nose_body] + (R_nose @ self.nose_pos.to(qpos)[:, None])[..., 0]
        d = self._targets(qpos) - nose  # world frame
        local = (d[:, None, :] @ kin.xmat[:, self.head_body])[:, 0, :2]  # dm_control: d.dot(head_xmat)
        dist = torch.sqrt((local * local).sum(-1) + 1e-12)
        return {"nose_to_target_dist": dist, "nose_to_target": local, **self.state_quantities(qpos, qvel, kin)}


def get_task(name: str) -> Task:
    """``cartpole-swingup`` or ``swimmerN`` (N >= 3)."""
    if name in ("cartpole-swingup", "cartpole"):
        return CartpoleSwingup()
    if name.startswith("swimmer") and name[7:].isdigit() and int(name[7:]) >= 3:
        return SwimmerTask(int(name[7:]))
    raise GndesignError(f"unknown task {name!r}: choose cartpole-swingup or swimmerN (N >= 3, e.g. swimmer6)")
