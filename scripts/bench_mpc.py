"""MPC benchmarks: {gradient, CEM, MPPI} x {learned model, MuJoCo oracle} on dm_control tasks.

Writes ``results/mpc.json`` and ``results/mpc.md`` (with the machine).

    python scripts/bench_mpc.py                                   # the issue's protocol
    python scripts/bench_mpc.py --tasks cartpole-swingup --episodes 2 --steps 300   # a shorter run
    python scripts/bench_mpc.py --sweep --episodes 5              # planned return vs iterations (open loop)
    python scripts/bench_mpc.py --policy-cells                    # issue 15: policy, guided MPC (results/mpc_policy)

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
# issue 15's cells per task: a coarse model, the policy learned through it, and the gradient planner at the guided
# planner's budget (cartpole: horizon 64 control steps = 8 model steps, 2 iterations x 4 restarts, replanning every
# 8; swimmer6: horizon 32 = 8 model steps of 4, replanning every 4), and the oracles of results/mpc.json.
POLICY_SETUPS = {
    "cartpole-swingup": {"system": "cartpole", "model": "pretrained:cartpole-k8",
                         "policy": "pretrained:cartpole-policy",
                         "horizon": 64, "replan_every": 8, "options": {"iterations": 2, "restarts": 4},
                         "lockstep": 10, "out": "mpc_policy.json",
                         "oracles": ("cartpole-swingup/mujoco/cem", "cartpole-swingup/mujoco/mppi")},
    # swimmer6's guided cells use the policy's plan as a restart but not its value (value_weight 0): with the
    # value the guided planner scored 440.0 at replanning every 8 (20 episodes in lockstep), without it 486.9.
    "swimmer6": {"system": "swimmer6", "model": "pretrained:swimmer6-k4", "policy": "pretrained:swimmer6-policy",
                 "value_weight": 0.0, "horizon": 32, "replan_every": 4, "options": {"iterations": 2, "restarts": 4},
                 "lockstep": 20, "out": "mpc_policy_swimmer6.json",
                 "oracles": ("swimmer6/mujoco/cem", "swimmer6/mujoco/mppi")},
}

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
    p.add_argument("--policy-cells", nargs="*", metavar="CELL", choices=list(POLICY_CELLS),
                   help="issue 15's cells (all without names): policy alone, policy-guided gradient MPC, "
                   "gradient MPC at the same budget, the guided planner one episode at a time (its latency); "
                   "written to --out (default results/mpc_policy.json, mpc_policy_swimmer6.json for swimmer6), "
                   "compared with the oracles in results/mpc.json")
    p.add_argument("--policy-task", choices=list(POLICY_SETUPS), default="cartpole-swingup",
                   help="the task of --policy-cells")
    p.add_argument("--out", help="default: results/mpc.json (results/mpc_policy.json with --policy-cells)")
    p.add_argument("--merge", nargs="+", metavar="JSON", help="merge reports of separate runs into --out and stop")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.policy_cells is not None:
        task = args.policy_task
        policy_cells(args.policy_cells or list(POLICY_CELLS), args.episodes or EPISODES[task], args.seed, args.steps,
                     Path(args.out or ROOT / "results" / POLICY_SETUPS[task]["out"]), task)
        return
    args.out = args.out or str(ROOT / "results" / "mpc.json")
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


def _flags(setup: dict) -> str:
    o = setup["options"]
    return (f"--horizon {setup['horizon']} --replan-every {setup['replan_every']} --set planner.iterations="
            f"{o['iterations']} --set planner.restarts={o['restarts']}")


def _plan_cell(guided: bool, one_at_a_time: bool = False, replan_factor: int = 1):
    """The gradient planner with the task's setup (replanning ``replan_factor`` times as seldom)."""
    def setup(task: str) -> dict:
        st = POLICY_SETUPS[task]
        return st | {"replan_every": st["replan_every"] * replan_factor}

    def run(task: str, episodes: int, seed: int, steps: int | None) -> dict:
        st = setup(task)
        return plan_episodes(task, st["model"], "gradient", episodes, seed, steps, st["replan_every"], st["horizon"],
                             options=st["options"], progress=False,
                             lockstep=1 if one_at_a_time else min(st["lockstep"], episodes),
                             policy=st["policy"] if guided else None,
                             value_weight=st.get("value_weight", 1.0) if guided else 1.0)

    def command(task: str) -> str:
        st = setup(task)
        policy = f" --policy {st['policy']}" if guided else ""
        if guided and st.get("value_weight", 1.0) != 1.0:
            policy += f" --value-weight {st['value_weight']:g}"
        lockstep = "" if one_at_a_time else f" --lockstep {st['lockstep']}"
        return (f"gndesign plan {st['system']} --model {st['model']}{policy} {_flags(st)} --episodes E{lockstep} "
                "--seed S")
    return run, command


def _strong_oracle(samples: int = 256, iterations: int = 3, replan_every: int = 1):
    """The MuJoCo oracle at a generous budget: MPPI over 150 steps (default: 256 samples x 3 iterations,
    replanning every step)."""
    def run(task: str, episodes: int, seed: int, steps: int | None) -> dict:
        return plan_episodes(task, "mujoco", "mppi", episodes, seed, steps, replan_every, 150,
                             options={"samples": samples, "iterations": iterations}, progress=False, lockstep=episodes)

    def command(task: str) -> str:
        return (f"gndesign plan {POLICY_SETUPS[task]['system']} --model mujoco --planner mppi --horizon 150 "
                f"--replan-every {replan_every} --set planner.samples={samples} --set planner.iterations={iterations} "
                "--episodes E --lockstep E --seed S")
    return run, command


def _interval_oracle():
    """The MuJoCo oracle replanning as often as the guided planner: MPPI with the task's settings (horizon,
    64 samples x 3 iterations) every ``replan_every`` control steps of the setup."""
    def run(task: str, episodes: int, seed: int, steps: int | None) -> dict:
        st = POLICY_SETUPS[task]
        return plan_episodes(task, "mujoco", "mppi", episodes, seed, steps, st["replan_every"], progress=False,
                             lockstep=episodes)

    def command(task: str) -> str:
        st = POLICY_SETUPS[task]
        return (f"gndesign plan {st['system']} --model mujoco --planner mppi --replan-every {st['replan_every']} "
                "--episodes E --lockstep E --seed S")
    return run, command


def _policy_alone():
    def run(task: str, episodes: int, seed: int, steps: int | None) -> dict:
        from workflows.policy import eval_policy

        return eval_policy(POLICY_SETUPS[task]["policy"], task, episodes, seed, steps)

    def command(task: str) -> str:
        return f"gndesign policy eval --policy {POLICY_SETUPS[task]['policy']} --task {task} --episodes E --seed S"
    return run, command


# cell -> (runner(task, episodes, seed, steps), command(task) with E episodes and seed S)
POLICY_CELLS = {
    "policy_alone": _policy_alone(),
    "guided_gradient_mpc": _plan_cell(True),
    "gradient_mpc_same_budget": _plan_cell(False),
    "guided_gradient_mpc_one_at_a_time": _plan_cell(True, one_at_a_time=True),
    # real time by replanning half as often (the same plans, each covering twice the control time)
    "guided_gradient_mpc_one_at_a_time_replan_x2": _plan_cell(True, one_at_a_time=True, replan_factor=2),
    "gradient_mpc_one_at_a_time_replan_x2": _plan_cell(False, one_at_a_time=True, replan_factor=2),
    "oracle_mppi_256x150": _strong_oracle(),
    # a long-horizon oracle a swimmer6 episode can afford here (about 5 min of one core per episode)
    "oracle_mppi_128x150_every8": _strong_oracle(128, 1, 8),
    "oracle_mppi_same_interval": _interval_oracle(),
}


def policy_cells(cells: list[str], episodes: int, seed: int, steps: int | None, out_path: Path,
                 task: str = "cartpole-swingup") -> None:
    """Run issue 15's cells for ``task`` (OMP_NUM_THREADS=1, one torch thread) and write ``out_path`` (+ ``.md``);
    cells already in ``out_path`` and not asked for are kept."""
    setup = POLICY_SETUPS[task]
    report = json.loads(out_path.read_text()) if out_path.exists() else {"cells": {}}
    report["machine"] = machine_info(threads=1)
    report.update(task=task, model=setup["model"], policy=setup["policy"], episodes=episodes, seed=seed,
                  steps=steps or 1000)
    for name in cells:
        runner, command = POLICY_CELLS[name]
        load_before, wall, cpu = os.getloadavg()[0], time.perf_counter(), time.process_time()
        r = runner(task, episodes, seed, steps)
        keep = ("return_mean", "return_std", "mean_latency_s", "mean_cpu_s", "mean_evaluations", "real_time_factor",
                "cpu_real_time_factor", "chatter_mean", "lockstep", "horizon", "replan_every", "action_repeat",
                "training_s", "training_step", "control_timestep", "value_weight")
        report["cells"][name] = {k: r[k] for k in keep if k in r} | {
            "returns": [e["return"] for e in r["episodes"]], "seeds": [e["seed"] for e in r["episodes"]],
            "command": "OMP_NUM_THREADS=1 " + command(task).replace("--episodes E", f"--episodes {episodes}").replace(
                "--lockstep E", f"--lockstep {episodes}").replace("--seed S", f"--seed {seed}")
            + (f" --steps {steps}" if steps else ""),
            "cell_wall_s": time.perf_counter() - wall, "cell_cpu_s": time.process_time() - cpu,
            "load_average": [load_before, os.getloadavg()[0]]}
        c = report["cells"][name]
        print(f"{name}: {c['return_mean']:.1f} +- {c['return_std']:.1f}, {c['mean_latency_s'] * 1e3:.1f} ms wall per "
              f"decision, load {c['load_average']}", flush=True)
        atomic_write_json(out_path, report)
    mpc = ROOT / "results" / "mpc.json"
    runs = json.loads(mpc.read_text()).get("runs", {}) if mpc.exists() else {}
    report["oracles"] = {k: {"return_mean": runs[k]["return_mean"], "return_std": runs[k]["return_std"],
                             "horizon": runs[k]["horizon"], "replan_every": runs[k]["replan_every"],
                             "mean_evaluations": runs[k]["mean_evaluations"], "episodes": len(runs[k]["returns"])}
                         for k in setup["oracles"] if k in runs}
    for name, label in (("oracle_mppi_256x150", "mujoco/mppi 256 x 150"),
                        ("oracle_mppi_128x150_every8", "mujoco/mppi 128 x 150, replanning every 8"),
                        ("oracle_mppi_same_interval", "mujoco/mppi replanning as often as the guided planner")):
        if (cell := report["cells"].get(name)) is not None:
            report["oracles"][f"{label} ({name})"] = {
                k: cell[k] for k in ("return_mean", "return_std", "horizon", "replan_every", "mean_evaluations")} | {
                "episodes": len(cell["returns"])}
    report["verdicts"] = policy_verdicts(report)
    atomic_write_json(out_path, report)
    atomic_write_text(out_path.with_suffix(".md"), policy_markdown(report))
    print(policy_markdown(report))


#: Issue 15's return targets: (guided at least, policy alone at least, guided at least this times the oracles).
TARGETS = {"cartpole-swingup": (850.0, 800.0, 0.97), "swimmer6": (None, None, 0.9)}


def policy_verdicts(r: dict) -> list[str]:
    """Issue 15's targets for the report's task against the cells present (a missing cell is said, never guessed)."""
    cells, oracles, out = r["cells"], r.get("oracles", {}), []
    least, alone_least, ratio_least = TARGETS[r.get("task", "cartpole-swingup")]
    g, one, alone = (cells.get(k) for k in ("guided_gradient_mpc", "guided_gradient_mpc_one_at_a_time",
                                            "policy_alone"))
    if g:
        if least is not None:
            out.append(f"guided >= {least:.0f} (mean of {len(g['returns'])}, lockstep {g['lockstep']}): "
                       f"{'met' if g['return_mean'] >= least else 'MISSED'} ({g['return_mean']:.1f})")
        for key, o in oracles.items():
            ratio = g["return_mean"] / o["return_mean"]
            out.append(f"guided >= {ratio_least}x the oracle {key} ({o['return_mean']:.1f} +- {o['return_std']:.1f}, "
                       f"H {o['horizon']}, k {o['replan_every']}): {'met' if ratio >= ratio_least else 'MISSED'} "
                       f"({ratio:.3f}x)")
    else:
        out.append("guided: not run")
    if one:
        out.append(f"guided real-time factor >= 1 on one thread (one episode at a time, wall latency): "
                   f"{'met' if one['real_time_factor'] >= 1 else 'MISSED'} ({one['real_time_factor']:.2f}: "
                   f"{one['mean_latency_s'] * 1e3:.1f} ms per decision for {one['replan_every']} control steps = "
                   f"{one['control_timestep'] * one['replan_every'] * 1e3:.0f} ms; CPU {one['mean_cpu_s'] * 1e3:.1f} "
                   f"ms, factor {one['cpu_real_time_factor']:.2f}; load {max(one['load_average']):.1f})")
    best = max(oracles.items(), key=lambda kv: kv[1]["return_mean"], default=None)
    for name in ("guided_gradient_mpc_one_at_a_time_replan_x2", "gradient_mpc_one_at_a_time_replan_x2"):
        if (c := cells.get(name)) is not None and best is not None:
            ratio = c["return_mean"] / best[1]["return_mean"]
            who = "guided" if name.startswith("guided") else "without the policy (not the target's guided planner)"
            out.append(f"{who}, replanning every {c['replan_every']}, one episode at a time: real-time factor >= 1 "
                       f"at >= {ratio_least}x the best oracle ({best[0]}): "
                       f"{'met' if c['real_time_factor'] >= 1 and ratio >= ratio_least else 'MISSED'} "
                       f"(factor {c['real_time_factor']:.2f}, {ratio:.3f}x)")
    if alone and alone_least is not None:
        out.append(f"policy alone >= {alone_least:.0f}: {'met' if alone['return_mean'] >= alone_least else 'MISSED'} "
                   f"({alone['return_mean']:.1f}; trained {alone.get('training_s', float('nan')) / 60:.1f} min)")
    return out


def policy_markdown(r: dict) -> str:
    m = r["machine"]
    task = r.get("task", "cartpole-swingup")
    c0 = next(iter(r["cells"].values()), {})
    k, dt = c0.get("action_repeat", "k"), c0.get("control_timestep", float("nan"))
    lines = [f"# {task}: policy, policy-guided MPC (issue 15)", "",
             f"Machine: {m['cores']} cores, torch {m['torch']}, one thread (OMP_NUM_THREADS=1). Seeds {r['seed']}-"
             f"{r['seed'] + r['episodes'] - 1}, dm_control {r['steps']}-step episodes in true MuJoCo. Model "
             f"{r['model']} (k = {k}), policy {r['policy']}. Wall and CPU (the deciding thread) per decision; in "
             "lockstep a decision covers all the episodes at once, so only the one-at-a-time row is a single "
             f"controller's latency. Real-time factor: control time covered (replanning interval x {dt * 1e3:.0f} ms) "
             "/ wall latency.", "",
             "| cell | return (mean +- std) | E | evals/decision | wall ms/decision | CPU ms/decision | real-time "
             "factor (wall) | (CPU) | load |", "|---|---|---|---|---|---|---|---|---|"]
    for name, c in r["cells"].items():
        rtf = (f"{c['real_time_factor']:.2f} | {c['cpu_real_time_factor']:.2f}" if "real_time_factor" in c
               else f"{c['control_timestep'] * c['action_repeat'] / max(c['mean_latency_s'], 1e-12):.0f} | -")
        cpu = f"{c['mean_cpu_s'] * 1e3:.1f}" if "mean_cpu_s" in c else "-"
        evals = f"{c['mean_evaluations']:.0f}" if "mean_evaluations" in c else "-"
        lines.append(f"| {name} | {c['return_mean']:.1f} +- {c['return_std']:.1f} | "
                     f"{c.get('lockstep', len(c['returns']))} | {evals} | "
                     f"{c['mean_latency_s'] * 1e3:.2f} | {cpu} | {rtf} | {max(c['load_average']):.1f} |")
    lines += ["", "Oracles (results/mpc.json, true MuJoCo, same seeds): " + "; ".join(
        f"{k} {o['return_mean']:.1f} +- {o['return_std']:.1f} ({o.get('episodes', '?')} episodes, H {o['horizon']}, "
        f"k {o['replan_every']}, {o['mean_evaluations']:.0f} evals/decision)" for k, o in r.get("oracles", {}).items()),
        ""]
    if "oracle_mppi_256x150" not in r["cells"]:
        lines += ["The stronger oracle (MPPI 256 x 150 on MuJoCo) was not run.", ""]
    lines += ["Targets:", ""]
    lines += [f"- {v}" for v in r.get("verdicts", [])]
    lines += ["", "Commands and per-episode returns:", ""]
    for name, c in r["cells"].items():
        lines += [f"- {name}: `{c['command']}`  ", f"  {[round(x, 1) for x in c['returns']]}"]
    return "\n".join(lines) + "\n"


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
