"""Coarse model steps: accuracy per control second of k = 1, 2, 4, 8 next to their cost (cartpole).

Writes ``results/coarse.json`` and ``results/coarse.md`` (with the machine, torch version and load).

    python scripts/bench_coarse.py --workdir runs/coarse                  # the whole protocol
    python scripts/bench_coarse.py --workdir runs/coarse --mpc-steps 200  # + gradient MPC, k = 2 and 4

Protocol: for each ``k``, ``generate cartpole --episodes 200 --control-steps 200 --seed 0
--action-repeat k`` (the same seed: the same parameters, starts and random controls, held k
steps), then train each model for the same wall time, all ``k`` at once so that they share the
machine's load alike (``--minutes``, ``--batch-size``; one thread each). Accuracy: body-position
error [m] (:func:`gndesign.evaluation.body_position_errors`) of open-loop rollouts from the first
state of each held-out episode (the same episodes for every ``k``: same seed, same split) under the
recorded (held) actions, after 0.24, 0.48, 0.96 and 2 control seconds (multiples of 8 control
steps). Cost: forward + backward of a learned rollout at batch 8 per control second (a rollout of
0.96 s: ``0.96 / (k dt)`` model steps), one thread, median of ``--repeats``. Optionally
(``--mpc-steps``) the gradient-MPC decision latency and return of cartpole swing-up in true
MuJoCo with the task's default planner, replanning every ``k`` steps.
Existing data and runs under ``--workdir`` are reused.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gndesign.checkpoints import load_model, read_checkpoint
from gndesign.datasets.trajectories import TrajectoryDataset
from gndesign.dynamics import LearnedDynamics
from gndesign.evaluation import body_position_errors
from gndesign.forward_training import held_out_episodes
from gndesign.io import atomic_write_json, atomic_write_text, machine_info
from workflows.plan import plan_episodes

ROOT = Path(__file__).resolve().parents[1]
#: Control seconds the errors are read at: multiples of every model step (k dt, k <= 8, dt 0.01 s).
SECONDS = (0.24, 0.48, 0.96, 2.0)


def prepare(args, k: int) -> tuple[Path, Path]:
    """The dataset and run directory of ``k`` (generated if missing)."""
    data, run = Path(args.workdir) / f"data_k{k}", Path(args.workdir) / f"run_k{k}"
    if not (data / "meta.json").exists():
        from envs.generate import generate_dataset

        generate_dataset("cartpole", episodes=args.episodes, steps=args.control_steps, seed=args.seed,
                         out_dir=data, progress=False, action_repeat=k)
    return data, run


def train_all(args, runs: dict[int, tuple[Path, Path]]) -> None:
    """Train every missing run at once (equal wall time, equal share of the machine)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = []
    for _k, (data, run) in runs.items():
        if (run / "checkpoints" / "latest.pt").exists():
            continue
        cmd = [sys.executable, "-m", "workflows", "train", "--data", str(data), "--out", str(run), "--minutes",
               str(args.minutes), "--set", f"train.batch_size={args.batch_size}", "--set", "train.threads=1",
               "--quiet"]
        procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT))
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"training failed: {p.args}")


def training(ckpt: Path) -> dict:
    """Optimizer steps and seconds the run got (its validation loss is not comparable across k:
    the targets are accelerations over different timesteps)."""
    blob = read_checkpoint(ckpt)
    return {"optimizer_steps": int(blob["step"]), "train_seconds": float(blob["extra"].get("elapsed_s", "nan"))}


def accuracy(ckpt: Path, data: Path) -> dict:
    ds = TrajectoryDataset.load(data)
    net, blob = load_model(ckpt, "forward", system=ds.system)
    episodes, _ = held_out_episodes(blob, ds, "validation")
    err = body_position_errors(net, ds, episodes, ds.steps)  # [E, T+1], over the whole episode
    out = {"episodes": len(episodes), "model_dt": ds.control_timestep}
    for s in SECONDS:
        step = round(s / ds.control_timestep)
        if step <= ds.steps:
            e = err[:, step]
            out[f"{s:g}s"] = {"mean": float(np.nanmean(e)), "median": float(np.nanmedian(e)),
                              "finite": bool(np.isfinite(e).all())}
    return out


def cost(ckpt: Path, batch: int, repeats: int) -> dict:
    """Forward + backward of a one-control-second rollout at ``batch``, one thread."""
    net, _ = load_model(ckpt, "forward", system="cartpole")
    dyn = LearnedDynamics(net, "cartpole")
    steps = round(0.96 / dyn.control_timestep)
    gen = torch.Generator().manual_seed(0)
    q0 = torch.zeros(batch, dyn.nq)
    v0 = 0.1 * torch.randn(batch, dyn.nv, generator=gen)
    base = torch.rand(batch, steps, dyn.nu, generator=gen) * 0.9
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        a = base.clone().requires_grad_(True)
        t0 = time.perf_counter()
        q, v = dyn.rollout(q0, v0, a)
        (q.square().sum() + v.square().sum()).backward()
        times.append(time.perf_counter() - t0)
    med = float(np.median(times[1:]))
    seconds = steps * dyn.control_timestep
    return {"model_steps_per_control_second": 1 / dyn.control_timestep, "batch": batch,
            "fwd_bwd_ms_per_control_second": 1e3 * med / seconds, "fwd_bwd_ms_per_model_step": 1e3 * med / steps}


def mpc(ckpt: Path, k: int, steps: int, seed: int) -> dict:
    out = plan_episodes("cartpole-swingup", str(ckpt), "gradient", 1, seed, steps=steps, progress=False)
    keep = ("return_mean", "mean_latency_s", "real_time_factor", "horizon", "replan_every", "steps", "options")
    return {key: out[key] for key in keep}


def markdown(report: dict) -> str:
    m, p = report["machine"], report["protocol"]
    lines = [
        "# Coarse model steps (action repeat k): accuracy per control second vs cost, cartpole",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, one thread per job; load average "
        f"{report['load_before'][0]:.1f} before, {report['load_after'][0]:.1f} after (the machine was shared).",
        f"Data: {p['episodes']} episodes x {p['control_steps']} control steps (dt {p['dt']:g} s), seed {p['seed']}, "
        f"per k; each model trained {p['minutes']:g} min (batch {p['batch_size']}, all k at once). Errors: mean "
        f"body-position error [m] of open-loop rollouts from the first state of the "
        f"{report['results'][str(p['ks'][0])]['accuracy']['episodes']} held-out episodes. Cost: forward + backward "
        f"per control second of rollout at batch {p['cost_batch']}, one thread.",
        "",
        "| k | model dt [s] | optimizer steps | error @0.24 s | @0.48 s | @0.96 s | @2 s | "
        "fwd+bwd ms / control s | vs k=1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = report["results"][str(p["ks"][0])]["cost"]["fwd_bwd_ms_per_control_second"]
    for k in p["ks"]:
        r = report["results"][str(k)]
        acc, c, tr = r["accuracy"], r["cost"], r["training"]
        errs = [f"{acc[key]['mean']:.4f}" if key in acc and acc[key]["finite"] else
                ("diverged" if key in acc else "-") for key in (f"{s:g}s" for s in SECONDS)]
        lines.append(f"| {k} | {acc['model_dt']:g} | {tr['optimizer_steps']} | " + " | ".join(errs)
                     + f" | {c['fwd_bwd_ms_per_control_second']:.0f} | "
                     f"{base / c['fwd_bwd_ms_per_control_second']:.1f}x |")
    if report.get("mpc"):
        lines += ["", f"Gradient MPC, cartpole swing-up in true MuJoCo, {p['mpc_steps']} control steps "
                  f"({p['mpc_steps'] * p['dt']:g} s, one episode, seed {p['seed']}), the task's default planner "
                  "(horizon 120 control steps, 8 restarts x 5 iterations), replanning every k steps:", "",
                  "| k | model steps planned | decision latency [s] | real-time factor | return |",
                  "|---|---|---|---|---|"]
        for k, r in report["mpc"].items():
            lines.append(f"| {k} | {r['horizon'] // int(k)} | {r['mean_latency_s']:.3f} | "
                         f"{r['real_time_factor']:.3f} | {r['return_mean']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default=str(ROOT / "runs" / "coarse"))
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--control-steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=12.0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--cost-batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--mpc-steps", type=int, default=0, help="gradient-MPC episode length (0: skip)")
    p.add_argument("--mpc-ks", type=int, nargs="+", default=[2, 4])
    p.add_argument("--out", default=str(ROOT / "results" / "coarse.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    runs = {k: prepare(args, k) for k in args.ks}
    train_all(args, runs)
    dt = TrajectoryDataset.load(runs[args.ks[0]][0]).meta.get("base_control_timestep") or \
        TrajectoryDataset.load(runs[args.ks[0]][0]).control_timestep
    results = {}
    for k, (data, run) in runs.items():
        ckpt = run / "checkpoints" / "latest.pt"
        results[str(k)] = {"accuracy": accuracy(ckpt, data), "cost": cost(ckpt, args.cost_batch, args.repeats),
                           "training": training(ckpt)}
        print(k, results[str(k)], flush=True)
    report = {"machine": machine_info(threads=1), "load_before": load_before,
              "protocol": {"ks": args.ks, "episodes": args.episodes, "control_steps": args.control_steps,
                           "seed": args.seed, "minutes": args.minutes, "batch_size": args.batch_size,
                           "cost_batch": args.cost_batch, "dt": dt, "mpc_steps": args.mpc_steps},
              "results": results, "mpc": {}}
    for k in args.mpc_ks if args.mpc_steps else []:
        report["mpc"][str(k)] = mpc(runs[k][1] / "checkpoints" / "latest.pt", k, args.mpc_steps, args.seed)
        print("mpc", k, report["mpc"][str(k)], flush=True)
    report["load_after"] = os.getloadavg()
    atomic_write_json(args.out, report)
    atomic_write_text(Path(args.out).with_suffix(".md"), markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
