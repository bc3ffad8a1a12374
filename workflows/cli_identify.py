"""``gndesign identify``: physical parameters from observed trajectories through a learned model."""

from __future__ import annotations

import argparse
import json

from workflows.arguments import check_outputs, model_path, overwrite_option, positive_int


def cmd_identify(args: argparse.Namespace) -> int:
    from workflows.identify import identify_system

    check_outputs(args, [model_path(args.model), args.data])
    episodes = None if args.episodes is None else [int(e) for e in args.episodes.split(",") if e.strip()]
    result = identify_system(args.model, args.data, args.params, args.restarts, episodes, args.seconds, args.prior,
                             args.iterations, args.seed, args.out, args.overwrite, args.keep)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for p in result["parameters"]:
            truth = f"  truth {p['truth']:.6g} ({100 * p['error']:+.2f}%)" if "truth" in p else ""
            print(f"{p['name']:<28} {p['estimate']:.6g}  (nominal {p['nominal']:.6g}, x{p['factor']:.4f}; "
                  f"+-{100 * p['std']:.2g}% curvature, +-{100 * p['spread']:.2g}% over restarts){truth}")
        print(f"loss {result['loss']:.3g} over {result['kept']} of {result['transitions']} transitions "
              f"({result['seconds']:g} s), {result['wall_s']:.1f} s")
    return 0


def adaptive_options(args: argparse.Namespace) -> dict:
    """The plan command's online-identification options (added by :func:`register`) as
    :func:`workflows.plan.plan_episodes` keywords."""
    return {"adapt": args.adapt, "refit_every": args.refit_every, "scale_params": args.scale_params,
            "known_params": args.known_params}


def register(sub) -> None:
    s = sub.add_parser("identify", help="estimate physical parameters (masses, damping, gears) from observed "
                       "trajectories through a learned model")
    s.add_argument("--model", required=True, help="checkpoint path or pretrained:NAME (takes parameters as inputs)")
    s.add_argument("--data", required=True, help="observed trajectories: a trajectory dataset directory "
                   "(gndesign generate, or write_dataset) of the model's system")
    s.add_argument("--params", default="mass,damping", help="comma-separated groups: mass, damping, gear "
                   "(default mass,damping; all three together are defined only up to one common scale)")
    s.add_argument("--restarts", type=positive_int, default=4, help="starts of the optimizer (the first at nominal)")
    s.add_argument("--episodes", help="comma-separated episode indices (default: all; they share one system)")
    s.add_argument("--seconds", type=float, help="use the first S seconds of each episode (default: all)")
    s.add_argument("--prior", type=float, default=1e-4, help="weight of the Gaussian prior around the nominal "
                   "values (log-factor width log 1.25)")
    s.add_argument("--iterations", type=positive_int, default=30, help="Levenberg-Marquardt iterations")
    s.add_argument("--keep", type=float, help="fraction of the transitions fitted: those the estimate predicts "
                   "best (least trimmed squares, robust to the model's worst errors; default 0.8; 1: all)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="write the estimates (JSON) here")
    s.add_argument("--json", action="store_true")
    overwrite_option(s)
    s.set_defaults(func=cmd_identify)

    plan = sub.choices.get("plan")
    if plan is not None:  # adaptive MPC and mismatched systems
        plan.add_argument("--adapt", metavar="GROUPS", help="identify these parameter groups online (mass, "
                          "damping, gear; comma-separated) and plan with the estimate (a learned model, one episode "
                          "at a time)")
        plan.add_argument("--refit-every", type=positive_int, metavar="N", help="with --adapt: refit every N control "
                          "steps from all the steps seen (default 100, rounded up to the model's action repeat)")
        plan.add_argument("--scale-params", metavar="GROUP=F,...", help="run the true system with its physical "
                          "parameters scaled, e.g. mass=1.25 (a system the model does not know)")
        plan.add_argument("--known-params", action="store_true",
                          help="tell the learned model the --scale-params values (the 'true parameters' reference)")
