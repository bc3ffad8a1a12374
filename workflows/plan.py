"""Model-predictive control in the real dm_control environment, and the demo (the main job)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import torch

from envs.control import DmControlBatch
from envs.mujoco_dynamics import MujocoDynamics
from envs.tasks import Task, get_task
from gndesign.checkpoints import load_model, resolve_checkpoint
from gndesign.coarse import check_divides, check_same_repeat
from gndesign.dynamics import LearnedDynamics
from gndesign.errors import GndesignError
from gndesign.identify import parse_groups, parse_scales, scale_groups
from gndesign.io import atomic_write_json, check_output
from gndesign.plotting import save_figure
from planners import PLANNERS, make_planner, planner_options
from planners.adaptive import OnlineIdentification
from planners.mpc import run_mpc_async, run_mpc_lockstep
from workflows.figures import episode_figure
from workflows.policy import action_chatter
from workflows.video import write_gif

log = logging.getLogger("gndesign")


def check_replanning(horizon: int, replan_every: int) -> None:
    if replan_every > horizon:
        raise GndesignError(f"--replan-every {replan_every} exceeds the planning horizon {horizon}: a plan covers "
                            f"only {horizon} control steps (lower --replan-every or raise --horizon)")


def plan_episodes(task_name: str, model: str, planner_name: str, episodes: int, seed: int, steps: int | None = None,
                  replan_every: int | None = None, horizon: int | None = None, options: dict | None = None,
                  video: str | None = None, progress: bool = True, lockstep: int = 1, overwrite: bool = False,
                  action_repeat: int | None = None, policy: str | None = None, value_weight: float = 1.0,
                  asynchronous: bool = False, adapt: str | None = None, refit_every: int | None = None,
                  scale_params: str | dict | None = None, known_params: bool = False) -> dict:
    """Run MPC episodes (seeds ``seed``, ``seed + 1``, ...) in the real dm_control environment;
    returns per-episode summaries. ``task_name``: a shipped task, a task file or a :class:`Task`
    (:func:`envs.tasks.get_task`). ``steps``: control steps per episode (default: the task's);
    ``replan_every``, ``horizon`` (control steps) and the planner's ``options`` default to the
    task's settings (:class:`envs.tasks.Task`). ``lockstep``: episodes run together, one planner
    call per decision for all of them (its latency is then the batch's). The options and ``video``
    (:func:`gndesign.io.check_output`) are checked before anything runs.

    A model stepping ``k`` control steps at once (:mod:`gndesign.coarse`) plans over ``H / k``
    model steps and each planned action is held ``k`` control steps; the task's default horizon
    and replanning interval are rounded up to multiples of ``k``, given ones must be multiples.
    ``action_repeat``: the ``k`` the caller expects (a model with another is refused).

    ``policy``: a policy checkpoint (:mod:`workflows.policy`) guiding the planner: one restart (or
    sample) is the policy's plan and its value, times ``value_weight``, ends the horizon
    (:mod:`planners.policy`). ``asynchronous``: decisions run in a thread apart from the control
    loop, which acts in real time on the latest plan, or on the policy where that plan is older than
    two replanning intervals (:func:`planners.mpc.run_mpc_async`; one episode at a time).

    ``scale_params`` (e.g. ``"mass=1.25"``): the true environment's physical parameters are the
    nominal ones with each group scaled (:func:`gndesign.identify.parse_scales`); ``known_params``
    tells the learned model those values. ``adapt`` (groups, e.g. ``"mass"``): identify them online
    every ``refit_every`` control steps (default 100, rounded up to a multiple of ``k``) and plan with the estimate
    (:class:`planners.adaptive.OnlineIdentification`; a learned model, one episode at a time)."""
    task = task_name if isinstance(task_name, Task) else get_task(task_name)
    if planner_name not in PLANNERS:
        raise GndesignError(f"unknown planner {planner_name!r}: choose one of {', '.join(PLANNERS)}")
    if lockstep < 1:
        raise GndesignError(f"lockstep must be a positive number of episodes, got {lockstep}")
    opts = dict(task.planner_options[planner_name], **(options or {}))
    opts.update(planner_options(planner_name, opts))
    for name, value in (("horizon", horizon), ("replan-every", replan_every), ("control-steps", steps),
                        ("action-repeat", action_repeat)):
        if value is not None and value < 1:
            raise GndesignError(f"--{name} must be a positive number of control steps, got {value}")
    check_replanning(horizon or task.planning_horizon, replan_every or task.replan_every)
    ckpt = None if model == "mujoco" else resolve_checkpoint(model)
    check_output(video, inputs=[ckpt] + ([resolve_checkpoint(policy)] if policy else []), overwrite=overwrite,
                 what="--video")
    if (asynchronous or value_weight != 1.0) and policy is None:
        raise GndesignError("--async and --value-weight go with --policy (a policy-guided planner)")
    if asynchronous and lockstep > 1:
        raise GndesignError("--async runs one episode at a time: drop --lockstep")
    groups = parse_groups(adapt) if adapt is not None else None
    if groups is not None and (ckpt is None or asynchronous or lockstep > 1):
        raise GndesignError("--adapt refits a learned model's parameters in the synchronous loop, one episode at a "
                            "time: give a learned --model and drop --async and --lockstep")
    if known_params and scale_params is None:
        raise GndesignError("--known-params tells the model the values of --scale-params: give --scale-params")
    if known_params and groups is not None:
        raise GndesignError("--known-params and --adapt exclude each other: the adaptive run estimates the parameters")
    physical = None if scale_params is None else scale_groups(task.system.nominal_params(), parse_scales(scale_params))
    if ckpt is None:
        dynamics = MujocoDynamics(task.system)
    else:
        learned, _ = load_model(ckpt, "forward", system=task.system.name, mjcf_sha256=task.system.mjcf_sha256())
        known = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in physical.items()} if known_params else None
        dynamics = LearnedDynamics(learned, task.system.name, params=known)
    k = dynamics.action_repeat
    if action_repeat is not None:
        check_same_repeat(k, action_repeat, "--action-repeat asks for", f"plan with a model trained on --action-repeat "
                          f"{action_repeat} data, or pass --action-repeat {k}")
    H = horizon or -(-task.planning_horizon // k) * k
    replan_every = replan_every or -(-task.replan_every // k) * k
    steps = steps or task.episode_steps
    check_divides(k, H, "--horizon")
    check_divides(k, replan_every, "--replan-every")
    check_replanning(H, replan_every)
    guide = guided_cost = reflex = None
    if policy is not None:
        guide, guided_cost = policy_guidance(policy, task, dynamics, value_weight)
        reflex = guide.reflex
    refit_every = refit_every or -(-100 // k) * k
    adapter = None if groups is None else OnlineIdentification(dynamics, groups, refit_every, seed=seed)
    results, frames = [], []
    for first in range(0, episodes, lockstep):
        group = list(range(first, min(first + lockstep, episodes)))
        planner = make_planner(planner_name, dynamics, guided_cost or task.cost, H, seed=seed + first, **opts)
        planner.guide = guide
        env = DmControlBatch(task, [seed + ep for ep in group], physical=physical)
        on_step = None
        if video and first == 0:
            def on_step(t, env=env):
                if t % 2 == 0:
                    frames.append(env.render())
        with torch.no_grad() if not dynamics.differentiable else contextlib.nullcontext():
            if asynchronous:
                recs = [run_mpc_async(env, planner, steps, task.system.control_timestep, on_step=on_step,
                                      reflex=reflex, max_age=2 * replan_every)]
            else:
                recs = run_mpc_lockstep(env, planner, steps, replan_every=replan_every, progress=progress,
                                        on_step=on_step, adapt=adapter)
        for ep, rec in zip(group, recs, strict=True):
            summary = rec.summary()
            summary.update(episode=ep, seed=seed + ep, rewards=rec.rewards, actions=rec.actions,
                           chatter=action_chatter(rec.actions))
            results.append(summary)
            log.info("episode %d: return %.1f, %.3f s per decision (%d in lockstep), %.0f model evaluations per "
                     "decision", ep, summary["return"], summary["mean_latency_s"], len(group),
                     summary["mean_evaluations"])
    returns = np.array([r["return"] for r in results])
    out = {"task": task.name, "model": model, "planner": planner_name, "horizon": H, "options": opts,
           "replan_every": replan_every, "action_repeat": k, "steps": steps, "lockstep": lockstep, "episodes": results,
           "return_mean": float(returns.mean()), "return_std": float(returns.std()),
           "mean_latency_s": float(np.mean([r["mean_latency_s"] for r in results])),
           "mean_cpu_s": float(np.mean([r["mean_cpu_s"] for r in results])),
           "mean_evaluations": float(np.mean([r["mean_evaluations"] for r in results])),
           "control_timestep": task.system.control_timestep, "policy": policy,
           "value_weight": value_weight if policy else None, "asynchronous": asynchronous,
           "chatter_mean": float(np.mean([r["chatter"] for r in results])),
           "scale_params": None if scale_params is None else parse_scales(scale_params), "known_params": known_params,
           "adapt": None if groups is None else {"groups": groups, "refit_every": refit_every}}
    if asynchronous:
        out["plan_age_mean_steps"] = float(np.mean([r["plan_age_mean_steps"] for r in results]))
        out["plan_age_max_steps"] = int(max(r["plan_age_max_steps"] for r in results))
        out["reflex_fraction"] = float(np.mean([r["reflex_fraction"] for r in results]))
    out["real_time_factor"] = out["control_timestep"] * replan_every / max(out["mean_latency_s"], 1e-12)
    # the same from the deciding thread's CPU time: what the decisions cost on a machine shared with others
    out["cpu_real_time_factor"] = out["control_timestep"] * replan_every / max(out["mean_cpu_s"], 1e-12)
    if video and (gif := write_gif(frames, video, fps=int(round(0.5 / task.system.control_timestep)))) is not None:
        out["video"] = str(gif)
    return out


def policy_guidance(policy: str, task, dynamics, value_weight: float):
    """The guide and the cost with the policy's terminal value (:mod:`planners.policy`) of a policy
    checkpoint for ``task`` whose action repeat is the planner model's."""
    from planners.policy import PolicyGuide, with_terminal_value
    from workflows.policy import load_policy

    net, _ = load_policy(policy, task)
    for p in net.parameters():
        p.requires_grad_(False)
    if net.action_repeat != dynamics.action_repeat:
        raise GndesignError(f"the policy acts every {net.action_repeat} control step(s) but the planner's model steps "
                            f"{dynamics.action_repeat}: guide a planner whose model has the policy's action repeat")
    observe = task.observation if net.context_dim else None
    return PolicyGuide(net, dynamics, observe), with_terminal_value(task.cost, net, value_weight, observe)


#: The demo's learned model: the shipped coarse cartpole model (one step = 8 control steps, the
#: action held), whose gradient-MPC decision costs about a tenth of the k = 1 model's.
DEMO_MODEL = "pretrained:cartpole-k8"
#: The policy learned through it (gndesign policy train) that guides the demo's planner, and the
#: guided planner's short budget: a 64-control-step horizon, 2 iterations x 4 restarts.
DEMO_POLICY = "pretrained:cartpole-policy"
DEMO_PLANNER = {"horizon": 64, "options": {"iterations": 2, "restarts": 4}}


def demo(out: str | Path, steps: int = 1000, replan_every: int = 8, seed: int = 0, progress: bool = True,
         overwrite: bool = False) -> dict:
    """The main job: swing the cartpole up in true MuJoCo with the shipped coarse learned model
    (:data:`DEMO_MODEL`) and the gradient planner guided by the policy learned through it
    (:data:`DEMO_POLICY`), next to the MuJoCo-oracle planner (CEM); writes
    ``swingup.gif`` (video), ``swingup.png`` (reward and actions) and ``demo.json`` into ``out``.

    Returns ``{"learned": ..., "oracle": ...}`` (the :func:`plan_episodes` results, episodes
    included) and ``ratio`` (learned / oracle return), ``json`` (the summary's path).
    """
    out = check_output(out, "dir", overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    learned = plan_episodes("cartpole-swingup", DEMO_MODEL, "gradient", 1, seed, steps,
                            replan_every=replan_every, video=str(out / "swingup.gif"), progress=progress,
                            overwrite=overwrite, policy=DEMO_POLICY, **DEMO_PLANNER)
    learned["plot"] = str(save_figure(episode_figure(learned), out / "swingup.png"))
    oracle = plan_episodes("cartpole-swingup", "mujoco", "cem", 1, seed, steps, replan_every=replan_every,
                           progress=progress)
    ratio = learned["return_mean"] / max(oracle["return_mean"], 1e-9)
    summary = {"learned": {k: v for k, v in learned.items() if k != "episodes"},
               "oracle": {k: v for k, v in oracle.items() if k != "episodes"}, "ratio": ratio}
    atomic_write_json(out / "demo.json", summary)
    return {"learned": learned, "oracle": oracle, "ratio": ratio, "json": str(out / "demo.json")}
