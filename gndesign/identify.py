"""System identification through a learned simulator: physical parameters from observed motion.

A forward model takes each episode's physical parameters (:data:`gndesign.datasets.params.PARAM_KEYS`)
as features, so it is differentiable with respect to them. :func:`identify` estimates the parameters
of one system from observed transitions ``(qpos_t, qvel_t, action_t) -> (qpos_{t+1}, qvel_{t+1})``
by gradient descent on the model's one-step prediction error (the equation error: every
transition starts from the observed state, so a long horizon cannot make the loss chaotic),
from several starts, with a Gaussian prior around the nominal values.

Parameters are identified as log-factors of the nominal values, grouped as the data generator
randomizes them: ``mass`` (each body's mass, its inertia scaled with it), ``damping`` (each dof's
damping) and ``gear`` (each actuator's gear). Elements whose nominal value is zero have no factor
to find and are left out. Scaling every mass, damping and gear by one factor leaves the motion
unchanged, so identify ``gear`` only when the masses are known (and the reverse).

The minimization is Levenberg-Marquardt on the residuals (a Jacobian by central differences, all
restarts and directions in one batch of the model). A learned model's one-step errors are
heavy-tailed (a cart at its rail's end, a contact), and a few transitions it predicts badly can pull
every estimate with them, so by default the fit is least trimmed squares: it keeps the fraction
``keep`` of the transitions that the current estimate predicts best and refits, until that set stops
changing (concentration steps, as in Rousseeuw and Van Driessen's FAST-LTS). The uncertainty of each
parameter is given two ways: the curvature of the loss at the estimate (the Gauss-Newton covariance
``s^2 (J^T J)^-1`` of the log-factors, ``s^2`` the residual variance) and the spread of the estimates
over the restarts that reach the best loss.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from gndesign.datasets.params import PARAM_KEYS
from gndesign.errors import GndesignError

GROUPS = {"mass": "body_mass", "damping": "dof_damping", "gear": "actuator_gear"}
_DOFS = {"free": 6, "ball": 3, "slide": 1, "hinge": 1}


@dataclass
class Element:
    """One identified parameter: ``group`` (mass, damping, gear), the ``key`` of
    :data:`PARAM_KEYS` and the ``index`` of its row; ``name``: e.g. ``body_mass[pole_1]``."""

    group: str
    key: str
    index: int
    name: str
    nominal: float


def parse_groups(text: str | list[str] | None) -> list[str]:
    """``"mass,damping"`` -> ``["mass", "damping"]`` (default: mass and damping)."""
    items = ["mass", "damping"] if not text else (text.split(",") if isinstance(text, str) else list(text))
    items = [s.strip() for s in items if s.strip()]
    bad = [s for s in items if s not in GROUPS]
    if bad or not items:
        raise GndesignError(f"--params: unknown parameter group {bad[0] if bad else text!r}; choose from "
                            f"{', '.join(GROUPS)} (comma-separated, e.g. mass,damping)")
    return list(dict.fromkeys(items))


def parse_scales(text: str | dict) -> dict[str, float]:
    """``"mass=1.25,damping=0.8"`` -> ``{"mass": 1.25, "damping": 0.8}``: a factor per group."""
    items = dict(text) if isinstance(text, dict) else dict(
        (part.split("=", 1) + [""])[:2] for part in text.split(",") if part.strip())
    out = {}
    for group, value in items.items():
        group = group.strip()
        try:
            f = float(value)
        except (TypeError, ValueError):
            f = math.nan
        if group not in GROUPS or not (math.isfinite(f) and f > 0):
            raise GndesignError(f"--scale-params: {group}={value} is not GROUP=FACTOR with GROUP one of "
                                f"{', '.join(GROUPS)} and a positive factor (e.g. mass=1.25,damping=0.8)")
        out[group] = f
    if not out:
        raise GndesignError("--scale-params: no GROUP=FACTOR given (e.g. mass=1.25)")
    return out


def scale_groups(nominal: dict[str, np.ndarray], scales: dict[str, float]) -> dict[str, np.ndarray]:
    """The physical parameters ``nominal`` with every element of each group scaled by its factor
    (a body's inertia with its mass)."""
    out = {k: np.array(v, dtype=np.float64, copy=True) for k, v in nominal.items()}
    for group, f in scales.items():
        out[GROUPS[group]] = out[GROUPS[group]] * f
        if group == "mass":
            out["body_inertia"] = out["body_inertia"] * f
    return out


def elements(tree, groups: list[str]) -> list[Element]:
    """The identifiable parameters of ``tree`` (a :class:`gndesign.tree.KinematicTree`) in ``groups``:
    bodies other than the world with mass, dofs with damping, actuators with a gear."""
    nominal = tree.nominal
    dof_names = []
    for j, (name, kind) in enumerate(zip(tree.joint_names, tree.jnt_type, strict=True)):
        n, base = _DOFS[kind], name or f"joint{j}"
        dof_names += [base] if n == 1 else [f"{base}:{i}" for i in range(n)]
    out = []
    for group in groups:
        key = GROUPS[group]
        values = nominal[key] if key != "actuator_gear" else nominal[key][:, 0]
        for i, v in enumerate(values):
            if key == "body_mass" and i == 0:
                continue
            if float(v) != 0.0:
                names = {"body_mass": tree.body_names, "dof_damping": dof_names, "actuator_gear": tree.actuator_names}
                label = names[key][i] or str(i)
                out.append(Element(group, key, i, f"{key}[{label}]", float(v)))
    if not out:
        raise GndesignError(f"--params {','.join(groups)}: {tree.name} has no such parameter with a nonzero nominal "
                            "value (nothing to identify)")
    return out


def params_from_factors(nominal: dict[str, torch.Tensor], elems: list[Element], log_f: torch.Tensor
                        ) -> dict[str, torch.Tensor]:
    """Physical parameters ``{key: [R, ...]}`` with the factors ``exp(log_f [R, n])`` applied to the
    elements (a body's inertia follows its mass; a gear's 6 entries scale together)."""
    R = log_f.shape[0]
    scale = {k: torch.ones((R,) + tuple(nominal[k].shape[:1]), dtype=log_f.dtype) for k in PARAM_KEYS}
    for j, e in enumerate(elems):
        col = torch.zeros_like(scale[e.key])
        col[:, e.index] = 1.0
        scale[e.key] = scale[e.key] * torch.exp(log_f[:, j:j + 1] * col)
    scale["body_inertia"] = scale["body_mass"]
    out = {}
    for k in PARAM_KEYS:
        s = scale[k]
        nom = nominal[k].to(log_f.dtype)
        out[k] = nom[None] * s.reshape(s.shape + (1,) * (nom.dim() - 1))
    return out


@dataclass
class Observed:
    """Observed transitions of one system, flattened: ``qpos, qvel [N, nq | nv]``, ``action [N, nu]``
    and the states they lead to ``qpos_next, qvel_next``."""

    qpos: torch.Tensor
    qvel: torch.Tensor
    action: torch.Tensor
    qpos_next: torch.Tensor
    qvel_next: torch.Tensor

    @classmethod
    def from_episodes(cls, qpos, qvel, action, dtype=torch.float32) -> Observed:
        """From episodes ``qpos [E, T+1, nq]``, ``qvel [E, T+1, nv]``, ``action [E, T, nu]``."""
        q, v, a = (torch.as_tensor(np.asarray(x), dtype=dtype) for x in (qpos, qvel, action))
        if a.shape[1] < 1:
            raise GndesignError("no observed transitions (length zero)")
        return cls(q[:, :-1].reshape(-1, q.shape[-1]), v[:, :-1].reshape(-1, v.shape[-1]), a.reshape(-1, a.shape[-1]),
                   q[:, 1:].reshape(-1, q.shape[-1]), v[:, 1:].reshape(-1, v.shape[-1]))

    def __len__(self) -> int:
        return self.qpos.shape[0]


class Objective:
    """Residuals of restarts ``log_f [R, n]``: the one-step acceleration errors in units of the
    observed accelerations' spread per dof, over ``sqrt(M)`` (``M`` of them), then the prior's
    ``sqrt(prior / n) * log_f / prior_width``: the sum of their squares is the loss
    ``mean(err^2) + prior * mean((log_f / prior_width)^2)``. With :meth:`use` a subset of the
    transitions, the mean runs over those (the others' errors are zero)."""

    def __init__(self, model, system: str, obs: Observed, elems: list[Element], prior: float, prior_width: float):
        self.model, self.system, self.obs, self.elems = model, system, obs, elems
        self.prior, self.prior_width = prior, prior_width
        self.dt = float(model.builder(system).control_timestep)
        acc = (obs.qvel_next - obs.qvel) / self.dt
        self.scale = acc.std(0, unbiased=False).clamp_min(1e-6) if len(obs) > 1 else acc.abs()[0].clamp_min(1e-6)
        self.nominal = {k: torch.as_tensor(v) for k, v in model.tree(system).nominal.items()}
        self.M = len(obs) * obs.qvel.shape[1]
        self.mask: torch.Tensor | None = None  # [N] bool: the transitions the loss uses (None: all)

    def use(self, mask: torch.Tensor | None) -> None:
        """Fit only the transitions where ``mask [N]`` is True (None: all of them)."""
        self.mask = None if mask is None or bool(mask.all()) else mask
        self.M = int(len(self.obs) if self.mask is None else self.mask.sum()) * self.obs.qvel.shape[1]

    def transition_errors(self, log_f: torch.Tensor) -> torch.Tensor:
        """``[N]``: the norm over dofs of each transition's normalized error at ``log_f [n]``, every
        transition (the mask ignored)."""
        return self.errors(log_f[None], masked=False)[0].reshape(len(self.obs), -1).norm(dim=1)

    def errors(self, log_f: torch.Tensor, masked: bool = True) -> torch.Tensor:
        """``[R, M]`` normalized acceleration errors (not scaled by ``sqrt(M)``; zero for the
        transitions :meth:`use` left out, unless ``masked`` is False)."""
        R, N = log_f.shape[0], len(self.obs)
        p = params_from_factors(self.nominal, self.elems, log_f)
        p = {k: v.repeat_interleave(N, 0).to(self.obs.qpos.dtype) for k, v in p.items()}
        rep = lambda x: x.repeat(R, 1)  # noqa: E731 - restart-major rows
        with torch.no_grad():
            _, v = self.model.step(rep(self.obs.qpos), rep(self.obs.qvel), rep(self.obs.action), self.system, params=p)
        err = (v - rep(self.obs.qvel_next)) / self.dt / self.scale
        if masked and self.mask is not None:
            err = err * rep(self.mask[:, None]).to(err.dtype)
        return err.reshape(R, -1)

    def residuals(self, log_f: torch.Tensor) -> torch.Tensor:
        n = log_f.shape[1]
        prior = math.sqrt(self.prior / n) * log_f / self.prior_width
        return torch.cat([self.errors(log_f) / math.sqrt(self.M), prior], 1)

    def jacobian(self, log_f: torch.Tensor, h: float = 1e-5) -> torch.Tensor:
        """``[R, M + n, n]`` by central differences, all restarts and directions in one batch."""
        R, n = log_f.shape
        steps = h * torch.eye(n, dtype=log_f.dtype)
        pts = torch.cat([log_f[:, None] + steps, log_f[:, None] - steps], 1).reshape(R * 2 * n, n)
        r = self.residuals(pts).reshape(R, 2, n, -1)
        return ((r[:, 0] - r[:, 1]) / (2 * h)).transpose(1, 2)


#: A parameter whose curvature ``(J^T J)_jj`` is at most this fraction of the largest one's is one the
#: model does not respond to (e.g. cartpole's hinge damping, 2e-6 N m s): Marquardt's scaling would
#: give it a huge step (to a factor of 1e-20) that the others then compensate, so it is held where it
#: starts and reported with an infinite standard deviation.
FLAT_CURVATURE = 1e-6


def flat_parameters(A: torch.Tensor) -> torch.Tensor:
    """``[R, n]`` True where ``A = J^T J [R, n, n]`` says the parameter is unidentifiable (:data:`FLAT_CURVATURE`)."""
    diag = torch.diagonal(A, dim1=1, dim2=2)
    return diag <= FLAT_CURVATURE * diag.amax(1, keepdim=True)


def _levenberg_marquardt(obj: Objective, x: torch.Tensor, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimize each restart's sum of squared residuals; returns ``(x [R, n], J^T J [R, n, n])``."""
    n = x.shape[1]
    r = obj.residuals(x)
    cost = r.pow(2).sum(1)
    mu = torch.full((x.shape[0],), 1e-3, dtype=x.dtype)
    eye = torch.eye(n, dtype=x.dtype)
    done = torch.zeros(x.shape[0], dtype=torch.bool)
    for _ in range(iterations):
        J = obj.jacobian(x)
        A = J.transpose(1, 2) @ J
        g = (J.transpose(1, 2) @ r[..., None])[..., 0]
        flat = flat_parameters(A)  # held: no step, and no coupling into the others' steps
        keep = ~flat
        A = A * (keep[:, :, None] & keep[:, None, :]) + torch.diag_embed(flat.to(A.dtype))
        g = g * keep
        damped = A + mu[:, None, None] * (torch.diagonal(A, dim1=1, dim2=2)[..., None] * eye + 1e-12 * eye)
        delta = -torch.linalg.solve(damped, g[..., None])[..., 0]
        r_new = obj.residuals(x + delta)
        cost_new = r_new.pow(2).sum(1)
        better = torch.isfinite(cost_new) & (cost_new < cost)
        x = torch.where(better[:, None], x + delta, x)
        r = torch.where(better[:, None], r_new, r)
        gain = (cost - torch.where(better, cost_new, cost)) / cost.clamp_min(1e-300)
        cost = torch.where(better, cost_new, cost)
        mu = torch.where(better, mu / 3, mu * 4).clamp(1e-12, 1e12)
        # Converged: an accepted step that gains almost nothing or barely moves, or no step helps.
        done |= (better & ((gain < 1e-10) | (delta.abs().amax(1) < 1e-9))) | (mu >= 1e10) | (cost < 1e-28)
        if bool(done.all()):
            break
    J = obj.jacobian(x)
    return x, J.transpose(1, 2) @ J


#: The fraction of the transitions a fit keeps by default (least trimmed squares). On the benchmark's
#: cartpole trials (``scripts/bench_identify.py``, ``pretrained:cartpole``, 10 per regime) it cut the
#: pole mass's mean error from 2 s of data from 7.2% (worst 26%) to 3.0% (7.7%) and at the training
#: ranges' edges from 1 s from 13.3% (71%) to 7.8% (24%); from 1 s inside the ranges it is even (4.4%
#: against 4.3%). README, issue 16.
KEEP = 0.8
#: At most this many concentration steps (each a full Levenberg-Marquardt fit); they usually stop sooner.
CONCENTRATION_STEPS = 5


def check_keep(keep: float) -> float:
    """``keep``, or a one-line error unless it is a fraction in (0, 1]."""
    if not (isinstance(keep, (int, float)) and math.isfinite(keep) and 0 < keep <= 1):
        raise GndesignError(f"--keep must be a fraction in (0, 1] of the transitions to fit (e.g. 0.8), got {keep}")
    return keep


def _fit(obj: Objective, x: torch.Tensor, iterations: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Levenberg-Marquardt from ``x [R, n]``; returns ``(x, J^T J, losses [R], best)``."""
    x, A = _levenberg_marquardt(obj, x, iterations)
    losses = obj.residuals(x).pow(2).sum(1)
    if not torch.isfinite(losses).any():
        raise GndesignError("identification diverged (non-finite loss at every restart): check the observations")
    return x, A, losses, int(torch.nan_to_num(losses, nan=math.inf).argmin())


def identify(model, system: str, obs: Observed, groups: list[str], restarts: int = 4, iterations: int = 30,
             prior: float = 1e-4, prior_width: float = math.log(1.25), init_width: float = math.log(1.25),
             seed: int = 0, start: torch.Tensor | None = None, keep: float = KEEP) -> dict:
    """Estimate ``groups`` of ``system``'s physical parameters from ``obs`` through ``model``.

    Restart 0 starts at the nominal values (or at the log-factors ``start [n]``, e.g. the last
    estimate when refitting online), the others at log-factors uniform in
    ``[-init_width, init_width]``. ``keep`` in (0, 1]: the fraction of the transitions fitted (least
    trimmed squares by concentration steps, each a fit from the same starts; 1: plain least squares).
    Returns ``{"parameters": [...], "loss", "restarts": [...], "transitions", "kept", "wall_s"}``
    (``kept``: the transitions in the final fit); each parameter: ``name``, ``group``, ``nominal``,
    ``estimate``, ``factor``, ``std`` (curvature, relative to the estimate) and ``spread`` (relative
    standard deviation over the restarts that reach the best loss within 1e-6 + 1%)."""
    if restarts < 1:
        raise GndesignError(f"--restarts must be at least 1, got {restarts}")
    check_keep(keep)
    if len(obs) == 0:
        raise GndesignError("no observed transitions (length zero)")
    t0 = time.perf_counter()
    elems = elements(model.tree(system), groups)
    obj = Objective(model, system, obs, elems, prior, prior_width)
    gen = torch.Generator().manual_seed(seed)
    init = (torch.rand(restarts, len(elems), generator=gen) * 2 - 1) * init_width
    init[0] = 0.0 if start is None else torch.as_tensor(start, dtype=init.dtype)
    init = init.to(obs.qpos.dtype)
    x, A, losses, best = _fit(obj, init, iterations)
    h = max(1, math.ceil(keep * len(obs)))
    if h < len(obs):
        # Keep the h transitions the best estimate predicts best and refit from the same starts (not from
        # the last estimate: a fit pulled by bad transitions can end where a parameter no longer matters).
        for _ in range(CONCENTRATION_STEPS):
            mask = torch.zeros(len(obs), dtype=torch.bool)
            mask[obj.transition_errors(x[best]).argsort()[:h]] = True
            if obj.mask is not None and bool((mask == obj.mask).all()):
                break
            obj.use(mask)
            x, A, losses, best = _fit(obj, init, iterations)
    good = (losses <= losses[best] * 1.01 + 1e-12).nonzero().flatten()
    spread = x[good].std(0, unbiased=False).numpy() if len(good) > 1 else np.zeros(len(elems))
    data_loss = float(obj.errors(x[best:best + 1]).pow(2).sum()) / obj.M  # the mean over the fitted transitions
    std = np.full(len(elems), np.inf)  # unidentifiable (flat) parameters keep an infinite one
    free = (~flat_parameters(A[best:best + 1])[0]).nonzero().flatten()
    try:  # Gauss-Newton covariance of the log-factors: s^2 (J_d^T J_d)^-1 with s^2 = M L / (M - n)
        cov = data_loss / max(obj.M - len(elems), 1) * torch.linalg.inv(A[best][free][:, free])
        std[free.numpy()] = np.sqrt(np.clip(torch.diagonal(cov).numpy(), 0, None))
    except RuntimeError:
        pass
    params = []
    for j, e in enumerate(elems):
        f = float(torch.exp(x[best, j]))
        params.append({"name": e.name, "group": e.group, "key": e.key, "index": e.index, "nominal": e.nominal,
                       "estimate": e.nominal * f,
                       "factor": f, "std": float(std[j]), "spread": float(spread[j])})
    return {"parameters": params, "loss": float(losses[best]), "transitions": len(obs),
            "restarts": [{"loss": float(losses[r]), "factors": torch.exp(x[r]).tolist()} for r in range(restarts)],
            "log_factors": x[best].tolist(), "kept": obj.M // obs.qvel.shape[1],
            "restarts_at_best": len(good), "wall_s": time.perf_counter() - t0}
