"""The ``gndesign`` command line: argparse and printing over the workflows.

Every subcommand turns a :class:`~gndesign.errors.GndesignError` into a one-line message on
stderr and exit status 2; ``--verbose`` shows tracebacks. Options keep one meaning each:
``--steps`` counts optimizer steps (train, design), ``--control-steps`` control steps of an
articulated system, ``--frames`` frames of the particle scene. Old spellings still work for one
release, with a deprecation message on stderr.

The workflow modules are imported inside the commands, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

from gndesign.errors import GndesignError
from workflows import cli_design, cli_identify, cli_policy, cli_symbolic, cli_tasks
from workflows.arguments import (
    check_outputs,
    model_path,
    output_options,
    overwrite_option,
    positive_int,
    prefixed_options,
)

RELEASE_NOTE = "it will be removed in the next release"


# ------------------------------------------------------------------------------------ deprecation
def deprecated(message: str) -> None:
    """Tell the user (stderr) and Python callers (``DeprecationWarning``) that a spelling is old."""
    print(f"gndesign: warning: {message} ({RELEASE_NOTE})", file=sys.stderr)
    warnings.warn(message, DeprecationWarning, stacklevel=2)


class _OldSpelling(argparse.Action):
    """An old option spelling: stores into ``dest`` and, when ``new`` names the one new spelling,
    warns at once (else the command resolves it and warns, see :func:`rollout_length`)."""

    def __init__(self, option_strings, dest, new: str | None = None, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if self.new:
            deprecated(f"{parser.prog} {option_string} is now {self.new}")
        setattr(namespace, self.dest, values)


def _old(s: argparse.ArgumentParser, flag: str, dest: str, new: str | None = None, **kwargs) -> None:
    s.add_argument(flag, dest=dest, action=_OldSpelling, new=new, help=argparse.SUPPRESS, **kwargs)


def rollout_length(args: argparse.Namespace, particles: bool) -> int | None:
    """``--frames`` (the particle scene) or ``--control-steps`` (articulated systems), or the old
    ``--steps``, which meant either; the other one is an error."""
    right, wrong = ("--frames", "--control-steps") if particles else ("--control-steps", "--frames")
    if getattr(args, wrong[2:].replace("-", "_")) is not None:
        where = "the obstacle scene" if particles else "articulated systems"
        raise GndesignError(f"{wrong} does not apply to {where}: use {right}")
    value = getattr(args, right[2:].replace("-", "_"))
    if args.old_steps is not None:
        deprecated(f"gndesign {args.command} --steps is now {right}")
        value = args.old_steps if value is None else value
    return value


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


def cmd_inspect(args: argparse.Namespace) -> int:
    from workflows.inspect import inspect_system

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
    check_outputs(args, [args.system, args.scene], "dir", own="dataset")
    if args.system == "obstacle-scene":
        from envs.obstacle.scene import load_scene_file
        from envs.obstacle.simulation import generate_obstacle_dataset

        frames = rollout_length(args, particles=True)
        if args.no_randomize:
            raise GndesignError("--no-randomize does not apply to obstacle-scene (designs and layouts are always "
                                "random)")
        cfg = load_scene_file(args.scene, frames=frames)
        report = generate_obstacle_dataset(cfg, args.out, episodes=args.episodes, seed=args.seed,
                                           workers=args.workers, overwrite=args.overwrite)
        print(f"wrote {report}")
        return 0
    from envs.generate import generate_dataset

    steps = rollout_length(args, particles=False)
    if steps is None:
        raise GndesignError(f"generate {args.system} needs --control-steps (control steps per episode)")
    report = generate_dataset(args.system, episodes=args.episodes, steps=steps, seed=args.seed,
                              out_dir=args.out, workers=args.workers, randomize=not args.no_randomize,
                              overwrite=args.overwrite, progress=not args.quiet, action_repeat=args.action_repeat)
    print(f"wrote {report.transitions} transitions ({args.episodes} episodes x {report.steps} steps) "
          f"to {report.path} in {report.seconds:.1f} s: {report.rate:.0f} transitions/s")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from workflows.train import train_model

    check_outputs(args, [*(args.data or []), args.config], "dir", own="run directory")
    summary = train_model(args.out, args.data, args.config, args.family, args.set, args.steps, args.minutes,
                          resume=args.resume, progress=not args.quiet, device=args.device)
    if summary:
        val = f", validation loss {summary['val_loss']:.4g}" if "val_loss" in summary else ""
        print(f"trained {summary['step']} steps in {summary['seconds']:.0f} s on {summary['device']}: train loss "
              f"{summary['train_loss']:.4g}{val}; checkpoint {Path(args.out) / 'checkpoints' / 'latest.pt'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from workflows.evaluate import evaluate_model

    result = evaluate_model(args.model, args.data, args.horizons, args.episode_set, args.plot, args.out,
                            overwrite=args.overwrite, statistics=args.statistics)
    if args.json:
        print(json.dumps(result, indent=2))
    elif "position_error" in result:  # particle data
        print(f"particles: {result['episodes']} episodes of {result['steps']} frames from rest; mean error over the "
              f"rollout {result['mean_position_error']:.4g} m (particles that stay put: "
              f"{result['baseline_mean_error']:.4g} m)")
        for h, e in result["position_error"].items():
            print(f"  frame {h:4d}: {e:.4g} m (stay put {result['baseline_error'][h]:.4g} m)")
    else:
        print(f"{result['system']}: {result['episodes']} {result['episode_set']} episodes, one-step loss "
              f"{result['one_step_loss']:.4g}"
              + (f" (not trained on it: normalized with the statistics of {result['statistics_from']})"
                 if "statistics_from" in result else ""))
        for h in result["horizons"]:
            print(f"  h={h:4d}: qpos RMSE {result['qpos_rmse'][h]:.4g}, body position error "
                  f"{result['body_pos_error'][h]:.4g} m{'' if result['finite'][h] else '  (NOT FINITE)'}")
        if args.plot:
            print(f"plot: {result['plot']}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from gndesign.io import atomic_write_json
    from gndesign.plotting import save_figure
    from workflows.figures import episode_figure
    from workflows.plan import plan_episodes

    options = prefixed_options(args.set, "planner", "iterations=20")
    check_outputs(args, [model_path(args.model)])
    if args.task_file:  # the positional then names the system the task file runs on
        from envs.tasks import get_task

        args.task = get_task(args.task_file, system=args.task)
    result = plan_episodes(args.task, args.model, args.planner, args.episodes, args.seed, args.control_steps,
                           args.replan_every, args.horizon, options, args.video, progress=not args.quiet,
                           lockstep=args.lockstep, overwrite=args.overwrite, action_repeat=args.action_repeat,
                           **cli_identify.adaptive_options(args))
    if args.plot:
        result["plot"] = str(save_figure(episode_figure(result), args.plot))
    if args.out:
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
    from workflows.plan import demo

    r = demo(args.out, args.control_steps, args.replan_every, args.seed, progress=not args.quiet,
             overwrite=args.overwrite)
    learned, oracle = r["learned"], r["oracle"]
    print(f"[1/2] learned model + policy-guided gradient planner: return {learned['return_mean']:.1f} over "
          f"{learned['steps']} steps (replanning every {args.replan_every}), "
          f"{learned['mean_latency_s'] * 1e3:.0f} ms per decision "
          f"(real-time factor {learned['real_time_factor']:.2f})")
    print(f"[2/2] MuJoCo oracle + CEM:                            return {oracle['return_mean']:.1f} "
          f"({oracle['mean_latency_s'] * 1e3:.0f} ms per decision)")
    print(f"learned / oracle return: {r['ratio']:.2f}; video {learned.get('video', 'not written')}, "
          f"plot {learned['plot']}, numbers {r['json']}")
    return 0


def cmd_design(args: argparse.Namespace) -> int:
    import torch

    from workflows.design import design_obstacle

    torch.set_num_threads(args.threads)
    options = prefixed_options(args.set, "optimizer", "lr=0.05", others=("loss",))
    loss = prefixed_options(args.set, "loss", "minibatch=stratified", others=("optimizer",))
    r = design_obstacle(args.task, args.target_x, args.side, args.segments, args.optimizer, args.simulator,
                        args.model, args.steps, args.seed, options, args.scene, out=args.out,
                        overwrite=args.overwrite, loss=loss or None)
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


def cmd_constrain(args: argparse.Namespace) -> int:
    import torch

    from gndesign.io import atomic_write_json, read_yaml_mapping
    from gndesign.plotting import save_figure
    from workflows import constrain, figures, video

    torch.set_num_threads(args.threads)
    check_outputs(args, [model_path(args.model), args.constraints, args.scene])
    if args.scene:  # a broken scene file fails before the model loads
        read_yaml_mapping(args.scene, "scene file")
    constraints = constrain.read_constraints(args.constraint, args.constraints)
    model, blob = constrain.load_constrain_model(args.model, args.system)
    particles = model.front == "particles"
    length = rollout_length(args, particles)
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
        result, arrays = constrain.constrain_particles(model, blob, constraints, length, args.iterations, args.seed,
                                                       design, args.scene, args.particles, args.compare)
    else:
        for flag, value in (("--design", args.design), ("--scene", args.scene), ("--particles", args.particles)):
            if value is not None:
                raise GndesignError(f"{flag} applies to the obstacle scene only")
        result, arrays = constrain.constrain_articulated(model, args.system, constraints, length, args.iterations,
                                                         args.seed, args.actions or "zero", args.compare)
    result["model"] = str(args.model)
    if args.plot:
        draw = figures.particle_constraints_figure if particles else figures.articulated_constraints_figure
        result["plot"] = str(save_figure(draw(result, arrays), args.plot))
    if args.video:
        frames = video.particle_frames(arrays) if particles else video.articulated_frames(arrays)
        result["video"] = str(video.write_gif(frames, args.video, fps=15))
    if args.out:
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
# Each further command lives in its own ``workflows/cli_<topic>.py`` with a ``register(sub)`` that adds
# its parser (argparse + printing only, like this module); list it here.
COMMAND_GROUPS: tuple = (cli_policy.register, cli_tasks.register, cli_identify.register,
                         cli_symbolic.register, cli_design.register)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gndesign", description="Differentiable inverse design and planning with "
                                "learned graph-network simulators (commands below; COMMAND -h for details).")
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
    s.add_argument("--states", type=positive_int, default=64, help="random states for --check-fk")
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("generate", help="roll MuJoCo out into a trajectory dataset")
    s.add_argument("system", help="a registered system name, an MJCF path, or obstacle-scene (particle data)")
    s.add_argument("--scene", help="obstacle-scene: JSON/YAML file of scene settings (default: the default scene)")
    s.add_argument("--episodes", type=positive_int, required=True)
    s.add_argument("--control-steps", type=positive_int, help="control steps per episode (required for systems)")
    s.add_argument("--frames", type=positive_int, help="obstacle-scene: frames per episode (default: the scene's)")
    _old(s, "--steps", "old_steps", type=positive_int)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    s.add_argument("--workers", type=positive_int, default=1)
    s.add_argument("--no-randomize", action="store_true", help="keep the nominal physical parameters")
    s.add_argument("--action-repeat", type=positive_int, default=1, metavar="K",
                   help="hold each action K control steps and record every K-th state: data for a model "
                        "that steps K control steps at once (K must divide --control-steps; default 1)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("train", help="train a forward model (graph network or MLP) or a C-GNS on datasets")
    s.add_argument("--data", nargs="+", help="dataset directories (several systems may be mixed)")
    s.add_argument("--out", required=True, help="run directory (config, metrics.csv, checkpoints/)")
    s.add_argument("--config", help="YAML file with sections data, model, train (and solver: a C-GNS)")
    families = ["gn", "mlp", "cgns"]
    s.add_argument("--family", choices=families,
                   help="gn, mlp: shorthand for --set model.kind=...; cgns: the constraint-based solver (C-GNS)")
    _old(s, "--model", "family", "--family", choices=families)
    g = s.add_mutually_exclusive_group()
    g.add_argument("--steps", type=positive_int, help="optimizer steps (train.steps)")
    g.add_argument("--minutes", type=float, help="train for this many minutes, whatever the step count "
                   "(train.minutes)")
    s.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=3e-4 (repeatable)")
    s.add_argument("--device", help="cpu, cuda, cuda:N or auto: where the model trains (train.device)")
    s.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/latest.pt")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("evaluate", help="one-step and rollout errors of a model on a dataset")
    s.add_argument("--model", required=True, help="checkpoint path or pretrained:NAME")
    s.add_argument("--data", required=True, help="dataset directory")
    s.add_argument("--horizons", default="1,10,50,100", help="comma-separated rollout horizons")
    episode_sets = ["auto", "validation", "all"]
    s.add_argument("--episode-set", choices=episode_sets, default="auto",
                   help="auto: the held-out split if the model trained on this data, else all")
    _old(s, "--episodes", "episode_set", "--episode-set", choices=episode_sets)
    s.add_argument("--statistics", default="nearest", help="a system the graph network was not trained on is "
                   "normalized like: nearest (the trained system nearest in structure), pooled, or a trained system")
    output_options(s, "write a predicted-vs-true trajectory plot (PNG) here")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("plan", help="model-predictive control in the real dm_control environment")
    s.add_argument("task", help="cartpole-swingup (or cartpole) or swimmerN, e.g. swimmer6")
    s.add_argument("--task", dest="task_file", metavar="FILE", help="a task file (see `gndesign tasks`); the "
                   "positional then names the system (registered or an MJCF path) it runs on")
    s.add_argument("--model", required=True, help="checkpoint path, pretrained:NAME, or mujoco (the oracle)")
    s.add_argument("--planner", default="gradient", help="gradient, cem, mppi or random")
    s.add_argument("--episodes", type=positive_int, default=1)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--control-steps", type=positive_int,
                   help="control steps per episode (default: dm_control's 1000)")
    _old(s, "--steps", "control_steps", "--control-steps", type=positive_int)
    s.add_argument("--horizon", type=positive_int, help="planning horizon in control steps (default: the task's)")
    s.add_argument("--replan-every", type=positive_int,
                   help="replan every k control steps (default: the task's, 1)")
    s.add_argument("--action-repeat", type=positive_int, metavar="K",
                   help="the control steps per model step the checkpoint must have (refused otherwise; "
                        "default: the checkpoint's)")
    s.add_argument("--lockstep", type=positive_int, default=1, metavar="E",
                   help="run E episodes together, one batched planner call per decision for all of them "
                   "(higher throughput; the reported latency is then the batch's)")
    s.add_argument("--set", action="append", metavar="planner.KEY=VALUE", help="planner option (repeatable)")
    s.add_argument("--video", help="write an animated GIF of the first episode here")
    output_options(s, "write reward and actions over time (PNG) here")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_plan)

    s = sub.add_parser("demo", help="the main job (what `make demo` runs): MPC swing-up vs the oracle")
    s.add_argument("--out", default="runs/demo")
    s.add_argument("--control-steps", type=positive_int, default=1000,
                   help="control steps (default: dm_control's full 1000-step episode)")
    _old(s, "--steps", "control_steps", "--control-steps", type=positive_int)
    s.add_argument("--replan-every", type=positive_int, default=8, help="replan every k control steps")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--quiet", action="store_true")
    overwrite_option(s)
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("design", help="inverse design of an obstacle that steers falling balls (scored in MuJoCo)")
    s.add_argument("--task", choices=["bin", "side"], default="bin")
    s.add_argument("--target-x", type=float, help="bin task: x of the bin's centre [m]")
    s.add_argument("--side", choices=["left", "right"], default="right", help="side task: which wall")
    s.add_argument("--segments", type=positive_int, help="obstacle segments K (default: the scene's)")
    s.add_argument("--optimizer", default="gradient", help="gradient, cem or random")
    s.add_argument("--simulator", default="learned", help="learned (the particle model) or mujoco (ground truth)")
    s.add_argument("--model", default="pretrained:obstacle", help="particle model: checkpoint or pretrained:NAME")
    s.add_argument("--scene", help="JSON/YAML file of scene settings (default: the model's scene)")
    s.add_argument("--steps", type=positive_int,
                   help="optimizer steps (gradient: Adam steps; cem: refits; random: batches of designs)")
    _old(s, "--iterations", "steps", "--steps", type=positive_int)
    s.add_argument("--seed", type=int, default=0, help="initial particle layout and optimizer seed")
    s.add_argument("--set", action="append", metavar="optimizer.KEY=VALUE", help="optimizer option, or the gradient's "
                   "learned loss: loss.KEY=VALUE (particles, minibatch, last_frames, temperature, nodes; repeatable)")
    s.add_argument("--out", default="runs/design", help="output directory")
    s.add_argument("--threads", type=positive_int, default=1,
                   help="torch threads (the models are small: one thread is fastest on a busy machine)")
    s.add_argument("--json", action="store_true")
    overwrite_option(s)
    s.set_defaults(func=cmd_design)

    s = sub.add_parser("constrain", help="roll a C-GNS out under test-time constraints and report violations")
    s.add_argument("--model", required=True, help="C-GNS checkpoint (gndesign train --family cgns)")
    s.add_argument("--system", required=True, help="obstacle (the particle scene) or the articulated system trained on")
    s.add_argument("--constraint", action="append", metavar="SPEC",
                   help="a constraint, e.g. 'disk center=0.5,1.0 radius=0.3 weight=100', 'pin nodes=0,3', "
                        "'wall axis=x upper=1.2 nodes=cart', 'joint_limit joints=slider upper=0.5' (repeatable)")
    s.add_argument("--constraints", metavar="FILE.yaml", help="a YAML list of constraints (strings or mappings)")
    s.add_argument("--iterations", type=int, help="solver iterations per step (default: the model's)")
    s.add_argument("--frames", type=positive_int, help="obstacle scene: frames to roll out (default: the scene's)")
    s.add_argument("--control-steps", type=positive_int, help="articulated: control steps to roll out (default 100)")
    _old(s, "--steps", "old_steps", type=positive_int)
    s.add_argument("--seed", type=int, default=0, help="initial particle layout or initial state (and actions)")
    s.add_argument("--design", metavar="ANGLES", help="obstacle scene: the obstacle's angles (default: hanging down)")
    s.add_argument("--scene", help="obstacle scene: JSON/YAML file of scene settings (default: the model's scene)")
    s.add_argument("--particles", type=positive_int, help="obstacle scene: number of particles (default: the scene's)")
    s.add_argument("--actions", choices=["zero", "random"],
                   help="articulated: zero (default) or smooth random actions (as in the training data)")
    s.add_argument("--compare", action="store_true", help="also roll out without the constraints and report both")
    s.add_argument("--video", help="write an animated GIF of the constrained rollout")
    output_options(s, "write a PNG: particle trajectories with the constraints, or the constrained coordinates over "
                "time with their limits")
    s.add_argument("--threads", type=positive_int, default=1, help="torch threads")
    s.set_defaults(func=cmd_constrain)

    for register in COMMAND_GROUPS:  # commands that live in their own module: register(sub) adds them
        register(sub)
    return p


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
