"""The example systems beyond the registry, end to end: generate data, train a graph network, plan
with it in true MuJoCo against the MuJoCo oracle. Writes ``results/examples.{json,md}``.

    python scripts/bench_examples.py                      # both examples (8 min on one thread, busy machine)
    python scripts/bench_examples.py --only arm-hold --episodes 4

Each example is the command sequence the README gives, run through the same functions:
``gndesign generate MJCF --episodes 1000 --control-steps 200 --seed 0``, ``gndesign train`` (the
issue-14 GN recipe, a fixed number of steps, one thread), then ``gndesign plan MJCF --task FILE``
with the learned model and with ``--model mujoco`` (the oracle), the same planner settings (the task
file's) and the same episode seeds (100 and up). Targets: learned-model MPC at least 0.9x the oracle.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from gndesign.io import atomic_write_json, atomic_write_text, machine_info

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "envs" / "task_data"
GN = ["model.latent_size=64", "model.mlp_hidden_size=64", "model.mlp_layers=1", "train.batch_size=64",
      "train.threads=1", "train.seed=0", "train.log_every=500", "train.eval_every=2000",
      "train.checkpoint_every=2000"]
EXAMPLES = {
    "arm-reach": {"mjcf": "arm.xml", "task": "arm-reach.yaml", "steps": 20000, "planner": "cem"},
    "arm-hold": {"mjcf": "arm-vertical.xml", "task": "arm-hold.yaml", "steps": 20000, "planner": "cem"},
}


def run_example(name: str, work: Path, episodes: int) -> dict:
    from envs.generate import generate_dataset
    from envs.tasks import get_task
    from gndesign.checkpoints import load_model
    from gndesign.config import load_config
    from gndesign.datasets.trajectories import TrajectoryDataset
    from gndesign.evaluation import evaluate
    from gndesign.forward_training import held_out_episodes
    from gndesign.training import train
    from workflows.plan import plan_episodes

    ex = EXAMPLES[name]
    mjcf = str(TASKS / ex["mjcf"])
    data = work / name / "data"
    if not (data / "meta.json").exists():
        generate_dataset(mjcf, episodes=1000, steps=200, seed=0, out_dir=data, overwrite=True, progress=False)
    run = work / name / "gn"
    ckpt = run / "checkpoints" / "latest.pt"
    t0 = time.perf_counter()
    if not ckpt.exists():
        cfg = load_config(None, GN + [f"train.steps={ex['steps']}"], data=[str(data)])
        train(cfg, run, progress=False)
    train_s = time.perf_counter() - t0
    ds = TrajectoryDataset.load(data)
    model, blob = load_model(ckpt, "forward", system=ds.system)
    e = evaluate(model, ds, held_out_episodes(blob, ds)[0], (1, 10, 50, 100))
    errors = {k: e[k] for k in ("one_step_loss", "body_pos_error")}
    task = get_task(str(TASKS / ex["task"]), system=mjcf)
    out = {"mjcf": ex["mjcf"], "task": ex["task"], "train_steps": ex["steps"], "train_seconds": train_s,
           "checkpoint": str(ckpt), "held_out_errors": errors, "cells": {}}
    for label, model_spec in (("learned", str(ckpt)), ("oracle", "mujoco")):
        t0 = time.perf_counter()
        r = plan_episodes(task, model_spec, ex["planner"], episodes, 100, progress=False, lockstep=episodes)
        out["cells"][label] = {"planner": ex["planner"], "returns": [e["return"] for e in r["episodes"]],
                               "return_mean": r["return_mean"], "return_std": r["return_std"],
                               "mean_latency_s": r["mean_latency_s"], "horizon": r["horizon"],
                               "options": r["options"], "wall_s": time.perf_counter() - t0}
        print(f"{name} {label}: {r['return_mean']:.1f} +- {r['return_std']:.1f}", flush=True)
    out["ratio"] = out["cells"]["learned"]["return_mean"] / out["cells"]["oracle"]["return_mean"]
    return out


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = ["# Example systems beyond the registry", "",
             f"Machine: {m.get('cores')} cores, torch {m.get('torch')}, one thread. {report['episodes']} episodes per "
             "cell (seeds 100 and up), true MuJoCo; the learned model and the MuJoCo oracle plan with the same "
             "planner and settings (the task file's). Target: learned >= 0.9x the oracle.", "",
             "| example | GN training | held-out error h=50 [m] | learned | oracle (MuJoCo) | learned / oracle |",
             "|---|---|---|---|---|---|"]
    for name, ex in report["examples"].items():
        c = ex["cells"]
        h50 = ex["held_out_errors"]["body_pos_error"].get("50", ex["held_out_errors"]["body_pos_error"].get(50))
        lines.append(f"| {name} ({ex['mjcf']}, {c['learned']['planner']}) | {ex['train_steps']} steps, "
                     f"{ex['train_seconds'] / 60:.1f} min | {h50 if h50 is None else f'{h50:.3f}'} | "
                     f"{c['learned']['return_mean']:.1f} +- {c['learned']['return_std']:.1f} | "
                     f"{c['oracle']['return_mean']:.1f} +- {c['oracle']['return_std']:.1f} | **{ex['ratio']:.2f}** |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=list(EXAMPLES), action="append")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--work", default=str(ROOT / "runs" / "examples"))
    p.add_argument("--out", default=str(ROOT / "results" / "examples.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    report = {"machine": machine_info(threads=1), "episodes": args.episodes, "examples": {}}
    for name in args.only or list(EXAMPLES):
        report["examples"][name] = run_example(name, Path(args.work), args.episodes)
        atomic_write_json(args.out, report)
    atomic_write_text(Path(args.out).with_suffix(".md"), markdown(report))
    print(markdown(report))
    bad = [name for name, ex in report["examples"].items() if not np.isfinite(ex["ratio"])]
    if bad:
        raise SystemExit(f"non-finite returns for {', '.join(bad)}: see {args.out}")


if __name__ == "__main__":
    main()
