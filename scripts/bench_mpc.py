"""MPC benchmarks: {gradient, CEM, MPPI} x {learned model, MuJoCo oracle} on dm_control tasks.

Writes ``results/mpc.json`` and ``results/mpc.md`` (with the machine).

    python scripts/bench_mpc.py                                   # the issue's protocol
    python scripts/bench_mpc.py --tasks cartpole-swingup --episodes 2 --steps 300   # a shorter run
    python scripts/bench_mpc.py --sweep --episodes 5              # planned return vs iterations (open loop)

Protocol: cartpole swing-up 10 episodes, swimmer6 20 episodes (its random target makes returns
bimodal), fixed seeds, dm_control's 1000-step episodes, replanning every step (``--replan-every``
to change). The learned model is the shipped ``pretrained:<system>``; the oracle plans on true
MuJoCo. Planner settings are the tasks' (``envs.tasks.Task.planning_horizon``, ``planner_options``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path

import torch

from gndesign.io import atomic_write_json, atomic_write_text, machine_info
from workflows.plan import plan_episodes

ROOT = Path(__file__).resolve().parents[1]
EPISODES = {"cartpole-swingup": 10, "swimmer6": 20}
MODELS = {"cartpole-swingup": "pretrained:cartpole", "swimmer6": "pretrained:swimmer6"}
SWEEP_ITERATIONS = (1, 2, 5, 10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=list(EPISODES))
    p.add_argument("--planners", nargs="+", default=["gradient", "cem", "mppi"])
    p.add_argument("--models", nargs="+", default=["learned", "mujoco"])
    p.add_argument("--episodes", type=int, help="override the protocol's episode counts")
    p.add_argument("--oracle-episodes", type=int, help="episode count for the MuJoCo oracle (default: --episodes)")
    p.add_argument("--steps", type=int, help="override dm_control's 1000 steps (shorter runs)")
    p.add_argument("--replan-every", type=int, default=1)
    p.add_argument("--lockstep", type=int, help="episodes run together (one batched planner call per decision for "
                   "all of them; default: all the episodes of a cell)")
    p.add_argument("--horizon", type=int, help="planning horizon (default: the task's)")
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--sweep", action="store_true",
                   help="open-loop return vs iterations, gradient vs CEM at equal evaluations "
                   "(--episodes: number of start states)")
    p.add_argument("--latency", type=int, metavar="N",
                   help="only time N decisions per task, planner and model (run it on a quiet machine)")
    p.add_argument("--out", default=str(ROOT / "results" / "mpc.json"))
    p.add_argument("--merge", nargs="+", metavar="JSON", help="merge reports of separate runs into --out and stop")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.merge:
        merged = {"runs": {}, "sweep": {}}
        for path in args.merge:
            part = json.loads(Path(path).read_text())
            merged["machine"] = part["machine"]
            merged["runs"].update(part.get("runs", {}))
            merged["sweep"].update(part.get("sweep", {}))
            merged.setdefault("latency", {}).update(part.get("latency", {}))
        atomic_write_json(args.out, merged)
        atomic_write_text(Path(args.out).with_suffix(".md"), markdown(merged))
        print(markdown(merged))
        return

    out_path = Path(args.out)
    report = json.loads(out_path.read_text()) if out_path.exists() else {"runs": {}}
    report["machine"] = machine_info(threads=1)
    for task in args.tasks:
        n_ep = args.episodes or EPISODES[task]
        if args.latency:
            report.setdefault("latency", {})[task] = latency(task, args.latency, args)
            atomic_write_json(out_path, report)
            continue
        if args.sweep:
            report.setdefault("sweep", {})[task] = sweep(task, args.episodes or 5, args)
            atomic_write_json(out_path, report)
            continue
        for model in args.models:
            for planner in args.planners:
                if planner == "gradient" and model == "mujoco":
                    continue  # MuJoCo is not differentiable
                spec = MODELS[task] if model == "learned" else "mujoco"
                n = n_ep if model == "learned" or not args.oracle_episodes else args.oracle_episodes
                load_before = os.getloadavg()[0]
                r = plan_episodes(task, spec, planner, n, args.seed, args.steps, args.replan_every, args.horizon,
                                  progress=False, lockstep=args.lockstep or n)
                key = f"{task}/{model}/{planner}"
                report["runs"][key] = {k: v for k, v in r.items() if k != "episodes"} | {
                    "returns": [e["return"] for e in r["episodes"]],
                    # other processes on the machine inflate latencies: the 1-minute load average
                    "load_average": [load_before, os.getloadavg()[0]]}
                print(f"{key}: {r['return_mean']:.1f} +- {r['return_std']:.1f}, {r['mean_latency_s'] * 1e3:.0f} ms, "
                      f"{r['mean_evaluations']:.0f} evals/decision", flush=True)
                atomic_write_json(out_path, report)
    atomic_write_json(out_path, report)
    atomic_write_text(out_path.with_suffix(".md"), markdown(report))
    print(markdown(report))


def sweep(task_name: str, n_states: int, args) -> dict:
    """Planned-return against planner iterations at (about) equal model evaluations.

    A closed-loop sweep (whole MPC episodes per setting) costs hours on two cores, so this is the
    open-loop version: from ``n_states`` start states (dm_control resets followed by 0, 25, 50, ...
    random actions), each planner optimizes from scratch on the learned model and its plan is
    executed open loop on true MuJoCo over the horizon; the row is the mean true return. Gradient
    (K restarts: K x H x (I + 1) evaluations, backward passes not counted) vs CEM with population
    K (K x H x I) and 4K (four times the evaluations).
    """
    from envs.control import DmControlEnvironment
    from envs.mujoco_dynamics import MujocoDynamics
    from envs.tasks import get_task
    from gndesign.checkpoints import load_model, resolve_checkpoint
    from gndesign.dynamics import LearnedDynamics
    from planners import make_planner

    task = get_task(task_name)
    model, _ = load_model(resolve_checkpoint(MODELS[task_name]), "forward", system=task.system.name)
    learned, truth = LearnedDynamics(model, task.system.name), MujocoDynamics(task.system)
    H = args.horizon or task.planning_horizon
    K = task.planner_options["gradient"]["restarts"]
    rng = torch.Generator().manual_seed(args.seed)
    starts = []
    for i in range(n_states):
        env = DmControlEnvironment(task, seed=args.seed + i)
        q, v = env.reset()
        for _ in range(25 * i):
            a = learned.action_low + (learned.action_high - learned.action_low) * torch.rand(learned.nu, generator=rng)
            _, q, v = env.step(a)
        starts.append((q, v))
    settings = {"gradient": ("gradient", {}), "cem": ("cem", {"population": K, "elites": max(2, K // 4)}),
                "cem_4x": ("cem", {"population": 4 * K, "elites": K})}
    rows = {}
    for iters in SWEEP_ITERATIONS:
        for label, (name, opts) in settings.items():
            returns, evals = [], []
            for i, (q, v) in enumerate(starts):
                planner = make_planner(name, learned, task.cost, H, seed=args.seed + i,
                                       **dict(task.planner_options[name], **opts, iterations=iters))
                with torch.no_grad() if name != "gradient" else contextlib.nullcontext():
                    plan = planner.plan(q, v)
                with torch.no_grad():
                    qs, vs = truth.rollout(q[None], v[None], plan.actions[None])
                    returns.append(-float(task.cost(qs, vs, plan.actions[None])[0]))
                evals.append(plan.evaluations)
            rows[f"{label}/{iters}"] = {"true_return_mean": sum(returns) / len(returns), "returns": returns,
                                        "evaluations": sum(evals) / len(evals)}
            print(task_name, label, iters, rows[f"{label}/{iters}"]["true_return_mean"], flush=True)
    return {"horizon": H, "states": n_states, "rows": rows}


def latency(task_name: str, decisions: int, args) -> dict:
    """Mean and min seconds per decision from a dm_control reset state, warm-started decisions
    as in MPC (the episode benchmark's latencies include whatever else ran on the machine)."""
    from envs.control import DmControlEnvironment
    from envs.mujoco_dynamics import MujocoDynamics
    from envs.tasks import get_task
    from gndesign.checkpoints import load_model, resolve_checkpoint
    from gndesign.dynamics import LearnedDynamics
    from planners import make_planner

    task = get_task(task_name)
    model, _ = load_model(resolve_checkpoint(MODELS[task_name]), "forward", system=task.system.name)
    dyns = {"learned": LearnedDynamics(model, task.system.name), "mujoco": MujocoDynamics(task.system)}
    H = args.horizon or task.planning_horizon
    q, v = DmControlEnvironment(task, seed=args.seed).reset()
    out = {}
    for model_name in args.models:
        for name in args.planners:
            dyn = dyns[model_name]
            if name == "gradient" and not dyn.differentiable:
                continue
            planner = make_planner(name, dyn, task.cost, H, seed=args.seed, **task.planner_options[name])
            times = []
            for _ in range(decisions + 1):  # the first decision (cold caches) is not counted
                start = time.perf_counter()
                with torch.no_grad() if not dyn.differentiable else contextlib.nullcontext():
                    planner.plan(q, v)
                times.append(time.perf_counter() - start)
            times = times[1:]
            out[f"{model_name}/{name}"] = {"mean_s": sum(times) / len(times), "min_s": min(times),
                                           "load_average": os.getloadavg()[0],
                                           "real_time_factor": task.system.control_timestep * args.replan_every
                                           / (sum(times) / len(times))}
            print(task_name, model_name, name, out[f"{model_name}/{name}"], flush=True)
    return out


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"Machine: {m['cores']} cores, torch {m['torch']}, one thread. The episodes of a cell ran in lockstep "
             "(E: one batched planner call per decision for all of them), so the latency column is the decision "
             "for the whole batch, measured while other jobs shared the machine (1-minute load average in the last "
             "column); a single controller's latency on a quiet machine and its real-time factor (k x control "
             "period / latency) are in the latency tables below. H: horizon, k: replanning interval; "
             "evaluations are per episode and decision.", "",
             "| task | model | planner | H | k | return (mean +- std) | episodes | E | evals/decision | "
             "batch latency [ms] | load |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, v in r.get("runs", {}).items():
        task, model, planner = key.split("/")
        load = max(v.get("load_average", [0.0]))
        lines.append(f"| {task} | {model} | {planner} | {v['horizon']} | {v['replan_every']} | "
                     f"{v['return_mean']:.1f} +- {v['return_std']:.1f} | {len(v['returns'])} x {v['steps']} steps | "
                     f"{v.get('lockstep', 1)} | {v['mean_evaluations']:.0f} | {v['mean_latency_s'] * 1e3:.0f} | "
                     f"{load:.1f} |")
    for task, rows in r.get("latency", {}).items():
        lines += ["", f"{task}: decision latency on a quiet machine (warm-started decisions from a reset state)", "",
                  "| model/planner | mean [ms] | min [ms] | real-time factor (k = 1) | load average |",
                  "|---|---|---|---|---|"]
        for key, row in rows.items():
            lines.append(f"| {key} | {row['mean_s'] * 1e3:.0f} | {row['min_s'] * 1e3:.0f} | "
                         f"{row['real_time_factor']:.3f} | {row['load_average']:.1f} |")
    for task, sw in r.get("sweep", {}).items():
        rows = sw["rows"]
        lines += ["", f"{task}: true (MuJoCo) return of open-loop plans over the {sw['horizon']}-step horizon from "
                  f"{sw['states']} start states, against planner iterations on the learned model", "",
                  "| iterations | gradient (K=8) | evals | CEM (pop 8) | evals | CEM (pop 32) | evals |",
                  "|---|---|---|---|---|---|---|"]
        for it in SWEEP_ITERATIONS:
            cells = []
            for label in ("gradient", "cem", "cem_4x"):
                row = rows.get(f"{label}/{it}")
                cells += [f"{row['true_return_mean']:.1f}", f"{row['evaluations']:.0f}"] if row else ["", ""]
            lines.append(f"| {it} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
