"""Measurements both systems share: the solver iterations of a C-GNS, the iteration sweep's paired
noise test, the weighted constraint specs, and a constraint violation report."""

from __future__ import annotations

import numpy as np

from .protocol import NOISE_REL, NOISE_SE


def set_iterations(model, n: int) -> None:
    """Make every rollout of the (eval-mode) C-GNS use ``n`` solver iterations per step."""
    model.solver.test_iterations = n


def paired_increase(a: np.ndarray, b: np.ndarray) -> dict:
    """``b - a`` (per-episode errors of more and of fewer iterations): mean, its standard error,
    and whether it stays within noise."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    noise = max(NOISE_SE * se, NOISE_REL * float(np.mean(a)))
    return {"increase": float(d.mean()), "relative": float(d.mean() / max(float(np.mean(a)), 1e-12)),
            "paired_se": se, "noise": noise, "within_noise": bool(d.mean() <= noise)}


def sweep_summary(per_episode: dict[int, np.ndarray]) -> dict:
    """Every pair of iteration counts, fewer to more: the largest increase of the error and the
    pair farthest beyond noise (None when every pair got better)."""
    its = sorted(per_episode)
    pairs = []
    for i, n in enumerate(its):
        for m in its[i + 1:]:
            pairs.append({**paired_increase(per_episode[n], per_episode[m]), "from": n, "to": m})
    return {"max_increase": max(pairs, key=lambda p: p["increase"], default=None),
            "worst_vs_noise": max(pairs, key=lambda p: p["increase"] - p["noise"], default=None),
            "all_within_noise": all(p["within_noise"] for p in pairs)}


def weighted_specs(spec: str, weights: list[float]) -> list[tuple[float, str]]:
    """``(weight, spec with weight=...)`` for each weight, or ``spec`` alone when it names its own."""
    from gndesign.constraint_sets import constraint_terms
    from gndesign.specs import parse_constraints

    if "weight=" in spec:
        return [(constraint_terms(parse_constraints([spec]))[0].weight, spec)]
    return [(float(w), f"{spec} weight={w:g}") for w in weights]


def violation_summary(constraints, context, frames) -> dict:
    """``violation_report`` of a rollout, its ``mean`` that of the constraint violated most, the
    per-step maxima rounded (for the JSON report)."""
    from gndesign.solver import violation_report

    rep = violation_report(constraints, context, frames)
    rep["mean"] = max((c["mean"] for c in rep["constraints"]), default=0.0)
    for c in rep["constraints"]:
        c["per_step_max"] = [round(x, 6) for x in c["per_step_max"]]
    return rep
