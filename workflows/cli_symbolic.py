"""``gndesign distill``: the command line of the symbolic distillation (argparse + printing)."""

from __future__ import annotations

import argparse
import json

from workflows.arguments import check_outputs, model_path, overwrite_option, positive_int


def cmd_distill(args: argparse.Namespace) -> int:
    from workflows.distill import run_distill

    check_outputs(args, [model_path(args.model), args.data, args.ood_data], "dir")
    result = run_distill(args.model, args.data, args.out, args.backend, args.seed, args.horizon, args.ood_data)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['system']} ({result['message']} messages, {result['pairs']} pairs): R^2 of the true forces on "
          f"the top components {result['r2']:.4f}")
    for f in result["formulas"]:
        print(f"  component {f['component']}: {f['formula']}  (R^2 {f['r2']:.4f}, complexity {f['complexity']})")
    for entry in result["force_law"]:
        print(f"  F_{entry['component']} = {entry['recovered']}\n    true {entry['true']}: form "
              f"{'correct' if entry['form_correct'] else 'WRONG'}, constant error {entry['constant_error']}")
    for name, r in result["rollouts"].items():
        print(f"  rollout ({name}, {r['horizon']} frames): GN {r['gn_mse']:.4g}, symbolic {r['symbolic_mse']:.4g}")
    if "hint" in result:
        print(f"  note: {result['hint']}")
    print(f"wrote {args.out}/distill.json, formulas.md, messages.png")
    return 0


def register(sub) -> None:
    s = sub.add_parser("distill", help="symbolic distillation of a message-sparse N-body model (formulas, R^2)")
    s.add_argument("--model", required=True, help="N-body checkpoint trained with model.message=l1, bottleneck or kl")
    s.add_argument("--data", required=True, help="N-body dataset of the same system (its held-out episodes are used)")
    s.add_argument("--out", required=True, help="output directory (distill.json, formulas.md, messages.png)")
    s.add_argument("--backend", default="sindy", help="sindy (pysindy, default), pyoperon, gplearn or pysr")
    s.add_argument("--ood-data", help="an out-of-distribution dataset of the system: rollout errors of GN and formula")
    s.add_argument("--horizon", type=positive_int, default=50, help="rollout frames")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    overwrite_option(s)
    s.set_defaults(func=cmd_distill)
