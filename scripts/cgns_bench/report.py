"""The benchmark's report: the JSON document, the targets, the markdown and the figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import scene_of
from .protocol import (
    CARTPOLE_OPTIONS,
    COMMON,
    NOISE_REL,
    NOISE_SE,
    PARTICLE_OPTIONS,
    PENETRATION_TARGET,
    RATIO_TARGET,
    SOLVER,
)


def assemble(args, systems: list[str], data: dict, training: dict, results: dict) -> dict:
    """The report's machine, settings, training runs, configuration differences, evaluations and targets."""
    from gndesign.io import machine_info

    report = {
        "machine": machine_info(threads_per_job=1),
        "settings": {"quick": args.quick, "workers": args.workers, "minutes": args.minutes,
                     "particle_minutes": args.particle_minutes,
                     "solver_iterations": int(SOLVER[0].split("=")[1]),
                     "solver": next((v["config"]["solver"] for v in training.values() if v["model"] == "cgns"), None),
                     "sweep": sorted(args.sweep),
                     "constraint_iterations": args.constraint_iterations, "weights": args.weights,
                     "sweep_episodes": args.sweep_episodes, "obstacle": args.obstacle,
                     "layouts": args.layouts, "wall": args.wall, "wall_steps": args.wall_steps,
                     "cross_by": args.cross_by, "data": data, "options": {"particles": PARTICLE_OPTIONS,
                                                                          "cartpole": CARTPOLE_OPTIONS,
                                                                          "common": COMMON, "solver": SOLVER},
                     "noise": f"max({NOISE_SE:g} paired standard errors, {NOISE_REL:g} x the error)",
                     "targets": {"ratio": RATIO_TARGET, "penetration_radii": PENETRATION_TARGET}},
        "training": {k: {kk: vv for kk, vv in v.items() if kk != "config"} for k, v in training.items()},
        "config_differences": {s: config_differences(training[f"{s}-forward"]["config"],
                                                     training[f"{s}-cgns"]["config"]) for s in systems},
        "eval": results,
    }
    report["targets"] = targets(report)
    return report


def config_differences(a: dict, b: dict) -> list[str]:
    """Model and train options that differ between two runs' configurations (the C-GNS adds its solver)."""
    diffs = []
    for section in ("data", "model", "train"):
        x, y = a.get(section), b.get(section)
        if isinstance(x, dict) and isinstance(y, dict):
            diffs += [f"{section}.{k}: {x.get(k)} vs {y.get(k)}" for k in sorted(set(x) | set(y))
                      if x.get(k) != y.get(k)]
        elif x != y:
            diffs.append(f"{section}: {x} vs {y}")
    return diffs


def targets(r: dict) -> dict:
    ev = r["eval"]
    t = {}
    for system, e in (("particles", ev.get("particle-errors")), ("cartpole", ev.get("cartpole-errors"))):
        if not e:
            continue
        t[f"{system}: C-GNS error <= 1.5x forward"] = all(v <= RATIO_TARGET for v in e["ratio"].values())
        if "ratio_steps" in e:
            t[f"{system}: C-GNS error <= 1.5x forward at equal optimizer steps (not the issue's target: equal "
              "training budget)"] = all(v <= RATIO_TARGET for v in e["ratio_steps"].values())
        t[f"{system}: more iterations never worse by more than noise"] = e["sweep_summary"]["all_within_noise"]
    po = ev.get("particle-obstacle")
    if po:
        t["particles: the forward simulator passes through the unseen obstacle (max > 10% of the radius)"] = \
            po["runs"]["forward"]["max_radii"] > PENETRATION_TARGET
        for run in ordered_runs(po):
            if "spec" in run:
                t[f"particles: penetration <= 10% of the radius with the balls reaching the obstacle, C-GNS + "
                  f"constraint, weight {run['weight']:g}, {run['iterations']} iterations"] = run["held_back"]
    return t


def ordered_runs(section: dict) -> list[dict]:
    """Ground truth, forward, C-GNS, then the constrained C-GNS by weight and iterations."""
    rank = {"mujoco": 0, "forward": 1}
    runs = list(section["runs"].values())
    return sorted(runs, key=lambda r: (rank.get(r["model"], 2), "spec" in r, r.get("weight", 0),
                                       r.get("iterations", 0)))


def markdown(r: dict) -> str:
    m, s = r["machine"], r["settings"]
    tr = r["training"]
    lines = ["# C-GNS benchmark", "",
             f"Machine: {m['cores']} cores ({m['cpu']}), torch {m['torch']}, one thread per job "
             f"({_jobs(s.get('workers', 2))} at a time); "
             f"Python {m['python']}. Total time {r['total_seconds'] / 60:.1f} min."
             + (" **--quick smoke run: tiny data and budgets, the numbers mean nothing.**" if s["quick"] else ""), "",
             f"Training: the same data, architecture, optimizer options and seed for both models of a system, "
             f"{s['minutes']:g} min of wall-clock time each (particles: {s['particle_minutes']:g} min), one thread; "
             f"the C-GNS unrolls {s['solver_iterations']} solver iterations"
             + (f" (in training a number drawn uniformly from {s['solver']['iterations_min']} to "
                f"{s['solver']['iterations']} for every solve, solver.iterations_min)"
                if s.get("solver", {}).get("iterations_min") else "") + ". "
             + ("The two models of a system trained at the same time on the shared machine. "
                if s.get("workers", 2) > 1 else "One job at a time (the machine's other core was busy with other "
                "work). ")
             + "Equal steps: the forward model trained again for as many optimizer steps as the C-GNS made in "
             "its time (the learning rate decaying over them), to separate the C-GNS's cost per step from its "
             "accuracy per step.", "",
             "| system | model | steps | seconds | final validation loss |", "|---|---|---|---|---|"]
    for j in tr.values():
        sm = j["summary"]
        val = f"{sm['val_loss']:.4g}" if "val_loss" in sm else "-"
        model = f"{j['model']} (equal steps)" if j.get("steps") else j["model"]
        lines.append(f"| {j['system']} | {model} | {sm.get('step', '-')} | {sm.get('seconds', 0):.0f} | {val} |")
    diffs = r.get("config_differences", {})
    if any(diffs.values()):
        lines += ["", "Configuration differences between the two models: "
                  + "; ".join(f"{k}: {', '.join(v)}" for k, v in diffs.items() if v)]
    ev = r["eval"]
    pe, ce = ev.get("particle-errors"), ev.get("cartpole-errors")
    lines += ["", "## 1. Unconstrained rollout error, C-GNS vs forward GN simulator", ""]
    if pe:
        hs = pe["horizons"]
        lines += [f"Particles ({pe['episodes']} validation episodes of {pe['steps']} frames from rest, mean |x_pred - "
                  f"x_true| [m]; particles left where they start: {pe['baseline_mean_error']:.3f} m):", "",
                  "| model | " + " | ".join(f"frame {h}" for h in hs) + " | mean over frames |",
                  "|---|" + "---|" * (len(hs) + 1)]
        rows = [("forward GN (equal time)", pe["forward"])]
        if "forward_steps" in pe:
            rows.append((f"forward GN (equal steps: {pe['forward_steps']['train_steps']})", pe["forward_steps"]))
        rows.append((f"C-GNS ({pe['trained_iterations']} iterations)", pe["cgns"]))
        for name, e in rows:
            lines.append(f"| {name} | " + " | ".join(f"{e['position_error'][str(h)]:.4f}" for h in hs)
                         + f" | {e['mean_position_error']:.4f} |")
        for name, key in (("ratio, equal time", "ratio"), ("ratio, equal steps", "ratio_steps")):
            if key in pe:
                lines.append(f"| **{name}** | " + " | ".join(f"**{pe[key][f'frame {h}']:.2f}**" for h in hs)
                             + f" | **{pe[key]['mean_position_error']:.2f}** |")
        lines.append("")
    if ce:
        hs = ce["horizons"]
        lines += [f"Cartpole ({ce['episodes']} test episodes, open loop under the recorded actions, four start times "
                  "each; body position error [m]):", "",
                  "| model | one-step loss | " + " | ".join(f"h={h}" for h in hs) + " |",
                  "|---|---|" + "---|" * len(hs)]
        rows = [("forward GN (equal time)", ce["forward"])]
        if "forward_steps" in ce:
            rows.append((f"forward GN (equal steps: {ce['forward_steps']['train_steps']})", ce["forward_steps"]))
        rows.append((f"C-GNS ({ce['trained_iterations']} iterations)", ce["cgns"]))
        for name, e in rows:
            lines.append(f"| {name} | {e['one_step_loss']:.4g} | "
                         + " | ".join(f"{e['body_pos_error'][str(h)]:.4f}" for h in hs) + " |")
        for name, key in (("ratio, equal time", "ratio"), ("ratio, equal steps", "ratio_steps")):
            if key in ce:
                lines.append(f"| **{name}** | | " + " | ".join(f"**{ce[key][f'h={h}']:.2f}**" for h in hs) + " |")
        lines.append("")
    lines += ["## 2. Error vs test-time solver iterations (C-GNS)", "",
              "Mean error over the rollout, per episode, averaged. \"Max increase\": the largest increase from fewer "
              f"to more iterations over all pairs; noise = max({NOISE_SE:g} paired standard errors, "
              f"{NOISE_REL:.0%} of the error).", ""]
    for label, e, key in (("particles", pe, "mean_position_error"), ("cartpole", ce, "mean_body_pos_error")):
        if not e:
            continue
        its = [n for n in sorted(e["sweep"], key=int) if int(n) in s["sweep"]]
        mi, wv = e["sweep_summary"]["max_increase"], e["sweep_summary"]["worst_vs_noise"]
        lines += [f"| {label} | " + " | ".join(f"{n} it." for n in its) + " | max increase |",
                  "|---|" + "---|" * (len(its) + 1),
                  "| error [m] | " + " | ".join(f"{e['sweep'][n][key]:.4f}" for n in its)
                  + (f" | {mi['increase']:+.4f} m ({mi['from']} -> {mi['to']} it., {mi['relative']:+.1%}; noise "
                     f"{mi['noise']:.4f}) |" if mi else " | - |"), ""]
        if wv and wv is not mi and (wv["from"], wv["to"]) != (mi["from"], mi["to"]):
            lines += [f"Farthest beyond noise: {wv['from']} -> {wv['to']} iterations, {wv['increase']:+.4f} m "
                      f"(noise {wv['noise']:.4f}).", ""]
    po, cw = ev.get("particle-obstacle"), ev.get("cartpole-wall")
    lines += ["## 3. Test-time constraints the models never saw", ""]
    if po:
        lines += [f"Particles: `{po['constraint']}` in the stream of {po['particles']} balls falling from the source "
                  f"box, {po['layouts']} layouts (seeds 0-{po['layouts'] - 1}), {po['frames']} frames, the default "
                  "design. Penetration of the balls' surface into the obstacle in particle radii: max over balls and "
                  "frames, mean over all ball-frames, mean over the penetrating ones; the fraction of balls that "
                  "ever enter it and that come within half a radius of it (touching); how far the balls fell on "
                  "average; and how far the constraint moved the balls before they first came near the obstacle "
                  "in the unconstrained C-GNS rollout (disturbance: what it should leave alone). Held back: max <= "
                  "10% of the radius with at least half as many balls touching it as the forward simulator sends "
                  "into it.", "",
                  "| rollout | max | mean | mean when inside | entering | touching | mean drop [m] | disturbance "
                  "| held back |", "|---|---|---|---|---|---|---|---|---|"]
        for run in ordered_runs(po):
            dist = f"{run['disturbance_radii']:.3f}" if "disturbance_radii" in run else "-"
            held = ("yes" if run["held_back"] else "no") if "held_back" in run else "-"
            lines.append(f"| {_label(run)} | **{run['max_radii']:.3f}** | {run['mean_radii']:.4f} | "
                         f"{run['mean_inside_radii']:.3f} | {run['entering']:.0%} | {run['touching']:.0%} | "
                         f"{run['mean_drop_m']:.2f} | {dist} | {held} |")
        lines += ["", f"![particles held back by an unseen obstacle]({r['figure_name']})", ""]
    if cw:
        lines += [f"Cartpole: `{cw['constraint']}` on the {len(cw['episodes'])} test episodes (of "
                  f"{cw['test_episodes']}) whose MuJoCo trajectory starts short of the wall and crosses it by at "
                  f"least {cw['cross_by']:g} m within {cw['steps']} steps; recorded actions replayed open loop. "
                  "Violation [m] (max over episodes and steps; mean over all episode-steps), the fraction of "
                  "episodes in which the cart comes within 5 cm of the wall, and how far the constraint moved the "
                  "bodies before the unconstrained C-GNS's cart first came within 10 cm of it (disturbance):", ""]
        if cw["runs"]:
            lines += ["| rollout | max [m] | mean [m] | reaching | disturbance [m] |", "|---|---|---|---|---|"]
            for run in ordered_runs(cw):
                dist = f"{run['disturbance_m']:.4f}" if "disturbance_m" in run else "-"
                lines.append(f"| {_label(run)} | **{run['max']:.4f}** | {run['mean']:.4f} | {run['reaching']:.0%} "
                             f"| {dist} |")
        else:
            lines.append(cw.get("note", ""))
        lines.append("")
    lines += ["## Targets (issue 6)", ""]
    for k, v in r["targets"].items():
        lines.append(f"- {k}: **{'met' if v else 'missed'}**")
    return "\n".join(lines) + "\n"


def _jobs(n: int) -> str:
    return {1: "one job", 2: "two jobs"}.get(n, f"{n} jobs")


def _label(run: dict) -> str:
    if run["model"] == "mujoco":
        return "MuJoCo (ground truth)"
    if run["model"] == "forward":
        return "forward GN simulator"
    if "spec" not in run:
        return f"C-GNS, no constraint ({run['iterations']} it.)"
    return f"C-GNS + constraint, weight {run['weight']:g}, {run['iterations']} it."


def figure(arrays_path: Path, po: dict, data: dict, path: Path) -> Path:
    """Layout 0: the forward simulator, the C-GNS without and with the constraint (most iterations)."""
    from gndesign.constraint_sets import bind_constraints, constraint_terms
    from gndesign.constraints import ConstraintContext
    from gndesign.datasets.particles import ParticleDataset
    from gndesign.plotting import pyplot, save_figure
    from gndesign.specs import parse_constraints
    from workflows.figures import draw_particle_scene, draw_particles, particle_view

    plt = pyplot()
    ds = ParticleDataset.load(data["valid"])
    cfg = scene_of(ds)
    arr = np.load(arrays_path)
    # The constrained run that holds the balls back and disturbs the others least; else, of those whose
    # balls reach the obstacle, the one that penetrates least.
    enter = po["runs"]["forward"]["entering"]

    def rank(k):
        run = po["runs"][k]
        return (not run["held_back"], run["touching"] < 0.5 * enter,
                run.get("disturbance_radii", 0.0) if run["held_back"] else run["max_radii"])

    constrained = min((k for k, v in po["runs"].items() if "spec" in v), key=rank)
    names = ["forward", "cgns", constrained]
    terms = constraint_terms(bind_constraints(parse_constraints([po["runs"][constrained]["spec"]]),
                                              ConstraintContext(num_nodes=cfg.n_particles, dim=2,
                                                                margin=cfg.particle_radius)))
    xlim, ylim = particle_view(cfg, *(arr[n] for n in names))
    xs = np.concatenate([arr[n][..., 0].ravel() for n in names])  # the stream stays near the middle: zoom in
    xlim = (max(xlim[0], min(-1.0, float(xs.min()) - 0.3)), min(xlim[1], max(1.0, float(xs.max()) + 0.3)))
    fig, axes = plt.subplots(1, 3, figsize=(13, 5.2), squeeze=False, layout="constrained")
    for ax, n in zip(axes[0], names, strict=True):
        traj = arr[n]
        draw_particle_scene(ax, cfg, arr["obstacle"], terms, traj[0], xlim, ylim)
        for i in range(traj.shape[1]):
            ax.plot(traj[:, i, 0], traj[:, i, 1], "-", color="C0", lw=0.5, alpha=0.4)
        draw_particles(ax, traj[-1], cfg.particle_radius)
        run = po["runs"][n]
        ax.set_title(f"{_label(run)}\nmax penetration {run['max_radii']:.2f} radii, {run['touching']:.0%} of the balls "
                     "touch it", fontsize=9)
        ax.set_xlabel("x [m]")
    axes[0][0].set_ylabel("z [m]")
    fig.suptitle(f"Unseen obstacle `{po['runs'][constrained]['spec']}` (red): {cfg.n_particles} balls, "
                 f"{po['frames']} frames (traces and final positions, layout 0)", fontsize=10)
    return save_figure(fig, path)

