"""The optional sections of a run's configuration that train other model families than a forward
model: ``solver`` (the C-GNS) and ``policy`` (a policy learned through a model). Both are saved with
every checkpoint; :mod:`gndesign.config` parses them with the rest."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gndesign.errors import ConfigError


@dataclass
class SolverConfig:
    """The C-GNS solver (saved with checkpoints)."""

    iterations: int = 5  # N_train: gradient steps unrolled in training (the most, see iterations_min)
    # Training draws the number of unrolled steps uniformly from [iterations_min, iterations] for
    # every solve (0: always ``iterations``). Fitting the targets after any number of steps makes
    # the learned constraint's minimizer, not one fixed-length descent, the prediction, so more
    # test-time iterations do not walk away from it (measured on cartpole, see gndesign.cgns).
    iterations_min: int = 1
    test_iterations: int = 0  # default N at test time (0: the same as iterations)
    step_size: float = 0.1  # initial learned step size eta
    learn_step_size: bool = True
    energy_channels: int = 4  # f_C = sum over nodes (edges) of |decoded vector of this size|^2

    def validate(self) -> None:
        if self.iterations < 1 or self.test_iterations < 0:
            raise ConfigError(f"solver.iterations must be >= 1 and solver.test_iterations >= 0, got "
                              f"{self.iterations} and {self.test_iterations}")
        if not 0 <= self.iterations_min <= self.iterations:
            raise ConfigError(f"solver.iterations_min must be between 0 (off) and solver.iterations "
                              f"({self.iterations}), got {self.iterations_min}")
        if not (math.isfinite(self.step_size) and self.step_size > 0):
            raise ConfigError(f"solver.step_size must be a positive number, got {self.step_size}")
        if self.energy_channels < 1:
            raise ConfigError(f"solver.energy_channels must be >= 1, got {self.energy_channels}")


@dataclass
class PolicyConfig:
    """A policy learned through a learned model (:mod:`gndesign.policy_net`; saved with checkpoints).

    Horizons and discounts count control steps, as users do; a model stepping ``k`` control steps
    at once imagines ``horizon / k`` model steps."""

    task: str = "cartpole-swingup"
    dynamics: str = ""  # the learned model (checkpoint) the policy is trained through
    hidden_size: int = 64
    layers: int = 2
    horizon: int = 256  # control steps per imagined rollout (a multiple of the model's action repeat)
    discount: float = 0.995  # per control step
    init_fraction: float = 0.25  # start states from the task's initial-state distribution
    imagined_fraction: float = 0.25  # start states the policy reached in earlier imagined rollouts
    spread_fraction: float = 0.25  # data start states with every hinge angle drawn uniformly (a pole upright)
    value_weight: float = 1.0  # weight of the value regression next to the actor's loss
    smoothness: float = 0.0  # cost per unit of squared action change per model step (as a fraction of the range)
    start_noise: float = 0.01  # std of the noise on start states' qpos and qvel
    # share of rollouts whose per-episode task parameters come from ranges shrunk to near_scale of their width
    near_fraction: float = 0.0
    near_scale: float = 0.25

    def validate(self) -> None:
        for name in ("hidden_size", "horizon", "near_scale"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"policy.{name} must be positive, got {getattr(self, name)}")
        if self.layers < 0:
            raise ConfigError(f"policy.layers must be >= 0, got {self.layers}")
        if not 0 < self.discount <= 1:
            raise ConfigError(f"policy.discount must be in (0, 1], got {self.discount}")
        fractions = (self.init_fraction, self.imagined_fraction, self.spread_fraction)
        if min(fractions) < 0 or sum(fractions) > 1:
            raise ConfigError(f"policy.init_fraction, policy.imagined_fraction and policy.spread_fraction must be >= 0 "
                              f"and sum to at most 1, got {', '.join(map(str, fractions))}")
        if not 0 <= self.near_fraction <= 1 or self.near_scale > 1:
            raise ConfigError(f"policy.near_fraction and policy.near_scale must be in [0, 1], got {self.near_fraction} "
                              f"and {self.near_scale}")
        if min(self.value_weight, self.smoothness, self.start_noise) < 0:
            raise ConfigError("policy.value_weight, policy.smoothness and policy.start_noise must be >= 0")
