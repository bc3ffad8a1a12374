"""Design benchmark: gradient design through the learned particle model vs CEM and random search.

Writes ``results/design.json``, ``results/design.md`` (with the machine) and ``results/design.png``
(a designed obstacle with its MuJoCo particle traces).

    python scripts/bench_design.py                           # the protocol below (~25 min on one core)
    python scripts/bench_design.py --targets 1.5 --grad-iterations 5 --out /tmp/bench   # a smoke run

Protocol, per target bin centre (the scene's ``BENCHMARK_TARGETS``), from the scene's default design
and the same initial ball layout (``--seed``), every final design re-simulated and scored in MuJoCo
(the fraction of balls inside the bin, the number that counts):

* ``initial``: the default design, no optimization;
* ``gradient``: Adam through the learned rollout, ``G`` iterations of 4 restarts, after a screen of
  64 random designs that picks 3 of the restarts' starts (ranked on a quarter of the balls, the best
  ``--screen-keep`` of them on all balls; ``--screen-keep 0``: all 64 on all balls);
* ``screen-learned``: the ablation: the gradient's screen alone (the same 64 designs and the default
  design, scored with the learned model, the best kept), no descent;
* ``cem-learned-calls``: CEM on the learned model with **as many learned rollouts** as the gradient
  run (``G + 1``; population about ``sqrt(G + 1)``);
* ``cem-learned``: CEM on the learned model with the **same wall-clock time** as the gradient run
  on that target (forward rollouts are batched and need no backward pass, so CEM gets several
  times more learned rollouts than the gradient run; on a shared machine the time is noisy);
* ``cem-mujoco``: CEM on MuJoCo with ``10 (G + 1)`` simulator calls, or (``--time-factor F``)
  with ``F`` times the gradient run's wall-clock time;
* ``random-mujoco``: random search on MuJoCo with ``10 (G + 1)`` calls (chains: smooth random designs,
  :func:`envs.obstacle.simulation.smooth_designs`, as the gradient's screen draws);
* ``gradient-refined``: the gradient run refined ``--refine-rounds`` rounds (``workflows.refine``:
  each round's design, and with ``--verify N`` its N - 1 runners-up by the learned objective, simulated in MuJoCo
  from 4 layouts, the model fine-tuned (``workflows.refine.FINE_TUNE``) on those trajectories plus a replay of its
  training data ``--refine-data``, the design continued from the best of them); its result is the verified
  design that scored best in MuJoCo; its
  time, calls and rollouts are all rounds' together, fine-tuning included. Per round the predicted
  and MuJoCo scores are recorded (chains of any K: the fine-tuning sees the new K's obstacle as nodes
  at the model's training spacing; not bars).

Design spaces (issue 17): ``--segments K`` (a chain of K segments, total length fixed) and
``--obstacle bars`` (K free bars, 3 K parameters). ``--transfer K ...`` measures instead how the
learned model's rollouts of random designs compare with MuJoCo's for each K (and for bars), with
the obstacle given as nodes at the training spacing and as the model's own nodes per segment.

Designs that reach into the balls' source region are refused by MuJoCo; they count as candidates
(the budget) but cost no MuJoCo call and never become the result. The learned model's rollout error
is measured on held-out episodes of random designs and on the designs the gradient run found.
Every run is cached in ``runs/bench_design/`` (``--cache``; ``--rerun`` repeats them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from envs.obstacle.problem import MINIBATCHES, load_design_model
from gndesign.io import atomic_write_json, atomic_write_text
from workflows.design import DESIGN_DEFAULTS, LOSS_DEFAULTS, design_obstacle
from workflows.refine import refined_best

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("gradient", "gradient-refined", "screen-learned", "cem-learned-calls", "cem-learned", "cem-mujoco",
           "random-mujoco")
LABELS = {"initial": "initial design", "gradient": "gradient (learned)",
          "gradient-refined": "gradient, model refined in the loop",
          "screen-learned": "the gradient's screen alone (learned)",
          "cem-learned-calls": "CEM (learned, same rollouts)", "cem-learned": "CEM (learned, same time)",
          "cem-mujoco": "CEM (MuJoCo, 10x calls)", "random-mujoco": "random (MuJoCo, 10x calls)"}


def loss_options(args) -> dict:
    """The gradient runs' learned-loss options (:data:`workflows.design.LOSS_DEFAULTS`) from the flags."""
    return {"particles": args.particles, "minibatch": args.minibatch, "grad_horizon": args.grad_horizon}


def run_method(method: str, target: float, args, cfg, grad: dict | None) -> dict:
    """One design run (``grad``: the gradient run on this target, which sets the others' budgets)."""
    model = args.model
    if method == "gradient":
        opts = {"iterations": args.grad_iterations, "lr": args.lr, "restarts": args.restarts,
                "screen": args.screen, "screen_keep": args.screen_keep}
        return design_obstacle("bin", target, optimizer="gradient", simulator="learned", model=model, seed=args.seed,
                               options=opts, cfg=cfg, loss=loss_options(args))
    if method == "gradient-refined":
        from workflows.refine import refine_design

        opts = {"lr": args.lr, "restarts": args.restarts, "screen": args.screen, "screen_keep": args.screen_keep}
        work = str(Path(args.cache) / f"{target:g}-refine")
        r = refine_design(target, args.refine_data, args.refine_rounds, model, work, iterations=args.grad_iterations,
                          seed=args.seed, options=opts, loss=loss_options(args), overwrite=True, segments=cfg.segments,
                          verify=args.verify)
        rows = r["rounds"]
        return {**refined_best(rows), "score_initial": grad["score_initial"], "rounds": rows, "verify": args.verify,
                "optimizer_seconds": sum(x["optimizer_seconds"] + x.get("fine_tune_seconds", 0.0) for x in rows),
                "learned_calls": sum(x["learned_calls"] for x in rows),
                "mujoco_calls": sum(x["mujoco_calls"] + x.get("new_episodes", 0) + x.get("verify_calls", 0)
                                    for x in rows)}
    if method == "screen-learned":  # the ablation: the gradient's screened designs, no descent
        n = args.screen
        return design_obstacle("bin", target, optimizer="random", simulator="learned", model=model, seed=args.seed,
                               options={"budget": n + 1, "batch": n + 1}, cfg=cfg)
    calls = args.mujoco_factor * grad["learned_calls"]
    pop = args.population
    if method == "cem-learned-calls":  # as many learned rollouts as the gradient run (forward only)
        n = grad["learned_calls"]
        small = max(4, round(n ** 0.5))
        opts = {"population": small, "elites": max(2, small // 4), "budget": n}
        return design_obstacle("bin", target, optimizer="cem", simulator="learned", model=model, seed=args.seed,
                               options=opts, cfg=cfg)
    if method == "cem-learned":
        opts = {"population": pop, "elites": args.elites, "iterations": 10**6, "max_seconds": grad["optimizer_seconds"]}
        return design_obstacle("bin", target, optimizer="cem", simulator="learned", model=model, seed=args.seed,
                               options=opts, cfg=cfg)
    if method == "cem-mujoco":
        opts = {"population": pop, "elites": args.elites, "budget": calls}
        if args.time_factor:
            opts = {"population": pop, "elites": args.elites, "iterations": 10**6,
                    "max_seconds": args.time_factor * grad["optimizer_seconds"]}
        return design_obstacle("bin", target, optimizer="cem", simulator="mujoco", seed=args.seed, options=opts,
                               cfg=cfg)
    if method == "random-mujoco":
        opts = {"budget": calls, "batch": pop}
        return design_obstacle("bin", target, optimizer="random", simulator="mujoco", seed=args.seed, options=opts,
                               cfg=cfg)
    raise ValueError(method)


def model_rollout_error(args, cfg, sim) -> dict:
    """Rollout error of the learned model on held-out episodes (random designs and layouts)."""
    from envs.obstacle.simulation import generate_obstacle_dataset
    from gndesign.datasets.particles import ParticleDataset
    from gndesign.particle_evaluation import particle_rollout_errors, summarize_particle_errors

    with tempfile.TemporaryDirectory() as tmp:
        generate_obstacle_dataset(cfg, Path(tmp) / "heldout", args.error_episodes, seed=args.error_seed)
        ds = ParticleDataset.load(Path(tmp) / "heldout")
        err = summarize_particle_errors(particle_rollout_errors(sim, ds))
    err["seed"] = args.error_seed
    return err


def transfer(args) -> dict:
    """Learned-vs-MuJoCo rollout error of random designs per design space (chain K, bars)."""
    from envs.obstacle.goals import get_design_goal
    from envs.obstacle.problem import DesignProblem
    from envs.obstacle.simulation import sample_design, simulate

    out = {}
    for space in args.transfer:
        obstacle, K = ("bars", int(space[4:])) if space.startswith("bars") else ("chain", int(space))
        sim, cfg = load_design_model(args.model, None, K, obstacle)
        rng = np.random.default_rng(args.error_seed)
        designs = np.stack([sample_design(cfg, rng) for _ in range(args.transfer_designs)])
        truth = simulate(cfg, designs, args.seed)
        goal = get_design_goal("bin", cfg, target_x=1.5)
        row = {}
        for nodes in ("spacing", "native") if obstacle == "chain" else ("spacing",):
            problem = DesignProblem(cfg, goal, args.seed, sim, nodes=nodes)
            with torch.no_grad():
                pred = problem.learned_rollout(torch.as_tensor(designs)).double().numpy()
            err = np.linalg.norm(pred - truth, axis=-1).mean(-1)  # [B, T+1]
            row[nodes] = {"mean_position_error": float(err.mean()), "final_position_error": float(err[:, -1].mean()),
                          "final_x_error": float(np.abs(pred[:, -1, :, 0] - truth[:, -1, :, 0]).mean())}
        out[space] = row
        print(space, json.dumps(row), flush=True)
    return out


def main() -> None:
    from envs.obstacle.goals import BENCHMARK_TARGETS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="pretrained:obstacle", help="particle model (checkpoint or pretrained:NAME)")
    p.add_argument("--targets", type=float, nargs="+", default=list(BENCHMARK_TARGETS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seed", type=int, default=0, help="initial ball layout and optimizer seeds")
    p.add_argument("--grad-iterations", type=int, default=DESIGN_DEFAULTS["gradient"]["iterations"])
    p.add_argument("--lr", type=float, default=DESIGN_DEFAULTS["gradient"]["lr"])
    p.add_argument("--population", type=int, default=DESIGN_DEFAULTS["cem"]["population"])
    p.add_argument("--elites", type=int, default=DESIGN_DEFAULTS["cem"]["elites"])
    p.add_argument("--mujoco-factor", type=int, default=10, help="MuJoCo calls per learned rollout of the gradient run")
    p.add_argument("--time-factor", type=float, default=0.0,
                   help="cem-mujoco gets this many times the gradient run's wall time instead of --mujoco-factor calls")
    p.add_argument("--segments", type=int, help="obstacle segments (chain) or bars K (default: the model's scene)")
    p.add_argument("--obstacle", choices=["chain", "bars"], help="design space (default: chain)")
    p.add_argument("--restarts", type=int, default=DESIGN_DEFAULTS["gradient"]["restarts"])
    p.add_argument("--screen", type=int, default=DESIGN_DEFAULTS["gradient"]["screen"],
                   help="designs the gradient screens before its descent (0: none)")
    p.add_argument("--screen-keep", type=int, default=DESIGN_DEFAULTS["gradient"]["screen_keep"],
                   help="screened designs scored with all balls after a first stage on a subset (0: all of them)")
    p.add_argument("--particles", type=int, default=LOSS_DEFAULTS["particles"], help="balls per gradient iteration")
    p.add_argument("--minibatch", choices=MINIBATCHES, default=LOSS_DEFAULTS["minibatch"],
                   help="how each gradient iteration's balls are drawn")
    p.add_argument("--grad-horizon", type=float, default=LOSS_DEFAULTS["grad_horizon"],
                   help="damp the gradient through time over this many frames (default: exact gradient)")
    p.add_argument("--refine-rounds", type=int, default=3, help="gradient-refined: refinement rounds")
    p.add_argument("--verify", type=int, default=1,
                   help="gradient-refined: designs verified in MuJoCo per round (the result and its runners-up)")
    p.add_argument("--refine-data", default=str(ROOT / "runs" / "pretrained" / "data" / "obstacle-train-1200-s0"),
                   help="gradient-refined: the model's training data (make_pretrained.py --only obstacle writes it)")
    p.add_argument("--transfer", nargs="+", metavar="K|barsK", help="only measure the model's error per design space")
    p.add_argument("--scaling", nargs="+", metavar="DESIGN_JSON",
                   help="only merge reports of several design spaces (design.json of runs with --segments K / "
                   "--obstacle bars) into OUT/design_scaling.{json,md,png}: mean score against K per method")
    p.add_argument("--transfer-designs", type=int, default=8)
    p.add_argument("--error-episodes", type=int, default=8, help="held-out episodes for the model's rollout error")
    p.add_argument("--error-seed", type=int, default=1000)
    p.add_argument("--figure-target", type=float, help="target whose gradient design goes into design.png")
    p.add_argument("--out", default=str(ROOT / "results"))
    p.add_argument("--cache", default=str(ROOT / "runs" / "bench_design"), help="per-run results (resumable)")
    p.add_argument("--rerun", action="store_true", help="ignore cached runs")
    args = p.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()

    out = Path(args.out)
    cache = Path(args.cache)
    if args.scaling:
        scaling(args.scaling, out)
        return
    if args.transfer:
        report = {"transfer": transfer(args), "model": args.model, "designs": args.transfer_designs,
                  "seconds": time.perf_counter() - start}
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "design_transfer.json", report)
        return
    sim, cfg = load_design_model(args.model, None, args.segments, args.obstacle)
    if "gradient-refined" in args.methods and cfg.obstacle != "chain":
        raise SystemExit(f"gradient-refined simulates chain designs (a particle dataset holds a chain): drop it from "
                         f"--methods for {cfg.obstacle}")
    report = {
        "machine": {"cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "python": platform.python_version(), "mujoco": __import__("mujoco").__version__,
                    "platform": platform.platform()},
        "protocol": {"model": args.model, "targets": args.targets, "seed": args.seed,
                     "gradient": dict(DESIGN_DEFAULTS["gradient"], iterations=args.grad_iterations, lr=args.lr,
                                      screen=args.screen, screen_keep=args.screen_keep),
                     "cem": dict(DESIGN_DEFAULTS["cem"], population=args.population, elites=args.elites),
                     "mujoco_factor": args.mujoco_factor, "time_factor": args.time_factor, "scene": cfg.to_dict(),
                     "restarts": args.restarts, "particles": args.particles, "minibatch": args.minibatch,
                     "grad_horizon": args.grad_horizon,
                     "budgets": "cem-learned-calls: the gradient run's learned rollouts; cem-learned: the gradient "
                                "run's wall-clock time; " + (
                                    f"cem-mujoco: {args.time_factor:g} x the gradient run's wall-clock time; "
                                    "random-mujoco: " if args.time_factor else "cem-mujoco and random-mujoco: ")
                                + f"{args.mujoco_factor} x the gradient run's learned rollouts in MuJoCo calls"},
        "runs": {},
    }
    for target in args.targets:
        runs = report["runs"].setdefault(f"{target:g}", {})
        grad = None
        for method in ("gradient",) + tuple(m for m in args.methods if m != "gradient"):
            path = cache / f"{target:g}-{method}.json"
            if path.exists() and not args.rerun:
                r = json.loads(path.read_text())
                if method == "gradient-refined":  # runs cached before the pick was the best round
                    r.update(refined_best(r["rounds"]))
            else:
                if method != "gradient" and grad is None:
                    raise SystemExit("the gradient run sets the other methods' budgets: include it")
                t0 = time.perf_counter()
                r = run_method(method, target, args, cfg, grad)
                r["wall_seconds"] = time.perf_counter() - t0
                atomic_write_json(path, r)
            if method == "gradient":
                grad = r
            runs[method] = r
            print(f"target {target:g} {method:>14}: MuJoCo score {r['score']:.2f} (initial {r['score_initial']:.2f}), "
                  f"{r['optimizer_seconds']:.0f} s, {r['learned_calls']} learned rollouts, "
                  f"{r['mujoco_calls']} MuJoCo calls", flush=True)
    t0 = time.perf_counter()
    if args.error_episodes > 0 and cfg.obstacle == "chain":
        report["model_error"] = model_rollout_error(args, cfg, sim)
    else:
        report["model_error"] = {}
    report["model_error"]["seconds"] = time.perf_counter() - t0
    report["summary"] = summarize(report)
    # The benchmark's cost: every run (cached ones included, as measured when they ran) plus the error check.
    report["total_seconds"] = (sum(r["wall_seconds"] for runs in report["runs"].values() for r in runs.values())
                               + report["model_error"]["seconds"])
    report["invocation_seconds"] = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "design.json", report)
    atomic_write_text(out / "design.md", markdown(report))
    fig_target = args.figure_target if args.figure_target is not None else args.targets[len(args.targets) // 2]
    if cfg.obstacle == "chain":
        figure(report["runs"][f"{fig_target:g}"]["gradient"], cfg, out / "design.png")
    print(markdown(report))


def summarize(report: dict) -> dict:
    runs = report["runs"]
    methods = ["initial"] + [m for m in METHODS if all(m in r for r in runs.values())]
    scores = {m: [r["gradient"]["score_initial"] if m == "initial" else r[m]["score"] for r in runs.values()]
              for m in methods}
    s = {"mean_score": {m: float(np.mean(v)) for m, v in scores.items()}, "scores": scores}
    for m in methods:
        if m == "initial":
            continue
        s.setdefault("mean_seconds", {})[m] = float(np.mean([r[m]["optimizer_seconds"] for r in runs.values()]))
        s.setdefault("mean_mujoco_calls", {})[m] = float(np.mean([r[m]["mujoco_calls"] for r in runs.values()]))
        s.setdefault("mean_learned_calls", {})[m] = float(np.mean([r[m]["learned_calls"] for r in runs.values()]))
    g = s["mean_score"].get("gradient")
    if g is not None:
        s["targets"] = {
            "gradient >= cem-mujoco (its budget above)": (g >= s["mean_score"]["cem-mujoco"]
                                                   if "cem-mujoco" in s["mean_score"] else None),
            "gradient > cem-learned (same time)": (g > s["mean_score"]["cem-learned"]
                                                   if "cem-learned" in s["mean_score"] else None),
            "gradient > cem-learned (same rollouts)": (g > s["mean_score"]["cem-learned-calls"]
                                                       if "cem-learned-calls" in s["mean_score"] else None),
            "gradient mean score >= 0.8": g >= 0.8,
        }
        s["model_error_on_gradient_designs"] = float(np.mean([r["gradient"]["model_error"] for r in runs.values()]))
        s["predicted_score_gradient"] = float(np.mean([r["gradient"]["predicted_score"] for r in runs.values()]))
        s["rollout_equivalents_per_iteration"] = float(np.mean([r["gradient"]["rollout_equivalents_per_iteration"]
                                                                for r in runs.values()]))
    if "gradient-refined" in methods:
        rounds = [r["gradient-refined"]["rounds"] for r in runs.values()]
        s["refinement"] = [{"round": i, "mean_score": float(np.mean([x[i]["score"] for x in rounds])),
                            "mean_predicted": float(np.mean([x[i]["predicted_score"] for x in rounds])),
                            "mean_abs_gap": float(np.mean([abs(x[i]["gap"]) for x in rounds])),
                            "mean_model_error": float(np.mean([x[i]["model_error"] for x in rounds])),
                            "mean_tuned_model_error": (float(np.mean([x[i]["tuned_model_error"] for x in rounds]))
                                                       if all("tuned_model_error" in x[i] for x in rounds) else None),
                            # with --verify: the best of the round's verified designs (the result and runners-up)
                            "mean_best_verified": (float(np.mean([max(v["score"] for v in x[i]["verified"])
                                                                  for x in rounds]))
                                                   if all(x[i].get("verified") for x in rounds) else None)}
                           for i in range(len(rounds[0]))]
    return s


def markdown(report: dict) -> str:
    s, m = report["summary"], report["machine"]
    methods = list(s["mean_score"])
    targets = list(report["runs"])
    lines = ["# Obstacle design benchmark", "",
             f"Machine: {m['cores']} cores, torch {m['torch']} ({m['threads']} thread), mujoco {m['mujoco']}, "
             f"Python {m['python']}. Model: `{report['protocol']['model']}`. Total time "
             f"{report.get('total_seconds', 0) / 60:.1f} min (sum of the runs, one core each; the machine was "
             "shared with other jobs).", "",
             f"Budgets: {report['protocol']['budgets']}.", "",
             "Settings: gradient " + json.dumps(report["protocol"]["gradient"]) + "; CEM "
             + json.dumps(report["protocol"]["cem"]) + " (the same objective: task loss + smoothness prior).", "",
             "MuJoCo score (fraction of the balls inside the bin) of the final design, per bin centre x [m]:", "",
             "| method | " + " | ".join(f"x={t}" for t in targets)
             + " | mean | time [s] | MuJoCo calls | learned rollouts |",
             "|---|" + "---|" * (len(targets) + 4)]
    for meth in methods:
        sc = s["scores"][meth]
        t = s.get("mean_seconds", {}).get(meth)
        calls = s.get("mean_mujoco_calls", {}).get(meth)
        lc = s.get("mean_learned_calls", {}).get(meth)
        label = (f"CEM (MuJoCo, {report['protocol']['time_factor']:g}x the gradient's time)"
                 if meth == "cem-mujoco" and report["protocol"].get("time_factor") else LABELS[meth])
        lines.append(f"| {label} | " + " | ".join(f"{v:.2f}" for v in sc) + f" | **{np.mean(sc):.2f}** | "
                     + (f"{t:.0f} | {calls:.0f} | {lc:.0f} |" if t is not None else "- | 1 | 0 |"))
    lines += ["", "Time: the optimizer's wall-clock time per target (mean; runs are cached, so methods may have been "
              "timed in different invocations under different loads of the shared machine). MuJoCo calls include "
              "re-simulating the final design; candidates that reach into the balls' source region count against "
              "the budget but are not simulated (MuJoCo refuses them). Rollouts are 150 frames of 100 balls.", ""]
    if "targets" in s:
        lines.append("Targets (issue 5):")
        for k, v in s["targets"].items():
            lines.append(f"- {k}: {'met' if v else 'missed' if v is not None else 'not run'}")
        lines.append("")
        lines.append(f"The learned model predicted a mean score of {s['predicted_score_gradient']:.2f} for the "
                     f"gradient designs (MuJoCo: {s['mean_score']['gradient']:.2f}); its mean particle position "
                     f"error on those rollouts is {s['model_error_on_gradient_designs']:.3f} m.")
    if "rollout_equivalents_per_iteration" in s:
        lines += ["", f"Gradient cost: {s['rollout_equivalents_per_iteration']:.2f} rollout-equivalents per iteration "
                  "(optimizer CPU time / (iterations x the CPU time of one full forward learned rollout of the restart "
                  "batch)); "
                  f"{report['protocol']['restarts']} restarts, {report['protocol']['particles']} balls per iteration "
                  f"({report['protocol'].get('minibatch', 'random')} minibatches"
                  + (f", the gradient damped through time over {report['protocol']['grad_horizon']:g} frames"
                     if report["protocol"].get("grad_horizon") else "") + ")."]
    if "refinement" in s:
        lines += ["", "Model refined in the loop, per round (mean over the targets): predicted vs MuJoCo score of the "
                  "round's design, |predicted - MuJoCo|, the model's mean particle position error on it, and the "
                  "error there of the model fine-tuned on it, the best MuJoCo score among the round's verified "
                  "designs (`--verify`; - : not recorded):", "",
                  "| round | MuJoCo score | predicted | mean abs gap | model error [m] | after fine-tuning on it [m] "
                  "| best verified |", "|---|---|---|---|---|---|---|"]
        opt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        lines += [f"| {x['round']} | {x['mean_score']:.2f} | {x['mean_predicted']:.2f} | {x['mean_abs_gap']:.3f} | "
                  f"{x['mean_model_error']:.3f} | {opt(x.get('mean_tuned_model_error'), '.3f')} | "
                  f"{opt(x.get('mean_best_verified'), '.2f')} |" for x in s["refinement"]]
    e = report.get("model_error")
    if e and "position_error" in e:
        hs = ", ".join(f"frame {h}: {v:.3f} m" for h, v in e["position_error"].items())
        lines += ["", f"Learned-model rollout error on {e['episodes']} held-out episodes of random designs "
                  f"({e['steps']} frames, from rest): {hs}; mean over frames {e['mean_position_error']:.3f} m "
                  f"(particles left where they start: {e['baseline_mean_error']:.3f} m)."]
    return "\n".join(lines) + "\n"


def scaling(paths: list[str], out: Path) -> dict:
    """Merge design reports of several design spaces: per space and method the mean and per-target
    MuJoCo scores and times, issue 17's verdict for spaces of 16 or more parameters (gradient, plain
    or refined, beats CEM on MuJoCo with 10x its time on at least 4 of 5 targets) and a figure of
    mean score against the number of parameters.

    Several reports of one space (the same targets) merge: a method takes its figures from the last
    report that has it (e.g. a newer model's gradient runs over the MuJoCo baselines of an older
    report, which do not depend on the model); ``sources`` records which report each came from."""
    rows = {}
    for path in paths:
        report = json.loads(Path(path).read_text())
        first = next(iter(report["runs"].values()))["gradient"]
        space = f"{first['obstacle']} K = {first['segments']} ({first['design_dim']} parameters)"
        summary = report["summary"]
        row = rows.setdefault(space, {"obstacle": first["obstacle"], "segments": first["segments"],
                                      "design_dim": first["design_dim"], "targets": list(report["runs"]),
                                      "scores": {}, "mean_score": {}, "mean_seconds": {}, "sources": {},
                                      "budgets": {}, "machines": {}})
        if list(report["runs"]) != row["targets"]:
            raise SystemExit(f"{path}: targets {list(report['runs'])} differ from {row['targets']} of the other "
                             f"{space} reports; merge only reports of the same targets")
        for method, scores in summary["scores"].items():
            row["scores"][method], row["mean_score"][method] = scores, summary["mean_score"][method]
            if method in summary.get("mean_seconds", {}):
                row["mean_seconds"][method] = summary["mean_seconds"][method]
            row["sources"][method] = str(path)
        row["budgets"][str(path)], row["machines"][str(path)] = report["protocol"]["budgets"], report["machine"]
    verdicts = []
    for space, r in rows.items():
        if r["design_dim"] < 16 or "cem-mujoco" not in r["scores"]:
            continue
        for method in ("gradient", "gradient-refined"):
            if method in r["scores"]:
                wins = sum(g > c for g, c in zip(r["scores"][method], r["scores"]["cem-mujoco"], strict=True))
                verdicts.append(f"{space}: {method} beats CEM on MuJoCo on {wins} of {len(r['targets'])} targets "
                                f"(target: at least 4): {'met' if wins >= 4 else 'MISSED'}")
    result = {"spaces": rows, "verdicts": verdicts}
    methods = sorted({m for r in rows.values() for m in r["mean_score"]} - {"initial"})
    lines = ["# Design spaces: MuJoCo score against the number of design parameters (issue 17)", "",
             "Per design space, the mean over the five bin targets of the final design's MuJoCo score (per-target "
             "scores, budgets, machines and the report each figure comes from in design_scaling.json).", "",
             "| design space | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for space, r in rows.items():
        lines.append(f"| {space} | " + " | ".join(f"{r['mean_score'][m]:.2f}" if m in r["mean_score"] else "-"
                                                 for m in methods) + " |")
    lines += ["", "Targets:", ""] + [f"- {v}" for v in verdicts] + ["", "Reports:", ""]
    lines += [f"- {space}: " + "; ".join(f"{m} from {src}" for m, src in r["sources"].items() if m != "initial")
              for space, r in rows.items()] + [""]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "design_scaling.json", result)
    atomic_write_text(out / "design_scaling.md", "\n".join(lines))
    from gndesign.plotting import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in methods:
        pts = sorted((r["design_dim"], r["mean_score"][m], r["obstacle"]) for r in rows.values()
                     if m in r["mean_score"])
        chain = [(d, sc) for d, sc, o in pts if o == "chain"]
        if chain:
            line, = ax.plot(*zip(*chain, strict=True), marker="o", label=m)
            bars = [(d, sc) for d, sc, o in pts if o == "bars"]
            if bars:
                ax.plot(*zip(*bars, strict=True), marker="s", linestyle="none", color=line.get_color())
    ax.set_xscale("log", base=2)
    ax.set_xlabel("design parameters (circles: chain of K segments; squares: K free bars, 3K)")
    ax.set_ylabel("mean MuJoCo score (5 bins)")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "design_scaling.png")
    print("\n".join(lines))
    return result


def figure(run: dict, cfg, path: Path) -> None:
    """Re-plot a run's initial and final design with their MuJoCo traces."""
    from envs.obstacle.scene import design_fk, initial_positions
    from envs.obstacle.simulation import simulate
    from gndesign.plotting import save_figure
    from workflows.figures import design_figure

    designs = np.array([run["initial_design"], run["design"]])
    traces = simulate(cfg, designs, initial_positions(cfg, run["seed"]))
    v = design_fk(torch.as_tensor(designs), cfg).numpy()
    lo, hi = run["region"]
    score = [float(((t[-1, :, 0] >= lo) & (t[-1, :, 0] <= hi)).mean()) for t in traces]
    fig = design_figure([{"title": f"initial design: {score[0]:.0%} in the bin", "obstacle": v[0], "traces": traces[0]},
                         {"title": f"gradient design (learned model): {score[1]:.0%} in the bin", "obstacle": v[1],
                          "traces": traces[1]}], (cfg.x_min, cfg.x_max), cfg.floor, (lo, hi),
                        f"bin at x={run['task']['target_x']:g}: MuJoCo traces")
    save_figure(fig, path)


if __name__ == "__main__":
    main()
