"""The ``gndesign`` command line: the one place that wires the core, ``envs`` and ``planners``.

Every subcommand turns a :class:`~gndesign.errors.GndesignError` into a one-line message on
stderr and exit status 2; ``--verbose`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path

from gndesign.errors import GndesignError

log = logging.getLogger("gndesign")


# ------------------------------------------------------------------------------------ commands
def cmd_systems(args: argparse.Namespace) -> int:
    from envs.systems import describe_systems

    rows = describe_systems()
    if args.json:
        print(json.dumps([{"name": n, "description": d} for n, d in rows], indent=2))
    else:
        width = max(len(n) for n, _ in rows)
        for name, desc in rows:
            print(f"{name:<{width}}  {desc}")
    return 0


def inspect_system(name: str, check_fk: bool = False, num_states: int = 64) -> dict:
    """Everything ``gndesign inspect`` shows, as a JSON-ready dict."""
    from envs.systems import get_system
    from gndesign.fkcheck import check_forward_kinematics
    from gndesign.graphs import GraphBuilder
    from gndesign.tree import KinematicTree

    system = get_system(name)
    tree = KinematicTree.from_model(system.model, system.name)
    nominal = tree.nominal_params()
    moment = tree.actuator_basis * nominal["actuator_gear"][:, :, None]
    info = {
        "system": system.name,
        "control_timestep": system.control_timestep,
        "n_substeps": system.n_substeps,
        "nq": tree.nq, "nv": tree.nv, "nu": tree.nu,
        "nodes": [{"index": i, "body": tree.body_names[i], "parent": int(tree.body_parent[i]),
                   "mass": float(nominal["body_mass"][i])} for i in range(tree.nbody)],
        "edges": [{"index": e, "parent": tree.body_names[tree.edge_parent[e]],
                   "child": tree.body_names[tree.edge_child[e]], "type": tree.edge_type[e],
                   "joint": tree.joint_names[tree.edge_joint[e]] if tree.edge_joint[e] >= 0 else None}
                  for e in range(tree.num_edges)],
        "actuators": [{"name": tree.actuator_names[a],
                       "joints": [tree.joint_names[j] for j in range(tree.njnt)
                                  if abs(moment[a][:, _joint_dofs(tree, j)]).sum() > 0],
                       "moment": [round(float(x), 6) for x in moment[a].sum(0)],
                       "ctrlrange": [float(x) for x in tree.ctrlrange[a]]} for a in range(tree.nu)],
        "feature_sizes": GraphBuilder.feature_sizes(),
        "graph": {"nodes": tree.nbody, "edges_directed": 2 * tree.num_edges},
    }
    if check_fk:
        info["fk_errors"] = check_forward_kinematics(system.model, tree, num_states=num_states)
    return info


def _joint_dofs(tree, j: int) -> slice:
    from gndesign.tree import NV

    a = int(tree.jnt_dofadr[j])
    return slice(a, a + NV[tree.jnt_type[j]])


def cmd_inspect(args: argparse.Namespace) -> int:
    info = inspect_system(args.system, check_fk=args.check_fk, num_states=args.states)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"system {info['system']}: nq={info['nq']} nv={info['nv']} nu={info['nu']}, "
              f"control timestep {info['control_timestep']:g} s ({info['n_substeps']} substeps)")
        print(f"nodes ({len(info['nodes'])}):")
        for n in info["nodes"]:
            print(f"  {n['index']:3d} {n['body']:<16} parent {n['parent']:3d}  mass {n['mass']:.4g}")
        print(f"edges ({len(info['edges'])} joints/welds, {info['graph']['edges_directed']} directed):")
        for e in info["edges"]:
            joint = e["joint"] or ""
            print(f"  {e['index']:3d} {e['parent']:>12} -> {e['child']:<12} {e['type']:<6} {joint}")
        print(f"actuators ({len(info['actuators'])}):")
        for a in info["actuators"]:
            print(f"  {a['name']:<16} -> {', '.join(a['joints']) or '-'}  ctrlrange {a['ctrlrange']}")
        fs = info["feature_sizes"]
        print(f"features: node {fs['node']}, edge {fs['edge']}, global {fs['global']}")
    if args.check_fk:
        err = info["fk_errors"]
        if not args.json:
            parts = ", ".join(f"{k} {err[k]:.2e}" for k in err if k not in ("max", "ok", "num_states"))
            print(f"FK check over {err['num_states']} random states (max |torch - MuJoCo|): {parts}")
            print(f"max error {err['max']:.2e}: {'OK' if err['ok'] else 'FAILED'} (tolerance 1e-5)")
        return 0 if err["ok"] else 1
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from envs.generate import generate_dataset

    if args.system == "obstacle-scene":
        return generate_obstacle_scene(args)
    if args.steps is None:
        raise GndesignError(f"generate {args.system} needs --steps (control steps per episode)")
    report = generate_dataset(args.system, episodes=args.episodes, steps=args.steps, seed=args.seed,
                              out_dir=args.out, workers=args.workers, randomize=not args.no_randomize,
                              overwrite=args.overwrite, progress=not args.quiet)
    print(f"wrote {report.transitions} transitions ({args.episodes} episodes x {args.steps} steps) "
          f"to {report.path} in {report.seconds:.1f} s: {report.rate:.0f} transitions/s")
    return 0


def is_cgns_run(args: argparse.Namespace) -> bool:
    """Whether ``gndesign train`` trains a C-GNS: ``--model cgns``, a ``--set solver.KEY=VALUE``, or
    a config file with a ``solver:`` section."""
    import yaml

    if args.model == "cgns" or any(s.startswith("solver.") for s in args.set or []):
        return True
    if args.config and Path(args.config).is_file():
        try:
            raw = yaml.safe_load(Path(args.config).read_text())
        except yaml.YAMLError:
            return False  # the config loader reports it
        return isinstance(raw, dict) and "solver" in raw
    return False


def cmd_train(args: argparse.Namespace) -> int:
    from gndesign.training import load_config, train

    cgns = is_cgns_run(args)
    overrides = list(args.set or [])
    if args.model and args.model != "cgns":
        overrides.append(f"model.kind={args.model}")
    if args.steps:
        overrides.append(f"train.steps={args.steps}")
    if args.minutes:
        overrides.append(f"train.minutes={args.minutes}")
    if cgns:  # the constraint-based solver: a graph network over the same data (particles or articulated)
        from gndesign.cgns import load_cgns_config, train_cgns

        cfg = load_cgns_config(args.config, overrides, data=[str(Path(d)) for d in args.data] if args.data else None)
        summary = train_cgns(cfg, args.out, resume=args.resume, progress=not args.quiet)
    else:
        cfg = load_config(args.config, overrides)
        if args.data:
            cfg.data = [str(Path(d)) for d in args.data]
        summary = train(cfg, args.out, resume=args.resume, progress=not args.quiet)
    if summary:
        val = f", validation loss {summary['val_loss']:.4g}" if "val_loss" in summary else ""
        print(f"trained {summary['step']} steps in {summary['seconds']:.0f} s: train loss "
              f"{summary['train_loss']:.4g}{val}; checkpoint {Path(args.out) / 'checkpoints' / 'latest.pt'}")
    return 0


def evaluate_particles(args: argparse.Namespace) -> int:
    """`gndesign evaluate` on a particle dataset: open-loop position errors from rest."""
    from gndesign.datasets.particles import ParticleDataset
    from gndesign.io import atomic_write_json
    from gndesign.particle_evaluation import particle_rollout_errors, plot_particle_rollout, summarize_particle_errors
    from gndesign.particles import load_particle_model
    from gndesign.training import resolve_checkpoint

    ckpt = resolve_checkpoint(args.model)
    ds = ParticleDataset.load(args.data)
    model, _ = load_particle_model(ckpt, scene=ds.scene)
    horizons = [int(h) for h in args.horizons.split(",") if int(h) <= ds.steps] + [ds.steps]
    result = summarize_particle_errors(particle_rollout_errors(model, ds), horizons)
    result.update({"checkpoint": str(ckpt), "data": str(args.data)})
    if args.plot:
        result["plot"] = str(plot_particle_rollout(model, ds, 0, args.plot))
    if args.out:
        atomic_write_json(args.out, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"particles: {result['episodes']} episodes of {result['steps']} frames from rest; mean error over the "
              f"rollout {result['mean_position_error']:.4g} m (particles that stay put: "
              f"{result['baseline_mean_error']:.4g} m)")
        for h, e in result["position_error"].items():
            print(f"  frame {h:4d}: {e:.4g} m (stay put {result['baseline_error'][h]:.4g} m)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from gndesign.datasets.formats import dataset_format
    from gndesign.datasets.trajectories import TrajectoryDataset

    if dataset_format(args.data) == "particles":
        return evaluate_particles(args)
    from gndesign.evaluation import evaluate, plot_rollout
    from gndesign.io import atomic_write_json
    from gndesign.training import held_out_episodes, load_model, resolve_checkpoint, system_spec

    ckpt = resolve_checkpoint(args.model)
    ds = TrajectoryDataset.load(args.data)
    model, blob = load_model(ckpt, ds.system, allow_new_system=True, mjcf_sha256=None)
    if ds.system not in model.systems:
        model.add_system(system_spec(ds))
    episodes, which = held_out_episodes(blob, ds, args.episodes)
    horizons = tuple(int(h) for h in args.horizons.split(","))
    result = evaluate(model, ds, episodes, horizons)
    result.update({"checkpoint": str(ckpt), "data": str(args.data), "episode_set": which,
                   "trained_on": model.trained_systems})
    if args.plot:
        result["plot"] = str(plot_rollout(model, ds, int(episodes[0]), max(horizons), args.plot))
    if args.out:
        atomic_write_json(args.out, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{ds.system}: {result['episodes']} {which} episodes, one-step loss {result['one_step_loss']:.4g}")
        for h in result["horizons"]:
            print(f"  h={h:4d}: qpos RMSE {result['qpos_rmse'][h]:.4g}, body position error "
                  f"{result['body_pos_error'][h]:.4g} m{'' if result['finite'][h] else '  (NOT FINITE)'}")
        if args.plot:
            print(f"plot: {result['plot']}")
    return 0


#: Planner settings per task and planner (override with --set planner.KEY=VALUE).
#: A 60-step (0.6 s) horizon swings the cartpole up but cannot keep it balanced, even planning on
#: true MuJoCo; 120 steps can. The gradient planner spends a quarter of CEM's and MPPI's model
#: evaluations per decision (8 x 6 rollouts against 64 x 3).
PLAN_DEFAULTS = {
    "horizon": {"cartpole-swingup": 120, "swimmer6": 30},
    "gradient": {"iterations": 5, "restarts": 8, "lr": 0.3},
    "cem": {"population": 64, "elites": 8, "iterations": 3},
    "mppi": {"samples": 64, "iterations": 3, "temperature": 0.1},
    "random": {"samples": 512},
}


def plan_episodes(task_name: str, model: str, planner_name: str, episodes: int, seed: int, steps: int | None = None,
                  replan_every: int = 1, horizon: int | None = None, options: dict | None = None,
                  video: str | None = None, progress: bool = True, lockstep: int = 1) -> dict:
    """Run MPC episodes (seeds ``seed``, ``seed + 1``, ...) in the real dm_control environment;
    returns per-episode summaries. ``lockstep``: episodes run together, one planner call per
    decision for all of them (its latency is then the batch's)."""
    import numpy as np
    import torch

    from envs.control import DmControlBatch
    from envs.mujoco_dynamics import MujocoDynamics
    from envs.tasks import get_task
    from gndesign.dynamics import LearnedDynamics
    from gndesign.training import load_model, resolve_checkpoint
    from planners import PLANNERS, make_planner
    from planners.mpc import run_mpc_lockstep

    task = get_task(task_name)
    if planner_name not in PLANNERS:
        raise GndesignError(f"unknown planner {planner_name!r}: choose one of {', '.join(PLANNERS)}")
    if lockstep < 1:
        raise GndesignError(f"lockstep must be a positive number of episodes, got {lockstep}")
    if model == "mujoco":
        dynamics = MujocoDynamics(task.system)
    else:
        ckpt = resolve_checkpoint(model)
        learned, _ = load_model(ckpt, task.system.name, mjcf_sha256=task.system.mjcf_sha256())
        dynamics = LearnedDynamics(learned, task.system.name)
    opts = dict(PLAN_DEFAULTS[planner_name], **(options or {}))
    H = horizon or PLAN_DEFAULTS["horizon"].get(task_name, 30)
    steps = steps or task.episode_steps
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
    out = {"task": task_name, "model": model, "planner": planner_name, "horizon": H, "options": opts,
           "replan_every": replan_every, "steps": steps, "lockstep": lockstep, "episodes": results,
           "return_mean": float(returns.mean()), "return_std": float(returns.std()),
           "mean_latency_s": float(np.mean([r["mean_latency_s"] for r in results])),
           "mean_evaluations": float(np.mean([r["mean_evaluations"] for r in results])),
           "control_timestep": task.system.control_timestep}
    out["real_time_factor"] = out["control_timestep"] * replan_every / max(out["mean_latency_s"], 1e-12)
    if video:
        out["video"] = str(write_gif(frames, video, fps=int(round(0.5 / task.system.control_timestep))))
    return out


def write_gif(frames, path: str, fps: int = 25) -> Path:
    """Write RGB frames as an animated GIF (atomically)."""
    from PIL import Image

    from gndesign.io import atomic_path

    if not frames:
        raise GndesignError("no frames were rendered: is MUJOCO_GL set to egl or osmesa?")
    path = Path(path)
    images = [Image.fromarray(f) for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path


def plot_episode(result: dict, path: str) -> Path:
    """Reward and actions over time of the first episode."""
    import numpy as np

    from gndesign.plotting import pyplot, save_figure

    plt = pyplot()
    ep = result["episodes"][0]
    t = np.arange(len(ep["rewards"])) * result["control_timestep"]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 4.5), sharex=True)
    a1.plot(t, ep["rewards"], "C0")
    a1.set_ylabel("reward")
    a1.set_title(f"{result['task']}: {result['planner']} planner on {result['model']} (return {ep['return']:.1f})")
    a2.plot(t, np.array(ep["actions"]), lw=1)
    a2.set_ylabel("action")
    a2.set_xlabel("time [s]")
    fig.tight_layout()
    return save_figure(fig, path)


def prefixed_options(items: list[str] | None, prefix: str, example: str) -> dict:
    """``--set PREFIX.KEY=VALUE`` options as ``{KEY: value}`` (values parsed as YAML scalars)."""
    from gndesign.training import parse_value

    options = {}
    for item in items or []:
        key, _, value = item.partition("=")
        if not key.startswith(prefix + ".") or not value:
            raise GndesignError(f"--set {item!r} must look like {prefix}.KEY=VALUE (e.g. {prefix}.{example})")
        options[key.split(".", 1)[1]] = parse_value(value)
    return options


def cmd_plan(args: argparse.Namespace) -> int:
    options = prefixed_options(args.set, "planner", "iterations=20")
    result = plan_episodes(args.system, args.model, args.planner, args.episodes, args.seed, args.steps,
                           args.replan_every, args.horizon, options, args.video, progress=not args.quiet,
                           lockstep=args.lockstep)
    if args.plot:
        result["plot"] = str(plot_episode(result, args.plot))
    if args.out:
        from gndesign.io import atomic_write_json

        atomic_write_json(args.out, result)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "episodes"}
                         | {"returns": [e["return"] for e in result["episodes"]]}, indent=2))
    else:
        for e in result["episodes"]:
            print(f"episode {e['episode']} (seed {e['seed']}): return {e['return']:.1f}")
        batch = f" (a decision for {args.lockstep} episodes in lockstep)" if args.lockstep > 1 else ""
        print(f"{result['planner']} on {result['model']}: return {result['return_mean']:.1f} +- "
              f"{result['return_std']:.1f}; {result['mean_latency_s'] * 1e3:.1f} ms{batch} and "
              f"{result['mean_evaluations']:.0f} model evaluations per decision; real-time factor "
              f"{result['real_time_factor']:.2f}")
        for key in ("plot", "video"):
            if key in result:
                print(f"{key}: {result[key]}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job: swing the cartpole up in true MuJoCo with the shipped learned model and the
    gradient planner, next to the MuJoCo-oracle planner; write the video and the plot."""
    from gndesign.io import atomic_write_json

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = args.steps
    learned = plan_episodes("cartpole-swingup", "pretrained:cartpole", "gradient", 1, args.seed, steps,
                            replan_every=args.replan_every, video=str(out / "swingup.gif"),
                            progress=not args.quiet)
    learned["plot"] = str(plot_episode(learned, out / "swingup.png"))
    print(f"[1/2] learned model + gradient planner: return {learned['return_mean']:.1f} over "
          f"{learned['steps']} steps (replanning every {args.replan_every}), "
          f"{learned['mean_latency_s'] * 1e3:.0f} ms per decision "
          f"(real-time factor {learned['real_time_factor']:.2f})")
    oracle = plan_episodes("cartpole-swingup", "mujoco", "cem", 1, args.seed, steps, replan_every=args.replan_every,
                           progress=not args.quiet)
    print(f"[2/2] MuJoCo oracle + CEM:              return {oracle['return_mean']:.1f} "
          f"({oracle['mean_latency_s'] * 1e3:.0f} ms per decision)")
    ratio = learned["return_mean"] / max(oracle["return_mean"], 1e-9)
    summary = {"learned": {k: v for k, v in learned.items() if k != "episodes"},
               "oracle": {k: v for k, v in oracle.items() if k != "episodes"}, "ratio": ratio}
    atomic_write_json(out / "demo.json", summary)
    print(f"learned / oracle return: {ratio:.2f}; video {learned['video']}, plot {learned['plot']}, "
          f"numbers {out / 'demo.json'}")
    return 0



# ------------------------------------------------------------------------------------ design
#: Optimizer settings for `gndesign design` (override with --iterations and --set optimizer.KEY=VALUE).
#: Budgets count simulator calls (one rollout of one design each).
#: Every optimizer minimizes the same objective: the task loss plus the smoothness prior.
DESIGN_DEFAULTS = {
    "gradient": {"iterations": 20, "lr": 0.2, "restarts": 1, "grad_clip": 1.0, "update": "normalized",
                 "backtrack": 0.1, "grow": 1.25, "smoothness": 0.2},
    "cem": {"population": 16, "elites": 4, "iterations": 10, "init_std": 0.3, "smoothness": 0.2},
    "random": {"budget": 160, "batch": 16, "smoothness": 0.2},
}


def design_obstacle(task: str = "bin", target_x: float | None = None, side: str = "right", segments: int | None = None,
                    optimizer: str = "gradient", simulator: str = "learned", model: str = "pretrained:obstacle",
                    iterations: int | None = None, seed: int = 0, options: dict | None = None,
                    scene: str | None = None, cfg=None, out: str | None = None) -> dict:
    """Optimize an obstacle, re-simulate the initial and final designs in MuJoCo and score them there.

    Returns a JSON-ready dict (design, MuJoCo scores, learned-model prediction, loss history, calls,
    times); with ``out``, also writes ``design.json``, ``design.xml`` (MJCF), ``design.png``
    (initial and final obstacle with MuJoCo particle traces) and ``loss.png``.
    """
    import time

    import torch

    from envs.design_problem import DesignScene, absolute_angles, load_design_model, load_scene_file
    from envs.obstacle_scene import design_fk, design_to_mjcf, get_obstacle_task
    from gndesign.io import atomic_write_json, atomic_write_text
    from planners.design import DESIGN_OPTIMIZERS, make_design_optimizer, plot_design, plot_history

    if optimizer not in DESIGN_OPTIMIZERS:
        raise GndesignError(f"unknown optimizer {optimizer!r}: choose one of {', '.join(DESIGN_OPTIMIZERS)}")
    if simulator not in ("learned", "mujoco"):
        raise GndesignError(f"unknown simulator {simulator!r}: choose learned or mujoco")
    if optimizer == "gradient" and simulator == "mujoco":
        raise GndesignError("the gradient optimizer needs a differentiable simulator: use --simulator learned "
                            "(or --optimizer cem/random on mujoco)")
    sim = None
    if simulator == "learned":
        if cfg is not None:
            from gndesign.particles import load_particle_model

            sim, _ = load_particle_model(model, scene=cfg.to_dict())
        else:
            sim, cfg = load_design_model(model, scene, segments)
    elif cfg is None:
        cfg = load_scene_file(scene, segments=segments)
    if task == "bin":
        if target_x is None:
            raise GndesignError("the bin task needs --target-x")
        the_task = get_obstacle_task("bin", cfg, target_x=target_x)
    else:
        the_task = get_obstacle_task(task, cfg, side=side)
    opts = dict(DESIGN_DEFAULTS[optimizer], **(options or {}))
    if iterations is not None:
        opts["budget" if optimizer == "random" else "iterations"] = (
            iterations * opts.get("batch", 1) if optimizer == "random" else iterations)
    problem = DesignScene(cfg, the_task, seed, sim)
    low, high = (torch.as_tensor(cfg.joint_ranges()[:, i]) for i in (0, 1))
    try:
        # The prior penalizes bends: differences of consecutive absolute segment angles.
        opt = make_design_optimizer(optimizer, low, high, seed=seed, prior_map=absolute_angles, **opts)
    except (TypeError, ValueError) as e:
        raise GndesignError(f"bad {optimizer} options {opts}: {e}") from None
    init = torch.as_tensor(cfg.default_design())
    loss = problem.learned_loss if simulator == "learned" else problem.mujoco_loss
    log.info("designing a %d-segment obstacle for %s with %s on %s", cfg.segments, the_task.to_dict(), optimizer,
             simulator)
    with torch.no_grad() if optimizer != "gradient" else contextlib.nullcontext():
        result = opt.optimize(loss, init)
    calls_opt = problem.mujoco_calls
    # The number that counts: both designs re-simulated in MuJoCo from the same layout.
    t0 = time.perf_counter()
    truth = problem.simulate(torch.stack([init, result.design]))
    verify_s = time.perf_counter() - t0
    scores = the_task.score(truth[:, -1])
    out_dict = {
        "task": the_task.to_dict(), "region": list(the_task.region), "optimizer": optimizer, "simulator": simulator,
        "model": model if simulator == "learned" else None, "seed": seed, "options": opts,
        "scene": cfg.to_dict(), "initial_design": init.tolist(), "design": result.design.tolist(),
        "vertices": design_fk(result.design[None], cfg)[0].tolist(),
        "score_initial": float(scores[0]), "score": float(scores[1]),
        "loss_initial": float(the_task.loss(truth[:1, -1])[0]), "loss": float(the_task.loss(truth[1:, -1])[0]),
        "objective": result.objective, "terms": result.terms, "history": result.history,
        "optimizer_seconds": result.seconds, "verify_seconds": verify_s,
        "evaluations": result.evaluations, "learned_calls": problem.learned_calls,
        "mujoco_calls": calls_opt + 1,  # the optimizer's, plus re-simulating the final design
    }
    if sim is not None:
        with torch.no_grad():
            pred = problem.learned_rollout(result.design[None])
        out_dict["predicted_score"] = float(the_task.score(pred[:, -1])[0])
        out_dict["model_error"] = float((pred[0].double() - truth[1]).norm(dim=-1).mean())
    if out:
        out_dir = Path(out)
        atomic_write_text(out_dir / "design.xml", design_to_mjcf(cfg, result.design.numpy()))
        vert = design_fk(torch.stack([init, result.design]), cfg)
        title = f"{the_task.name} task, {optimizer} on {simulator}: MuJoCo score {scores[0]:.2f} -> {scores[1]:.2f}"
        plot_design([{"title": f"initial design: {scores[0]:.0%} in the bin", "obstacle": vert[0], "traces": truth[0]},
                     {"title": f"{optimizer} design: {scores[1]:.0%} in the bin", "obstacle": vert[1],
                      "traces": truth[1]}], (cfg.x_min, cfg.x_max), cfg.floor, the_task.region,
                    out_dir / "design.png", title)
        plot_history(result.history, out_dir / "loss.png", f"{optimizer} on {simulator} (simulator loss terms)")
        out_dict["files"] = {k: str(out_dir / f) for k, f in (("json", "design.json"), ("mjcf", "design.xml"),
                                                               ("figure", "design.png"), ("loss", "loss.png"))}
        atomic_write_json(out_dir / "design.json", out_dict)
    return out_dict


def generate_obstacle_scene(args: argparse.Namespace) -> int:
    """``gndesign generate obstacle-scene``: random designs and layouts of the particle scene."""
    from envs.design_problem import load_scene_file
    from envs.obstacle_scene import generate_obstacle_dataset

    if args.no_randomize:
        raise GndesignError("--no-randomize does not apply to obstacle-scene (designs and layouts are always random)")
    cfg = load_scene_file(args.scene, frames=args.steps)
    report = generate_obstacle_dataset(cfg, args.out, episodes=args.episodes, seed=args.seed, workers=args.workers,
                                       overwrite=args.overwrite)
    print(f"wrote {report}")
    return 0


def cmd_design(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    options = prefixed_options(args.set, "optimizer", "lr=0.05")
    r = design_obstacle(args.task, args.target_x, args.side, args.segments, args.optimizer, args.simulator,
                        args.model, args.iterations, args.seed, options, args.scene, out=args.out)
    if args.json:
        print(json.dumps({k: v for k, v in r.items() if k not in ("history", "scene")}, indent=2))
    else:
        print(f"{r['optimizer']} on {r['simulator']}: {r['evaluations']} simulator calls in "
              f"{r['optimizer_seconds']:.1f} s; design {[round(x, 3) for x in r['design']]}")
        pred = f" (the learned model predicted {r['predicted_score']:.0%})" if "predicted_score" in r else ""
        print(f"MuJoCo score (fraction of balls in {[round(x, 3) for x in r['region']]}): initial design "
              f"{r['score_initial']:.0%}, designed {r['score']:.0%}{pred}")
        for key, path in r.get("files", {}).items():
            print(f"{key}: {path}")
    return 0


# ------------------------------------------------------------------------------------ constrain
#: Control steps of `gndesign constrain` on an articulated system (the particle scene: its frames).
CONSTRAIN_STEPS = 100
#: The particle scene's names on the command line.
PARTICLE_SYSTEMS = ("obstacle", "obstacle-scene")


def read_constraints(specs: list[str] | None, path: str | None = None):
    """The sum of the ``--constraint`` strings and the constraints of a ``--constraints`` YAML file."""
    from gndesign.constraints import load_constraints, parse_constraints
    from gndesign.objectives import Sum

    terms = [c for c in (parse_constraints(specs), load_constraints(path) if path else None) if c is not None]
    if not terms:
        raise GndesignError("no constraints: pass --constraint SPEC (repeatable) and/or --constraints FILE.yaml, "
                            "e.g. --constraint 'disk center=0.5,1.0 radius=0.3 weight=100'")
    return terms[0] if len(terms) == 1 else Sum(terms)


def load_constrain_model(path: str, system: str):
    """The C-GNS of checkpoint ``path`` for ``system`` (a registered system or the obstacle scene)."""
    from gndesign.cgns import load_cgns_model

    try:
        model, blob = load_cgns_model(path)
    except GndesignError as e:
        if "not a C-GNS" in str(e):
            raise GndesignError(f"{e}: `gndesign constrain` needs a constraint-based solver (train one with "
                                "`gndesign train --model cgns ...`)") from None
        raise
    particles = system in PARTICLE_SYSTEMS
    if particles != (model.front == "particles"):
        want = "the obstacle scene (--system obstacle)" if model.front == "particles" else \
            f"articulated systems ({', '.join(model.trained_systems)})"
        raise GndesignError(f"checkpoint {path} holds a C-GNS of {want}, not of {system!r}")
    if not particles and system not in model.trained_systems:
        raise GndesignError(f"checkpoint {path} was trained on {model.trained_systems}, not on {system!r}")
    return model, blob


def _spec_text(spec: dict) -> str:
    """A constraint spec as a command-line string: ``KIND`` and its own options, then ``weight``,
    ``nodes``, ``margin`` (unset options and the default quantity left out)."""
    from gndesign.constraints import CONSTRAINTS

    def fmt(v):
        return ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v) if isinstance(v, list) else \
            (f"{v:g}" if isinstance(v, float) else str(v))

    common = ("weight", "nodes", "margin", "quantity")
    cls = CONSTRAINTS.get(spec["kind"])
    keys = [k for k in spec if k not in ("kind", *common)] + list(common)
    return " ".join([spec["kind"], *(f"{k}={fmt(spec[k])}" for k in keys if spec.get(k) is not None
                                     and not (k == "quantity" and cls and spec[k] == cls.default_quantity))])


def constrain_particles(model, blob: dict, constraints, steps: int | None = None, iterations: int | None = None,
                        seed: int = 0, design: list[float] | None = None, scene: str | None = None,
                        particles: int | None = None, compare: bool = False) -> tuple[dict, dict]:
    """Roll a particle C-GNS out in the obstacle scene under ``constraints``.

    The particles start at rest at ``initial_positions(cfg, seed)``; the obstacle is ``design``
    (default: the scene's default design). Returns the JSON-ready result (violations in metres and
    in particle radii, per constraint) and the arrays to draw (``positions``, ``obstacle``, ``cfg``,
    the bound constraints, and ``baseline``, the rollout without constraints, with ``compare``).
    """
    import time

    import numpy as np
    import torch

    from envs.design_problem import load_scene_file
    from envs.obstacle_scene import design_fk, initial_positions
    from gndesign.constraints import bind_constraints, constraint_terms
    from gndesign.datasets.particles import scene_mismatch

    try:
        cfg = load_scene_file(scene, dict(blob["scene"]), n_particles=particles)
    except GndesignError:
        if scene:
            raise
        # The model's scene lacks SceneConfig keys (data from elsewhere): the defaults, checked below.
        cfg = load_scene_file(None, n_particles=particles)
    diff = scene_mismatch(blob["scene"], cfg.to_dict())
    if diff:
        raise GndesignError(f"the C-GNS was trained on another scene ({'; '.join(diff)}); pass --scene FILE with "
                            "its settings")
    d = np.asarray(cfg.default_design() if design is None else design, dtype=np.float64)
    cfg.check_design(d)
    steps = steps or cfg.frames
    dtype = next(model.parameters()).dtype
    init = torch.as_tensor(initial_positions(cfg, seed), dtype=dtype)[None]
    obstacle = design_fk(torch.as_tensor(d, dtype=dtype)[None], cfg)
    bound = bind_constraints(constraints, model.constraint_context(cfg.n_particles))  # bad references fail here
    r = float(cfg.particle_radius)
    t0 = time.perf_counter()
    with torch.no_grad():
        traj = model.rollout(init, obstacle, steps, constraints=constraints, iterations=iterations)
    seconds = time.perf_counter() - t0

    def report(x):
        rep = model.violation_report(constraints, x)
        for c in rep["constraints"]:
            c["max_radii"], c["mean_radii"] = c["max"] / r, c["mean"] / r
        rep["max_radii"] = rep["max"] / r
        return rep

    result = {"system": "obstacle", "front": "particles", "steps": steps,
              "iterations": model.default_iterations() if iterations is None else iterations, "seed": seed,
              "particles": cfg.n_particles, "particle_radius": r, "design": d.tolist(),
              "constraints": [_spec_text(c.to_spec()) for c in constraint_terms(constraints)],
              "violations": report(traj), "rollout_seconds": seconds}
    arrays = {"positions": traj[0].double().numpy(), "obstacle": obstacle[0].double().numpy(), "cfg": cfg,
              "bound": bound, "baseline": None}
    if compare:
        with torch.no_grad():
            free = model.rollout(init, obstacle, steps, iterations=iterations)
        result["unconstrained"] = report(free)
        arrays["baseline"] = free[0].double().numpy()
    return result, arrays


def constrain_articulated(model, system_name: str, constraints, steps: int | None = None,
                          iterations: int | None = None, seed: int = 0, actions: str = "zero",
                          compare: bool = False) -> tuple[dict, dict]:
    """Roll an articulated C-GNS out under ``constraints``.

    The start is the system's random initial state ``System.initial_state`` with
    ``np.random.default_rng(seed)`` and nominal parameters; ``actions``: ``zero`` (no control: the
    default, so what moves the system is its initial velocity and gravity) or ``random`` (the smooth
    random actions of the training data, ``envs.generate.smooth_random_actions``, same generator).
    """
    import time

    import numpy as np
    import torch

    from envs.generate import smooth_random_actions
    from envs.systems import get_system
    from gndesign.constraints import bind_constraints, constraint_terms
    from gndesign.kinematics import forward_kinematics

    if actions not in ("zero", "random"):
        raise GndesignError(f"--actions must be zero or random, got {actions!r}")
    system = get_system(system_name, randomize=False)
    steps = steps or CONSTRAIN_STEPS
    rng = np.random.default_rng(seed)
    q0, v0 = system.initial_state(system.model, rng)
    a = smooth_random_actions(rng, steps, system.ctrlrange()) if actions == "random" else np.zeros((steps, system.nu))
    dtype = next(model.parameters()).dtype
    q, v, u = (torch.as_tensor(x, dtype=dtype)[None] for x in (q0, v0, a))
    bound = bind_constraints(constraints, model.constraint_context(system.name))  # bad references fail here
    t0 = time.perf_counter()
    with torch.no_grad():
        qs, vs = model.rollout(q, v, u, system.name, constraints=constraints, iterations=iterations)
    seconds = time.perf_counter() - t0
    tree = model.tree(system.name)
    result = {"system": system.name, "front": "articulated", "steps": steps,
              "iterations": model.default_iterations() if iterations is None else iterations, "seed": seed,
              "actions": actions, "control_timestep": system.control_timestep,
              "constraints": [_spec_text(c.to_spec()) for c in constraint_terms(constraints)],
              "violations": model.violation_report(constraints, qs, vs, system=system.name),
              "rollout_seconds": seconds}
    arrays = {"qpos": qs[0].double().numpy(), "xpos": forward_kinematics(tree, qs[0]).xpos.double().numpy(),
              "tree": tree, "dt": system.control_timestep, "bound": bound, "baseline": None}
    if compare:
        with torch.no_grad():
            fq, fv = model.rollout(q, v, u, system.name, iterations=iterations)
        result["unconstrained"] = model.violation_report(constraints, fq, fv, system=system.name)
        arrays["baseline"] = {"qpos": fq[0].double().numpy(),
                              "xpos": forward_kinematics(tree, fq[0]).xpos.double().numpy()}
    return result, arrays


def _plane_axis(axis) -> int:
    """A wall's axis in 2-d data ``(x, z)``: x -> 0; y, z, 1, 2 -> 1."""
    from gndesign.constraints import AXES

    i = AXES[axis] if isinstance(axis, str) else int(axis)
    return min(i, 1)


def draw_constraints(ax, terms, xlim, ylim, pinned_from=None, dims: tuple[int, int] | None = None) -> None:
    """Draw bound constraints in a 2-d view: disks, boxes, half-planes and walls shaded on their
    forbidden side (red), regions to stay in outlined (green), pinned points as crosses.

    ``dims``: which coordinates of 3-d constraints are the view's axes (e.g. ``(0, 2)``, an x-z view
    of bodies); None: 2-d data ``(x, z)`` (particles). ``pinned_from``: ``[N, D]`` start positions
    (pins without ``at``).
    """
    import numpy as np
    from matplotlib.patches import Circle, Rectangle

    from gndesign.constraints import AXES, Box, Disk, HalfPlane, Pin, Wall

    planar = dims is None
    dims = (0, 1) if planar else tuple(dims)
    bad = {"color": "C3", "alpha": 0.25, "lw": 0}
    for c in terms:
        if isinstance(c, Disk | Box) and len(c.center if isinstance(c, Disk) else c.lower) > max(dims):
            keep_in = c.keep == "in"
            style = {"fill": False, "ec": "C2", "lw": 1.5, "ls": "--"} if keep_in else {"fc": "C3", "alpha": 0.35}
            if isinstance(c, Disk):
                ax.add_patch(Circle((c.center[dims[0]], c.center[dims[1]]), c.radius, **style))
            else:
                lo = [c.lower[i] for i in dims]
                hi = [c.upper[i] for i in dims]
                ax.add_patch(Rectangle(lo, hi[0] - lo[0], hi[1] - lo[1], **style))
        elif isinstance(c, HalfPlane) and len(c.normal) > max(dims):
            n = np.array([c.normal[i] for i in dims]) / np.linalg.norm(c.normal)
            X, Y = np.meshgrid(np.linspace(*xlim, 200), np.linspace(*ylim, 200))
            side = n[0] * X + n[1] * Y - c.offset
            ax.contourf(X, Y, side, levels=[-np.inf, 0.0], colors=["C3"], alpha=0.25)
            ax.contour(X, Y, side, levels=[0.0], colors=["C3"], linewidths=1.5)
        elif isinstance(c, Wall):
            i = _plane_axis(c.axis) if planar else (AXES[c.axis] if isinstance(c.axis, str) else int(c.axis))
            if i not in dims:
                continue
            horizontal = dims.index(i) == 1
            line, span = (ax.axhline, ax.axhspan) if horizontal else (ax.axvline, ax.axvspan)
            lim = ylim if horizontal else xlim
            if c.lower is not None:
                line(c.lower, color="C3", lw=1.5)
                span(min(lim[0], c.lower), c.lower, **bad)
            if c.upper is not None:
                line(c.upper, color="C3", lw=1.5)
                span(c.upper, max(lim[1], c.upper), **bad)
        elif isinstance(c, Pin):
            if c.at is not None and len(c.at) > max(dims):
                pts = np.array([[c.at[i] for i in dims]])
            elif pinned_from is not None and c.nodes is not None:
                pts = pinned_from[c.nodes][:, list(dims)]
            else:
                continue
            ax.plot(pts[:, 0], pts[:, 1], "x", color="C3", ms=9, mew=2.5, zorder=5)


def _particle_view(cfg, *trajs):
    import numpy as np

    top = max(float(np.max(t[..., 1])) for t in trajs)
    return (cfg.x_min - 0.1, cfg.x_max + 0.1), (cfg.floor - 0.1, max(top, cfg.source_z[1]) + 0.2)


def _draw_particle_scene(ax, cfg, obstacle, terms, start, xlim, ylim) -> None:
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.axhline(cfg.floor, color="k", lw=2)
    ax.axvline(cfg.x_min, color="k", lw=2)
    ax.axvline(cfg.x_max, color="k", lw=2)
    ax.plot(obstacle[:, 0], obstacle[:, 1], "-", color="0.3", lw=3, solid_capstyle="round")
    draw_constraints(ax, terms, xlim, ylim, pinned_from=start)


def _draw_particles(ax, pos, radius, color="C0") -> None:
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Circle

    ax.add_collection(PatchCollection([Circle(p, radius) for p in pos], fc=color, ec="k", lw=0.3, alpha=0.8))


def plot_particle_constraints(result: dict, arrays: dict, path) -> Path:
    """Particle trajectories (thin lines) and final positions with the obstacle and the
    constraints drawn; with a baseline, the rollout without constraints on the left."""
    from gndesign.constraints import constraint_terms
    from gndesign.plotting import pyplot, save_figure

    plt = pyplot()
    cfg, terms = arrays["cfg"], constraint_terms(arrays["bound"])
    panels = [("without the constraints", arrays["baseline"], result.get("unconstrained"))] \
        if arrays["baseline"] is not None else []
    panels.append(("with the constraints", arrays["positions"], result["violations"]))
    xlim, ylim = _particle_view(cfg, *(p[1] for p in panels))
    w = (xlim[1] - xlim[0]) / (ylim[1] - ylim[0])
    fig, axes = plt.subplots(1, len(panels), figsize=(min(max(4 * w, 3), 7.5) * len(panels), 4.6), squeeze=False,
                             layout="constrained")
    for ax, (title, traj, rep) in zip(axes[0], panels, strict=True):
        _draw_particle_scene(ax, cfg, arrays["obstacle"], terms, traj[0], xlim, ylim)
        for i in range(traj.shape[1]):
            ax.plot(traj[:, i, 0], traj[:, i, 1], "-", color="C0", lw=0.5, alpha=0.4)
        _draw_particles(ax, traj[-1], cfg.particle_radius)
        ax.set_title(f"{title}: max violation {rep['max_radii']:.2f} radii", fontsize=9)
        ax.set_xlabel("x [m]")
    axes[0][0].set_ylabel("z [m]")
    fig.suptitle(f"C-GNS, {result['particles']} particles, {result['steps']} frames, "
                 f"{result['iterations']} solver iterations per frame", fontsize=10)
    return save_figure(fig, path)


def _frame_rgb(fig):
    import numpy as np

    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def particle_frames(arrays: dict, max_frames: int = 60) -> list:
    """RGB frames (matplotlib, headless) of the constrained particle rollout."""
    from gndesign.constraints import constraint_terms
    from gndesign.plotting import pyplot

    plt = pyplot()
    cfg, traj, terms = arrays["cfg"], arrays["positions"], constraint_terms(arrays["bound"])
    xlim, ylim = _particle_view(cfg, traj)
    stride = max(1, -(-len(traj) // max_frames))
    fig, ax = plt.subplots(figsize=(6, max(2.5, 6 * (ylim[1] - ylim[0]) / (xlim[1] - xlim[0]) + 0.4)), dpi=80,
                           layout="constrained")
    frames = []
    for t in range(0, len(traj), stride):
        ax.clear()
        _draw_particle_scene(ax, cfg, arrays["obstacle"], terms, traj[0], xlim, ylim)
        _draw_particles(ax, traj[t], cfg.particle_radius)
        ax.set_title(f"frame {t}", fontsize=9)
        frames.append(_frame_rgb(fig))
    plt.close(fig)
    return frames


def _constrained_series(c, arrays: dict, qpos, xpos):
    """``(label, values [T+1, k], lower, upper, names)`` of what a bound constraint constrains in an
    articulated rollout: joint coordinates for joint limits, body coordinates for walls."""
    from gndesign.constraints import AXES, JointLimit, Wall

    tree = arrays["tree"]
    if isinstance(c, JointLimit):
        names = {int(tree.jnt_qposadr[j]): n for j, n in enumerate(tree.joint_names)}
        return ("qpos", qpos[:, c.joints], c.lower, c.upper, [names.get(j, f"qpos[{j}]") for j in c.joints])
    if isinstance(c, Wall) and c.quantity in ("positions", "xpos"):
        i = AXES[c.axis] if isinstance(c.axis, str) else int(c.axis)
        nodes = c.nodes if c.nodes is not None else list(range(1, tree.nbody))
        return (f"body {'xyz'[i]} [m]", xpos[:, nodes, i], c.lower, c.upper, [tree.body_names[n] for n in nodes])
    return None


def plot_articulated_constraints(result: dict, arrays: dict, path) -> Path:
    """One panel per constraint: the constrained coordinate over time with its limits (joint
    limits, walls), or the constraint's violation per step (other kinds); dashed: no constraints."""
    import numpy as np

    from gndesign.constraints import constraint_terms
    from gndesign.plotting import pyplot, save_figure

    plt = pyplot()
    terms = constraint_terms(arrays["bound"])
    t = np.arange(len(arrays["qpos"])) * arrays["dt"]
    fig, axes = plt.subplots(len(terms), 1, figsize=(7, 1.2 + 2.2 * len(terms)), sharex=True, squeeze=False,
                             layout="constrained")
    base = arrays["baseline"]
    for k, (ax, c) in enumerate(zip(axes[:, 0], terms, strict=True)):
        series = _constrained_series(c, arrays, arrays["qpos"], arrays["xpos"])
        if series is None:
            ax.plot(t, result["violations"]["constraints"][k]["per_step_max"], "C0", label="with the constraints")
            if base is not None:
                ax.plot(t, result["unconstrained"]["constraints"][k]["per_step_max"], "C0--", label="without")
            ax.set_ylabel("violation")
        else:
            label, values, lower, upper, names = series
            for j, name in enumerate(names):
                ax.plot(t, values[:, j], f"C{j % 10}", label=name)
            if base is not None:
                bvals = _constrained_series(c, arrays, base["qpos"], base["xpos"])[1]
                for j in range(len(names)):
                    ax.plot(t, bvals[:, j], f"C{j % 10}--", lw=1, label="without constraints" if j == 0 else None)
            for lim in (lower, upper):
                for v in ([] if lim is None else np.atleast_1d(lim)):
                    ax.axhline(float(v), color="C3", lw=1.5)
            ax.set_ylabel(label)
        ax.set_title(result["constraints"][k], fontsize=9)
        ax.legend(fontsize=8, loc="best")
    axes[-1, 0].set_xlabel("time [s]")
    fig.suptitle(f"C-GNS on {result['system']}: {result['steps']} steps, {result['iterations']} solver iterations",
                 fontsize=10)
    return save_figure(fig, path)


def articulated_frames(arrays: dict, max_frames: int = 60) -> list:
    """RGB frames (matplotlib, headless) of the body origins, linked parent to child, in the plane of
    their largest motion, with the constraints drawn."""
    import numpy as np

    from gndesign.constraints import constraint_terms
    from gndesign.plotting import pyplot

    plt = pyplot()
    xpos, tree = arrays["xpos"], arrays["tree"]
    dims = tuple(sorted(np.argsort(np.ptp(xpos.reshape(-1, 3), 0))[-2:].tolist()))
    pts = xpos[..., list(dims)]
    pad = 0.2 * max(float(np.ptp(pts[..., 0])), float(np.ptp(pts[..., 1])), 0.5)
    xlim = (float(pts[..., 0].min()) - pad, float(pts[..., 0].max()) + pad)
    ylim = (float(pts[..., 1].min()) - pad, float(pts[..., 1].max()) + pad)
    stride = max(1, -(-len(xpos) // max_frames))
    fig, ax = plt.subplots(figsize=(6, max(2.5, 6 * (ylim[1] - ylim[0]) / (xlim[1] - xlim[0]) + 0.4)), dpi=80,
                           layout="constrained")
    terms = constraint_terms(arrays["bound"])
    frames = []
    for t in range(0, len(xpos), stride):
        ax.clear()
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect("equal")
        draw_constraints(ax, terms, xlim, ylim, pinned_from=xpos[0], dims=dims)
        for b in range(1, tree.nbody):  # links between bodies (not to the fixed world body), and body origins
            p = int(tree.body_parent[b])
            if p > 0:
                ax.plot(pts[t, [p, b], 0], pts[t, [p, b], 1], "-", color="C0", lw=3)
        ax.plot(pts[t, 1:, 0], pts[t, 1:, 1], "o", color="C0", ms=6)
        ax.set_title(f"t = {t * arrays['dt']:.2f} s", fontsize=9)
        ax.set_xlabel("xyz"[dims[0]])
        ax.set_ylabel("xyz"[dims[1]])
        frames.append(_frame_rgb(fig))
    plt.close(fig)
    return frames


def cmd_constrain(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    constraints = read_constraints(args.constraint, args.constraints)
    model, blob = load_constrain_model(args.model, args.system)
    particles = model.front == "particles"
    if particles:
        if args.actions is not None:
            raise GndesignError("--actions applies to articulated systems only")
        design = None
        if args.design is not None:
            try:
                design = [float(x) for x in args.design.split(",")]
            except ValueError:
                raise GndesignError(f"--design must be comma-separated angles in radians, got {args.design!r}") \
                    from None
        result, arrays = constrain_particles(model, blob, constraints, args.steps, args.iterations, args.seed, design,
                                             args.scene, args.particles, args.compare)
    else:
        for flag, value in (("--design", args.design), ("--scene", args.scene), ("--particles", args.particles)):
            if value is not None:
                raise GndesignError(f"{flag} applies to the obstacle scene only")
        result, arrays = constrain_articulated(model, args.system, constraints, args.steps, args.iterations,
                                               args.seed, args.actions or "zero", args.compare)
    result["model"] = str(args.model)
    if args.plot:
        plot = plot_particle_constraints if particles else plot_articulated_constraints
        result["plot"] = str(plot(result, arrays, args.plot))
    if args.video:
        frames = particle_frames(arrays) if particles else articulated_frames(arrays)
        result["video"] = str(write_gif(frames, args.video, fps=15))
    if args.out:
        from gndesign.io import atomic_write_json

        atomic_write_json(args.out, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        where = (f"obstacle scene, {result['particles']} particles, {result['steps']} frames" if particles
                 else f"{result['system']}, {result['steps']} control steps ({result['actions']} actions)")
        print(f"C-GNS on the {where}, {result['iterations']} solver iterations per step "
              f"({result['rollout_seconds']:.1f} s)")
        if particles:
            print(f"  (obstacles and walls keep the particles' surface out: default margin = the particle radius, "
                  f"{result['particle_radius']:g} m)")
        for k, (spec, c) in enumerate(zip(result["constraints"], result["violations"]["constraints"], strict=True)):
            unit = "(m or rad)" if c["spec"]["kind"] == "joint_limit" else "m"
            radii = f" ({c['max_radii']:.3f} radii)" if particles else ""
            print(f"  {spec}\n      max violation {c['max']:.4g} {unit}{radii}, mean {c['mean']:.3g}")
            if "unconstrained" in result:
                u = result["unconstrained"]["constraints"][k]
                radii = f" ({u['max_radii']:.3f} radii)" if particles else ""
                print(f"      without the constraints: max {u['max']:.4g} {unit}{radii}, mean {u['mean']:.3g}")
        for key in ("plot", "video"):
            if key in result:
                print(f"{key}: {result[key]}")
        if args.out:
            print(f"results: {args.out}")
    return 0


# ------------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gndesign", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("systems", help="list the registered systems")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_systems)

    s = sub.add_parser("inspect", help="show a system's graph: nodes, edges, actuators, features")
    s.add_argument("system", help="a registered system name (see `gndesign systems`) or an MJCF path")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument("--check-fk", action="store_true",
                   help="compare torch kinematics with MuJoCo on random states (exit 1 above 1e-5)")
    s.add_argument("--states", type=_positive_int, default=64, help="random states for --check-fk")
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("generate", help="roll MuJoCo out into a trajectory dataset")
    s.add_argument("system", help="a registered system name, an MJCF path, or obstacle-scene (particle data)")
    s.add_argument("--scene", help="obstacle-scene: JSON/YAML file of scene settings (default: the default scene)")
    s.add_argument("--episodes", type=_positive_int, required=True)
    s.add_argument("--steps", type=_positive_int,
                   help="control steps per episode (required; obstacle-scene: frames, default the scene's)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    s.add_argument("--workers", type=_positive_int, default=1)
    s.add_argument("--no-randomize", action="store_true", help="keep the nominal physical parameters")
    s.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("train", help="train a forward model (graph network or MLP) or a C-GNS on datasets")
    s.add_argument("--data", nargs="+", help="dataset directories (several systems may be mixed)")
    s.add_argument("--out", required=True, help="run directory (config, metrics.csv, checkpoints/)")
    s.add_argument("--config", help="YAML file with sections data, model, train (and solver: a C-GNS)")
    s.add_argument("--model", choices=["gn", "mlp", "cgns"],
                   help="gn, mlp: shorthand for --set model.kind=...; cgns: the constraint-based solver (C-GNS)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--steps", type=_positive_int, help="optimizer steps (train.steps)")
    g.add_argument("--minutes", type=float, help="stop after this many minutes (train.minutes)")
    s.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=3e-4 (repeatable)")
    s.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/latest.pt")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("evaluate", help="one-step and rollout errors of a model on a dataset")
    s.add_argument("--model", required=True, help="checkpoint path or pretrained:NAME")
    s.add_argument("--data", required=True, help="dataset directory")
    s.add_argument("--horizons", default="1,10,50,100", help="comma-separated rollout horizons")
    s.add_argument("--episodes", choices=["auto", "validation", "all"], default="auto",
                   help="auto: the held-out split if the model trained on this data, else all")
    s.add_argument("--plot", help="write a predicted-vs-true trajectory plot (PNG) here")
    s.add_argument("--out", help="also write the results as JSON to this file")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("plan", help="model-predictive control in the real dm_control environment")
    s.add_argument("system", help="task: cartpole-swingup (or cartpole) or swimmerN, e.g. swimmer6")
    s.add_argument("--model", required=True, help="checkpoint path, pretrained:NAME, or mujoco (the oracle)")
    s.add_argument("--planner", default="gradient", help="gradient, cem, mppi or random")
    s.add_argument("--episodes", type=_positive_int, default=1)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--steps", type=_positive_int, help="control steps per episode (default: dm_control's 1000)")
    s.add_argument("--horizon", type=_positive_int, help="planning horizon in control steps")
    s.add_argument("--replan-every", type=_positive_int, default=1, help="replan every k control steps")
    s.add_argument("--lockstep", type=_positive_int, default=1, metavar="E",
                   help="run E episodes together, one batched planner call per decision for all of them "
                   "(higher throughput; the reported latency is then the batch's)")
    s.add_argument("--set", action="append", metavar="planner.KEY=VALUE", help="planner option (repeatable)")
    s.add_argument("--video", help="write an animated GIF of the first episode here")
    s.add_argument("--plot", help="write reward and actions over time (PNG) here")
    s.add_argument("--out", help="write all results as JSON here")
    s.add_argument("--json", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_plan)

    s = sub.add_parser("demo", help="the main job (what `make demo` runs): MPC swing-up vs the oracle")
    s.add_argument("--out", default="runs/demo")
    s.add_argument("--steps", type=_positive_int, default=500,
                   help="control steps (dm_control's episodes have 1000; 500 keeps the demo under 10 minutes)")
    s.add_argument("--replan-every", type=_positive_int, default=8, help="replan every k control steps")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("design", help="inverse design of an obstacle that steers falling balls (scored in MuJoCo)")
    s.add_argument("--task", choices=["bin", "side"], default="bin")
    s.add_argument("--target-x", type=float, help="bin task: x of the bin's centre [m]")
    s.add_argument("--side", choices=["left", "right"], default="right", help="side task: which wall")
    s.add_argument("--segments", type=_positive_int, help="obstacle segments K (default: the scene's)")
    s.add_argument("--optimizer", default="gradient", help="gradient, cem or random")
    s.add_argument("--simulator", default="learned", help="learned (the particle model) or mujoco (ground truth)")
    s.add_argument("--model", default="pretrained:obstacle", help="particle model: checkpoint or pretrained:NAME")
    s.add_argument("--scene", help="JSON/YAML file of scene settings (default: the model's scene)")
    s.add_argument("--iterations", type=_positive_int,
                   help="gradient: Adam steps; cem: refits; random: batches of designs")
    s.add_argument("--seed", type=int, default=0, help="initial particle layout and optimizer seed")
    s.add_argument("--set", action="append", metavar="optimizer.KEY=VALUE", help="optimizer option (repeatable)")
    s.add_argument("--out", default="runs/design", help="output directory")
    s.add_argument("--threads", type=_positive_int, default=1,
                   help="torch threads (the models are small: one thread is fastest on a busy machine)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_design)

    s = sub.add_parser("constrain", help="roll a C-GNS out under test-time constraints and report violations")
    s.add_argument("--model", required=True, help="C-GNS checkpoint (gndesign train --model cgns)")
    s.add_argument("--system", required=True, help="obstacle (the particle scene) or the articulated system trained on")
    s.add_argument("--constraint", action="append", metavar="SPEC",
                   help="a constraint, e.g. 'disk center=0.5,1.0 radius=0.3 weight=100', 'pin nodes=0,3', "
                        "'wall axis=x upper=1.2 nodes=cart', 'joint_limit joints=slider upper=0.5' (repeatable)")
    s.add_argument("--constraints", metavar="FILE.yaml", help="a YAML list of constraints (strings or mappings)")
    s.add_argument("--iterations", type=int, help="solver iterations per step (default: the model's)")
    s.add_argument("--steps", type=_positive_int,
                   help=f"steps to roll out (default: the scene's frames; articulated: {CONSTRAIN_STEPS})")
    s.add_argument("--seed", type=int, default=0, help="initial particle layout or initial state (and actions)")
    s.add_argument("--design", metavar="ANGLES", help="obstacle scene: the obstacle's angles (default: hanging down)")
    s.add_argument("--scene", help="obstacle scene: JSON/YAML file of scene settings (default: the model's scene)")
    s.add_argument("--particles", type=_positive_int, help="obstacle scene: number of particles (default: the scene's)")
    s.add_argument("--actions", choices=["zero", "random"],
                   help="articulated: zero (default) or smooth random actions (as in the training data)")
    s.add_argument("--compare", action="store_true", help="also roll out without the constraints and report both")
    s.add_argument("--plot", help="write a PNG: particle trajectories with the constraints, or the constrained "
                                  "coordinates over time with their limits")
    s.add_argument("--video", help="write an animated GIF of the constrained rollout")
    s.add_argument("--out", help="also write the results as JSON to this file")
    s.add_argument("--threads", type=_positive_int, default=1, help="torch threads")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_constrain)
    return p


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("gndesign", "envs", "planners"):  # our progress messages, not third-party chatter
        logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return args.func(args)
    except GndesignError as e:
        if args.verbose:
            raise
        print(f"gndesign: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gndesign: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
