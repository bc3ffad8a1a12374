"""Design optimization: one interface for gradient descent, CEM and random search over designs.

A design is a vector ``[K]`` within per-coordinate bounds (an obstacle's joint angles). The caller
gives a batched loss ``loss_fn(designs [B, K]) -> {"total": [B], other named terms: [B]}`` (lower
is better); for the gradient optimizer it must be differentiable (e.g. a learned rollout), for the
sampling ones it may be anything (e.g. MuJoCo). Every optimizer adds the same smoothness prior
``smoothness * sum_k (x[k+1] - x[k])^2`` to ``total`` (the ``objective``), never leaves the bounds,
counts the designs it scores (``evaluations``: one simulator rollout each, the budget's unit), keeps
the best design seen, and records a history of every named term per iteration.

Like the planners, this module knows only callables and tensors: the scene (MuJoCo, forward
kinematics of the obstacle) is wired in by the caller (``gndesign design``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from gndesign.errors import GndesignError
from planners.base import Squash
from planners.options import DESIGN_OPTION_TYPES, parse_options
from planners.sampling import cem_refit

log = logging.getLogger(__name__)
DesignLossFn = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]


@dataclass
class DesignResult:
    """The best design ``[K]``, its objective and named terms, and how it was found.

    ``history[name]`` holds, per iteration, that term of the best design of the iteration's batch
    (``"objective"``: total plus prior; ``"best"``: the best objective so far).
    """

    design: torch.Tensor
    objective: float
    terms: dict[str, float]
    history: dict[str, list[float]] = field(default_factory=dict)
    evaluations: int = 0
    seconds: float = 0.0
    optimizer: str = ""
    #: ``[n, K]`` distinct designs ranked by the objective that picked the result (best first), where the
    #: optimizer keeps several (the gradient's restarts and screened starts); None otherwise.
    candidates: torch.Tensor | None = None

    def to_dict(self) -> dict:
        return {"design": [float(x) for x in self.design], "objective": self.objective, "terms": self.terms,
                "history": self.history, "evaluations": self.evaluations, "seconds": self.seconds,
                "optimizer": self.optimizer,
                "candidates": None if self.candidates is None else self.candidates.tolist()}


class DesignOptimizer:
    """Base class: bounds, the prior, evaluation bookkeeping. Subclasses implement :meth:`_run`.

    Args:
        low, high: bounds ``[K]`` of the design (inclusive).
        smoothness: weight of the prior on differences of consecutive design coordinates.
        prior_map: the prior penalizes consecutive differences of ``prior_map(x) [B, K']`` instead
            (e.g. absolute segment angles ``x.cumsum(-1)`` when ``x`` holds relative joint angles).
        seed: seed of the optimizer's own random generator.
    """

    name = "design"

    def __init__(self, low, high, smoothness: float = 0.0, prior_map: Callable | None = None, seed: int = 0):
        self.low = torch.as_tensor(low, dtype=torch.float64).flatten()
        self.high = torch.as_tensor(high, dtype=torch.float64).flatten()
        if self.low.shape != self.high.shape or not bool((self.low < self.high).all()):
            raise ValueError(f"design bounds need low < high elementwise, got {self.low.tolist()}, "
                             f"{self.high.tolist()}")
        if smoothness < 0:
            raise ValueError(f"smoothness must be non-negative, got {smoothness}")
        self.smoothness, self.prior_map = smoothness, prior_map
        self.generator = torch.Generator().manual_seed(seed)
        self.evaluations = 0
        self.sample_fn: Callable[[int, torch.Generator], torch.Tensor] | None = None

    @property
    def dim(self) -> int:
        return self.low.numel()

    def clip(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(x, self.high.to(x)), self.low.to(x))

    def uniform(self, n: int) -> torch.Tensor:
        """``[n, K]`` designs drawn uniformly within the bounds."""
        u = torch.rand(n, self.dim, generator=self.generator, dtype=torch.float64)
        return self.low + (self.high - self.low) * u

    def sample(self, n: int) -> torch.Tensor:
        """``[n, K]`` random designs: from ``sample_fn`` (checked: shape, finite; clipped to the bounds)
        or uniform within the bounds."""
        if self.sample_fn is None:
            return self.uniform(n)
        x = torch.as_tensor(self.sample_fn(n, self.generator), dtype=torch.float64)
        if x.shape != (n, self.dim) or not bool(torch.isfinite(x).all()):
            raise ValueError(f"sample_fn must return {n} finite designs of {self.dim} coordinates, got shape "
                             f"{tuple(x.shape)}")
        return self.clip(x)

    def midpoint(self) -> torch.Tensor:
        return (self.low + self.high) / 2

    def prior(self, x: torch.Tensor) -> torch.Tensor:
        """The smoothness prior ``[B]`` of designs ``x [B, K]``."""
        y = x if self.prior_map is None else self.prior_map(x)
        if self.smoothness == 0 or y.shape[-1] < 2:
            return torch.zeros(x.shape[0], dtype=x.dtype)
        return self.smoothness * y.diff(dim=-1).square().reshape(x.shape[0], -1).sum(-1)

    def score(self, loss_fn: DesignLossFn, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named terms ``[B]`` of designs ``x [B, K]`` plus ``prior`` and ``objective`` (total + prior)."""
        terms = dict(loss_fn(x))
        if "total" not in terms:
            raise ValueError(f"the design loss must return a 'total' term, got {sorted(terms)}")
        self.evaluations += x.shape[0]
        prior = self.prior(x)
        terms["prior"] = prior
        terms["objective"] = terms["total"] + prior.to(terms["total"])
        return terms

    def optimize(self, loss_fn: DesignLossFn, init: torch.Tensor | None = None,
                 sample_fn: Callable[[int, torch.Generator], torch.Tensor] | None = None) -> DesignResult:
        """Minimize the objective from ``init [K]`` (default: the bounds' midpoint). ``sample_fn(n,
        generator) -> [n, K]``: where random designs come from (random search, the gradient's restarts
        and screen; default: uniform within the bounds; e.g. a smooth family of the scene's)."""
        self.sample_fn = sample_fn
        init = self.midpoint() if init is None else torch.as_tensor(init, dtype=torch.float64).flatten()
        if init.shape != self.low.shape:
            raise ValueError(f"initial design has {init.numel()} coordinates, the bounds {self.dim}")
        if not bool(((init >= self.low) & (init <= self.high)).all()):
            raise ValueError(f"initial design {init.tolist()} is outside the bounds")
        self.evaluations = 0
        self._best = (init.clone(), math.inf, {})
        self._candidates = None
        self._history: dict[str, list[float]] = {}
        start = time.perf_counter()
        self._run(loss_fn, init)
        design, objective, terms = self._best
        if not math.isfinite(objective):
            log.warning("%s design: no design it scored had a finite objective; returning the initial design "
                        "(objective inf)", self.name)
        cands = None if self._candidates is None else self.clip(self._candidates)
        return DesignResult(self.clip(design), objective, terms, self._history, self.evaluations,
                            time.perf_counter() - start, self.name, cands)

    def _track(self, x: torch.Tensor, terms: Mapping[str, torch.Tensor]) -> None:
        """Record the batch's best design in the history; keep it if it beats the best so far.

        A ``feasible`` term (``[B]``, 0 or 1), if the loss gives one, marks designs that may not
        become the result (e.g. designs the ground-truth simulator refuses): they still guide the
        search through their (penalized) objective.
        """
        obj = terms["objective"].detach()
        obj = torch.where(torch.isfinite(obj), obj, torch.full_like(obj, math.inf))
        ok = terms["feasible"].detach().reshape(-1).bool() if "feasible" in terms else torch.ones_like(obj).bool()
        masked = torch.where(ok, obj, torch.full_like(obj, math.inf))
        i = int(masked.argmin()) if bool(torch.isfinite(masked).any()) else int(obj.argmin())
        values = {k: float(v.detach().reshape(-1)[i]) if v.numel() > 1 else float(v.detach())
                  for k, v in terms.items()}
        if bool(ok[i]) and math.isfinite(values["objective"]) and values["objective"] < self._best[1]:
            self._best = (x[i].detach().clone().to(torch.float64), values["objective"], values)
        for k, v in values.items():
            self._history.setdefault(k, []).append(v)
        self._history.setdefault("best", []).append(self._best[1])

    def _run(self, loss_fn: DesignLossFn, init: torch.Tensor) -> None:
        raise NotImplementedError


def _ranked(terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``[B]`` objectives for ranking: non-finite and infeasible designs last (``inf``)."""
    obj = terms["objective"].detach().double()
    bad = ~torch.isfinite(obj)
    if "feasible" in terms:
        bad |= ~terms["feasible"].detach().reshape(-1).bool()
    return torch.where(bad, torch.full_like(obj, math.inf), obj)


def _distinct_ranked(x: torch.Tensor, obj: torch.Tensor, tol: float = 1e-9) -> torch.Tensor:
    """The designs of ``x [B, K]`` with a finite ranking objective ``obj [B]`` (:func:`_ranked`), best
    first, repeats dropped."""
    keep: list[torch.Tensor] = []
    for i in obj.argsort().tolist():
        if math.isfinite(float(obj[i])) and all(float((x[i] - k).abs().max()) > tol for k in keep):
            keep.append(x[i].detach().to(torch.float64))
    return torch.stack(keep) if keep else x[:0].detach().to(torch.float64)


def _per_design(value: torch.Tensor, n: int) -> torch.Tensor:
    """A loss term as ``[n]`` values, one per design (a single value is shared by all ``n``)."""
    v = value.detach().reshape(-1)
    return v.expand(n) if v.numel() == 1 else v


class GradientDesign(DesignOptimizer):
    """Adam on unconstrained parameters ``z`` with ``design = mid + half * tanh(z)``.

    The gradient of the objective flows through whatever ``loss_fn`` computes (a full learned
    rollout). ``restarts`` designs are optimized together: the initial design and, for the others,
    random designs (``sample_fn``, default uniform) or the best of a screen, each with its own Adam
    state and step size. Per restart the gradient norm is clipped; a restart whose objective or
    gradient is not finite goes back to its best design (logged). With ``backtrack`` > 0, a restart
    whose objective rises more than ``backtrack`` above its best also goes back there, with a fresh
    Adam state and its step size times ``shrink`` (particle landscapes have cliffs and plateaus that
    momentum runs over). The best design seen is returned (the final iterate is scored too).

    Args:
        iterations: Adam steps.
        lr: learning rate in ``z`` space (``z`` = 1 moves a coordinate 76% of the way to a bound).
        restarts: designs optimized in one batch.
        grad_clip: per-restart gradient norm limit (in ``z`` space).
        lr_decay: final learning rate as a fraction of ``lr`` (cosine schedule); 1 keeps it constant.
        betas: Adam's moment decay rates.
        backtrack: objective increase over a restart's best that sends it back there (0: never).
        shrink: step-size factor applied at each backtrack.
        grow: step-size factor after each step that does not backtrack (up to the scheduled ``lr``):
            a trust region that widens again after a backtrack.
        update: ``adam``, or ``normalized`` (momentum on the unit gradient: steps of length ``lr``
            along the gradient's direction, not Adam's per-coordinate signs, which give noisy,
            unimportant coordinates as large a step as the important ones).

        screen: candidate designs scored (forward only, with ``select_fn`` when given, else the loss)
            before the descent; the restarts other than the initial design start from the best of
            them instead of random designs, and stay candidates for the result (0, or a single restart:
            no screen).
        screen_keep: with a ``screen_fn`` (a cheaper loss, e.g. on a subset of the particles), a
            screen in two stages: ``screen_fn`` ranks every candidate and only its best
            ``screen_keep`` are scored with the trusted loss (successive halving); 0, at least
            ``screen``, or no ``screen_fn``: every candidate is scored with the trusted loss.

    :meth:`optimize` also takes ``sample_fn`` (:meth:`DesignOptimizer.optimize`: the screen's
    candidates and the random restarts), ``schedule``, called with the run's progress (``i / (iterations - 1)``)
    before each iteration (e.g. to anneal the loss's temperature or draw a new minibatch: the loss
    may then be noisy), ``select_fn``, a loss to trust that picks the result: after the last
    step each restart's best and final design are scored with it in one batch and the best of
    these and of the screened starts (scored with it in the screen) is returned (its evaluations
    counted); without it, the best design the loss saw; and ``screen_fn`` (see ``screen_keep``).
    """

    name = "gradient"

    def __init__(self, low, high, iterations: int = 50, lr: float = 0.1, restarts: int = 1,
                 grad_clip: float = 1.0, lr_decay: float = 1.0, betas: tuple[float, float] = (0.9, 0.999),
                 backtrack: float = 0.0, shrink: float = 0.5, grow: float = 1.0, update: str = "adam",
                 screen: int = 0, screen_keep: int = 0, smoothness: float = 0.0, prior_map: Callable | None = None,
                 seed: int = 0):
        super().__init__(low, high, smoothness, prior_map, seed)
        self.schedule: Callable[[float], None] | None = None
        self.select_fn: DesignLossFn | None = None
        self.screen_fn: DesignLossFn | None = None
        if iterations <= 0 or restarts <= 0:
            raise ValueError("iterations and restarts must be positive")
        if screen < 0 or screen_keep < 0:
            raise ValueError(f"screen and screen_keep must be non-negative numbers of designs, got {screen}, "
                             f"{screen_keep}")
        if screen and screen_keep and screen_keep < restarts - 1:
            raise ValueError(f"screen_keep must be at least restarts - 1 = {restarts - 1} (or 0), got {screen_keep}")
        self.screen, self.screen_keep = screen, screen_keep
        if backtrack < 0 or not 0 < shrink <= 1 or grow < 1:
            raise ValueError("need backtrack >= 0, 0 < shrink <= 1 and grow >= 1")
        if update not in ("adam", "normalized"):
            raise ValueError(f"update must be adam or normalized, got {update!r}")
        self.grow, self.update = grow, update
        self.iterations, self.lr, self.restarts = iterations, lr, restarts
        self.grad_clip, self.lr_decay, self.betas = grad_clip, lr_decay, tuple(betas)
        self.backtrack, self.shrink = backtrack, shrink
        self.squash = Squash(self.low, self.high)
        self.backtracks = 0

    def optimize(self, loss_fn: DesignLossFn, init: torch.Tensor | None = None,
                 schedule: Callable[[float], None] | None = None, select_fn: DesignLossFn | None = None,
                 sample_fn: Callable[[int, torch.Generator], torch.Tensor] | None = None,
                 screen_fn: DesignLossFn | None = None) -> DesignResult:
        """:meth:`DesignOptimizer.optimize`, with the ``schedule``, ``select_fn``, ``sample_fn`` and
        ``screen_fn`` hooks (see the class)."""
        self.schedule, self.select_fn, self.screen_fn = schedule, select_fn, screen_fn
        return super().optimize(loss_fn, init, sample_fn)

    @torch.no_grad()
    def _starts(self, loss_fn, init: torch.Tensor) -> torch.Tensor:
        """``[restarts, K]``: the initial design, then random designs or the screen's best (their trusted
        terms kept in ``self._screened`` for the final selection)."""
        self._screened = None
        if self.restarts == 1:
            return init[None]
        if not self.screen:
            return torch.cat([init[None], self.sample(self.restarts - 1)])
        cand = self.sample(self.screen)
        if self.screen_fn is not None and 0 < self.screen_keep < len(cand):  # the cheap stage: only its best go on
            cand = cand[_ranked(self.score(self.screen_fn, cand)).argsort()[: self.screen_keep]]
        terms = self.score(self.select_fn or loss_fn, cand)
        if self.select_fn is None:
            self._track(cand, terms)
        obj = _ranked(terms)
        best = obj.argsort()[: self.restarts - 1]
        log.info("gradient design: screened %d designs (%d with the trusted loss), the best objectives %s",
                 self.screen, len(cand), [round(float(v), 4) for v in obj[best]])
        self._screened = (cand[best], {k: _per_design(v, len(cand))[best] for k, v in terms.items()})
        return torch.cat([init[None], cand[best]])

    def _schedule(self, i: int) -> float:
        return self.lr_decay + (1 - self.lr_decay) * 0.5 * (1 + math.cos(math.pi * min(i, self.iterations)
                                                                          / self.iterations))

    def _run(self, loss_fn, init):
        B = self.restarts
        starts = self._starts(loss_fn, init)
        z = self.squash.inverse(starts)
        m, v = torch.zeros_like(z), torch.zeros_like(z)
        steps = torch.zeros(B, 1, dtype=z.dtype)
        scale = torch.ones(B, 1, dtype=z.dtype)  # per-restart step size factor (backtracking)
        best_z, best_g = z.clone(), torch.zeros_like(z)
        best_obj = torch.full((B,), math.inf, dtype=z.dtype)
        b1, b2 = self.betas
        self.backtracks = 0
        for i in range(self.iterations):
            if self.schedule is not None:
                self.schedule(i / max(self.iterations - 1, 1))
            z = z.detach().requires_grad_(True)
            x = self.squash(z)
            terms = self.score(loss_fn, x)
            obj = terms["objective"]
            self._track(x, terms)
            finite = torch.isfinite(obj)
            if finite.any():
                (g,) = torch.autograd.grad(torch.where(finite, obj, torch.zeros_like(obj)).sum(), z,
                                           allow_unused=True)
            g = torch.zeros_like(z) if not finite.any() or g is None else g
            with torch.no_grad():
                z, obj = z.detach(), obj.detach().to(z.dtype)
                bad = ~finite | ~torch.isfinite(g).all(dim=1)
                g = torch.where(bad[:, None], torch.zeros_like(g), g)
                g = g * (self.grad_clip / g.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
                better = ~bad & (obj < best_obj)
                best_z[better], best_obj[better], best_g[better] = z[better], obj[better], g[better]
                worse = ~bad & (obj > best_obj + self.backtrack) if self.backtrack > 0 else torch.zeros_like(bad)
                if bad.any():
                    log.warning("gradient design: %d of %d designs non-finite; back to their best design",
                                int(bad.sum()), B)
                reset = bad | worse
                if reset.any():
                    self.backtracks += int(worse.sum())
                    never = reset & ~torch.isfinite(best_obj)  # no finite iterate yet: the best design overall
                    best_z[never] = self.squash.inverse(self._best[0]).to(z)
                    z[reset], g[reset] = best_z[reset], best_g[reset]
                    m[reset], v[reset], steps[reset] = 0.0, 0.0, 0.0
                    scale[worse] *= self.shrink
                ok = ~reset
                scale[ok] = (scale[ok] * self.grow).clamp(max=1.0)
                steps += 1
                if self.update == "adam":
                    m.mul_(b1).add_((1 - b1) * g)
                    v.mul_(b2).add_((1 - b2) * g * g)
                    m_hat, v_hat = m / (1 - b1 ** steps), v / (1 - b2 ** steps)
                    direction = m_hat / (v_hat.sqrt() + 1e-8)
                else:
                    m.mul_(b1).add_((1 - b1) * g / g.norm(dim=1, keepdim=True).clamp_min(1e-12))
                    direction = m / (1 - b1 ** steps)
                z = z - self.lr * self._schedule(i) * scale * direction
        with torch.no_grad():
            if self.select_fn is None:
                x = self.squash(z)
                terms = self.score(loss_fn, x)
                self._track(x, terms)
                # the result (the best design seen, perhaps an earlier iterate), then the final iterates
                obj = _ranked({k: _per_design(v, len(x)) for k, v in terms.items()})
                self._candidates = _distinct_ranked(torch.cat([self._best[0][None].to(x), x]),
                                                    torch.cat([obj.new_tensor([self._best[1]]), obj]))
                return
            # The noisy loss chose the candidates; the trusted one picks among them and the screened
            # starts (which the screen scored with it).
            x = self.squash(torch.cat([best_z[torch.isfinite(best_obj)], z]))
            terms = {k: _per_design(v, len(x)) for k, v in self.score(self.select_fn, x).items()}
            if self._screened is not None:
                seen, seen_terms = self._screened
                x = torch.cat([x, seen.to(x)])
                terms = {k: torch.cat([v.detach(), seen_terms[k].to(v)]) for k, v in terms.items() if k in seen_terms}
            self._best = (self._best[0], math.inf, {})
            self._track(x, terms)
            self._candidates = _distinct_ranked(x, _ranked(terms))


class CEMDesign(DesignOptimizer):
    """Cross-entropy method over designs (any batched scorer, no gradients).

    Each iteration scores ``population`` designs (the current mean and clipped Gaussian samples
    around it) and refits the Gaussian to the ``elites`` best (the planners' CEM update).

    Args:
        budget: designs to score in all (``iterations = budget // population``), or
        iterations: given directly (``budget`` wins if both are given).
        init_std: initial standard deviation as a fraction of the bounds' range.
        alpha: smoothing of the refit.
        max_seconds: also stop after the iteration in which this much wall-clock time has passed
            (a time budget, e.g. the time a gradient design took).
    """

    name = "cem"

    def __init__(self, low, high, population: int = 32, elites: int = 6, iterations: int = 10,
                 budget: int | None = None, init_std: float = 0.3, alpha: float = 0.1, smoothness: float = 0.0,
                 max_seconds: float | None = None, prior_map: Callable | None = None, seed: int = 0):
        super().__init__(low, high, smoothness, prior_map, seed)
        self.max_seconds = max_seconds
        if not 2 <= elites <= population:
            raise ValueError("need 2 <= elites <= population")
        if budget is not None:
            if budget < population:
                raise ValueError(f"a CEM budget of {budget} designs is less than one population ({population})")
            iterations = budget // population
        if iterations <= 0:
            raise ValueError("iterations must be positive")
        self.population, self.elites, self.iterations = population, elites, iterations
        self.init_std, self.alpha = init_std, alpha

    @torch.no_grad()
    def _run(self, loss_fn, init):
        mean = init.clone()
        std = self.init_std * (self.high - self.low)
        start = time.perf_counter()
        for i in range(self.iterations):
            if i and self.max_seconds is not None and time.perf_counter() - start >= self.max_seconds:
                break
            eps = torch.randn(self.population - 1, self.dim, generator=self.generator, dtype=torch.float64)
            x = torch.cat([mean[None], self.clip(mean + std * eps)], dim=0)
            terms = self.score(loss_fn, x)
            self._track(x, terms)
            mean, std = cem_refit(x, terms["objective"].detach().to(x), mean, std, self.elites, self.alpha)
            mean = self.clip(mean)


class RandomDesign(DesignOptimizer):
    """Random search: the initial design and random designs (uniform, or ``sample_fn``'s), scored in batches.

    Args:
        budget: designs to score in all (the initial design included).
        batch: designs per call of the loss.
        max_seconds: also stop after the batch in which this much wall-clock time has passed.
    """

    name = "random"

    def __init__(self, low, high, budget: int = 256, batch: int = 32, smoothness: float = 0.0,
                 max_seconds: float | None = None, prior_map: Callable | None = None, seed: int = 0):
        super().__init__(low, high, smoothness, prior_map, seed)
        self.max_seconds = max_seconds
        if budget <= 0 or batch <= 0:
            raise ValueError("budget and batch must be positive")
        self.budget, self.batch = budget, batch

    @torch.no_grad()
    def _run(self, loss_fn, init):
        done, start = 0, time.perf_counter()
        while done < self.budget:
            if done and self.max_seconds is not None and time.perf_counter() - start >= self.max_seconds:
                break
            n = min(self.batch, self.budget - done)
            x = self.sample(n) if done else torch.cat([init[None], self.sample(n - 1)], dim=0)
            self._track(x, self.score(loss_fn, x))
            done += n


DESIGN_OPTIMIZERS = {"gradient": GradientDesign, "cem": CEMDesign, "random": RandomDesign}


def design_options(name: str, options: Mapping | None = None) -> dict:
    """``options`` of design optimizer ``name`` checked (:mod:`planners.options`: typed,
    range-checked, unknown keys refused with the known ones listed) and converted to their types."""
    if name not in DESIGN_OPTIMIZERS:
        raise GndesignError(f"unknown optimizer {name!r}: choose one of {', '.join(DESIGN_OPTIMIZERS)}")
    checked = parse_options(DESIGN_OPTION_TYPES[name], options or {}, "optimizer")
    return {k: getattr(checked, k) for k in options or {}}


def make_design_optimizer(name: str, low, high, seed: int = 0, prior_map: Callable | None = None,
                          **options) -> DesignOptimizer:
    """A design optimizer by name (``gradient``, ``cem``, ``random``) with its options (checked by
    :func:`design_options`)."""
    checked = design_options(name, options)
    return DESIGN_OPTIMIZERS[name](low, high, seed=seed, prior_map=prior_map, **checked)
