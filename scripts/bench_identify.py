"""System identification benchmark: physical parameters of MuJoCo systems from 0.5, 1 and 2 s of
observed motion, through a learned model, against the truth.

For each system and learned model, trials draw the true parameters (each body's mass, its inertia
with it, and each dof's damping scaled by its own factor) inside the training ranges (factors in
[0.85, 1.18]) and at their edges (each factor 0.8 or 1.25), roll out 2 s of MuJoCo from the data
generator's initial states and smooth random controls, and identify masses and damping (gears
known) from the first 0.5, 1 and 2 s. Writes ``results/identify.json`` and ``results/identify.md``.

    python scripts/bench_identify.py --model cartpole=pretrained:cartpole --model acrobot=PATH [--trials 4]
    python scripts/bench_identify.py --mpc [CASE ...]   # adaptive MPC (added to the same report)
    python scripts/bench_identify.py --mpc arm-hold --cells adaptive   # only those cells, the rest kept
    python scripts/bench_identify.py --signal           # what a 5% error of each parameter changes

Identifiability (``--signal``, no model needed: it replays the recorded trials' truths, starts and
controls in MuJoCo): per parameter, the RMS change of the one-step accelerations over the first
second when that parameter alone is 5% off, in the identification loss's units (each dof's
observed acceleration spread), divided by the RMS of the learned model's residual at its fit (the
square root of the recorded loss). Below 1, a 5% error of that parameter changes the predictions
less than the model's own error does, so no fit through that model can be expected to pin it to 5%.

Adaptive MPC (``--mpc``): each case (:data:`MPC_CASES`: cartpole swing-up with the policy-guided
gradient planner on the shipped k = 8 model at issue 15's settings; the arm-hold example with CEM
on its GN from ``scripts/bench_examples.py``) in true MuJoCo with every body's mass scaled by 1.25
and by 0.8, 10 episodes (seeds 100-109) per cell: the model told the nominal masses, the true ones,
or identifying them online (``gndesign plan ... --adapt mass --refit-every N``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from envs.generate import rollout, smooth_random_actions
from envs.systems import get_system
from gndesign.datasets.trajectories import write_dataset
from gndesign.identify import KEEP
from gndesign.io import atomic_write_json, atomic_write_text, machine_info
from workflows.identify import identify_system
from workflows.plan import plan_episodes

ROOT = Path(__file__).resolve().parents[1]
REGIMES = {"inside": (0.85, 1.18), "edge": (0.8, 1.25)}
TASK_DATA = ROOT / "envs" / "task_data"
# Adaptive-MPC cases: the cartpole at issue 15's settings, and the arm-hold example (its GN from
# scripts/bench_examples.py, the task file's CEM settings), where holding the hand up against gravity
# depends on the masses.
MPC_CASES = {
    "cartpole-swingup": {"task": "cartpole-swingup", "model": "pretrained:cartpole-k8",
                         "policy": "pretrained:cartpole-policy", "planner": "gradient", "horizon": 64,
                         "replan_every": 8, "options": {"iterations": 2, "restarts": 4}, "refit_every": 96},
    "arm-hold": {"task": str(TASK_DATA / "arm-hold.yaml"), "system": str(TASK_DATA / "arm-vertical.xml"),
                 "model": str(ROOT / "runs" / "examples" / "arm-hold" / "gn" / "checkpoints" / "latest.pt"),
                 "policy": None, "planner": "cem", "horizon": None, "replan_every": None, "options": None,
                 "refit_every": 25},
}
MPC = {"scales": (1.25, 0.8), "episodes": 10, "seed": 100}
SECONDS = (0.5, 1.0, 2.0)


def true_params(system, regime: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    lo, hi = REGIMES[regime]
    draw = (lambda n: rng.uniform(lo, hi, n)) if regime == "inside" else (lambda n: rng.choice([lo, hi], n))
    p = system.nominal_params()
    mass, damp = draw(system.nbody), draw(system.nv)
    p["body_mass"] *= mass
    p["body_inertia"] *= mass[:, None]
    p["dof_damping"] *= damp
    return p


def trial(system, model: str, regime: str, seed: int, work: Path, restarts: int, keep: float | None = None) -> dict:
    rng = np.random.default_rng(seed)
    params = true_params(system, regime, rng)
    mj = system.make_model(params)
    q0, v0 = system.initial_state(mj, rng)
    steps = int(round(max(SECONDS) / system.control_timestep))
    actions = smooth_random_actions(rng, steps, system.ctrlrange())
    qpos, qvel = rollout(system, mj, q0, v0, actions)
    data = work / f"{system.name}-{regime}-{seed}"
    write_dataset(data, system=system.name, mjcf=system.mjcf, assets=system.assets, timestep=system.timestep,
                  control_timestep=system.control_timestep, n_substeps=system.n_substeps, qpos=qpos[None],
                  qvel=qvel[None], action=actions[None], params={k: v[None] for k, v in params.items()},
                  nbody=system.nbody, overwrite=True)
    out = {"regime": regime, "seed": seed, "by_seconds": {}}
    for s in SECONDS:
        r = identify_system(model, str(data), "mass,damping", restarts=restarts, seconds=s, seed=seed, keep=keep)
        out["by_seconds"][str(s)] = {"wall_s": r["wall_s"], "loss": r["loss"], "parameters": [
            {k: p[k] for k in ("name", "group", "nominal", "truth", "estimate", "error", "std", "spread")}
            for p in r["parameters"]]}
    return out


def one_step_accelerations(system, params: dict, qpos: np.ndarray, qvel: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """``[T, nv]``: MuJoCo's accelerations over one control step from each observed state, with ``params``."""
    mj = system.make_model(params)
    nxt = np.stack([rollout(system, mj, qpos[t], qvel[t], actions[t:t + 1])[1][-1] for t in range(len(actions))])
    return (nxt - qvel[:len(actions)]) / system.control_timestep


def signal(system, record: dict, seconds: float = 1.0, rel: float = 0.05) -> dict[str, float]:
    """Per parameter of a recorded trial: the RMS change of the normalized one-step accelerations
    when it alone is ``rel`` off (MuJoCo, the trial's truth, start and controls), over the RMS of
    the learned model's residual at its fit (``sqrt`` of the recorded loss: with a trimmed fit, over
    the transitions it kept)."""
    import mujoco

    rng = np.random.default_rng(record["seed"])
    params = true_params(system, record["regime"], rng)
    mj = system.make_model(params)
    q0, v0 = system.initial_state(mj, rng)
    actions = smooth_random_actions(rng, int(round(max(SECONDS) / system.control_timestep)), system.ctrlrange())
    qpos, qvel = rollout(system, mj, q0, v0, actions)
    T = int(round(seconds / system.control_timestep))
    base = one_step_accelerations(system, params, qpos, qvel, actions[:T])
    scale = np.clip(base.std(0), 1e-6, None)
    fit = record["by_seconds"][str(seconds)]
    residual = float(np.sqrt(fit["loss"]))
    out = {}
    for p in fit["parameters"]:
        key, label = p["name"][:-1].split("[")
        if key == "body_mass":
            idx = mujoco.mj_name2id(mj, mujoco.mjtObj.mjOBJ_BODY, label)
        else:
            idx = int(mj.jnt_dofadr[mujoco.mj_name2id(mj, mujoco.mjtObj.mjOBJ_JOINT, label)])
        changed = {k: np.array(v, copy=True) for k, v in params.items()}
        changed[key][idx] *= 1 + rel
        if key == "body_mass":
            changed["body_inertia"][idx] *= 1 + rel
        delta = (one_step_accelerations(system, changed, qpos, qvel, actions[:T]) - base) / scale
        out[p["name"]] = float(np.sqrt(np.mean(delta ** 2))) / residual
    return out


def summarize(trials: list[dict]) -> dict:
    """Per regime, seconds and parameter: mean and max |relative error|, and the mean wall time."""
    out: dict = {}
    for t in trials:
        for s, r in t["by_seconds"].items():
            cell = out.setdefault(t["regime"], {}).setdefault(s, {"wall_s": [], "errors": {}})
            cell["wall_s"].append(r["wall_s"])
            for p in r["parameters"]:
                cell["errors"].setdefault(p["name"], []).append(abs(p["error"]))
    for regime in out.values():
        for s, cell in regime.items():
            regime[s] = {"wall_s": float(np.mean(cell["wall_s"])),
                         "mean_abs_error": {n: float(np.mean(e)) for n, e in cell["errors"].items()},
                         "max_abs_error": {n: float(np.max(e)) for n, e in cell["errors"].items()}}
    return out


CELLS = ("nominal", "adaptive", "true")


def adaptive_mpc(case: str, episodes: int, cells: tuple[str, ...] = CELLS, old: dict | None = None) -> dict:
    """The adaptive-MPC cells of one case: per mass scale, nominal / adaptive / true parameters. Only
    ``cells`` run; the others are taken from ``old`` (an earlier record of the case with the same
    settings, e.g. to re-run only the adaptive cells after a change to identification)."""
    from envs.tasks import get_task

    m = dict(MPC_CASES[case], **MPC)
    out = {"settings": dict(m, episodes=episodes), "cells": {}}
    if set(cells) != set(CELLS):
        same = old is not None and json.loads(json.dumps(out["settings"])) == old.get("settings")
        if not same:
            raise SystemExit(f"--cells {' '.join(cells)}: no earlier record of {case} with these settings to take "
                             "the other cells from; run all cells")
        out["cells"] = {k: v for k, v in old["cells"].items() if k.rsplit("/", 1)[1] not in cells}
    task = get_task(m["task"], system=m.get("system"))
    for scale in m["scales"]:
        for cell in cells:
            t0 = time.perf_counter()
            r = plan_episodes(task, m["model"], m["planner"], episodes, m["seed"], None, m["replan_every"],
                              m["horizon"], m["options"], progress=False, policy=m["policy"],
                              lockstep=1 if cell == "adaptive" else episodes, scale_params={"mass": scale},
                              known_params=cell == "true", adapt="mass" if cell == "adaptive" else None,
                              refit_every=m["refit_every"])
            row = {"returns": [e["return"] for e in r["episodes"]], "return_mean": r["return_mean"],
                   "return_std": r["return_std"], "mean_latency_s": r["mean_latency_s"],
                   "wall_s": time.perf_counter() - t0}
            if cell == "adaptive":
                last = [e["refits"][-1] for e in r["episodes"]]
                row["final_factor_error"] = {n: float(np.mean([abs(f["factors"][n] / scale - 1) for f in last]))
                                             for n in last[0]["factors"]}
                row["refit_wall_s"] = float(np.mean([f["wall_s"] for e in r["episodes"] for f in e["refits"]]))
                row["refits_per_episode"] = len(r["episodes"][0]["refits"])
            out["cells"][f"mass x{scale}/{cell}"] = row
            print(f"{case} mass x{scale} {cell}: {row['return_mean']:.1f} +- {row['return_std']:.1f}", flush=True)
    return out


def mpc_markdown(case: str, res: dict) -> list[str]:
    s = res["settings"]
    how = (f"guided by {s['policy']}" if s["policy"] else "no policy") + (
        f", {s['planner']} {s['options']}" if s["options"] else f", {s['planner']} with the task file's settings")
    lines = [f"### Adaptive MPC: {case}", "", f"{s['episodes']} episodes (seeds {s['seed']}-"
             f"{s['seed'] + s['episodes'] - 1}), true MuJoCo with every body's mass scaled; model {s['model']} "
             f"({how}); adaptive: masses identified every {s['refit_every']} control steps from all the steps "
             "seen.", "",
             "| masses | nominal | adaptive | true given | adaptive / true | final mass error (adaptive) |",
             "|---|---|---|---|---|---|"]
    for scale in s["scales"]:
        c = {k: res["cells"][f"mass x{scale}/{k}"] for k in ("nominal", "adaptive", "true")}
        errs = ", ".join(f"{n} {100 * e:.1f}%" for n, e in c["adaptive"]["final_factor_error"].items())
        lines.append(f"| x{scale} | " + " | ".join(f"{c[k]['return_mean']:.1f} +- {c[k]['return_std']:.1f}"
                                                  for k in ("nominal", "adaptive", "true"))
                     + f" | {c['adaptive']['return_mean'] / c['true']['return_mean']:.3f} | {errs} |")
    return lines + [""]


def markdown(result: dict) -> str:
    lines = [f"Machine: {result['machine'].get('cores')} cores, torch {result['machine'].get('torch')}.", "",
             "Identification of masses and damping (gears known) from MuJoCo trajectories through a learned "
             "model; mean |relative error| over the trials per regime (max in brackets). Inside: factors in "
             "[0.85, 1.18]; edge: each factor 0.8 or 1.25 (the training ranges' edges). Target: masses and "
             "damping within 5% from 1 s (inside).", ""]
    for name, sysres in result["systems"].items():
        recorded = sysres.get("trials")  # each system's own trials (a merged report holds several runs)
        trials = len(recorded) // len({t["regime"] for t in recorded}) if recorded else result["trials"]
        restarts = sysres.get("restarts", result["restarts"])
        keep = sysres.get("keep", 1.0)  # records before the trimmed fit: plain least squares
        fit = "least squares" if keep == 1 else f"least trimmed squares, {100 * keep:.0f}% kept"
        lines += [f"### {name} ({sysres['model']}; {trials} trials per regime, {restarts} restarts, {fit})", ""]
        params = list(next(iter(next(iter(sysres["summary"].values())).values()))["mean_abs_error"])
        lines += ["| regime | seconds | " + " | ".join(params) + " | wall s |",
                  "|---|---|" + "---|" * len(params) + "---|"]
        for regime, by_s in sysres["summary"].items():
            for s, cell in by_s.items():
                errs = " | ".join(f"{100 * cell['mean_abs_error'][p]:.2f}% ({100 * cell['max_abs_error'][p]:.1f}%)"
                                  for p in params)
                lines.append(f"| {regime} | {s} | {errs} | {cell['wall_s']:.1f} |")
        lines.append("")
        if "signal" in sysres:
            sig = sysres["signal"]
            lines += ["Identifiability from 1 s (`--signal`): a 5% error's change of the one-step accelerations over "
                      "the model's residual at the fit (over the transitions it kept; mean over the inside trials; "
                      "below 1: the model's error is larger).", "",
                      "| " + " | ".join(params) + " |", "|" + "---|" * len(params),
                      "| " + " | ".join(f"{sig[p]:.3g}" for p in params) + " |", ""]
    for case, res in result.get("adaptive_mpc", {}).items():
        lines += mpc_markdown(case, res)
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mpc", nargs="*", choices=list(MPC_CASES), metavar="CASE",
                   help="run the adaptive-MPC cells instead (all cases without names; kept apart in --out)")
    p.add_argument("--episodes", type=int, default=MPC["episodes"], help="with --mpc: episodes per cell")
    p.add_argument("--cells", nargs="+", choices=CELLS, default=list(CELLS),
                   help="with --mpc: run only these cells, the others kept from the recorded run (same settings)")
    p.add_argument("--model", action="append", metavar="SYSTEM=CHECKPOINT",
                   help="a system and a learned model of it that takes physical parameters as inputs (repeatable)")
    p.add_argument("--signal", action="store_true",
                   help="add each recorded system's identifiability (MuJoCo replays of its trials; no model)")
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--restarts", type=int, default=4)
    p.add_argument("--keep", type=float, help="fraction of the transitions each fit keeps (default: identify's, "
                   "0.8; 1: plain least squares)")
    p.add_argument("--out", default=str(ROOT / "results" / "identify.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    old = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    if args.mpc is not None:
        if "settings" in old.get("adaptive_mpc", {}):  # the first layout: one case, cartpole
            old["adaptive_mpc"] = {"cartpole-swingup": old["adaptive_mpc"]}
        for case in args.mpc or list(MPC_CASES):
            before = old.get("adaptive_mpc", {}).get(case)
            old.setdefault("adaptive_mpc", {})[case] = adaptive_mpc(case, args.episodes, tuple(args.cells), before) | {
                "machine": machine_info(threads=1)}
            atomic_write_json(args.out, old)
            print("\n".join(mpc_markdown(case, old["adaptive_mpc"][case])))
        if "systems" in old:
            atomic_write_text(Path(args.out).with_suffix(".md"), markdown(old))
        return
    if args.signal:
        for name, sysres in old.get("systems", {}).items():
            system = get_system(name)
            rows = [signal(system, t) for t in sysres["trials"] if t["regime"] == "inside"]
            sysres["signal"] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
            print(name, sysres["signal"], flush=True)
        atomic_write_json(args.out, old)
        atomic_write_text(Path(args.out).with_suffix(".md"), markdown(old))
        return
    if not args.model:
        p.error("--model SYSTEM=CHECKPOINT is required (or --mpc)")
    # Systems not named here keep their recorded rows (their own trials, and their run's restarts).
    kept = {k: {"restarts": old.get("restarts")} | v for k, v in old.get("systems", {}).items()}
    result = {"machine": machine_info(), "trials": args.trials, "restarts": args.restarts, "seconds": SECONDS,
              "regimes": REGIMES, "systems": kept}
    if "adaptive_mpc" in old:
        result["adaptive_mpc"] = old["adaptive_mpc"]
    with tempfile.TemporaryDirectory() as tmp:
        for item in args.model:
            name, _, ckpt = item.partition("=")
            system = get_system(name)
            t0 = time.perf_counter()
            trials = [trial(system, ckpt, regime, 1000 * i + k, Path(tmp), args.restarts, args.keep)
                      for k, regime in enumerate(REGIMES) for i in range(args.trials)]
            result["systems"][name] = {"model": ckpt, "trials": trials, "summary": summarize(trials),
                                       "total_s": time.perf_counter() - t0, "restarts": args.restarts,
                                       "keep": args.keep or KEEP}
            print(f"{name}: {result['systems'][name]['total_s']:.0f} s", flush=True)
            atomic_write_json(args.out, result)
    atomic_write_json(args.out, result)
    atomic_write_text(Path(args.out).with_suffix(".md"), markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
