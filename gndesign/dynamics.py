"""The one interface planners see: batched dynamics over action sequences.

A :class:`Dynamics` rolls out ``actions [B, H, nu]`` from states ``qpos [B, nq], qvel [B, nv]``
and returns ``qpos [B, H+1, nq], qvel [B, H+1, nv]``. Differentiable dynamics (the learned
simulator) let gradients flow to the actions; sampled ones (ground-truth MuJoCo, in
``envs.mujoco_dynamics``) do not. Every implementation counts its model evaluations (one per
state and step), the currency planners are compared in.

A model step may span ``action_repeat = k`` control steps (a coarse learned model,
:mod:`gndesign.coarse`): ``control_timestep`` is then one model step's time and each action of
``actions [B, H, nu]`` is held for ``k`` control steps.
"""

from __future__ import annotations

import torch

from gndesign.coarse import model_action_repeat
from gndesign.simulator import ForwardModel


class Dynamics:
    """Base class: sizes, action bounds and the evaluation counter."""

    differentiable: bool = False

    def __init__(self, nq: int, nv: int, nu: int, ctrlrange: torch.Tensor, control_timestep: float,
                 action_repeat: int = 1):
        self.nq, self.nv, self.nu = nq, nv, nu
        self.action_repeat = int(action_repeat)
        ctrlrange = torch.as_tensor(ctrlrange, dtype=torch.float32)
        self.action_low = ctrlrange[:, 0]
        self.action_high = ctrlrange[:, 1]
        self.control_timestep = float(control_timestep)
        self.evaluations = 0

    def rollout(self, qpos: torch.Tensor, qvel: torch.Tensor, actions: torch.Tensor):
        raise NotImplementedError

    def check_actions(self, actions: torch.Tensor) -> None:
        """Refuse action sequences of the wrong shape, outside the bounds or not finite."""
        if actions.dim() != 3 or actions.shape[-1] != self.nu:
            raise ValueError(f"actions must be [batch, horizon, {self.nu}], got {list(actions.shape)}")
        if not torch.isfinite(actions).all():
            raise ValueError("actions contain NaN or infinite values")
        tol = 1e-5
        if (actions < self.action_low - tol).any() or (actions > self.action_high + tol).any():
            raise ValueError(f"actions outside the control range [{self.action_low.tolist()}, "
                             f"{self.action_high.tolist()}]")


class LearnedDynamics(Dynamics):
    """A trained forward model as planner dynamics (differentiable).

    Args:
        model: the forward model.
        system: which of its systems (None if it serves one).
        params: physical parameters ``{key: [...]}`` (nominal if None).
        checkpoint: recompute activations per step in the backward pass (long horizons).
    """

    differentiable = True

    def __init__(self, model: ForwardModel, system: str | None = None, params: dict | None = None,
                 checkpoint: bool = False):
        builder = model.builder(system)
        tree = builder.tree
        super().__init__(tree.nq, tree.nv, tree.nu, torch.as_tensor(tree.ctrlrange), builder.control_timestep,
                         model_action_repeat(model, system))
        self.model = model
        self.system = system
        self.params = params
        self.checkpoint = checkpoint
        for p in model.parameters():  # planners differentiate w.r.t. actions, never the weights
            p.requires_grad_(False)

    def rollout(self, qpos: torch.Tensor, qvel: torch.Tensor, actions: torch.Tensor):
        self.check_actions(actions.detach())
        B = actions.shape[0]
        params = None
        if self.params is not None:
            params = {k: torch.as_tensor(v, dtype=qpos.dtype).expand((B,) + tuple(torch.as_tensor(v).shape))
                      for k, v in self.params.items()}
        self.evaluations += B * actions.shape[1]
        return self.model.rollout(qpos, qvel, actions, self.system, params, checkpoint=self.checkpoint)
