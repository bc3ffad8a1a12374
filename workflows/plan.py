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
from gndesign.io import atomic_write_json, check_output
from gndesign.plotting import save_figure
from planners import PLANNERS, make_planner, planner_options
from planners.mpc import run_mpc_lockstep
from workflows.figures import episode_figure
from workflows.video import write_gif

log = logging.getLogger("gndesign")


def check_replanning(horizon: int, replan_every: int) -> None:
    if replan_every > horizon:
        raise GndesignError(f"--replan-every {replan_every} exceeds the planning horizon {horizon}: a plan covers "
                            f"only {horizon} control steps (lower --replan-every or raise --horizon)")


def plan_episodes(task_name: str, model: str, planner_name: str, episodes: int, seed: int, steps: int | None = None,
                  replan_every: int | None = None, horizon: int | None = None, options: dict | None = None,
                  video: str | None = None, progress: bool = True, lockstep: int = 1, overwrite: bool = False,
                  action_repeat: int | None = None) -> dict:
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
    ``action_repeat``: the ``k`` the caller expects (a model with another is refused)."""
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
    check_output(video, inputs=[ckpt], overwrite=overwrite, what="--video")
    if ckpt is None:
        dynamics = MujocoDynamics(task.system)
    else:
        learned, _ = load_model(ckpt, "forward", system=task.system.name, mjcf_sha256=task.system.mjcf_sha256())
        dynamics = LearnedDynamics(learned, task.system.name)
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
    results, frames = [], []
    for first in range(0, episodes, lockstep):
        group = list(range(first, min(first + lockstep, episodes)))
        planner = make_planner(planner_name, dynamics, task.cost, H, seed=seed + first, **opts)
        env = DmControlBatch(task, [seed + ep for ep in group])
        on_step = None
        if video and first == 0:
            def on_step(t, env=env):
                if t % 2 == 0:
                    frames.append(env.render())
        with torch.no_grad() if not dynamics.differentiable else contextlib.nullcontext():
            recs = run_mpc_lockstep(env, planner, steps, replan_every=replan_every, progress=progress,
                                    on_step=on_step)
        for ep, rec in zip(group, recs, strict=True):
            summary = rec.summary()
            summary.update(episode=ep, seed=seed + ep, rewards=rec.rewards, actions=rec.actions)
            results.append(summary)
            log.info("episode %d: return %.1f, %.3f s per decision (%d in lockstep), %.0f model evaluations per "
                     "decision", ep, summary["return"], summary["mean_latency_s"], len(group),
                     summary["mean_evaluations"])
    returns = np.array([r["return"] for r in results])
    out = {"task": task.name, "model": model, "planner": planner_name, "horizon": H, "options": opts,
           "replan_every": replan_every, "action_repeat": k, "steps": steps, "lockstep": lockstep, "episodes": results,
           "return_mean": float(returns.mean()), "return_std": float(returns.std()),
           "mean_latency_s": float(np.mean([r["mean_latency_s"] for r in results])),
           "mean_evaluations": float(np.mean([r["mean_evaluations"] for r in results])),
           "control_timestep": task.system.control_timestep}
    out["real_time_factor"] = out["control_timestep"] * replan_every / max(out["mean_latency_s"], 1e-12)
    if video and (gif := write_gif(frames, video, fps=int(round(0.5 / task.system.control_timestep)))) is not None:
        out["video"] = str(gif)
    return out


def demo(out: str | Path, steps: int = 500, replan_every: int = 8, seed: int = 0, progress: bool = True,
         overwrite: bool = False) -> dict:
    """The main job: swing the cartpole up in true MuJoCo with the shipped learned model and the
    gradient planner, next to the MuJoCo-oracle planner (CEM); writes ``swingup.gif`` (video),
    ``swingup.png`` (reward and actions) and ``demo.json`` into ``out``.

    Returns ``{"learned": ..., "oracle": ...}`` (the :func:`plan_episodes` results, episodes
    included) and ``ratio`` (learned / oracle return), ``json`` (the summary's path).
    """
    out = check_output(out, "dir", overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    learned = plan_episodes("cartpole-swingup", "pretrained:cartpole", "gradient", 1, seed, steps,
                            replan_every=replan_every, video=str(out / "swingup.gif"), progress=progress,
                            overwrite=overwrite)
    learned["plot"] = str(save_figure(episode_figure(learned), out / "swingup.png"))
    oracle = plan_episodes("cartpole-swingup", "mujoco", "cem", 1, seed, steps, replan_every=replan_every,
                           progress=progress)
    ratio = learned["return_mean"] / max(oracle["return_mean"], 1e-9)
    summary = {"learned": {k: v for k, v in learned.items() if k != "episodes"},
               "oracle": {k: v for k, v in oracle.items() if k != "episodes"}, "ratio": ratio}
    atomic_write_json(out / "demo.json", summary)
    return {"learned": learned, "oracle": oracle, "ratio": ratio, "json": str(out / "demo.json")}
