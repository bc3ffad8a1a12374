"""Symbolic distillation of a message-sparse N-body model (Cranmer et al. 2020).

1. :func:`record_messages`: the edge messages of held-out frames, with the pair inputs and the true
   pair forces of the data's law (:mod:`gndesign.nbody_laws`).
2. :func:`rank_components`: message components by variance (by mean KL divergence for ``kl``).
3. :func:`linear_fit`: the true forces ``[P, D]`` fitted linearly (with a bias) to the top ``D``
   components; R^2 = 1 - residual / total sum of squares over all force components.
4. :func:`distill_messages`: symbolic regression of each top component on the pair inputs
   (:mod:`gndesign.symbolic`), constants refitted, and the force law it implies (the formulas
   mapped through the linear fit) compared with the true law term by term (:func:`compare_law`).
5. :func:`symbolic_model`: the model with its edge function replaced by the formulas (the other
   components held at their mean) and, for ``model.readout=force``, its node function by the
   linear map of the summed messages fitted to it (:func:`linear_node`: force = W sum + c, what a
   message that is a linear transform of the pair force implies), rolled out like the network
   (:func:`rollout_error`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import sympy
import torch

from gndesign.datasets.nbody import NBodyDataset, system_mismatch
from gndesign.errors import GndesignError
from gndesign.nbody_laws import TRUE_LAW_TEXT, law_forces, pair_inputs
from gndesign.nbody_model import NBodyGN, pair_feature_names
from gndesign.symbolic import evaluate, parse_formula, refit_constants, regress_many

SPARSE = ("l1", "bottleneck", "kl")
FORM_TOLERANCE = 0.05  # a term beyond the true law's may carry at most this share of the force's spread


def check_distillable(model: NBodyGN, ds: NBodyDataset, where: str = "the model") -> None:
    """Refuse a model without message sparsity or one trained on another system than ``ds``."""
    if model.config.net != "gn":
        raise GndesignError(f"{where} is an equivariant network (model.net={model.config.net}) without sparse "
                            "messages to distill: retrain with --set model.net=gn --set model.message=l1")
    if model.config.message not in SPARSE:
        raise GndesignError(f"{where} was trained without message sparsity (model.message="
                            f"{model.config.message}): its messages are not expected to align with forces; retrain "
                            "with --set model.message=l1 (or bottleneck, kl)")
    diff = system_mismatch(model.system, ds.system)
    if diff:
        raise GndesignError(f"{where} was trained on another N-body system than {ds.path} ({'; '.join(diff)}): "
                            "distill on data of the system it learned")


@torch.no_grad()
def record_messages(model: NBodyGN, ds: NBodyDataset, episodes: Sequence[int], max_pairs: int = 20000,
                    seed: int = 0) -> dict[str, Any]:
    """Messages of the frames of ``episodes``: ``feats [P, F]`` (pair inputs, columns ``names``),
    ``msg [P, M]``, ``logvar [P, M]`` or None, ``force [P, D]`` (true force on i from j); per particle,
    the summed messages ``agg [Q, M]`` and, for ``model.readout=force``, the node function's
    output ``node [Q, D]`` (else None)."""
    ep = np.asarray(episodes, dtype=np.int64)
    x = torch.as_tensor(ds.positions[ep].reshape(-1, *ds.positions.shape[2:]), dtype=torch.float32)
    v = torch.as_tensor(ds.velocities[ep].reshape(-1, *ds.velocities.shape[2:]), dtype=torch.float32)
    m = torch.as_tensor(np.repeat(ds.masses[ep], ds.steps + 1, axis=0), dtype=torch.float32)
    q = torch.as_tensor(np.repeat(ds.charges[ep], ds.steps + 1, axis=0), dtype=torch.float32)
    model.eval()
    _, (msg, logvar, mask) = model(x, v, m, q, return_messages=True)
    from gndesign.nbody_model import pair_features

    feats, _ = pair_features(x, v, m, q)
    p = pair_inputs(x.double(), v.double(), m.double(), q.double())
    force = law_forces(ds.law, p, float(ds.system.get("damping", 0.5)))
    sel = mask.expand(len(x), -1, -1)
    out = {"feats": feats[sel].double().numpy(), "msg": msg[sel].double().numpy(),
           "logvar": None if logvar is None else logvar[sel].double().numpy(), "force": force[sel].numpy()}
    n = len(out["feats"])
    if n > max_pairs:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_pairs, replace=False))
        out = {k: None if a is None else a[keep] for k, a in out.items()}
    agg = (msg * mask[..., None]).sum(-2).reshape(-1, msg.shape[-1])
    out["agg"] = agg.double().numpy()
    out["node"] = model.node(agg).double().numpy() if model.config.readout == "force" else None
    out["names"] = pair_feature_names(ds.dim)
    return out


def rank_components(msg: np.ndarray, logvar: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Component order, most significant first, and the scores: the variance of each component, or
    with ``logvar`` (a variational message) its mean KL divergence to N(0, 1)."""
    if logvar is None:
        score = msg.var(0)
    else:
        score = (0.5 * (msg**2 + np.exp(logvar) - logvar - 1.0)).mean(0)
    return np.argsort(-score, kind="stable"), score


def linear_fit(components: np.ndarray, force: np.ndarray) -> dict[str, Any]:
    """Least-squares ``force ~ components @ A + b``; R^2 over all force components."""
    design = np.concatenate([components, np.ones((len(components), 1))], axis=1)
    coef, *_ = np.linalg.lstsq(design, force, rcond=None)
    resid = force - design @ coef
    total = ((force - force.mean(0)) ** 2).sum()
    r2 = 1.0 - float((resid**2).sum() / max(total, 1e-300))
    per = 1.0 - (resid**2).sum(0) / np.maximum(((force - force.mean(0)) ** 2).sum(0), 1e-300)
    return {"r2": r2, "r2_per_component": per.tolist(), "A": coef[:-1], "b": coef[-1]}


def linear_node(rec: dict[str, Any]) -> dict[str, Any] | None:
    """The node function of a force-readout model as a linear map of the summed messages, fitted by
    least squares to its own outputs on the recorded frames: ``{"W" [M, D], "c" [D], "r2"}`` (None
    for the acceleration readout, whose node function also takes the receiver's mass and charge)."""
    if rec.get("node") is None:
        return None
    fit = linear_fit(rec["agg"], rec["node"])
    return {"W": fit["A"], "c": fit["b"], "r2": fit["r2"]}


def message_r2(rec: dict[str, Any], dim: int) -> dict[str, Any]:
    """R^2 of the true forces on the top ``dim`` message components of recorded messages."""
    order, score = rank_components(rec["msg"], rec["logvar"])
    top = order[:dim]
    fit = linear_fit(rec["msg"][:, top], rec["force"])
    return {"order": order.tolist(), "scores": score[order].tolist(), "top": top.tolist(), **fit}


STEP = sympy.Symbol("STEP")  # stands for a Heaviside(r - c) factor, whatever c, when terms are matched


def _terms(expr: sympy.Expr) -> tuple[dict[sympy.Expr, float], dict[sympy.Expr, float]]:
    """Coefficient per monomial and, for monomials with a step ``Heaviside(r - c)`` (written with
    :data:`STEP` in its place, so steps at nearby distances match), the step's distance ``c``."""
    coefs: dict[sympy.Expr, float] = {}
    steps: dict[sympy.Expr, float] = {}
    for term in sympy.Add.make_args(sympy.expand(expr)):
        c, mono = term.as_coeff_Mul()
        for h in mono.atoms(sympy.Heaviside):
            steps[mono.subs(h, STEP)] = -float(h.args[0].subs(sympy.Symbol("r"), 0))
            mono = mono.subs(h, STEP)
        coefs[mono] = coefs.get(mono, 0.0) + float(c)
    return coefs, steps


def true_law(law: str, dim: int, component: int, damping: float = 0.5) -> sympy.Expr:
    """The true force on i from j, one component, as a sympy expression of the pair features."""
    axes = "xyz"[:dim]
    text = TRUE_LAW_TEXT[law].replace("{d}", f"d{axes[component]}")
    text = text.replace("wdotd", "+".join(f"w{a}*d{a}" for a in axes)).replace("0.5*(", f"{damping}*(")
    return parse_formula(text, pair_feature_names(dim))


def compare_law(recovered: sympy.Expr, truth: sympy.Expr, names: list[str], X: np.ndarray) -> dict[str, Any]:
    """Term-by-term comparison: the form is correct when every term of ``truth`` is present and the
    other terms carry at most :data:`FORM_TOLERANCE` of the recovered force's spread on ``X``;
    ``constant_error``: the largest relative error of the true terms' coefficients and of the
    distances of their steps (a term with ``Heaviside(r - c)`` matches a true one with another c)."""
    (rec, rec_steps), (tru, tru_steps) = _terms(recovered), _terms(truth)
    spread = float(np.std(evaluate(recovered, names, X, "recovered law"))) or 1.0
    extra = {}
    for mono, c in rec.items():
        if mono in tru:
            continue
        term = mono.subs(STEP, sympy.Heaviside(sympy.Symbol("r") - rec_steps[mono])) if mono in rec_steps else mono
        vals = evaluate(term, names, X, "term") if mono.free_symbols else np.full(len(X), 1.0)
        extra[str(mono)] = abs(c) * float(np.std(vals) if mono.free_symbols else 0.0) / spread
    missing = [str(m) for m in tru if m not in rec]
    errors = {str(m): abs(rec[m] / c - 1.0) for m, c in tru.items() if m in rec}
    errors.update({f"step of {m}": abs(rec_steps.get(m, 0.0) / c - 1.0) for m, c in tru_steps.items() if m in rec})
    form = not missing and all(v <= FORM_TOLERANCE for v in extra.values())
    return {"form_correct": bool(form), "missing_terms": missing,
            "extra_terms": {k: round(v, 4) for k, v in extra.items() if v > 1e-4},
            "constant_error": max(errors.values()) if errors and not missing else None,
            "coefficients": {str(m): rec.get(m) for m in tru}}


def distill_messages(rec: dict[str, Any], law: str, dim: int, backend: str = "sindy", seed: int = 0,
                     damping: float = 0.5, fit_pairs: int = 4000) -> dict[str, Any]:
    """Rank, fit forces linearly, regress the top ``dim`` components symbolically (on at most
    ``fit_pairs`` pairs), refit constants and compare the implied force law with the truth."""
    names, X = rec["names"], rec["feats"]
    r2 = message_r2(rec, dim)
    idx = np.arange(len(X))
    if len(X) > fit_pairs:
        idx = np.sort(np.random.default_rng(seed).choice(len(X), fit_pairs, replace=False))
    formulas = []
    fits = regress_many(X[idx], rec["msg"][idx][:, r2["top"]], names, backend, seed)
    for k, fit in zip(r2["top"], fits, strict=True):
        y = rec["msg"][:, k]
        expr = refit_constants(fit.best.expr, names, X[idx], y[idx])
        pred = evaluate(expr, names, X, "formula")
        formulas.append({"component": int(k), "formula": str(expr), "latex": sympy.latex(expr),
                         "complexity": fit.best.complexity, "mse": float(np.mean((pred - y) ** 2)),
                         "r2": 1.0 - float(np.mean((pred - y) ** 2) / max(y.var(), 1e-300)),
                         "front": [c.to_json() for c in fit.front], "seconds": fit.seconds, "expr": expr})
    A, b = r2["A"], r2["b"]
    laws = []
    for a in range(dim):
        rec_law = sum(float(A[i, a]) * f["expr"] for i, f in enumerate(formulas)) + float(b[a])
        truth = true_law(law, dim, a, damping)
        laws.append({"component": "xyz"[a], "recovered": str(sympy.expand(rec_law)), "true": str(truth),
                     **compare_law(rec_law, truth, names, X[idx])})
    return {"r2": r2["r2"], "r2_per_component": r2["r2_per_component"], "ranking": r2["order"],
            "scores": r2["scores"], "formulas": formulas, "force_law": laws,
            "form_correct": all(entry["form_correct"] for entry in laws),
            "constant_error": max((entry["constant_error"] for entry in laws if entry["constant_error"] is not None),
                                  default=None)}


TORCH_FUNCS = {"sqrt": torch.sqrt, "exp": torch.exp, "log": torch.log, "Abs": torch.abs,
               "Heaviside": lambda x, h=0.5: (x > 0).to(torch.float32)}


def symbolic_model(model: NBodyGN, formulas: Sequence[tuple[int, sympy.Expr]], fill: np.ndarray,
                   node: dict[str, Any] | None = None) -> NBodyGN:
    """A copy of ``model`` whose messages are the ``formulas`` (``(component, expr)``) and, for the
    other components, the constants ``fill [M]``; with ``node`` (:func:`linear_node`), whose node
    function is that linear map."""
    names = pair_feature_names(model.dim)
    symbols = [sympy.Symbol(n) for n in names]
    fns = [(k, sympy.lambdify(symbols, e, modules=[TORCH_FUNCS, "math"])) for k, e in formulas]
    base = torch.as_tensor(np.asarray(fill, dtype=np.float64), dtype=torch.float32)

    def edge(feats: torch.Tensor) -> torch.Tensor:
        out = base.expand(*feats.shape[:-1], len(base)).clone()
        cols = feats.unbind(-1)
        for k, fn in fns:
            out[..., k] = torch.as_tensor(fn(*cols), dtype=out.dtype).expand(feats.shape[:-1])
        return out

    sym = copy.deepcopy(model)
    sym.edge_override = edge
    if node is not None:
        W, c = (torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=torch.float32) for a in (node["W"], node["c"]))
        sym.node_override = lambda agg: agg @ W + c
    return sym


@torch.no_grad()
def rollout_error(model: NBodyGN, ds: NBodyDataset, episodes: Sequence[int], horizon: int) -> float:
    """Mean squared position error over the first ``horizon`` frames, the model rolled out from the true
    initial states with velocity Verlet at the data's step."""
    ep = np.asarray(episodes, dtype=np.int64)
    horizon = min(horizon, ds.steps)
    f32 = {"dtype": torch.float32}
    x0 = torch.as_tensor(ds.positions[ep, 0], **f32)
    v0 = torch.as_tensor(ds.velocities[ep, 0], **f32)
    m, q = torch.as_tensor(ds.masses[ep], **f32), torch.as_tensor(ds.charges[ep], **f32)
    xs, _ = model.step(x0, v0, m, q, float(ds.system["dt"]), horizon, int(ds.system.get("substeps", 1)))
    err = ((xs[1:] - torch.as_tensor(ds.positions[ep, 1 : horizon + 1], **f32).transpose(0, 1)) ** 2).sum(-1)
    value = float(err.mean())
    return value if np.isfinite(value) else float("inf")
