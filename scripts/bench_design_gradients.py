"""How informative is the gradient of the learned design loss? Its size against the rollout length,
against finite-difference slopes, and whether a step along it lowers the loss.

Writes ``results/design_gradients.json`` and ``results/design_gradients.md`` (with the machine).

    python scripts/bench_design_gradients.py                      # K = 4, 8 designs (~2 min on one core)
    python scripts/bench_design_gradients.py --segments 16 --out results/design_gradients_k16

Protocol: ``--designs`` smooth random chain designs (``smooth_designs``, the gradient optimizer's
screen family, seed ``--seed``), the balls' layout of seed 0, all balls, ``pretrained:obstacle``.

* Sensitivity per rollout length F: ``m_F``, the balls' mean x at frame F, a smooth functional
  free of bin edges. Per design, the analytic gradient ``g = d m_F / d design`` (through the
  learned rollout, as the design optimizer sees it) and the central finite-difference slope of
  ``m_F`` along ``g / |g|`` with steps ``h`` (radians of joint angle). Where they agree, ``|g|``
  describes the loss at that scale; where ``|g|`` exceeds the slope by orders of magnitude, the
  gradient is dominated by variations finer than ``h`` (chaotic collisions), so a step of ``h``
  along it is no better than a step along a random direction.
* Descent test at the full length: the bin loss (target ``--target``, the final frame, temperature 1,
  all balls: the loss the gradient optimizer's result is picked with) after a step of ``h`` along
  ``-g`` and along random unit directions (the same ones for every row); the fraction of designs
  whose loss falls. Per ``--grad-horizons`` value: ``g`` exact (``none``) or damped through time
  over that many frames (``DesignProblem(grad_horizon=H)``, :func:`envs.obstacle.problem.damped_rollout`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from envs.obstacle.goals import get_design_goal
from envs.obstacle.problem import DesignProblem, load_design_model
from envs.obstacle.simulation import smooth_designs
from gndesign.io import atomic_write_json, atomic_write_text, check_finite

ROOT = Path(__file__).resolve().parents[1]


def mean_x(problem: DesignProblem, designs: torch.Tensor) -> torch.Tensor:
    """``[B]``: the balls' mean x at the last frame of the problem's rollout of ``designs [B, K]``."""
    return problem.learned_rollout(designs)[:, -1, :, 0].mean(-1)


def sensitivity(problem: DesignProblem, designs: torch.Tensor, steps: list[float]) -> dict:
    """Per design: ``|d m / d design|`` and the central finite-difference slopes of ``m`` along the
    gradient's direction for each step in ``steps``."""
    x = designs.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(mean_x(problem, x).sum(), x)  # designs are independent: per-design gradients
    norm = g.norm(dim=1)
    d = g / norm.clamp_min(1e-30)[:, None]
    slopes = {}
    with torch.no_grad():
        for h in steps:
            up, down = mean_x(problem, designs + h * d), mean_x(problem, designs - h * d)
            slopes[h] = ((up - down) / (2 * h)).tolist()
    return {"grad_norm": norm.tolist(), "slope": slopes}


def descent(problem: DesignProblem, designs: torch.Tensor, steps: list[float], directions: int,
            gen: torch.Generator) -> dict:
    """Change of the full loss after a step along ``-g/|g|`` and along ``directions`` random unit
    directions per design, for each step length."""
    x = designs.clone().requires_grad_(True)
    f = problem.full_loss(x)["total"]
    (g,) = torch.autograd.grad(f.sum(), x)
    d = -g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)
    rnd = torch.randn(len(designs), directions, designs.shape[1], generator=gen, dtype=designs.dtype)
    rnd = rnd / rnd.norm(dim=-1, keepdim=True)
    out = {}
    with torch.no_grad():
        # The baseline from a plain rollout: a damped one has the same positions only up to float32
        # rounding, which 150 chaotic frames amplify.
        f = problem.full_loss(designs)["total"]
        for h in steps:
            along = problem.full_loss(designs + h * d)["total"] - f
            moved = (designs[:, None] + h * rnd).reshape(-1, designs.shape[1])
            rand = problem.full_loss(moved)["total"].reshape(len(designs), directions) - f[:, None]
            out[h] = {"along_gradient": along.tolist(), "random": rand.tolist()}
    return {"loss": f.tolist(), "steps": out}


def markdown(report: dict) -> str:
    m, p = report["machine"], report["protocol"]
    lines = ["# The learned design loss's gradient", "",
             f"Machine: {m['cores']} cores, torch {m['torch']} (1 thread), Python {m['python']}. "
             f"Model: `{p['model']}`, "
             f"chain K = {p['segments']}, {p['designs']} smooth random designs (seed {p['seed']}), all "
             f"{p['particles']} balls, layout of seed 0. {report['seconds']:.0f} s.", "",
             "Sensitivity of the balls' mean x at frame F to the design (medians over the designs): the analytic "
             "gradient's norm and the central finite-difference slope along its direction, per step h [rad].", "",
             "| frames F | median abs(gradient) | " + " | ".join(f"slope, h = {h:g}" for h in p["fd_steps"])
             + " | abs(gradient) / slope, h = " + f"{p['fd_steps'][-1]:g} |",
             "|---|---|" + "---|" * len(p["fd_steps"]) + "---|"]
    for F, r in report["sensitivity"].items():
        g = np.asarray(r["grad_norm"])
        slopes = {h: np.abs(np.asarray(v)) for h, v in r["slope"].items()}
        last = slopes[list(slopes)[-1]]
        lines.append(f"| {F} | {np.median(g):.3g} | " + " | ".join(f"{np.median(s):.3g}" for s in slopes.values())
                     + f" | {np.median(g / np.maximum(last, 1e-12)):.3g} |")
    lines += ["", f"Descent test at F = {p['frames']}: the bin loss at x = {p['target']:g} (final frame, all balls) "
              f"after a step of h along the negative gradient (exact, or damped through time over H frames) and "
              f"along {p['directions']} random unit directions per design; the fraction of steps that lower the loss "
              "and the mean change.", "",
              "| gradient | h [rad] | falls along -gradient | mean change | falls along random directions | "
              "mean change |", "|---|---|---|---|---|---|"]
    for horizon, dsc in report["descent"].items():
        for h, r in dsc["steps"].items():
            a, rnd = np.asarray(r["along_gradient"]), np.asarray(r["random"]).ravel()
            lines.append(f"| {'exact' if horizon == 'none' else f'damped, H = {horizon}'} | {float(h):g} | "
                         f"{np.mean(a < 0):.2f} | {a.mean():+.4f} | {np.mean(rnd < 0):.2f} | {rnd.mean():+.4f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="pretrained:obstacle", help="particle model (checkpoint or pretrained:NAME)")
    p.add_argument("--segments", type=int, default=4, help="chain segments K")
    p.add_argument("--designs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="seed of the random designs and directions")
    p.add_argument("--frames", type=int, nargs="+", default=[25, 50, 75, 100, 150],
                   help="rollout lengths for the sensitivity (the largest is the descent test's)")
    p.add_argument("--fd-steps", type=float, nargs="+", default=[1e-3, 1e-2])
    p.add_argument("--descent-steps", type=float, nargs="+", default=[1e-3, 1e-2, 1e-1])
    p.add_argument("--directions", type=int, default=4, help="random directions per design in the descent test")
    p.add_argument("--target", type=float, default=1.5, help="bin centre x of the descent test's loss")
    p.add_argument("--grad-horizons", nargs="+", default=["none", "8"],
                   help="descent test rows: the exact gradient (none) and gradients damped over H frames")
    p.add_argument("--out", default=str(ROOT / "results"))
    args = p.parse_args()
    if args.designs < 1 or args.directions < 1 or min(args.frames) < 1:
        raise SystemExit("--designs, --directions and --frames must be positive")
    if min(args.fd_steps + args.descent_steps) <= 0:
        raise SystemExit("--fd-steps and --descent-steps must be positive step lengths")
    try:
        horizons = {h: None if h == "none" else float(h) for h in args.grad_horizons}
    except ValueError:
        raise SystemExit(f"--grad-horizons takes none or numbers of frames, got {args.grad_horizons}") from None
    if any(h is not None and not (np.isfinite(h) and h > 0) for h in horizons.values()):
        raise SystemExit(f"--grad-horizons must be positive numbers of frames (or none), got {args.grad_horizons}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"--out {out} is a file; give a directory")
    torch.set_num_threads(1)
    start = time.perf_counter()
    sim, cfg = load_design_model(args.model, None, args.segments, "chain")
    if max(args.frames) > cfg.frames:
        raise SystemExit(f"--frames go up to the scene's {cfg.frames} frames, got {max(args.frames)}")
    gen = torch.Generator().manual_seed(args.seed)
    designs = smooth_designs(cfg, args.designs, gen).double()
    report = {"machine": {"cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                          "platform": platform.platform()},
              "protocol": {"model": args.model, "segments": cfg.segments, "designs": args.designs, "seed": args.seed,
                           "particles": cfg.n_particles, "fd_steps": args.fd_steps, "frames": max(args.frames),
                           "descent_steps": args.descent_steps, "directions": args.directions, "target": args.target,
                           "grad_horizons": list(horizons)},
              "designs": designs.tolist(), "sensitivity": {}}
    for F in sorted(args.frames):
        short = dataclasses.replace(cfg, frames=F)
        problem = DesignProblem(short, get_design_goal("bin", short, target_x=args.target), 0, sim)
        report["sensitivity"][F] = sensitivity(problem, designs, args.fd_steps)
        print(f"F = {F}: median |gradient| {np.median(report['sensitivity'][F]['grad_norm']):.3g}", flush=True)
    longest = dataclasses.replace(cfg, frames=max(args.frames))  # the descent test's length
    report["descent"] = {}
    for name, horizon in horizons.items():
        full = DesignProblem(longest, get_design_goal("bin", longest, target_x=args.target), 0, sim,
                             grad_horizon=horizon)
        report["descent"][name] = descent(full, designs, args.descent_steps, args.directions,
                                          torch.Generator().manual_seed(args.seed + 1))
    report["seconds"] = time.perf_counter() - start
    check_finite([report["sensitivity"], report["descent"]], "a gradient or loss of the check", "check the model")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "design_gradients.json", report)
    atomic_write_text(out / "design_gradients.md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
