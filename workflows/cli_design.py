"""``gndesign design --refine-rounds R``: inverse design with the model refined in the loop."""

from __future__ import annotations

import argparse
import json

from gndesign.errors import GndesignError
from workflows.arguments import positive_int, prefixed_options


def cmd_design_refined(args: argparse.Namespace, plain) -> int:
    """The design command; with ``--refine-rounds``, :func:`workflows.refine.refine_design`."""
    if args.refine_rounds is None:
        if args.refine_data is not None:
            raise GndesignError("--refine-data goes with --refine-rounds")
        return plain(args)
    if args.refine_data is None:
        raise GndesignError("--refine-rounds needs --refine-data DIR: the model's training data (a replay of it "
                            "keeps the fine-tuned model from forgetting)")
    clashes = [flag for flag, bad in (("--optimizer", args.optimizer != "gradient"), ("--simulator",
               args.simulator != "learned"), ("--task", args.task != "bin"), ("--scene", args.scene is not None))
               if bad]
    if clashes:
        raise GndesignError(f"--refine-rounds refines gradient design of the bin task through the learned model in "
                            f"its own training scene (a chain; --segments may change its K): drop {', '.join(clashes)}")
    if args.target_x is None:
        raise GndesignError("the bin task needs --target-x")
    import torch

    from workflows.refine import refine_design

    torch.set_num_threads(args.threads)
    r = refine_design(args.target_x, args.refine_data, args.refine_rounds, args.model, args.out, args.layouts,
                      args.replay, args.steps, args.seed,
                      prefixed_options(args.set, "optimizer", "lr=0.05", others=("loss",)),
                      fine_tune={"steps": args.fine_tune_steps} if args.fine_tune_steps else None,
                      overwrite=args.overwrite, segments=args.segments, verify=args.verify,
                      loss=prefixed_options(args.set, "loss", "minibatch=stratified", others=("optimizer",)) or None)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        for row in r["rounds"]:
            print(f"round {row['round']}: MuJoCo score {row['score']:.0%}, predicted {row['predicted_score']:.0%} "
                  f"(gap {row['gap']:+.2f}), model error {row['model_error']:.3f} m")
        print(f"result: a design of round {r['best_round']}, MuJoCo score {r['score']:.0%}; refine.json: "
              f"{args.out}/refine.json")
    return 0


def register(sub) -> None:
    design = sub.choices.get("design")
    if design is None:
        return
    design.add_argument("--refine-rounds", type=positive_int, metavar="R", help="after each gradient design, "
                        "simulate it in MuJoCo, fine-tune the model on those trajectories, and design on (R rounds)")
    design.add_argument("--refine-data", metavar="DIR", help="with --refine-rounds: the model's training data "
                        "(particle dataset) to replay while fine-tuning")
    design.add_argument("--layouts", type=positive_int, default=4,
                        help="with --refine-rounds: ball layouts each round's design is simulated from (default 4)")
    design.add_argument("--verify", type=positive_int, default=1, help="with --refine-rounds: designs verified in "
                        "MuJoCo per round, the result and its runners-up (default 1); all join the fine-tuning data")
    design.add_argument("--replay", type=int, default=64,
                        help="with --refine-rounds: episodes of --refine-data replayed while fine-tuning (default 64)")
    design.add_argument("--fine-tune-steps", type=positive_int,
                        help="with --refine-rounds: optimizer steps of each fine-tuning (default 1000: "
                        "workflows/refine.py's FINE_TUNE)")
    plain = design.get_default("func")
    design.set_defaults(func=lambda args: cmd_design_refined(args, plain))
