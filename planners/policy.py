"""Policies learned through a differentiable model (SVG(inf) / backpropagation through time).

A policy (:class:`gndesign.policy_net.PolicyNet`) acts in imagined closed-loop rollouts of a
learned model; the loss is minus the discounted return of the rollout, with the learned value of
its last state for the tail, differentiated through the model to the policy's weights. The value
regresses on the same imagined rollouts (targets: the discounted rewards to the horizon plus the
frozen value there). No true environment reward is ever seen: the reward is the task's
differentiable one (a ``reward(qpos, qvel, action) -> [B]`` function).

With a model stepping ``k`` control steps at once (:mod:`gndesign.coarse`) the policy acts once
per model step and its action is held ``k`` control steps, exactly as it then acts in the world.

A task whose parameters are drawn per episode (the swimmer's target) comes with a *context*: an
object with ``draw(n, gen) -> {name: [n, ...]}`` (``n`` episodes' parameters) and
``observe(qpos, qvel, params) -> [B, C]`` (what the policy sees of them, one row per state). Each
imagined rollout then has its own parameters, the policy and its value observe them, and the
reward is called ``reward(qpos, qvel, action, params)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from gndesign.dynamics import Dynamics
from gndesign.families import Trainer

log = logging.getLogger(__name__)
RewardFn = Callable[..., torch.Tensor]
Params = dict[str, torch.Tensor]
Observe = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def repeat_rows(params: Params | None, n: int) -> Params | None:
    """Each row of ``params`` repeated ``n`` times (the rows of ``[B, n]`` states flattened)."""
    return None if params is None else {k: v.repeat_interleave(n, 0) for k, v in params.items()}


def imagine(dynamics: Dynamics, policy, qpos: torch.Tensor, qvel: torch.Tensor, steps: int,
            observe: Observe | None = None):
    """Closed-loop rollout of ``policy`` through ``dynamics`` for ``steps`` model steps from
    ``qpos [B, nq], qvel [B, nv]``: ``qpos [B, T+1, nq], qvel [B, T+1, nv], actions [B, T, nu]``
    (differentiable to the policy's weights and the start state). ``observe(qpos, qvel) -> [B, C]``:
    the task context the policy sees (None: none)."""
    qs, vs, acts = [qpos], [qvel], []
    for _ in range(steps):
        a = policy(qs[-1], vs[-1], None if observe is None else observe(qs[-1], vs[-1]))
        q, v = dynamics.rollout(qs[-1], vs[-1], a[:, None])
        qs.append(q[:, 1])
        vs.append(v[:, 1])
        acts.append(a)
    return torch.stack(qs, 1), torch.stack(vs, 1), torch.stack(acts, 1)


def discounted_returns(rewards: torch.Tensor, tail: torch.Tensor, gamma: float) -> torch.Tensor:
    """``[B, T]``: at each step ``t`` the discounted rewards ``rewards [B, T]`` from ``t`` on plus the
    discounted ``tail [B]`` (the value after the last step)."""
    out, g = [], tail
    for t in range(rewards.shape[1] - 1, -1, -1):
        g = rewards[:, t] + gamma * g
        out.append(g)
    return torch.stack(out[::-1], 1)


def policy_losses(policy, dynamics: Dynamics, reward: RewardFn, qpos: torch.Tensor, qvel: torch.Tensor,
                  steps: int, gamma: float, smoothness: float = 0.0, context=None,
                  params: Params | None = None) -> dict[str, torch.Tensor]:
    """The actor's and the value's losses on one batch of imagined rollouts, with the states reached
    (``states``: ``(qpos [B*T, nq], qvel [B*T, nv], params [B*T] or None)``, detached) and the
    mean imagined reward. ``context`` and ``params [B]``: the task context and each rollout's
    parameters (module docstring).

    actor: minus the discounted return plus the frozen value of the last state, divided by the sum
    of the discounts (a per-step reward scale); ``smoothness`` charges the squared change of
    successive actions (as a fraction of the half range). value: mean squared error of ``V(s_t)``
    against the detached discounted returns from ``t``."""
    def observe(q, v, p):
        return None if context is None else context.observe(q, v, p)

    qs, vs, acts = imagine(dynamics, policy, qpos, qvel, steps,
                           None if context is None else lambda q, v: observe(q, v, params))
    B, T = acts.shape[:2]
    flat_q, flat_v = qs[:, 1:].reshape(B * T, -1), vs[:, 1:].reshape(B * T, -1)
    rows = repeat_rows(params, T)
    extra = () if context is None else (rows,)
    r = reward(flat_q, flat_v, acts.reshape(B * T, -1), *extra).reshape(B, T)
    if smoothness > 0 and T > 1:
        da = (acts[:, 1:] - acts[:, :-1]) / policy.act_half
        r = r - smoothness * torch.cat([torch.zeros_like(r[:, :1]), (da * da).sum(-1)], 1)
    tail = policy.value(qs[:, -1], vs[:, -1], observe(qs[:, -1], vs[:, -1], params), frozen=True)
    norm = sum(gamma ** t for t in range(T + 1)) if gamma < 1 else T + 1
    returns = discounted_returns(r, tail, gamma)
    actor = -returns[:, 0].mean() / norm
    targets = returns.detach()
    q0, v0 = qs[:, :-1].reshape(B * T, -1), vs[:, :-1].reshape(B * T, -1)
    v = policy.value(q0, v0, observe(q0, v0, rows)).reshape(B, T)
    value = ((v - targets) ** 2).mean() / norm ** 2
    states = (flat_q.detach(), flat_v.detach(), rows)
    return {"actor": actor, "value": value, "reward": r.detach().mean(), "states": states}


class PolicyTrainer(Trainer):
    """The policy family's trainer for :func:`gndesign.training.run_training` (the shared loop:
    Adam, schedule, atomic resumable checkpoints, metrics).

    Args:
        config: the run configuration (its ``policy`` section).
        model_factory: ``() -> PolicyNet`` (sized for the system).
        dynamics: the learned model to imagine through (its weights are frozen).
        reward: the task's differentiable reward.
        init_states: ``(qpos [N, nq], qvel [N, nv])`` from the task's initial-state distribution
            (with a context, also the parameters ``{name: [N, P]}`` each was drawn with).
        data_states: ``(qpos [M, nq], qvel [M, nv])`` from the model's training data.
        requested: what a checkpoint to resume must fit (system, task).
        context: the task context (module docstring), or None for a task without per-episode parameters.

    Each batch draws ``policy.init_fraction`` start states from ``init_states``,
    ``policy.imagined_fraction`` from states earlier imagined rollouts reached (a buffer; a resumed
    run refills it), ``policy.spread_fraction`` from ``data_states`` with uniformly drawn hinge
    angles, the rest from ``data_states`` as they are; all with a little noise. With a context, the
    buffer's and the initial states keep their parameters; data states get fresh draws.

    It trains on the CPU only (``train.device=cpu``): the learned model it imagines through runs there.
    """

    gpu = False

    def __init__(self, config, model_factory, dynamics: Dynamics, reward: RewardFn, init_states, data_states,
                 requested: dict | None = None, buffer_size: int = 20000, context=None):
        super().__init__(config)
        self.model_factory, self.dynamics, self.reward = model_factory, dynamics, reward
        self.init_states, self.data_states = init_states, data_states
        self.context = context
        self._requested = requested or {}
        self.buffer: tuple | None = None
        self.buffer_size = buffer_size
        pc = config.policy
        k = dynamics.action_repeat
        self.steps = max(pc.horizon // k, 1)
        self.gamma = pc.discount ** k

    def build_model(self):
        return self.model_factory()

    def init_statistics(self, rank: int) -> None:
        q = torch.cat([self.init_states[0], self.data_states[0]])
        v = torch.cat([self.init_states[1], self.data_states[1]])
        c = None
        if self.context is not None:
            c = self.context.observe(q, v, self.context.draw(q.shape[0], torch.Generator().manual_seed(0)))
        self.model.set_statistics(q, v, c)

    def requested(self) -> dict:
        return dict(self._requested)

    def _draw(self, states, n: int, gen: torch.Generator):
        idx = torch.randint(0, states[0].shape[0], (n,), generator=gen)
        if self.context is None:
            return states[0][idx], states[1][idx], None
        params = self.context.draw(n, gen) if len(states) < 3 else {k: p[idx] for k, p in states[2].items()}
        return states[0][idx], states[1][idx], params

    def starts(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, Params | None]:
        """A batch of start states ``qpos [B, nq], qvel [B, nv]`` and their parameters (None
        without a context)."""
        pc, B = self.config.policy, self.config.train.batch_size
        n_init = int(round(pc.init_fraction * B))
        n_imag = int(round(pc.imagined_fraction * B)) if self.buffer is not None else 0
        n_spread = int(round(pc.spread_fraction * B))
        parts = [self._draw(self.init_states, n_init, gen),
                 self._draw(self.data_states, B - n_init - n_imag - n_spread, gen)]
        if n_spread:
            q, v, p = self._draw(self.data_states, n_spread, gen)
            q = q.clone()
            angles = self.model.angle
            q[:, angles] = (torch.rand(n_spread, int(angles.sum()), generator=gen) * 2 - 1) * torch.pi
            parts.append((q, v, p))
        if n_imag:
            parts.append(self._draw(self.buffer, n_imag, gen))
        q = torch.cat([p[0] for p in parts]).float()
        v = torch.cat([p[1] for p in parts]).float()
        params = None if self.context is None else {k: torch.cat([p[2][k] for p in parts]) for k in parts[0][2]}
        noise = pc.start_noise
        q = q + noise * torch.randn(q.shape, generator=gen)
        v = v + noise * torch.randn(v.shape, generator=gen)
        return q, v, params

    def loss(self, model, net, gens) -> torch.Tensor:
        pc = self.config.policy
        q, v, params = self.starts(gens["sample"])
        out = policy_losses(net, self.dynamics, self.reward, q, v, self.steps, self.gamma, pc.smoothness,
                            self.context, params)
        self.remember(*out["states"], gens["noise"])
        self.last = {k: float(out[k].detach()) for k in ("actor", "value", "reward")}
        return out["actor"] + pc.value_weight * out["value"]

    def remember(self, q: torch.Tensor, v: torch.Tensor, params: Params | None, gen: torch.Generator) -> None:
        """Keep a random share of the imagined states (finite ones, with their parameters) as
        future start states."""
        ok = torch.isfinite(q).all(1) & torch.isfinite(v).all(1)
        keep = ok.nonzero()[:, 0]
        keep = keep[torch.randperm(keep.shape[0], generator=gen)[: max(keep.shape[0] // 8, 1)]]
        new = [q[keep], v[keep]] + ([] if params is None else [{k: p[keep] for k, p in params.items()}])
        if self.buffer is not None:
            n = self.buffer_size
            new = [torch.cat([old, x])[-n:] if torch.is_tensor(x) else {k: torch.cat([old[k], x[k]])[-n:] for k in x}
                   for old, x in zip(self.buffer, new, strict=True)]
        self.buffer = tuple(new)

    def validation_loss(self, model) -> float | None:
        """Minus the mean imagined reward per model step of the last batch (lower is better)."""
        last = getattr(self, "last", None)
        return -last["reward"] if last else None


class PolicyGuide:
    """A planner's guide (:attr:`planners.base.Planner.guide`): the policy's plan from each start
    state, i.e. the actions of its closed-loop rollout through the planner's dynamics (counted in
    the dynamics' evaluations). An episode whose policy actions are not finite gets the planner's
    warm start (its last finite plan, shifted) instead, logged.

    Args:
        policy: a :class:`gndesign.policy_net.PolicyNet` for the dynamics' system.
        dynamics: the planner's dynamics (same action repeat as the policy was trained with).
        observe: ``(qpos [B, nq], qvel [B, nv]) -> [B, C]``, the task context the policy sees (the
            task's current parameters, one row per episode; None: none).
    """

    def __init__(self, policy, dynamics: Dynamics, observe: Observe | None = None):
        self.policy, self.dynamics, self.observe = policy, dynamics, observe
        self.fallbacks = 0
        self.last = torch.zeros(1, dynamics.nu)

    @torch.no_grad()
    def reflex(self, qpos: torch.Tensor, qvel: torch.Tensor) -> torch.Tensor:
        """The policy's action ``[E, nu]`` now (a controller's fast fallback); where it is not
        finite, the last finite one (logged)."""
        a = self._act(qpos.float(), qvel.float())
        bad = ~torch.isfinite(a).all(-1)
        if bad.any():
            log.warning("the policy's action is not finite: holding the last finite one")
            a = torch.where(bad[:, None], self.last.expand_as(a), a)
        self.last = a
        return a

    @torch.no_grad()
    def __call__(self, qpos: torch.Tensor, qvel: torch.Tensor, init: torch.Tensor) -> torch.Tensor:
        """``[E, H, nu]`` from ``qpos [E, nq], qvel [E, nv]``; ``init [E, H, nu]``: the fallback."""
        q, v = qpos.float(), qvel.float()
        acts, bad = [], torch.zeros(q.shape[0], dtype=torch.bool)
        for t in range(init.shape[1]):
            a = self._act(q, v)
            bad |= ~torch.isfinite(a).all(-1) | ~torch.isfinite(q).all(-1) | ~torch.isfinite(v).all(-1)
            a = torch.where(bad[:, None], init[:, t], a)
            qs, vs = self.dynamics.rollout(q, v, a[:, None])
            q, v = qs[:, 1], vs[:, 1]
            acts.append(a)
        if bad.any():
            self.fallbacks += int(bad.sum())
            log.warning("the policy's plan is not finite for %d episode(s): using the planner's last finite plan",
                        int(bad.sum()))
        plan = torch.stack(acts, 1)
        return torch.where(bad[:, None, None], init, plan)

    def _act(self, q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.policy(q, v, None if self.observe is None else self.observe(q, v))


def with_terminal_value(cost, policy, weight: float = 1.0, observe: Observe | None = None):
    """``cost`` minus ``weight`` times the policy's value of each rollout's last state: a short
    horizon then still sees what comes after it. Non-finite values count as no value.
    ``observe``: the task context, as for :class:`PolicyGuide`."""
    if weight == 0:
        return cost

    def total(qpos: torch.Tensor, qvel: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        q, v = qpos[:, -1].float(), qvel[:, -1].float()
        v = policy.value(q, v, None if observe is None else observe(q, v))
        return cost(qpos, qvel, actions) - weight * torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)

    return total
