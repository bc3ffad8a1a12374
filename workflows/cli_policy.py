"""``gndesign policy train|eval`` and ``gndesign plan --policy``: policies learned through a model."""

from __future__ import annotations

import argparse
import json

from gndesign.errors import GndesignError
from workflows.arguments import check_outputs, model_path, output_options, positive_int, prefixed_options
from workflows.cli_identify import adaptive_options


def _print_result(result: dict, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "episodes"}
                         | {"returns": [e["return"] for e in result["episodes"]]}, indent=2))
        return
    for e in result["episodes"]:
        chatter = f", chatter {e['chatter']:.3f}" if "chatter" in e else ""
        print(f"episode {e['episode']} (seed {e['seed']}): return {e['return']:.1f}{chatter}")
    rtf = f"; real-time factor {result['real_time_factor']:.2f}" if "real_time_factor" in result else ""
    print(f"{result['planner']} on {result['model']}: return {result['return_mean']:.1f} +- "
          f"{result['return_std']:.1f}; "
          f"{result['mean_latency_s'] * 1e3:.2f} ms per decision; mean |a_t - a_(t-1)| {result['chatter_mean']:.3f}"
          f"{rtf}")
    for key in ("plot", "video"):
        if key in result:
            print(f"{key}: {result[key]}")


def _finish(result: dict, args: argparse.Namespace) -> None:
    from gndesign.io import atomic_write_json
    from gndesign.plotting import save_figure
    from workflows.figures import episode_figure

    if args.plot:
        result["plot"] = str(save_figure(episode_figure(result), args.plot))
    if args.out:
        atomic_write_json(args.out, result)
    _print_result(result, args)


def cmd_policy_train(args: argparse.Namespace) -> int:
    from gndesign.config import parse_value
    from workflows.policy import train_policy
    from workflows.train import NO_STEP_LIMIT

    sections: dict[str, dict] = {"policy": {}, "train": {}}
    for item in args.set or []:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if section not in sections or not name or not value:
            raise GndesignError(f"--set {item!r} must look like policy.KEY=VALUE or train.KEY=VALUE "
                                "(e.g. policy.horizon=256, train.minutes=20)")
        sections[section][name] = parse_value(value)
    if args.minutes is not None:
        sections["train"]["minutes"] = args.minutes
        sections["train"].setdefault("steps", NO_STEP_LIMIT)  # a time budget, not cut by the default steps
    if args.steps is not None:
        sections["train"]["steps"] = args.steps
    summary = train_policy(args.model, args.task, args.out, args.data, sections["policy"], sections["train"],
                           resume=args.resume, progress=not args.quiet)
    print(f"policy: {summary['checkpoint']} after {summary['step']} steps ({summary['wall_s']:.0f} s); "
          f"mean imagined reward per model step {-summary.get('val_loss', float('nan')):.3f}")
    return 0


def cmd_policy_eval(args: argparse.Namespace) -> int:
    from workflows.policy import eval_policy

    check_outputs(args, [model_path(args.policy)])
    result = eval_policy(args.policy, args.task, args.episodes, args.seed, args.control_steps, args.video,
                         overwrite=args.overwrite)
    _finish(result, args)
    return 0


def cmd_plan_guided(args: argparse.Namespace, plain) -> int:
    """``gndesign plan --policy P``: the plan command with the planner guided by a policy."""
    if args.policy is None:
        if args.asynchronous or args.value_weight != 1.0:
            raise GndesignError("--async and --value-weight go with --policy (a policy-guided planner)")
        return plain(args)
    from workflows.plan import plan_episodes

    options = prefixed_options(args.set, "planner", "iterations=2")
    check_outputs(args, [model_path(args.model), model_path(args.policy)])
    result = plan_episodes(args.task, args.model, args.planner, args.episodes, args.seed, args.control_steps,
                           args.replan_every, args.horizon, options, args.video, progress=not args.quiet,
                           lockstep=args.lockstep, overwrite=args.overwrite, action_repeat=args.action_repeat,
                           policy=args.policy, value_weight=args.value_weight, asynchronous=args.asynchronous,
                           **adaptive_options(args))
    _finish(result, args)
    return 0


def register(sub) -> None:
    p = sub.add_parser("policy", help="policies learned through a learned model: train (imagination), eval (MuJoCo)")
    psub = p.add_subparsers(dest="policy_command", required=True, metavar="ACTION")

    s = psub.add_parser("train", help="train a policy by backpropagating the task's return through the model")
    s.add_argument("--model", required=True, help="the learned model (checkpoint or pretrained:NAME)")
    s.add_argument("--task", default="cartpole-swingup", help="the task (cartpole-swingup)")
    s.add_argument("--out", required=True, help="run directory (checkpoints/latest.pt, metrics.csv, config.yaml)")
    s.add_argument("--data", nargs="+", help="datasets whose states start imagined rollouts (default: the "
                   "model's training data)")
    s.add_argument("--minutes", type=float, help="wall-clock budget (train.minutes; alone, no step limit)")
    s.add_argument("--steps", type=positive_int, help="optimizer steps (train.steps, default 2000; with "
                   "--minutes, whichever comes first)")
    s.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="policy.* or train.* option (repeatable), e.g. policy.horizon=256")
    s.add_argument("--resume", action="store_true", help="continue the run in --out")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_policy_train)

    s = psub.add_parser("eval", help="run a policy alone in true MuJoCo (dm_control) and report returns")
    s.add_argument("--policy", required=True, help="a policy checkpoint")
    s.add_argument("--task", default="cartpole-swingup")
    s.add_argument("--episodes", type=positive_int, default=10)
    s.add_argument("--seed", type=int, default=100)
    s.add_argument("--control-steps", type=positive_int, help="control steps per episode (default: 1000)")
    s.add_argument("--video", help="write an animated GIF of the first episode here")
    output_options(s, "write reward and actions over time of the first episode (PNG) here")
    s.set_defaults(func=cmd_policy_eval)

    plan = sub.choices.get("plan")
    if plan is not None:  # the plan command guided by a policy
        plan.add_argument("--policy", help="a policy checkpoint: one restart is its plan, its value ends the horizon")
        plan.add_argument("--value-weight", type=float, default=1.0,
                          help="weight of the policy's value of the horizon's last state (0: none; with --policy)")
        plan.add_argument("--async", dest="asynchronous", action="store_true",
                          help="decide in a thread apart from the control loop (with --policy): act on the latest "
                               "plan, record each plan's latency and age")
        plain = plan.get_default("func")
        plan.set_defaults(func=lambda args: cmd_plan_guided(args, plain))

