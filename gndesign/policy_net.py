"""A small neural policy and its value, learned through a learned model (the ``policy`` family).

The policy maps a state ``qpos [B, nq], qvel [B, nv]`` to an action ``[B, nu]`` within the
control range, ``a = mid + half * tanh(actor(obs))``, where the observation is the state with each
hinge angle as its cosine and sine (continuous across the +-pi seam), less the ``ignore``d
coordinates, plus the task's ``context [B, C]`` (quantities that carry per-episode parameters, e.g.
the swimmer's target in its head frame: :meth:`envs.tasks.Task.observation`), normalized by
statistics of the start states it was trained from. The value ``V(qpos, qvel) [B]`` estimates the discounted
return beyond an imagined rollout's end (:mod:`planners.policy` trains both; planners may use the
value as a terminal cost).

A checkpoint records what the policy was trained for (``blob["policy"]``: task, system and its
MJCF hash, sizes, action repeat, the model it was trained through); :data:`POLICY`'s ``check``
refuses a policy for another system or task with a message naming the mismatch.
"""

from __future__ import annotations

import torch
from torch import nn

from gndesign.config import RunConfig
from gndesign.errors import GndesignError
from gndesign.families import Family, Trainer
from gndesign.nn import build_mlp

#: What a policy checkpoint's description holds (``blob["policy"]``).
DESCRIPTION_KEYS = ("task", "system", "mjcf_sha256", "nq", "nv", "nu", "angles", "ctrl_low", "ctrl_high",
                    "action_repeat", "dynamics")
#: Optional entries and their defaults: qpos indices the policy does not see, the names and size of
#: the task context it does see.
OPTIONAL_KEYS = {"ignore": [], "context": [], "context_dim": 0}


class PolicyNet(nn.Module):
    """Actor and value over one system's state.

    Args:
        hidden_size, layers: the MLPs' width and hidden layers (``layers = 0``: linear).
        description: :data:`DESCRIPTION_KEYS` (and :data:`OPTIONAL_KEYS`); ``angles`` lists the qpos
            indices that are hinge angles, ``ignore`` those the policy does not see.
    """

    def __init__(self, hidden_size: int, layers: int, description: dict):
        super().__init__()
        missing = [k for k in DESCRIPTION_KEYS if k not in description]
        if missing:
            raise GndesignError(f"a policy description lacks {', '.join(missing)}")
        self.description = {k: description[k] for k in DESCRIPTION_KEYS}
        self.description.update({k: description.get(k, v) for k, v in OPTIONAL_KEYS.items()})
        d = self.description
        self.nq, self.nv, self.nu = int(d["nq"]), int(d["nv"]), int(d["nu"])
        self.context_dim = int(d["context_dim"])
        angle = torch.zeros(self.nq, dtype=torch.bool)
        angle[list(d["angles"])] = True
        seen = torch.ones(self.nq, dtype=torch.bool)
        seen[list(d["ignore"])] = False
        self.register_buffer("angle", angle, persistent=False)
        self.register_buffer("plain", seen & ~angle, persistent=False)  # coordinates seen as they are
        self.register_buffer("seen_angle", seen & angle, persistent=False)
        self.obs_dim = int(self.plain.sum()) + 2 * int(self.seen_angle.sum()) + self.nv + self.context_dim
        low = torch.as_tensor(d["ctrl_low"], dtype=torch.float32)
        high = torch.as_tensor(d["ctrl_high"], dtype=torch.float32)
        self.register_buffer("act_mid", (high + low) / 2, persistent=False)
        self.register_buffer("act_half", (high - low) / 2, persistent=False)
        self.register_buffer("obs_mean", torch.zeros(self.obs_dim))
        self.register_buffer("obs_std", torch.ones(self.obs_dim))
        self.actor = build_mlp(self.obs_dim, hidden_size, self.nu, layers, layer_norm=False, activation=nn.Tanh)
        self.critic = build_mlp(self.obs_dim, hidden_size, 1, layers, layer_norm=False, activation=nn.SiLU)
        with torch.no_grad():  # start near the middle of the range: small first actions
            self.actor[-1].weight.mul_(0.1)
            self.actor[-1].bias.zero_()

    @property
    def action_repeat(self) -> int:
        return int(self.description["action_repeat"])

    def features(self, qpos: torch.Tensor, qvel: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Raw observation ``[B, obs_dim]``: seen non-angle qpos, cos and sin of the seen angles,
        qvel, the task context ``[B, context_dim]`` (required when ``context_dim > 0``)."""
        if qpos.shape[-1] != self.nq or qvel.shape[-1] != self.nv:
            raise GndesignError(f"the policy takes qpos [B, {self.nq}] and qvel [B, {self.nv}], got "
                                f"{list(qpos.shape)} and {list(qvel.shape)}: it was trained for another system")
        c = context if context is not None else qpos.new_zeros(qpos.shape[:-1] + (0,))
        if c.shape[-1] != self.context_dim:
            raise GndesignError(f"the policy observes {self.context_dim} task context value(s) "
                                f"({', '.join(self.description['context']) or 'none'}), got {c.shape[-1]}: "
                                "use it with the task it was trained for")
        ang = qpos[..., self.seen_angle]
        return torch.cat([qpos[..., self.plain], torch.cos(ang), torch.sin(ang), qvel, c.to(qpos)], -1)

    def observe(self, qpos: torch.Tensor, qvel: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Normalized observation ``[B, obs_dim]``."""
        return (self.features(qpos, qvel, context) - self.obs_mean) / self.obs_std

    def set_statistics(self, qpos: torch.Tensor, qvel: torch.Tensor, context: torch.Tensor | None = None) -> None:
        """Normalize observations by the statistics of states ``qpos [N, nq], qvel [N, nv]`` (and
        their task context ``[N, context_dim]``)."""
        f = self.features(qpos.float(), qvel.float(), None if context is None else context.float())
        self.obs_mean.copy_(f.mean(0))
        self.obs_std.copy_(f.std(0).clamp_min(1e-2))

    def forward(self, qpos: torch.Tensor, qvel: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Actions ``[B, nu]`` within the control range."""
        return self.act_mid + self.act_half * torch.tanh(self.actor(self.observe(qpos, qvel, context)))

    def value(self, qpos: torch.Tensor, qvel: torch.Tensor, context: torch.Tensor | None = None,
              frozen: bool = False) -> torch.Tensor:
        """``[B]`` estimated discounted return from the state on. ``frozen``: gradients reach the
        state but not the value's weights (the actor's loss bootstraps from it)."""
        obs = self.observe(qpos, qvel, context)
        if not frozen:
            return self.critic(obs)[..., 0]
        params = {k: p.detach() for k, p in self.critic.named_parameters()}
        return torch.func.functional_call(self.critic, params, (obs,))[..., 0]


def _describe(model: PolicyNet) -> dict:
    return {"policy": dict(model.description)}


def _build(config: RunConfig, blob: dict) -> PolicyNet:
    if config.policy is None:
        raise GndesignError("a policy checkpoint without a policy section in its configuration (edited?)")
    return PolicyNet(config.policy.hidden_size, config.policy.layers, blob["policy"])


def check_policy(blob: dict, where, system: str | None = None, mjcf_sha256: str | None = None,
                 task: str | None = None, **_) -> None:
    """Refuse a policy checkpoint for another ``system`` (or MJCF) or ``task``."""
    d = blob.get("policy") or {}
    if system is not None and d.get("system") != system:
        raise GndesignError(f"policy {where} was trained for system {d.get('system')!r}, not {system!r}: "
                            "train one for this system (gndesign policy train)")
    if mjcf_sha256 is not None and d.get("mjcf_sha256") not in (None, mjcf_sha256):
        raise GndesignError(f"policy {where} was trained on another version of {system!r} (its MJCF differs)")
    if task is not None and d.get("task") != task:
        raise GndesignError(f"policy {where} was trained for task {d.get('task')!r}, not {task!r}: "
                            "train one for this task (gndesign policy train --task ...)")


def _trainer(config: RunConfig) -> Trainer:
    raise GndesignError("a policy trains through a learned model and a task: use gndesign policy train")


POLICY = Family("policy", "a policy", "a task, learned through a model", _build, _describe, check_policy, _trainer)
