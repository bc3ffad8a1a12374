"""Speed of the learned dynamics: the reference path against the lean step, side by side in one run.

Writes ``results/speed.json`` and ``results/speed.md`` (with the machine: cores, torch version,
load average; one thread).

    python scripts/bench_speed.py                    # the full protocol (about 10 minutes)
    python scripts/bench_speed.py --quick            # tiny sizes (seconds): a smoke run

Rollout costs and inference rates for k = 1, 2, 4 (a k-step model steps k control steps at once,
:mod:`gndesign.coarse`), each against today's path (the reference path, k = 1) in the same run;
gradient MPC with the shipped k = 8 cartpole model (``pretrained:cartpole-k8``). The lean path
is the default (``GNDESIGN_LEAN=0`` or ``gndesign.lean.reference_path``
select the reference path, which this script does in-process for the "reference" columns).
Timings alternate the two paths and keep the best of the repeats (other processes share the cores).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gndesign.io import atomic_write_json, atomic_write_text, machine_info

ROOT = Path(__file__).resolve().parents[1]
PATHS = ("reference", "lean")


@contextlib.contextmanager
def path(which: str):
    """Select the reference path, the lean path or the compiled lean path for everything in the
    block (``GNDESIGN_LEAN``, ``GNDESIGN_COMPILE``)."""
    settings = {"GNDESIGN_LEAN": "0" if which == "reference" else "1",
                "GNDESIGN_COMPILE": "1" if which == "compiled" else "0"}
    before = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _model(name: str, k: int = 1):
    """A forward model (frozen): ``pretrained:NAME`` for a bare name, else a checkpoint path. With
    ``k > 1`` the same network stepping ``k`` control steps at once (its systems' model step
    ``k`` times longer, as a model trained on ``generate --action-repeat k`` has): a step's cost
    does not depend on the weights, so this times a k-step model (accuracy per k: results/coarse.md)."""
    from dataclasses import replace

    from gndesign.checkpoints import load_model

    model, _ = load_model(_checkpoint(name), "forward")
    for p in model.parameters():
        p.requires_grad_(False)
    if k != 1:
        for spec in list(model.systems.values()):
            model.add_system(replace(spec, control_timestep=spec.control_timestep * k, action_repeat=k))
    return model


def _checkpoint(name: str) -> str:
    return name if "/" in name or name.endswith(".pt") else f"pretrained:{name}"


def _states(model, system: str, batch: int, horizon: int, seed: int = 0):
    tree = model.tree(system)
    gen = torch.Generator().manual_seed(seed)
    q = torch.as_tensor(tree.qpos0, dtype=torch.float32) + 0.1 * torch.randn(batch, tree.nq, generator=gen)
    v = 0.1 * torch.randn(batch, tree.nv, generator=gen)
    lo, hi = (torch.as_tensor(tree.ctrlrange[:, i], dtype=torch.float32) for i in (0, 1))
    a = lo + (hi - lo) * torch.rand(batch, horizon, tree.nu, generator=gen)
    return q, v, a


def _best(fns: dict, repeats: int, first: dict | None = None) -> dict:
    """The best time of ``repeats`` calls of each function, the functions interleaved (``first``:
    receives the time of each function's warm-up call, e.g. a compilation)."""
    best = {k: float("inf") for k in fns}
    for k, f in fns.items():  # warm-up
        start = time.perf_counter()
        f()
        if first is not None:
            first[k] = time.perf_counter() - start
    for _ in range(repeats):
        for k, f in fns.items():
            start = time.perf_counter()
            f()
            best[k] = min(best[k], time.perf_counter() - start)
    return best


def rollout_cost(name: str, system: str, batch: int, horizon: int, repeats: int = 3,
                 paths: tuple = PATHS, k: int = 1) -> dict:
    """Forward+backward (gradients to the actions) of a ``horizon``-control-step rollout of a
    ``k``-step model: seconds per control second of rollout, each of ``paths`` (``compiled``: also
    its first call, the compilation)."""
    model = _model(name, k)
    q, v, a = _states(model, system, batch, horizon // k)
    a.requires_grad_(True)

    def run(which):
        def f():
            with path(which):
                qs, vs = model.rollout(q, v, a, system)
                (qs.pow(2).sum() + vs.pow(2).sum()).backward()
        return f

    first = {}
    best = _best({w: run(w) for w in paths}, repeats, first)
    control_s = horizon // k * model.builder(system).control_timestep
    out = {f"{w}_s_per_control_s": best[w] / control_s for w in paths}
    out.update(batch=batch, horizon=horizon, k=k, model_steps=horizon // k, speedup=best["reference"] / best["lean"])
    if "compiled" in paths:
        out.update(compiled_speedup=best["reference"] / best["compiled"], compiled_first_call_s=first["compiled"])
    return out


def inference_rate(name: str, system: str, batch: int, horizon: int, repeats: int = 2, ks: tuple = (1,)) -> dict:
    """Batched inference (no gradients): control seconds simulated per wall second of today's path
    (reference, k = 1), the lean path with ``k``-step models, and MuJoCo (``mujoco.rollout``, one
    thread) from the same states over the same ``horizon`` control steps."""
    from envs.mujoco_dynamics import MujocoDynamics
    from envs.systems import get_system

    models = {k: _model(name, k) for k in ks}
    q, v, a = _states(models[1], system, batch, horizon)
    mj = MujocoDynamics(get_system(system), threads=1)

    def run(which, k):
        def f():
            with path(which), torch.no_grad():
                models[k].rollout(q, v, a[:, ::k], system)  # the first action of each k held k steps
        return f

    fns = {"reference": run("reference", 1), **{f"lean_k{k}": run("lean", k) for k in ks}}
    fns["mujoco"] = lambda: mj.rollout(q, v, a)
    best = _best(fns, repeats)
    control_s = batch * horizon * models[1].builder(system).control_timestep
    out = {f"{w}_control_s_per_s": control_s / best[w] for w in fns}
    out.update(batch=batch, horizon=horizon, ks=list(ks),
               lean_vs_mujoco={k: best["mujoco"] / best[f"lean_k{k}"] for k in ks})
    return out


# Training: today's path (reference, the default batch) against the lean one at a larger batch (more
# graphs/s; measured against batches 256-2048 side by side: its validation loss after equal time was
# the lowest after 100 CPU seconds, not after 60, so the default batch stays 256).
TRAIN_REFERENCE = {"batch": 256, "lr": 1e-3}
TRAIN_LEAN = {"batch": 1024, "lr": 2e-3}


def train_child(which: str, data: str, seconds: float, batch: int, lr: float) -> dict:
    """(In a child process, one thread.) Train for ``seconds`` of wall time on path ``which``: optimizer
    steps, graphs per wall second and per CPU second (over the share of a core the process had),
    final validation loss."""
    from gndesign.config import load_config
    from gndesign.training import train

    overrides = [f"train.minutes={seconds / 60}", "train.steps=1000000", f"train.batch_size={batch}",
                 f"train.lr={lr}", "train.log_every=50", "train.eval_every=1000000",
                 "train.checkpoint_every=1000000", "model.latent_size=64", "model.mlp_hidden_size=64"]
    cfg = load_config(None, overrides)
    cfg.data = [data]
    cpu, wall = time.process_time(), time.perf_counter()
    with tempfile.TemporaryDirectory() as run, path(which):
        summary = train(cfg, Path(run) / "run", progress=False)
    # the share of a core this process had (other processes share the machine)
    share = (time.process_time() - cpu) / (time.perf_counter() - wall)
    graphs_per_s = summary["step"] * batch / summary["seconds"]
    return {"batch": batch, "lr": lr, "steps": summary["step"], "seconds": summary["seconds"], "cpu_share": share,
            "graphs_per_s": graphs_per_s, "graphs_per_cpu_s": graphs_per_s / share,
            "val_loss": summary.get("val_loss")}


def training_rate(data: str, seconds: float, quick: bool = False, reference: dict | None = None,
                  lean: dict | None = None) -> dict:
    """Today's training path (reference, ``reference`` batch and learning rate) and the new one
    (lean, ``lean``'s) side by side: two child processes of one thread each, started together,
    each training ``seconds`` of wall time from the same seed. ``quick``: batches of 16 and 64."""
    runs = {"reference": dict(reference or TRAIN_REFERENCE), "lean": dict(lean or TRAIN_LEAN)}
    if quick:
        runs["reference"]["batch"], runs["lean"]["batch"] = 16, 64
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    procs = {w: subprocess.Popen([sys.executable, __file__, "--train-child", w, data, str(seconds), str(r["batch"]),
                                  str(r["lr"])], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for w, r in runs.items()}
    out = {}
    for w, proc in procs.items():
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"the {w} training run failed: {stderr.strip()[-2000:]}")
        out[w] = json.loads(stdout.strip().splitlines()[-1])
    out["seconds"] = seconds
    out["speedup"] = out["lean"]["graphs_per_s"] / out["reference"]["graphs_per_s"]
    out["cpu_speedup"] = out["lean"]["graphs_per_cpu_s"] / out["reference"]["graphs_per_cpu_s"]
    return out


def mpc(decisions: int, episodes: int, steps: int, seed: int = 100, horizon: int | None = None,
        compiled: bool = False, model_name: str = "cartpole") -> dict:
    """Gradient-MPC on cartpole-swingup with the task's default planner settings (``horizon``:
    override, for smoke runs): the median decision latency (the paths interleaved) and real-time
    factor from a reset state, and the return of ``episodes`` short episodes of ``steps`` control
    steps on the fastest path (the others compute the same function, see tests/test_lean.py).
    ``model_name``: a shipped model's name or a checkpoint (e.g. a k-step model: the planner then
    plans over ``H / k`` model steps)."""
    from envs.control import DmControlEnvironment
    from envs.tasks import get_task
    from gndesign.coarse import model_action_repeat
    from gndesign.dynamics import LearnedDynamics
    from planners import make_planner
    from workflows.plan import plan_episodes

    task = get_task("cartpole-swingup")
    model = _model(model_name)
    k = model_action_repeat(model)
    q, v = DmControlEnvironment(task, seed=seed).reset()
    H = horizon or task.planning_horizon
    out = {"model": model_name, "k": k, "horizon": H, "options": task.planner_options["gradient"]}
    paths = PATHS + (("compiled",) if compiled else ())
    planners = {w: make_planner("gradient", LearnedDynamics(model, task.system.name), task.cost, H, seed=seed,
                                **task.planner_options["gradient"]) for w in paths}
    times = {w: [] for w in paths}
    for _ in range(decisions + 1):  # the paths interleaved; the first decision (warm-up) is not counted
        for w in paths:
            with path(w):
                start = time.perf_counter()
                planners[w].plan(q, v)
                times[w].append(time.perf_counter() - start)
    for w in paths:
        lat = float(np.median(times[w][1:]))
        out[w] = {"latency_s": lat, "mean_latency_s": float(np.mean(times[w][1:])),
                  "real_time_factor": task.system.control_timestep / lat,
                  # replanning every k control steps: a decision covers k control steps
                  "real_time_factor_replan_k": k * task.system.control_timestep / lat}
    if episodes:
        which = "compiled" if compiled else "lean"
        with path(which):
            ep = plan_episodes("cartpole-swingup", _checkpoint(model_name), "gradient", episodes, seed, steps=steps,
                               horizon=H, progress=False, lockstep=episodes)
        out[which].update(episode_steps=steps, episodes=episodes, return_mean=ep["return_mean"],
                          returns=[e["return"] for e in ep["episodes"]], episode_latency_s=ep["mean_latency_s"])
    return out


def particle_cost(frames: int, batch: int = 1, repeats: int = 1) -> dict:
    """Forward+backward (gradients to the obstacle's vertices) of a ``frames``-frame checkpointed
    rollout of the shipped obstacle-scene model, today's (reference) path and the lean path side by
    side: the median of ``repeats`` interleaved runs each (``s_fwd_bwd``: the reference path's)."""
    import statistics

    from gndesign.checkpoints import load_model

    model, _ = load_model("pretrained:obstacle", "particles")
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    xs, zs = torch.linspace(-1.0, 1.0, 10), torch.linspace(2.0, 2.6, 6)
    grid = torch.stack(torch.meshgrid(xs, zs, indexing="ij"), -1).reshape(-1, 2)
    pos = grid[None] + 0.01 * torch.randn(batch, grid.shape[0], 2, generator=gen)
    obs = (torch.tensor([[-1.0, 1.2], [0.0, 1.0], [1.0, 1.3]]) + 0.05 * torch.randn(batch, 3, 2, generator=gen))
    obs.requires_grad_(True)

    def run(which, dtype=torch.float32):
        def f():
            v = obs.detach().to(dtype).requires_grad_(True)
            with path(which):
                out = model.to(dtype).rollout(pos.to(dtype), v, frames, checkpoint=True)
                out.pow(2).mean().backward()
            return out.detach(), v.grad
        return f

    for w in PATHS:
        run(w)()  # warm-up
    times = {w: [] for w in PATHS}
    for _ in range(repeats):
        for w in PATHS:
            start = time.perf_counter()
            run(w)()
            times[w].append(time.perf_counter() - start)
    med = {w: statistics.median(t) for w, t in times.items()}
    # The paths agree in float64; in float32 a 150-frame rollout's gradient is mostly rounding noise
    # (neighbours appear at a radius: the float32 and float64 reference gradients differ by as much).
    (x64, g64), (xl, gl), (_, g32) = run("reference", torch.float64)(), run("lean", torch.float64)(), run("reference")()
    model.float()
    return {"frames": frames, "particles": grid.shape[0], "batch": batch, "repeats": repeats,
            "s_fwd_bwd": med["reference"], "reference_s_fwd_bwd": med["reference"], "lean_s_fwd_bwd": med["lean"],
            "speedup": med["reference"] / med["lean"],
            "float64_max_abs_position_difference": float((xl - x64).abs().max()),
            "float64_max_abs_grad_difference": float((gl - g64).abs().max()),
            "float64_max_abs_grad": float(g64.abs().max()),
            "float32_vs_float64_reference_max_abs_grad_difference": float((g32.double() - g64).abs().max())}


def compile_child(batch: int, horizon: int) -> dict:
    """(In a child process.) torch.compile of the lean cartpole step: compile time of the first
    forward+backward and the per-step cost against eager, same process."""
    import warnings

    model = _model("cartpole")
    q, v, a = _states(model, "cartpole", batch, horizon)
    a.requires_grad_(True)
    warnings.filterwarnings("ignore")

    def roll(which):
        def f():
            with path(which):
                qs, vs = model.rollout(q, v, a, "cartpole")
                (qs.pow(2).sum() + vs.pow(2).sum()).backward()
            return qs
        return f

    first = {}
    best = _best({"compiled": roll("compiled"), "lean": roll("lean")}, 3, first)
    diff = float((roll("compiled")() - roll("lean")()).abs().max())
    return {"first_call_s": first["compiled"], "eager_s_per_step": best["lean"] / horizon,
            "compiled_s_per_step": best["compiled"] / horizon, "speedup": best["lean"] / best["compiled"],
            "max_abs_difference": diff}


def compile_measure(batch: int, horizon: int, timeout: float) -> dict:
    """Two fresh processes sharing one TorchInductor cache directory: a cold start, then a warm one."""
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache, OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
        for run in ("cold", "warm"):
            cmd = [sys.executable, __file__, "--compile-child", str(batch), str(horizon)]
            try:
                res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
                out[run] = json.loads(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 else {
                    "error": res.stderr.strip().splitlines()[-1:] or ["failed"]}
            except subprocess.TimeoutExpired:
                out[run] = {"error": f"no result within {timeout:.0f} s"}
            if "error" in out[run]:
                break  # no warm start without a cold one
    return out


def make_train_data(out: Path, episodes: int = 40, steps: int = 100) -> str:
    """A cartpole dataset for the training comparison (generated once)."""
    from envs.generate import generate_dataset

    if not (out / "meta.json").exists():
        generate_dataset("cartpole", episodes=episodes, steps=steps, seed=0, out_dir=out, workers=1, progress=False)
    return str(out)


KS = (1, 2, 4)
#: The k-step cartpole model shipped for fast MPC (scripts/make_pretrained.py --only cartpole-k8).
MPC_MODEL = "cartpole-k8"


def run_all(quick: bool = False, train_data: str | None = None, train_seconds: float = 60.0,
            compile_timeout: float = 240.0, mpc_episodes: int = 3) -> dict:
    """Every measurement (``quick``: tiny sizes for a smoke run). "Today's path" is the reference
    path at k = 1; every row is compared with it, measured in the same run."""
    H = 8 if quick else 48  # control steps: a multiple of every k
    ks = (1, 2) if quick else KS
    report = {"machine": machine_info(threads=1, load_average=list(os.getloadavg())), "ks": list(ks),
              "note": "today's path = the reference path with one learned step per control step (k = 1)"}
    report["rollout"] = {}
    for n in ("cartpole", "swimmer6"):
        for b in (8,) if quick else (8, 64):
            for k in ks:
                paths = PATHS + (("compiled",) if (n, b, quick) == ("cartpole", 8, False) else ())
                row = rollout_cost(n, n, b, H, 1 if quick else 3, paths, k)
                today = report["rollout"].get(f"{n}/b{b}/k1", row)["reference_s_per_control_s"]
                row.update({f"{w}_vs_today": today / row[f"{w}_s_per_control_s"] for w in paths})
                report["rollout"][f"{n}/b{b}/k{k}"] = row
    report["inference"] = {n: inference_rate(n, n, 16 if quick else 1024, H // 2 if quick else 24,
                                             1 if quick else 2, ks) for n in ("cartpole", "swimmer6")}
    if train_data:
        report["training"] = training_rate(train_data, train_seconds, quick)
    report["mpc"] = {"k1": mpc(1 if quick else 5, 0, 0, horizon=8 if quick else None),
                     "k8": mpc(1 if quick else 5, 1 if quick else mpc_episodes, 16 if quick else 1000,
                               horizon=16 if quick else None, compiled=not quick, model_name=MPC_MODEL)}
    report["particles"] = particle_cost(3 if quick else 150, 1, 1 if quick else 5)
    if not quick:
        report["compile"] = compile_measure(8, 20, compile_timeout)
    report["machine"]["load_average_end"] = list(os.getloadavg())
    return report


def markdown(r: dict) -> str:
    m = r["machine"]
    la = ", ".join(f"{x:.2f}" for x in m["load_average"])
    lines = [f"Machine: {m['cores']} cores ({m['cpu']}), torch {m['torch']}, one thread; load average at the start "
             f"{la}, at the end {', '.join(f'{x:.2f}' for x in m.get('load_average_end', []))}. All figures from "
             f"one run; {r['note']}. A k-step row times the same network stepping k control steps at once (a "
             "step's cost does not depend on the weights; the accuracy of each k: results/coarse.md).", "",
             "| rollout fwd+bwd (s per control s) | k | reference | lean | compiled | lean vs today | "
             "compiled vs today |", "|---|---|---|---|---|---|---|"]
    for key, x in r["rollout"].items():
        comp = (f"{x['compiled_s_per_control_s']:.4f} (first call {x['compiled_first_call_s']:.0f} s)"
                if "compiled_s_per_control_s" in x else "")
        comp_vs = f"{x['compiled_vs_today']:.1f}x" if "compiled_vs_today" in x else ""
        lines.append(f"| {key.rsplit('/', 1)[0]} (H={x['horizon']} control steps) | {x['k']} | "
                     f"{x['reference_s_per_control_s']:.4f} | {x['lean_s_per_control_s']:.4f} | {comp} | "
                     f"{x['lean_vs_today']:.1f}x | {comp_vs} |")
    lines += ["", "| inference (control s per wall s) | today (reference, k=1) | "
              + " | ".join(f"lean k={k}" for k in r["ks"]) + " | MuJoCo (1 thread) | best lean / MuJoCo |",
              "|---|---|" + "---|" * len(r["ks"]) + "---|---|"]
    for n, x in r["inference"].items():
        best = max(x["lean_vs_mujoco"].values())
        lines.append(f"| {n} batch {x['batch']} | {x['reference_control_s_per_s']:.1f} | "
                     + " | ".join(f"{x[f'lean_k{k}_control_s_per_s']:.1f}" for k in r["ks"])
                     + f" | {x['mujoco_control_s_per_s']:.1f} | {best:.2f}x |")
    if "training" in r:
        lines += ["", training_markdown(r["training"])]
    lines += ["", "Gradient MPC, cartpole-swingup, the task's default planner (horizon 120 control steps, "
              "8 restarts x 5 iterations); latency: median over decisions from one reset state:", "",
              "| model | path | median decision latency (s) | real-time factor (replanning every k) | "
              "return (episodes x control steps) |", "|---|---|---|---|---|"]
    for p in r["mpc"].values():
        for w in [w for w in ("reference", "lean", "compiled") if w in p]:
            x = p[w]
            ret = (f"{x['return_mean']:.1f} ({x['episodes']} x {x['episode_steps']}: "
                   + ", ".join(f"{v:.1f}" for v in x["returns"]) + ")" if "return_mean" in x else "-")
            lines.append(f"| {p['model']} (k={p['k']}) | {w} | {x['latency_s']:.3f} | "
                         f"{x['real_time_factor_replan_k']:.3f} | {ret} |")
    q = r["particles"]
    lines += ["", f"Particles (pretrained:obstacle, {q['particles']} particles, {q['frames']} frames, batch "
              f"{q['batch']}, `checkpoint=True`, median of {q['repeats']}): forward+backward reference "
              f"{q['reference_s_fwd_bwd']:.2f} s, lean {q['lean_s_fwd_bwd']:.2f} s: {q['speedup']:.2f}x. In float64 "
              f"the paths' obstacle gradients differ by {q['float64_max_abs_grad_difference']:.1e} (largest entry "
              f"{q['float64_max_abs_grad']:.1e}; float32 against float64 on the reference path: "
              f"{q['float32_vs_float64_reference_max_abs_grad_difference']:.1e})."]
    if "compile" in r:
        c = r["compile"]
        lines += ["", "torch.compile of the lean cartpole step (batch 8, 20-step rollouts fwd+bwd, fresh processes "
                  "sharing one TorchInductor cache; `GNDESIGN_COMPILE=1`):",
                  "",
                  "| start | first call (s) | eager (ms/step) | compiled (ms/step) | speed-up |",
                  "|---|---|---|---|---|"]
        for run, x in c.items():
            lines.append(f"| {run} | {x['first_call_s']:.1f} | {1e3 * x['eager_s_per_step']:.2f} | "
                         f"{1e3 * x['compiled_s_per_step']:.2f} | {x['speedup']:.2f}x |" if "error" not in x
                         else f"| {run} | {x['error']} | | | |")
    return "\n".join(lines) + "\n"


def training_markdown(t: dict) -> str:
    lines = [f"| training ({t['seconds']:.0f} s each, side by side) | batch | lr | graphs/s | graphs per CPU s | "
             "validation loss | optimizer steps |", "|---|---|---|---|---|---|---|"]
    for w in PATHS:
        x = t[w]
        lines.append(f"| {w} | {x['batch']} | {x['lr']:g} | {x['graphs_per_s']:.0f} | {x['graphs_per_cpu_s']:.0f} | "
                     f"{x['val_loss']:.4g} | {x['steps']} |")
    return "\n".join(lines) + (f"\n\nTraining speed-up: {t['speedup']:.2f}x graphs per wall second, "
                               f"{t['cpu_speedup']:.2f}x per CPU second (today's path: reference, batch "
                               f"{t['reference']['batch']}; new: lean, batch {t['lean']['batch']}).")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--train-child":
        torch.set_num_threads(1)
        w, data, seconds, batch, lr = sys.argv[2:7]
        print(json.dumps(train_child(w, data, float(seconds), int(batch), float(lr))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--compile-child":
        torch.set_num_threads(1)
        print(json.dumps(compile_child(int(sys.argv[2]), int(sys.argv[3]))))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    p.add_argument("--train-data", help="a cartpole trajectory dataset for the training comparison (default: "
                   "generate 40 episodes x 100 steps under data/bench_speed_cartpole)")
    p.add_argument("--train-seconds", type=float, default=60.0,
                   help="wall time of each training run (the two paths run side by side)")
    p.add_argument("--training-only", action="store_true",
                   help="only the training comparison (written to --out only when --out is given)")
    p.add_argument("--train-batch", type=int, default=TRAIN_LEAN["batch"], help="the lean run's batch size")
    p.add_argument("--train-lr", type=float, default=TRAIN_LEAN["lr"], help="the lean run's learning rate")
    p.add_argument("--compile-timeout", type=float, default=240.0)
    p.add_argument("--out", help="the report (default: results/speed.json; with --particles: printed only)")
    p.add_argument("--mpc-model", help="only the gradient-MPC decision latency (reference, lean and compiled "
                   "paths, 10 decisions) with this cartpole checkpoint, e.g. a k-step model")
    p.add_argument("--particles", type=int, metavar="REPEATS",
                   help="only the particle rollout (reference against lean, 150 frames), median of REPEATS runs")
    p.add_argument("--particle-batch", type=int, default=1, help="scenes per particle rollout (with --particles)")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.particles:
        report = {"machine": machine_info(threads=1, load_average=list(os.getloadavg())),
                  "particles": particle_cost(150, args.particle_batch, args.particles)}
        report["machine"]["load_average_end"] = list(os.getloadavg())
        if args.out:
            atomic_write_json(args.out, report)
        print(json.dumps(report, indent=1))
        return
    args.out = args.out or str(ROOT / "results" / "speed.json")
    if args.mpc_model:
        report = {"machine": machine_info(threads=1, load_average=list(os.getloadavg())), "model": args.mpc_model,
                  "mpc": mpc(10, 0, 0, compiled=True, model_name=args.mpc_model)}
        report["machine"]["load_average_end"] = list(os.getloadavg())
        atomic_write_json(args.out, report)
        print(json.dumps(report["mpc"], indent=1))
        return
    data = args.train_data or make_train_data(ROOT / "data" / "bench_speed_cartpole")
    if args.training_only:
        report = {"machine": machine_info(threads=1, load_average=list(os.getloadavg())), "data": data,
                  "training": training_rate(data, args.train_seconds, args.quick,
                                            lean={"batch": args.train_batch, "lr": args.train_lr})}
        report["machine"]["load_average_end"] = list(os.getloadavg())
        if "--out" in sys.argv[1:] or any(a.startswith("--out=") for a in sys.argv[1:]):
            atomic_write_json(args.out, report)
        print(training_markdown(report["training"]) + "\n" + json.dumps(report, indent=1))
        return
    report = run_all(args.quick, data, args.train_seconds, args.compile_timeout)
    atomic_write_json(args.out, report)
    atomic_write_text(Path(args.out).with_suffix(".md"), markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
