"""Symbolic regression of edge messages against pair inputs, with a choice of backend, and the
selection of one formula along the accuracy/complexity front.

Backends (each returns candidate formulas as sympy expressions of the pair features of
:func:`gndesign.nbody_model.pair_feature_names`):

* ``sindy`` (default; pip ``pysindy``): sparse regression (pysindy's stepwise sparse regression,
  SSR) over a library of central pair-force terms, ``u_a r^p S`` with ``u`` the
  displacement ``d`` or relative velocity ``w``, ``p`` in :data:`POWERS`, ``S`` a product of the
  pair's masses or charges (:data:`SCALARS`), the dashpot term ``(w . d) d_a r^p`` and the constant
  and scalar terms; candidates along three paths: SSR's per component, and a joint backward
  elimination (:func:`residual_path`) and forward selection (:func:`forward_path`) by residual of
  all top components (linear maps of one law share its terms). Exact on any law of that form. A
  discontinuity is searched for too (:func:`find_step`: the distance beyond which the central
  terms switch on that halves the residual, if one does), and the paths run again over the
  library plus those switched terms ``d_a r^p Heaviside(r - c)``; seconds.
* ``pyoperon`` (pip ``pyoperon``): genetic programming (Operon, C++), its Pareto front of
  accuracy and length; general expressions, seconds.
* ``gplearn`` (pip ``gplearn``): genetic programming (one program per parsimony coefficient); slow.
* ``pysr``: only if already installed and working offline (it fetches Julia packages otherwise).

Complexity is the number of nodes of the sympy expression tree. The selected formula is the one
with the largest drop of log error per unit of complexity from the previous point of the front
(Cranmer et al. 2020), among those with an error below 1.5 times the best (PySR's "best" rule).
The ``sindy`` backend selects one support for all the top components together (:func:`select_joint`:
they are linear maps of one force law, so its terms are theirs), on the front of their summed
complexity and mean relative error, within :data:`JOINT_TOLERANCE` times its best error. Chosen
one column at a time, a component's small artefacts (terms that buy a factor of two in its error)
were kept, and a component that is mostly one axis of a 3D law lost the other axes.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy

from gndesign.errors import GndesignError

BACKENDS = {"sindy": "pysindy", "pyoperon": "pyoperon", "gplearn": "gplearn", "pysr": "pysr"}
POWERS = (-3, -2, -1, 0, 1)
SCALARS = ("1", "m1", "m2", "m1*m2", "q1", "q2", "q1*q2")
STEP_GRID = 48  # quantiles of the distance tried as the position of a discontinuity
# The joint selection (sindy) considers candidates within this factor of the joint front's best error.
# Measured on the fronts of the bench's bottleneck models (17 systems and data sizes): every factor
# from 3 to 10 recovers the true form on all 17; below 3 the charge models keep terms that fit their
# artefacts (a velocity dependence of the charges buys a factor of 2.8 in the error), above 10 the
# discontinuous law loses its second term (10.8x). 5 sits in the middle of that range.
JOINT_TOLERANCE = 5.0


@dataclass
class Candidate:
    """One formula of a front: its expression, complexity and mean squared error on the data."""

    expr: sympy.Expr
    complexity: int
    mse: float
    score: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"formula": str(self.expr), "latex": sympy.latex(self.expr), "complexity": self.complexity,
                "mse": self.mse, "score": self.score}


@dataclass
class Fit:
    """A symbolic regression's result: the Pareto front, the selected formula and timing."""

    backend: str
    front: list[Candidate]
    best: Candidate
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def complexity(expr: sympy.Expr) -> int:
    return sum(1 for _ in sympy.preorder_traversal(expr))


def require_backend(name: str):
    """Import backend ``name``'s module, or say which pip package provides it."""
    if name not in BACKENDS:
        raise GndesignError(f"unknown symbolic-regression backend {name!r}; choose one of {', '.join(BACKENDS)}")
    module = {"sindy": "pysindy", "pyoperon": "pyoperon.sklearn", "gplearn": "gplearn.genetic",
              "pysr": "pysr"}[name]
    try:
        return __import__(module, fromlist=["_"])
    except Exception as e:  # noqa: BLE001 - a missing or broken install reads the same to the user
        raise GndesignError(f"the symbolic-regression backend {name!r} is not usable ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}): pip install {BACKENDS[name]}") from None


def parse_formula(text: str, names: list[str]) -> sympy.Expr:
    """A formula's sympy expression from its text; only the symbols ``names`` may occur."""
    symbols = {n: sympy.Symbol(n) for n in names}
    try:
        expr = sympy.sympify(text, locals={**symbols, "Heaviside": sympy.Heaviside})
    except (sympy.SympifyError, SyntaxError, TypeError, ValueError) as e:
        raise GndesignError(f"formula {text!r} does not parse ({type(e).__name__}): write it in sympy syntax "
                            f"over {', '.join(names)}") from None
    unknown = sorted(str(s) for s in getattr(expr, "free_symbols", ()) if str(s) not in symbols)
    if not isinstance(expr, sympy.Expr) or unknown:
        raise GndesignError(f"formula {text!r} uses unknown symbols {unknown or [str(expr)]}; allowed: "
                            f"{', '.join(names)}")
    return expr


def evaluate(expr: sympy.Expr, names: list[str], X: np.ndarray, what: str = "formula") -> np.ndarray:
    """``expr`` on the rows of ``X [P, F]`` (columns ``names``); non-finite values are an error."""
    if expr.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
        raise GndesignError(f"{what} {expr} is non-finite (division by zero?): choose another formula")
    fn = sympy.lambdify([sympy.Symbol(n) for n in names], expr, modules="numpy")
    with np.errstate(all="ignore"):
        y = np.broadcast_to(np.asarray(fn(*X.T), dtype=np.float64), (len(X),)).copy()
    bad = ~np.isfinite(y)
    if bad.any():
        raise GndesignError(f"{what} {expr} gives non-finite values on {int(bad.sum())} of {len(y)} data points "
                            f"(first at {dict(zip(names, np.round(X[np.argmax(bad)], 4).tolist(), strict=True))}): "
                            "choose another formula or check the data")
    return y


def library(names: list[str]) -> list[sympy.Expr]:
    """The ``sindy`` library of central pair-force terms over the pair features ``names``."""
    s = {n: sympy.Symbol(n) for n in names}
    axes = [n[1] for n in names if n.startswith("d")]
    r = s["r"]
    scalars = [sympy.sympify(t, locals=s) for t in SCALARS]
    dot = sum(s[f"w{a}"] * s[f"d{a}"] for a in axes)
    terms: list[sympy.Expr] = [sympy.Integer(1)] + scalars[1:]
    for a in axes:
        for p, sc in itertools.product(POWERS, scalars):
            terms.append(s[f"d{a}"] * r**p * sc)
        for p in (-3, -2, -1, 0):
            terms.append(s[f"w{a}"] * r**p)
            terms.append(dot * s[f"d{a}"] * r**p)
    return terms


def step_terms(names: list[str], c: float) -> list[sympy.Expr]:
    """Central terms acting beyond a distance ``c`` only: ``d_a r^p Heaviside(r - c)``, p in :data:`POWERS`."""
    r = sympy.Symbol("r")
    step = sympy.Heaviside(r - sympy.Float(c, 6))
    return [sympy.Symbol(n) * r**p * step for n in names if n.startswith("d") for p in POWERS]


def find_step(theta: np.ndarray, r: np.ndarray, central: np.ndarray, y: np.ndarray) -> float | None:
    """The distance ``c`` at which switching the library's central columns ``theta[:, central]`` on
    beyond ``c`` best explains ``y [P]`` or ``[P, K]`` (least squares over ``theta`` and the switched
    columns, residuals summed over the columns): a grid of :data:`STEP_GRID` quantiles of ``r``, then
    every midpoint between neighbouring distances around the best. None when the smooth library
    leaves (almost) nothing or no step halves what it leaves."""
    def residual(c: float) -> float:
        design = np.concatenate([theta, theta[:, central] * (r > c)[:, None]], axis=1)
        coef = np.linalg.lstsq(design, y, rcond=None)[0]
        return float(np.sum((design @ coef - y) ** 2))

    smooth = float(np.sum((theta @ np.linalg.lstsq(theta, y, rcond=None)[0] - y) ** 2))
    if smooth <= 1e-6 * float(np.sum((y - y.mean(0)) ** 2)):
        return None  # the smooth library explains y (to rounding): nothing for a step to do
    grid = np.quantile(r, np.linspace(0.02, 0.98, STEP_GRID))
    k = int(np.argmin([residual(c) for c in grid]))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    near = np.unique(r[(r >= lo) & (r <= hi)])
    fine = (near[1:] + near[:-1]) / 2 if len(near) > 1 else grid[k:k + 1]
    errors = [residual(c) for c in fine]
    best = int(np.argmin(errors))
    return float(fine[best]) if errors[best] < 0.5 * smooth else None


def _refit_linear(theta: np.ndarray, y: np.ndarray, support: np.ndarray) -> np.ndarray:
    coef = np.zeros(theta.shape[1])
    if support.any():
        coef[support] = np.linalg.lstsq(theta[:, support], y, rcond=None)[0]
    return coef


def fit_sindy_joint(X: np.ndarray, Y: np.ndarray, names: list[str], max_terms: int = 8,
                    **_) -> list[list[sympy.Expr]]:
    """Candidates per column of ``Y [P, K]`` over :func:`library`, one per support, the same supports
    in the same order for every column (:func:`select_joint` picks one for all), each refitted by least
    squares on the column: the supports along pysindy's stepwise sparse regression of each column
    (SSR, dropping the smallest normalized coefficient at each step) and, over all columns together,
    :func:`residual_path` and :func:`forward_path` (the top message components are linear maps of one
    force law, so they share its terms; the joint paths find them where a weak column alone cannot).
    A discontinuity found by :func:`find_step` adds the paths again over the library plus the
    switched central terms."""
    ps = require_backend("sindy")
    terms = library(names)
    theta = np.stack([evaluate(t, names, X, "library term") for t in terms], axis=1)
    scale = theta.std(0)
    scale[0] = 1.0  # the constant
    keep = scale > 0
    keep[0] = True
    terms, theta, scale = [t for t, k in zip(terms, keep, strict=True) if k], theta[:, keep], scale[keep]
    out = _paths(ps, terms, theta, scale, Y, max_terms)
    # A discontinuous law: the central terms switched on beyond the best step, a second library.
    central = [i for i, t in enumerate(terms) if t.has(*[sympy.Symbol(n) for n in names if n.startswith("d")])
               and not t.has(*[sympy.Symbol(n) for n in names if n[0] in "wmq"])]
    c = find_step(theta, X[:, names.index("r")], np.asarray(central), Y)
    if c is not None:
        gated = step_terms(names, c)
        g = np.stack([evaluate(t, names, X, "library term") for t in gated], axis=1)
        more = _paths(ps, terms + gated, np.concatenate([theta, g], 1), np.concatenate([scale, g.std(0) + 1e-300]),
                      Y, max_terms)
        out = [a + b for a, b in zip(out, more, strict=True)]
    return out


def residual_path(theta: np.ndarray, Y: np.ndarray) -> list[np.ndarray]:
    """Backward elimination by residual (SSR's ``model_residual`` criterion) of the columns of
    ``Y [P, K]`` together: from all library columns, drop the one whose removal raises the summed
    least-squares residual least, ``sum_o coef_ko^2 / (G^-1)_kk`` with ``G`` the support's Gram
    matrix (exact, so each step is one pseudo-inverse rather than a refit per column: with pysindy's
    refitting ``model_residual`` SSR, one 3D distillation (three components, 136 library terms) had
    not finished after 10 minutes). The supports, largest first."""
    support = np.arange(theta.shape[1])
    out = [support]
    while len(support) > 1:
        a = theta[:, support]
        ginv = np.linalg.pinv(a.T @ a)
        coef = ginv @ (a.T @ Y)
        cost = (coef**2).sum(1) / np.maximum(np.diag(ginv), 1e-300)
        support = np.delete(support, int(np.argmin(cost)))
        out.append(support)
    return out


def forward_path(theta: np.ndarray, Y: np.ndarray, max_terms: int) -> list[np.ndarray]:
    """Forward stepwise selection of the columns of ``Y [P, K]`` together: from no column, add the
    one that lowers the summed least-squares residual most (its part orthogonal to those chosen,
    projected on the residual), up to ``max_terms``. It finds a few exact terms that backward
    elimination from a library of near-collinear powers of ``r`` loses on the way. The supports,
    smallest first."""
    basis = np.zeros((len(theta), 0))
    resid = Y.copy()
    chosen: list[int] = []
    out = []
    for _ in range(min(max_terms, theta.shape[1])):
        ortho = theta - basis @ (basis.T @ theta)
        norms = np.linalg.norm(ortho, axis=0)
        gain = ((ortho.T @ resid) ** 2).sum(1) / np.maximum(norms**2, 1e-300)
        gain[chosen] = -1.0
        gain[norms < 1e-9 * max(float(norms.max()), 1e-300)] = -1.0  # already spanned
        j = int(np.argmax(gain))
        if gain[j] <= 0:
            break
        chosen.append(j)
        q = ortho[:, j] / norms[j]
        basis = np.concatenate([basis, q[:, None]], axis=1)
        resid = resid - np.outer(q, q @ resid)
        out.append(np.array(sorted(chosen)))
    return out


def _paths(ps, terms: list[sympy.Expr], theta: np.ndarray, scale: np.ndarray, Y: np.ndarray,
           max_terms: int) -> list[list[sympy.Expr]]:
    """Per column of ``Y``, one candidate per support of at most ``max_terms`` terms, each refitted by
    least squares on the column; the supports (shared by every column, in the same order): those
    along the joint backward and forward paths and along every column's SSR path."""
    ystd = np.where(Y.std(0) > 0, Y.std(0), 1.0)
    normed, ynormed = theta / scale, Y / ystd
    supports = residual_path(normed, ynormed) + forward_path(normed, ynormed, max_terms)
    for k in range(Y.shape[1]):
        opt = ps.SSR(alpha=1e-10, max_iter=len(terms) - 1, criteria="coefficient_value", normalize_columns=False)
        opt.fit(normed, ynormed[:, k])
        supports += [np.flatnonzero(np.abs(np.asarray(coef).reshape(-1)) > 0) for coef in opt.history_]
    keys = dict.fromkeys(tuple(int(i) for i in s) for s in supports if 0 < len(s) <= max_terms)
    out = []
    for k in range(Y.shape[1]):
        exprs = []
        for key in keys:
            coef = _refit_linear(theta, Y[:, k], np.isin(np.arange(len(terms)), key))
            exprs.append(sympy.Add(*[sympy.Float(c, 6) * t for c, t in zip(coef, terms, strict=True) if c != 0]))
        out.append(exprs)
    return out


def fit_pyoperon(X, y, names, seed: int = 0, seconds: float = 20.0, **_) -> list[sympy.Expr]:
    sk = require_backend("pyoperon")
    reg = sk.SymbolicRegressor(max_length=40, generations=200, population_size=1000, n_threads=1,
                               random_state=seed, objectives=["r2", "length"], max_time=int(seconds),
                               allowed_symbols="add,sub,mul,div,square,sqrt,constant,variable")
    reg.fit(X, y)
    out = []
    for entry in reg.pareto_front_:
        text = reg.get_model_string(entry["tree"], 6, names)
        out.append(parse_formula(text.replace("^", "**"), names))
    return out


def fit_gplearn(X, y, names, seed: int = 0, **_) -> list[sympy.Expr]:
    gp = require_backend("gplearn")
    conv = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
            "div": lambda a, b: a / b, **{n: sympy.Symbol(n) for n in names}}
    out = []
    for parsimony in (1e-1, 1e-2, 1e-3, 1e-4):
        reg = gp.SymbolicRegressor(population_size=1000, generations=20, function_set=("add", "sub", "mul", "div"),
                                   parsimony_coefficient=parsimony, feature_names=names, random_state=seed, n_jobs=1)
        reg.fit(X, y)
        out.append(sympy.sympify(str(reg._program), locals=conv))
    return out


def fit_pysr(X, y, names, seed: int = 0, **_) -> list[sympy.Expr]:
    pysr = require_backend("pysr")
    reg = pysr.PySRRegressor(niterations=20, binary_operators=["+", "-", "*", "/"], random_state=seed,
                             deterministic=True, parallelism="serial", progress=False)
    reg.fit(X, y, variable_names=names)
    return [parse_formula(str(e), names) for e in reg.equations_["sympy_format"]]


def _per_column(fit):
    """A fitter of ``y [P]`` as one of every column of ``Y [P, K]``, one at a time."""
    return lambda X, Y, names, seed=0: [fit(X, Y[:, k], names, seed=seed) for k in range(Y.shape[1])]


#: backend -> fitter of ``(X, Y [P, K], names, seed)``: candidate formulas per column of Y
FITTERS = {"sindy": fit_sindy_joint, "pyoperon": _per_column(fit_pyoperon), "gplearn": _per_column(fit_gplearn),
           "pysr": _per_column(fit_pysr)}
JOINT = {"sindy"}  # fitters whose candidates share supports across the columns (selected together)


def pareto(candidates: list[Candidate]) -> list[Candidate]:
    """The candidates no simpler one beats, by complexity, each more accurate than the previous."""
    front: list[Candidate] = []
    for c in sorted(candidates, key=lambda c: (c.complexity, c.mse)):
        if not front or c.mse < front[-1].mse * (1 - 1e-9):
            front.append(c)
    return front


def select(front: list[Candidate], tolerance: float = 1.5) -> Candidate:
    """The largest drop of log error per unit of complexity among candidates within ``tolerance``
    times the best error (scores stored on the candidates)."""
    floor = 1e-300
    prev = None
    for c in front:
        c.score = 0.0 if prev is None else -(math.log(max(c.mse, floor)) - math.log(max(prev.mse, floor))) / max(
            c.complexity - prev.complexity, 1)
        prev = c
    best_mse = min(c.mse for c in front)
    good = [c for c in front if c.mse <= tolerance * best_mse + 1e-300]
    return max(good, key=lambda c: c.score)


def select_joint(columns: list[list[Candidate]], variances: np.ndarray,
                 tolerance: float = JOINT_TOLERANCE) -> tuple[list[list[Candidate]], list[Candidate]]:
    """One support for all columns (candidate ``s`` of every column shares support ``s``): the
    :func:`select` rule on the front of the joint candidates, whose complexity is the sum over the
    columns and whose error the mean of the columns' errors relative to their variances. Returns,
    per column, its candidates along the joint front (with the joint scores) and the selected one."""
    joint = [Candidate(sympy.Integer(s), sum(col[s].complexity for col in columns),  # expr: the support's index
                       float(np.mean([col[s].mse / max(float(v), 1e-300) for col, v in zip(columns, variances,
                                                                                           strict=True)])))
             for s in range(len(columns[0]))]
    front = pareto(joint)
    k = front.index(select(front, tolerance))
    fronts = [[dataclasses.replace(col[int(c.expr)], score=c.score) for c in front] for col in columns]
    return fronts, [f[k] for f in fronts]


def regress(X: np.ndarray, y: np.ndarray, names: list[str], backend: str = "sindy", seed: int = 0) -> Fit:
    """Symbolic regression of ``y [P]`` on ``X [P, F]`` (columns ``names``)."""
    return regress_many(X, y[:, None], names, backend, seed)[0]


def regress_many(X: np.ndarray, Y: np.ndarray, names: list[str], backend: str = "sindy", seed: int = 0) -> list[Fit]:
    """Symbolic regression of each column of ``Y [P, K]`` on ``X [P, F]``: the ``sindy`` backend
    fits them together and selects one support for all (:func:`fit_sindy_joint`, :func:`select_joint`),
    the others one column at a time. The seconds are per column."""
    if backend not in FITTERS:
        require_backend(backend)
    t0 = time.perf_counter()
    per_column = FITTERS[backend](X, Y, names, seed=seed)
    seconds = (time.perf_counter() - t0) / Y.shape[1]
    columns = []
    for exprs, y in zip(per_column, Y.T, strict=True):
        cands = []
        for e in exprs:
            pred = evaluate(e, names, X, "candidate formula") if e.free_symbols else np.full(len(y), float(e))
            cands.append(Candidate(e, complexity(e), float(np.mean((pred - y) ** 2))))
        if not cands:
            raise GndesignError(f"backend {backend} found no formula for the messages")
        columns.append(cands)
    if backend in JOINT:
        fronts, best = select_joint(columns, Y.var(0))
    else:
        fronts = [pareto(c) for c in columns]
        best = [select(f) for f in fronts]
    return [Fit(backend, f, b, seconds) for f, b in zip(fronts, best, strict=True)]


def refit_constants(expr: sympy.Expr, names: list[str], X: np.ndarray, y: np.ndarray) -> sympy.Expr:
    """``expr`` with its numeric constants refitted by least squares on ``(X, y)``."""
    from scipy.optimize import least_squares

    floats = sorted({a for a in expr.atoms(sympy.Float)}, key=str)
    if not floats:
        return expr
    params = sympy.symbols(f"c0:{len(floats)}")
    templ = expr.subs(dict(zip(floats, params, strict=True)))
    fn = sympy.lambdify([*params, *[sympy.Symbol(n) for n in names]], templ, modules="numpy")

    def resid(c):
        with np.errstate(all="ignore"):
            out = np.broadcast_to(fn(*c, *X.T), y.shape) - y
        return np.where(np.isfinite(out), out, 1e6)

    sol = least_squares(resid, np.array([float(f) for f in floats]), method="lm" if len(y) > len(floats) else "trf")
    return templ.subs({p: sympy.Float(v, 6) for p, v in zip(params, sol.x, strict=True)})
