"""Policies learned through a learned model: train (imagination only), evaluate in true MuJoCo."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from envs.control import DmControlBatch
from envs.tasks import Task, get_task
from gndesign.checkpoints import load_model, resolve_checkpoint
from gndesign.config import PolicyConfig, RunConfig, TrainConfig, dataclass_from
from gndesign.datasets.trajectories import TrajectoryDataset
from gndesign.dynamics import LearnedDynamics
from gndesign.errors import ConfigError, GndesignError
from gndesign.io import check_output
from gndesign.policy_net import PolicyNet, check_policy
from gndesign.training import run_training
from gndesign.tree import HINGE
from planners.policy import PolicyTrainer

log = logging.getLogger("gndesign")


def initial_states(task: Task, n: int, seed: int) -> tuple:
    """``n`` start states of ``task`` drawn from its own initial-state distribution (dm_control
    resets of one environment seeded ``seed``; only the states are read, never a reward):
    ``qpos [n, nq], qvel [n, nv]``, and for a task with per-episode parameters the parameters each
    reset drew (``{name: [n, P]}``: dm_control's swimmer puts one target in five close by)."""
    env = task.make_env(seed)
    qs, vs, ps = [], [], []
    for _ in range(n):
        env.reset()
        q, v = task.state_from_env(env)
        qs.append(q)
        vs.append(v)
        ps.append(task.env_params(env))
    states = (torch.as_tensor(np.stack(qs), dtype=torch.float32), torch.as_tensor(np.stack(vs), dtype=torch.float32))
    if not len(task.observed_parameters()):
        return states
    return states + ({k: torch.as_tensor(np.stack([p[k] for p in ps]), dtype=torch.float32) for k in ps[0]},)


def data_states(paths: list[str], system: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every state of the trajectory datasets ``paths`` of ``system``: ``qpos [N, nq], qvel [N, nv]``."""
    qs, vs = [], []
    for p in paths:
        ds = TrajectoryDataset.load(p, expected_system=system)
        qs.append(ds.qpos.reshape(-1, ds.qpos.shape[-1]))
        vs.append(ds.qvel.reshape(-1, ds.qvel.shape[-1]))
    return torch.as_tensor(np.concatenate(qs), dtype=torch.float32), torch.as_tensor(np.concatenate(vs),
                                                                                     dtype=torch.float32)


class TaskContext:
    """A task's parameters drawn per imagined episode and what a policy sees of them (the context
    of :mod:`planners.policy`): draws as the task file's ``parameters`` ranges, observations as its
    ``policy.observe``."""

    def __init__(self, task: Task, near_fraction: float = 0.0, near_scale: float = 1.0):
        self.task, self.near_fraction, self.near_scale = task, near_fraction, near_scale

    def draw(self, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """``n`` episodes' parameters; a ``near_fraction`` share of them from ranges shrunk about
        their centres to ``near_scale`` of their width (targets near the middle, where the swimmer starts)."""
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        rows = self.task.draw_param_rows(n, np.random.default_rng(seed))
        near = torch.rand(n, generator=gen) < self.near_fraction
        if near.any():
            for name, p in self.task.spec.parameters.items():
                for i, r in enumerate(p.get("range") or []):
                    if r is not None:
                        mid = (r[0] + r[1]) / 2
                        rows[name][near, i] = mid + self.near_scale * (rows[name][near, i] - mid)
        return {k: v.float() for k, v in rows.items()}

    def observe(self, qpos: torch.Tensor, qvel: torch.Tensor, params) -> torch.Tensor:
        return self.task.observation(qpos, qvel, params)


def task_context(task: Task, near_fraction: float = 0.0, near_scale: float = 1.0) -> TaskContext | None:
    """The context a policy for ``task`` needs (None for a task without per-episode parameters);
    a task with such parameters must say what a policy observes of them."""
    if not len(task.observed_parameters()):
        return None
    if not task.policy_observe:
        raise GndesignError(f"task {task.name} draws parameters per episode (e.g. a random target) but its task file "
                            "does not say what a policy observes of them: add policy: {observe: [QUANTITY]} (e.g. "
                            "the target in a body's frame, as swimmerN.yaml does)")
    return TaskContext(task, near_fraction, near_scale)


def describe(task: Task, dynamics: LearnedDynamics, model: str) -> dict:
    tree = task.tree
    angles = [int(tree.jnt_qposadr[j]) for j in range(len(tree.jnt_type)) if tree.jnt_type[j] == HINGE]
    one = task.observation(torch.zeros(1, tree.nq, dtype=torch.float64), torch.zeros(1, tree.nv, dtype=torch.float64))
    return {"task": task_id(task), "system": task.system.name, "mjcf_sha256": task.system.mjcf_sha256(),
            "nq": tree.nq, "nv": tree.nv, "nu": tree.nu, "angles": angles,
            "ctrl_low": dynamics.action_low.tolist(), "ctrl_high": dynamics.action_high.tolist(),
            "action_repeat": dynamics.action_repeat, "dynamics": model, "ignore": list(task.policy_ignore),
            "context": list(task.policy_observe), "context_dim": int(one.shape[-1])}


def train_policy(model: str, task_name: str, out: str | Path, data: list[str] | None = None,
                 policy: dict | None = None, train: dict | None = None, resume: bool = False,
                 progress: bool = True, init_samples: int = 512, max_new_steps: int | None = None) -> dict:
    """Train a policy for ``task_name`` through the learned ``model`` (never a MuJoCo reward);
    checkpoints and metrics in ``out`` (``out/checkpoints/latest.pt``). ``data``: datasets whose
    states serve as start states (default: the model's own training data). ``policy``/``train``:
    options of the run's ``policy`` and ``train`` sections (:class:`gndesign.config.PolicyConfig`)."""
    task = get_task(task_name)
    task_context(task)  # refuse a task whose per-episode parameters a policy would not see, before loading anything
    ckpt = resolve_checkpoint(model)
    learned, blob = load_model(ckpt, "forward", system=task.system.name, mjcf_sha256=task.system.mjcf_sha256())
    dynamics = LearnedDynamics(learned, task.system.name)
    data = list(data or blob["config"].get("data") or [])
    if not data:
        raise GndesignError("no start-state data: pass --data DIR (a trajectory dataset of the system)")
    name = str(model) if str(model).startswith("pretrained:") else str(ckpt)  # a shipped name travels as is
    pc = dataclass_from(PolicyConfig, dict(policy or {}, task=task_name, dynamics=name), "policy")
    tc = dataclass_from(TrainConfig, dict({"steps": 2000, "batch_size": 64, "lr": 1e-3, "lr_final": 1e-4,
                                           "log_every": 10, "eval_every": 10, "checkpoint_every": 50},
                                          **(train or {})), "train")
    config = RunConfig(data=[str(d) for d in data], train=tc, policy=pc)
    config.validate()
    if pc.horizon % dynamics.action_repeat:
        raise ConfigError(f"policy.horizon ({pc.horizon} control steps) is not a multiple of the model's action "
                          f"repeat {dynamics.action_repeat}")
    description = describe(task, dynamics, name)
    init = initial_states(task, init_samples, seed=10_000 + tc.seed)
    states = data_states(config.data, task.system.name)
    trainer = PolicyTrainer(config, lambda: PolicyNet(pc.hidden_size, pc.layers, description), dynamics,
                            task.reward, init, states, requested={"system": task.system.name, "task": task_id(task)},
                            context=task_context(task, pc.near_fraction, pc.near_scale))
    start = time.time()
    summary = run_training(trainer, out, resume=resume, progress=progress, max_new_steps=max_new_steps)
    summary.update(checkpoint=str(Path(out) / "checkpoints" / "latest.pt"), wall_s=time.time() - start)
    return summary


def task_id(task: Task) -> str:
    """The task's dm_control name, ``domain/task`` (what a policy checkpoint records)."""
    return f"{task.domain}/{task.task}"


def load_policy(path: str, task: Task) -> tuple[PolicyNet, dict]:
    """A policy checkpoint for ``task`` (another task or system is refused)."""
    net, blob = load_model(path, "policy", system=task.system.name, mjcf_sha256=task.system.mjcf_sha256())
    check_policy(blob, resolve_checkpoint(path), task=task_id(task))
    return net, blob


def act(policy: PolicyNet, task: Task, qpos: torch.Tensor, qvel: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """The policy's actions ``[E, nu]`` (seeing the task's context, its current parameters), or
    ``fallback`` (logged) for episodes where they are not finite."""
    with torch.no_grad():
        q, v = qpos.float(), qvel.float()
        a = policy(q, v, task.observation(q, v) if policy.context_dim else None)
    bad = ~torch.isfinite(a).all(-1)
    if bad.any():
        log.warning("the policy's action is not finite for %d episode(s): holding the last action", int(bad.sum()))
        a = torch.where(bad[:, None], fallback, a)
    return a


def action_chatter(actions) -> float:
    """Mean ``|a_t - a_{t-1}|`` over steps and action dimensions of ``actions [T, nu]``."""
    a = np.asarray(actions, dtype=float)
    return float(np.abs(np.diff(a, axis=0)).mean()) if len(a) > 1 else 0.0


def eval_policy(policy_path: str, task_name: str, episodes: int, seed: int, steps: int | None = None,
                video: str | None = None, progress: bool = False, overwrite: bool = False) -> dict:
    """Run the policy alone in true MuJoCo (dm_control; seeds ``seed``, ``seed + 1``, ... in lockstep),
    acting every ``k`` control steps (its model's action repeat) and holding the action between."""
    task = get_task(task_name)
    check_output(video, inputs=[resolve_checkpoint(policy_path)], overwrite=overwrite, what="--video")
    policy, blob = load_policy(policy_path, task)
    k = policy.action_repeat
    steps = steps or task.episode_steps
    env = DmControlBatch(task, [seed + e for e in range(episodes)])
    q, v = env.reset()
    rewards, actions, latencies, frames = [], [], [], []
    a = policy.act_mid.expand(episodes, -1).clone()
    for t in range(steps):
        if t % k == 0:
            start = time.perf_counter()
            a = act(policy, task, q, v, a)
            latencies.append(time.perf_counter() - start)
        r, q, v = env.step(a)
        rewards.append(r)
        actions.append(a.tolist())
        if video and t % 2 == 0:
            frames.append(env.render())
    R, A = np.asarray(rewards), np.asarray(actions)  # [T, E], [T, E, nu]
    results = [{"episode": e, "seed": seed + e, "return": float(R[:, e].sum()), "chatter": action_chatter(A[:, e]),
                "rewards": R[:, e].tolist(), "actions": A[:, e].tolist()} for e in range(episodes)]
    returns = R.sum(0)
    out = {"task": task_name, "model": str(policy_path), "planner": "policy", "action_repeat": k, "steps": steps,
           "episodes": results, "return_mean": float(returns.mean()), "return_std": float(returns.std()),
           "chatter_mean": float(np.mean([r["chatter"] for r in results])),
           "mean_latency_s": float(np.mean(latencies)) / episodes, "control_timestep": task.system.control_timestep,
           "trained_through": blob["policy"]["dynamics"], "training_step": int(blob["step"]),
           "training_s": float((blob.get("extra") or {}).get("elapsed_s", float("nan")))}
    if video:
        from workflows.video import write_gif

        if (gif := write_gif(frames, video, fps=int(round(0.5 / task.system.control_timestep)))) is not None:
            out["video"] = str(gif)
    return out
