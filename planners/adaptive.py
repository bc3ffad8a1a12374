"""Adaptive MPC: the learned model's physical parameters refitted online from the motion seen.

A learned forward model takes a system's physical parameters (masses, damping, gears) as inputs, so
a controller can plan with its best estimate of them instead of the nominal values.
:class:`OnlineIdentification` watches the control loop (:func:`planners.mpc.run_mpc_lockstep` calls
:meth:`~OnlineIdentification.observe` after every control step and
:meth:`~OnlineIdentification.before_step` before it), refits the parameters every ``refit_every``
control steps from all the transitions seen so far by :func:`gndesign.identify.identify`, and
plans with the estimate from then on (it sets the dynamics' ``params``).

The transitions are the model's own steps: with a model that steps ``k`` control steps at once
(:mod:`gndesign.coarse`), the states every ``k`` control steps from the episode's start and the
action held between them (the planner holds each of its actions ``k`` steps, so the loop's are).
"""

from __future__ import annotations

import copy
import math
import time

import torch

from gndesign.coarse import check_divides
from gndesign.dynamics import LearnedDynamics
from gndesign.errors import GndesignError
from gndesign.identify import Observed, check_keep, elements, identify, params_from_factors

#: Online refits fit every transition by default. In closed loop the transitions a model predicts worst are
#: likely the informative ones (the swing-up's): trimming left the masses poorly determined. On
#: cartpole swing-up (``scripts/bench_identify.py --mpc``) trimmed refits (keep 0.8) ended 4.5-19% off on
#: the cart mass and 14-41% on the pole's, against 0.5-4.6% and 3.1-4.8% with least squares.
ONLINE_KEEP = 1.0


class OnlineIdentification:
    """Refit ``groups`` (``mass``, ``damping``, ``gear``) of the planning model's physical
    parameters every ``refit_every`` control steps (a multiple of the model's action repeat).

    Each refit runs :func:`gndesign.identify.identify` on a float64 copy of the model with
    ``restarts`` starts (the first at the last estimate) and at most ``iterations``
    Levenberg-Marquardt steps, a prior of weight ``prior`` around the nominal values, fitting the
    fraction ``keep`` of the transitions (default 1: plain least squares, unlike offline
    identification; see :data:`ONLINE_KEEP`). ``refits`` records every refit: the control step, the
    transitions used, the factors on the nominal values, the loss and the wall time. One episode at
    a time (its parameters are its own)."""

    def __init__(self, dynamics: LearnedDynamics, groups: list[str], refit_every: int, restarts: int = 2,
                 iterations: int = 10, prior: float = 1e-4, seed: int = 0, keep: float = ONLINE_KEEP):
        if not isinstance(dynamics, LearnedDynamics):
            raise GndesignError("online identification refits a learned model's parameters: plan with a learned "
                                "model (not mujoco) or drop --adapt")
        if refit_every < 1:
            raise GndesignError(f"--refit-every must be a positive number of control steps, got {refit_every}")
        self.k = dynamics.action_repeat
        check_divides(self.k, refit_every, "--refit-every")
        self.dynamics, self.groups, self.refit_every = dynamics, list(groups), refit_every
        self.restarts, self.iterations, self.prior, self.seed = restarts, iterations, prior, seed
        self.keep = check_keep(keep)
        self.system = dynamics.system if dynamics.system is not None else next(iter(dynamics.model.systems))
        self.model64 = copy.deepcopy(dynamics.model).double()
        self.elems = elements(self.model64.tree(self.system), self.groups)
        self.nominal = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in
                        self.model64.tree(self.system).nominal.items()}
        self.reset()

    def reset(self) -> None:
        """A new episode: forget the transitions and plan with the nominal parameters again."""
        self.log_factors = torch.zeros(len(self.elems), dtype=torch.float64)
        self.transitions: list[tuple[torch.Tensor, ...]] = []
        self.refits: list[dict] = []
        self._start: tuple[torch.Tensor, ...] | None = None
        self.dynamics.params = None

    def observe(self, t: int, qpos: torch.Tensor, qvel: torch.Tensor, action: torch.Tensor,
                qpos_next: torch.Tensor, qvel_next: torch.Tensor) -> None:
        """Control step ``t`` went from ``(qpos, qvel)`` (``[1, nq]``, ``[1, nv]``) with ``action
        [1, nu]`` to ``(qpos_next, qvel_next)``: keep it as part of a model step."""
        if qpos.shape[0] != 1:
            raise ValueError("online identification follows one episode at a time (a batch of one)")
        if t % self.k == 0:
            self._start = (qpos[0], qvel[0], action[0])
        elif self._start is not None and not torch.equal(action[0], self._start[2]):
            self._start = None  # the action was not held over the model step: not a transition of the model
        if (t + 1) % self.k == 0 and self._start is not None:
            self.transitions.append((*self._start, qpos_next[0], qvel_next[0]))
            self._start = None

    def before_step(self, t: int) -> bool:
        """Refit if control step ``t`` is due (``t > 0``, a multiple of ``refit_every``) and there
        are transitions; returns whether it did."""
        if t <= 0 or t % self.refit_every or not self.transitions:
            return False
        self.refit(t)
        return True

    def refit(self, t: int) -> dict:
        """Identify from every transition so far (at control step ``t``), plan with the estimate and
        record the refit."""
        t0 = time.perf_counter()
        cols = [torch.stack([tr[i] for tr in self.transitions]).to(torch.float64) for i in range(5)]
        obs = Observed(*cols)
        result = identify(self.model64, self.system, obs, self.groups, restarts=self.restarts,
                          iterations=self.iterations, prior=self.prior, seed=self.seed + t, start=self.log_factors,
                          keep=self.keep)
        # identify() returns the best finite restart (it raises when none is finite)
        self.log_factors = torch.tensor(result["log_factors"], dtype=torch.float64)
        params = params_from_factors(self.nominal, self.elems, self.log_factors[None])
        self.dynamics.params = {k: v[0].to(torch.float32) for k, v in params.items()}
        record = {"t": t, "transitions": len(obs), "kept": result["kept"], "loss": result["loss"],
                  "factors": {e.name: math.exp(float(x)) for e, x in zip(self.elems, self.log_factors, strict=True)},
                  "wall_s": time.perf_counter() - t0}
        self.refits.append(record)
        return record
