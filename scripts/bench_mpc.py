"""MPC benchmarks: {gradient, CEM, MPPI} x {learned model, MuJoCo oracle} on dm_control tasks.

Writes ``results/mpc.json`` and ``results/mpc.md`` (with the machine).

    python scripts/bench_mpc.py                                   # the issue's protocol
    python scripts/bench_mpc.py --tasks cartpole-swingup --episodes 2 --steps 300   # a shorter run
    python scripts/bench_mpc.py --sweep                           # return vs iterations, equal evaluations

Protocol: cartpole swing-up 10 episodes, swimmer6 20 episodes (its random target makes returns
bimodal), fixed seeds, dm_control's 1000-step episodes, replanning every step (``--replan-every``
to change). The learned model is the shipped ``pretrained:<system>``; the oracle plans on true
MuJoCo. Planner settings are the command line's defaults (``gndesign.cli.PLAN_DEFAULTS``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from gndesign.cli import PLAN_DEFAULTS, plan_episodes
from gndesign.io import atomic_write_json, atomic_write_text

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
    p.add_argument("--horizon", type=int, help="planning horizon (default: PLAN_DEFAULTS per task)")
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--sweep", action="store_true", help="return vs iterations, gradient vs CEM at equal evaluations")
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
        atomic_write_json(args.out, merged)
        atomic_write_text(Path(args.out).with_suffix(".md"), markdown(merged))
        print(markdown(merged))
        return

    out_path = Path(args.out)
    report = json.loads(out_path.read_text()) if out_path.exists() else {"runs": {}}
    report["machine"] = {"cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                         "threads": 1}
    for task in args.tasks:
        n_ep = args.episodes or EPISODES[task]
        if args.sweep:
            report.setdefault("sweep", {})[task] = sweep(task, n_ep, args)
            continue
        for model in args.models:
            for planner in args.planners:
                if planner == "gradient" and model == "mujoco":
                    continue  # MuJoCo is not differentiable
                spec = MODELS[task] if model == "learned" else "mujoco"
                n = n_ep if model == "learned" or not args.oracle_episodes else args.oracle_episodes
                load_before = os.getloadavg()[0]
                r = plan_episodes(task, spec, planner, n, args.seed, args.steps, args.replan_every, args.horizon,
                                  progress=False)
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


def sweep(task: str, episodes: int, args) -> dict:
    """Return against planner iterations: gradient (K restarts) vs CEM (population K), so both
    spend K x H model evaluations per iteration (the gradient's backward pass not counted)."""
    K = PLAN_DEFAULTS["gradient"]["restarts"]
    rows = {}
    for iters in SWEEP_ITERATIONS:
        for planner, opts in (("gradient", {"iterations": iters}),
                              ("cem", {"iterations": iters, "population": K, "elites": max(2, K // 4)})):
            r = plan_episodes(task, MODELS[task], planner, episodes, args.seed, args.steps, args.replan_every,
                              args.horizon, options=opts, progress=False)
            rows[f"{planner}/{iters}"] = {"return_mean": r["return_mean"], "return_std": r["return_std"],
                                          "mean_evaluations": r["mean_evaluations"],
                                          "mean_latency_s": r["mean_latency_s"]}
            print(task, planner, iters, rows[f"{planner}/{iters}"], flush=True)
    return rows


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"Machine: {m['cores']} cores, torch {m['torch']}, one thread.", "",
             "| task | model | planner | return (mean +- std) | episodes | evals/decision | latency [ms] | "
             "real-time factor |", "|---|---|---|---|---|---|---|---|"]
    for key, v in r.get("runs", {}).items():
        task, model, planner = key.split("/")
        lines.append(f"| {task} | {model} | {planner} | {v['return_mean']:.1f} +- {v['return_std']:.1f} | "
                     f"{len(v['returns'])} x {v['steps']} steps | {v['mean_evaluations']:.0f} | "
                     f"{v['mean_latency_s'] * 1e3:.0f} | {v['real_time_factor']:.2f} |")
    for task, rows in r.get("sweep", {}).items():
        lines += ["", f"{task}: return vs planner iterations at equal model evaluations", "",
                  "| iterations | gradient | CEM | evals/decision |", "|---|---|---|---|"]
        for it in SWEEP_ITERATIONS:
            g, c = rows.get(f"gradient/{it}"), rows.get(f"cem/{it}")
            if g and c:
                evals = g["mean_evaluations"]
                lines.append(f"| {it} | {g['return_mean']:.1f} | {c['return_mean']:.1f} | {evals:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
