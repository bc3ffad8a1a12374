"""Typed, range-checked options of the planners and design optimizers.

The command line's ``--set planner.KEY=VALUE`` (``gndesign plan``) and ``--set optimizer.KEY=VALUE``
(``gndesign design``) become one of these dataclasses through the configuration's own parsing
(:func:`gndesign.config.dataclass_from`: unknown keys list the known ones, values are converted to
the field's type), then :func:`validate_options` checks each value's range from the field's
``metadata`` (``gt``, ``ge``, ``le``, ``lt``, ``choices``, ``at_most``: another field's name;
every number must be finite) and the options' own ``check()`` anything else. Every failure is a one-line
:class:`~gndesign.errors.ConfigError` naming ``SECTION.KEY``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gndesign.config import dataclass_from
from gndesign.errors import ConfigError


def _num(default, **bounds):
    return field(default=default, metadata=bounds)


def positive(default):
    return _num(default, gt=0)


def at_least(default, low):
    return _num(default, ge=low)


def fraction(default):
    return _num(default, ge=0, le=1)


_BOUNDS = {"gt": (lambda v, b: v > b, "> {}"), "ge": (lambda v, b: v >= b, ">= {}"),
           "lt": (lambda v, b: v < b, "< {}"), "le": (lambda v, b: v <= b, "<= {}")}


def validate_options(options, section: str):
    """Check every field of the options dataclass ``options`` against its ``metadata`` bounds (and
    finiteness), then ``options.check(section)`` if it has one; return ``options``."""
    for f in dataclasses.fields(options):
        value, where = getattr(options, f.name), f"{section}.{f.name}"
        if value is None and f.default is None:
            continue
        if "choices" in f.metadata:
            if value not in f.metadata["choices"]:
                raise ConfigError(f"{where} must be one of {', '.join(f.metadata['choices'])}, got {value!r}")
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise ConfigError(f"{where} must be a number, got {value!r}")
            if not math.isfinite(v):
                raise ConfigError(f"{where} must be a finite number, got {v}")
            for key, (ok, text) in _BOUNDS.items():
                if key in f.metadata and not ok(v, f.metadata[key]):
                    raise ConfigError(f"{where} must be {text.format(f.metadata[key])}, got {v}")
        other = f.metadata.get("at_most")
        if other is not None and value > getattr(options, other):
            raise ConfigError(f"{where} ({value}) must not exceed {section}.{other} ({getattr(options, other)})")
    check = getattr(options, "check", None)
    if check is not None:
        check(section)
    return options


def parse_options(cls, values: Mapping[str, Any], section: str):
    """A validated ``cls`` (an options dataclass) from ``{KEY: value}``."""
    return validate_options(dataclass_from(cls, dict(values), section), section)


# ------------------------------------------------------------------------------------ action planners
@dataclass
class GradientOptions:
    """:class:`planners.gradient.GradientPlanner`'s options."""

    iterations: int = at_least(20, 1)
    restarts: int = at_least(8, 1)
    lr: float = positive(0.3)
    noise: float = at_least(0.3, 0)
    random_fraction: float = fraction(0.25)
    grad_clip: float = positive(10.0)
    smoothness: float = at_least(0.0, 0)


@dataclass
class CEMOptions:
    """:class:`planners.sampling.CEMPlanner`'s options."""

    population: int = at_least(256, 2)
    elites: int = _num(32, ge=2, at_most="population")  # the refit's standard deviation needs two
    iterations: int = at_least(4, 1)
    init_std: float = at_least(0.5, 0)
    alpha: float = _num(0.1, ge=0, lt=1)


@dataclass
class MPPIOptions:
    """:class:`planners.sampling.MPPIPlanner`'s options."""

    samples: int = at_least(256, 1)
    temperature: float = positive(0.1)
    noise: float = at_least(0.3, 0)
    iterations: int = at_least(4, 1)


@dataclass
class RandomOptions:
    """:class:`planners.sampling.RandomShootingPlanner`'s options."""

    samples: int = at_least(1024, 1)


PLANNER_OPTION_TYPES = {"gradient": GradientOptions, "cem": CEMOptions, "mppi": MPPIOptions, "random": RandomOptions}


# ------------------------------------------------------------------------------------ design optimizers
@dataclass
class GradientDesignOptions:
    """:class:`planners.design.GradientDesign`'s options."""

    iterations: int = at_least(50, 1)
    lr: float = positive(0.1)
    restarts: int = at_least(1, 1)
    grad_clip: float = positive(1.0)
    lr_decay: float = fraction(1.0)
    betas: tuple = _num((0.9, 0.999), ge=0, lt=1)
    backtrack: float = at_least(0.0, 0)
    shrink: float = _num(0.5, gt=0, le=1)
    grow: float = at_least(1.0, 1)
    update: str = field(default="adam", metadata={"choices": ("adam", "normalized")})
    screen: int = at_least(0, 0)
    screen_keep: int = at_least(0, 0)
    smoothness: float = at_least(0.0, 0)

    def check(self, section: str) -> None:
        if not isinstance(self.betas, (list, tuple)) or len(self.betas) != 2:
            raise ConfigError(f"{section}.betas must be two numbers, e.g. [0.9, 0.999], got {self.betas!r}")
        self.betas = tuple(self.betas)


@dataclass
class SamplingDesignOptions:
    """What the sampling design optimizers share: the prior's weight and a time budget."""

    smoothness: float = at_least(0.0, 0)
    max_seconds: float | None = _num(None, gt=0)


@dataclass
class CEMDesignOptions(SamplingDesignOptions):
    """:class:`planners.design.CEMDesign`'s options."""

    population: int = at_least(32, 2)
    elites: int = _num(6, ge=2, at_most="population")
    iterations: int = at_least(10, 1)
    budget: int | None = _num(None, ge=1)
    init_std: float = at_least(0.3, 0)
    alpha: float = _num(0.1, ge=0, lt=1)

    def check(self, section: str) -> None:
        if self.budget is not None and self.budget < self.population:
            raise ConfigError(f"{section}.budget ({self.budget}) is less than one population ({self.population})")


@dataclass
class RandomDesignOptions(SamplingDesignOptions):
    """:class:`planners.design.RandomDesign`'s options."""

    budget: int = at_least(256, 1)
    batch: int = at_least(32, 1)


DESIGN_OPTION_TYPES = {"gradient": GradientDesignOptions, "cem": CEMDesignOptions, "random": RandomDesignOptions}
