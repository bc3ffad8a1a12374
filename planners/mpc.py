"""Model-predictive control: replan every k control steps, act in the real environment.

The loop sees the environment through a small protocol (``reset() -> (qpos, qvel)``,
``step(action) -> (reward, qpos, qvel)``), so it runs the same on dm_control, gymnasium wrappers
or a learned model; ``envs.control.DmControlEnvironment`` is the ground-truth one.
:func:`run_mpc_lockstep` runs ``E`` episodes in lockstep on a batched environment
(``reset() -> (qpos [E, nq], qvel [E, nv])``, ``step(actions [E, nu]) -> (rewards [E], qpos, qvel)``,
e.g. ``envs.control.DmControlBatch``): one planner call per decision plans for all of them in one
batched rollout, which on a CPU costs little more than one episode's (small graphs are bound by
per-operation overhead, not arithmetic).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

import torch
from tqdm import tqdm

from planners.base import Planner


class Environment(Protocol):
    def reset(self) -> tuple[torch.Tensor, torch.Tensor]: ...

    def step(self, action: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]: ...


@dataclass
class EpisodeRecord:
    """What one MPC episode did: per-step rewards and actions, per-decision latency and model
    evaluations, and the planner's predicted cost at each decision. In lockstep runs of ``batch``
    episodes the latency is that of the decision for all of them, and the evaluations are this
    episode's share."""

    rewards: list[float] = field(default_factory=list)
    actions: list[list[float]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)  # per decision: CPU seconds of the deciding thread
    evaluations: list[float] = field(default_factory=list)
    planned_costs: list[float] = field(default_factory=list)
    batch: int = 1
    # asynchronous runs: per step, the control steps since the state the acted-on plan was made from
    plan_ages: list[int] = field(default_factory=list)
    reflex_steps: int = 0  # asynchronous runs: steps acted on by the fallback (reflex) instead of a stale plan
    refits: list[dict] = field(default_factory=list)  # adaptive runs: each refit of the physical parameters

    @property
    def total_return(self) -> float:
        return float(sum(self.rewards))

    def summary(self) -> dict:
        n = max(len(self.latencies), 1)
        return {"return": self.total_return, "steps": len(self.rewards), "decisions": len(self.latencies),
                "mean_latency_s": sum(self.latencies) / n, "mean_cpu_s": sum(self.cpu_times) / n,
                "mean_evaluations": sum(self.evaluations) / n,
                "lockstep_batch": self.batch,
                **({"plan_age_mean_steps": sum(self.plan_ages) / len(self.plan_ages),
                    "plan_age_max_steps": max(self.plan_ages),
                    "reflex_fraction": self.reflex_steps / len(self.plan_ages)} if self.plan_ages else {}),
                **({"refits": self.refits} if self.refits else {})}


class _Batch1:
    """One environment seen as a batch of one."""

    def __init__(self, env: Environment):
        self.env = env

    def reset(self):
        q, v = self.env.reset()
        return q[None], v[None]

    def step(self, actions):
        r, q, v = self.env.step(actions[0])
        return [r], q[None], v[None]


def run_mpc(env: Environment, planner: Planner, steps: int, replan_every: int = 1,
            progress: bool = False, on_step=None, adapt=None) -> EpisodeRecord:
    """Run one episode of ``steps`` control steps, replanning every ``replan_every`` steps.

    The plan is in control steps; a planner over a ``k``-step model holds each of its actions
    for ``k`` of them (``replan_every`` must then be a multiple of ``k``).

    Between decisions the plan is executed open loop; the next decision warm-starts from the
    plan shifted by the steps executed. ``on_step(t)`` is called after each step (e.g. to render).
    ``adapt``: online identification (:class:`planners.adaptive.OnlineIdentification`), which sees
    every step and refits the planning model's physical parameters at its interval.
    """
    return run_mpc_lockstep(_Batch1(env), planner, steps, replan_every, progress, on_step, adapt)[0]


def run_mpc_lockstep(env, planner: Planner, steps: int, replan_every: int = 1, progress: bool = False,
                     on_step=None, adapt=None) -> list[EpisodeRecord]:
    """:func:`run_mpc` for a batched environment: its ``E`` episodes step in lockstep and one
    planner call per decision plans for all of them; one record per episode (``adapt``: one
    episode only)."""
    if replan_every < 1:
        raise ValueError("replan_every must be >= 1")
    planner.check_replan(replan_every)
    qpos, qvel = env.reset()
    E = qpos.shape[0]
    if adapt is not None and E != 1:
        raise ValueError("online identification follows one episode at a time: run the episodes one by one")
    records = [EpisodeRecord(batch=E) for _ in range(E)]
    planner.reset()
    if adapt is not None:
        adapt.reset()
    plan, k = None, 0
    for t in tqdm(range(steps), disable=not progress, desc=f"mpc ({planner.name})", unit="step"):
        if adapt is not None:
            adapt.before_step(t)
        if plan is None or k >= replan_every:
            if plan is not None:  # plan() shifted once already
                planner.advance(k)
            start, cpu = time.perf_counter(), time.thread_time()
            result = planner.plan(qpos, qvel)
            latency, cpu = time.perf_counter() - start, time.thread_time() - cpu
            for e, rec in enumerate(records):
                rec.latencies.append(latency)
                rec.cpu_times.append(cpu)
                rec.evaluations.append(result.evaluations / E)
                rec.planned_costs.append(float(result.cost[e]))
            plan, k = result.actions, 0
        actions = plan[:, k]
        k += 1
        before = qpos, qvel
        rewards, qpos, qvel = env.step(actions)
        if adapt is not None:
            adapt.observe(t, *before, actions, qpos, qvel)
        for e, rec in enumerate(records):
            rec.rewards.append(float(rewards[e]))
            rec.actions.append(actions[e].tolist())
        if on_step is not None:
            on_step(t)
    if adapt is not None:
        records[0].refits = list(adapt.refits)
    return records


def run_mpc_async(env, planner: Planner, steps: int, control_timestep: float, realtime: bool = True,
                  on_step=None, reflex=None, max_age: int | None = None) -> EpisodeRecord:
    """One episode with decisions in a thread apart from the control loop (a batched environment of
    one episode, as :func:`run_mpc_lockstep` takes).

    The planner replans continuously from the latest state the controller published; the
    controller steps the environment every ``control_timestep`` seconds of wall time (``realtime``;
    else as fast as it can) and acts on the latest finished plan at its age: a plan made from the
    state of step ``s`` gives the action of step ``t`` as its entry ``t - s`` (the last one past
    its end). Per step it records that age (``plan_ages``); per decision its latency. Only the
    first decision is waited for.

    ``reflex(qpos [1, nq], qvel [1, nv]) -> [1, nu]`` (e.g. a policy: fast) acts instead of a plan
    older than ``max_age`` control steps, its action held for the planner's action repeat; the
    share of such steps is ``reflex_fraction``. An open-loop plan made half a second ago is worse
    than a closed-loop policy now, which is what a loaded machine makes of the plans.
    """
    qpos, qvel = env.reset()
    if qpos.shape[0] != 1:
        raise ValueError("the asynchronous controller runs one episode at a time")
    rec = EpisodeRecord(batch=1)
    planner.reset()
    lock, ready, stop = threading.Lock(), threading.Event(), threading.Event()
    state = {"t": 0, "qpos": qpos, "qvel": qvel}
    latest: dict = {}
    errors: list[BaseException] = []
    grad = torch.is_grad_enabled()

    def decide() -> None:
        torch.set_grad_enabled(grad)  # grad mode is per thread
        last_t = None
        try:
            while not stop.is_set():
                with lock:
                    t0, q, v = state["t"], state["qpos"], state["qvel"]
                if last_t is not None:
                    planner.advance(t0 - last_t)
                start, cpu = time.perf_counter(), time.thread_time()
                result = planner.plan(q, v)
                latency, cpu = time.perf_counter() - start, time.thread_time() - cpu
                with lock:
                    latest.update(start=t0, actions=result.actions[0].detach(), latency=latency)
                    rec.latencies.append(latency)
                    rec.cpu_times.append(cpu)
                    rec.evaluations.append(result.evaluations)
                    rec.planned_costs.append(float(result.cost[0]))
                last_t = t0
                ready.set()
        except BaseException as e:  # noqa: BLE001 - surfaced in the control loop
            errors.append(e)
            ready.set()

    worker = threading.Thread(target=decide, name="mpc-decisions", daemon=True)
    worker.start()
    ready.wait()
    begin = time.perf_counter()
    held, held_until = None, -1
    try:
        for t in range(steps):
            if errors:
                raise errors[0]
            if realtime:
                time.sleep(max(0.0, begin + t * control_timestep - time.perf_counter()))
            with lock:
                plan, s0 = latest["actions"], latest["start"]
            age = t - s0
            action = plan[min(age, plan.shape[0] - 1)]
            if reflex is not None and max_age is not None and age > max_age:
                if t >= held_until:
                    held, held_until = reflex(qpos, qvel)[0].detach(), t + planner.repeat
                action = held
                rec.reflex_steps += 1
            else:
                held_until = -1
            rewards, qpos, qvel = env.step(action[None])
            rec.plan_ages.append(age)
            rec.rewards.append(float(rewards[0]))
            rec.actions.append(action.tolist())
            with lock:
                state.update(t=t + 1, qpos=qpos, qvel=qvel)
            if on_step is not None:
                on_step(t)
    finally:
        stop.set()
        worker.join()
    if errors:
        raise errors[0]
    return rec
