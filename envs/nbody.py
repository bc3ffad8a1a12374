"""Ground-truth N-body systems (Cranmer et al. 2020): particles under a pairwise force law in 2D
or 3D, simulated with velocity Verlet (:func:`gndesign.nbody_laws.verlet`) at a step of
``dt / substeps`` (default 0.01 / 10 = 1e-3), and their datasets.

Systems are named ``nbody-LAW-Dd`` with an optional ``-nN`` (default 4 particles), e.g.
``nbody-spring-2d``, ``nbody-r2-3d-n8``; the laws are those of :mod:`gndesign.nbody_laws`.
Episode ``i`` of a dataset with seed ``s`` draws from ``default_rng(SeedSequence([s, i]))``:
masses ``exp(U(-1, 1))``, charges ``+-1``, positions ``N(0, 1)``, velocities ``N(0, 0.5^2)`` (the
centre-of-mass motion removed); an episode whose particles come closer than :data:`MIN_DISTANCE`
(singular 1/r^k forces) is redrawn from the same stream, so the data stay deterministic.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from envs.rollout_guard import episode_rng
from gndesign.datasets.base import shard_ranges
from gndesign.datasets.nbody import write_nbody_dataset
from gndesign.errors import ConfigError, GndesignError
from gndesign.nbody_laws import DAMPING, LAWS, accelerations, verlet

log = logging.getLogger(__name__)

MIN_DISTANCE = 0.25  # closest approach an episode may have (else it is redrawn)
MAX_DRAWS = 200
NAME = re.compile(r"^nbody-(?P<law>[a-z0-9]+)-(?P<dim>[23])d(?:-n(?P<n>\d+))?$")


@dataclasses.dataclass(frozen=True)
class NBodySystem:
    """One N-body system: the law, dimension, particle count, frame step and sampling ranges."""

    law: str
    dim: int
    num_particles: int = 4
    dt: float = 0.01
    substeps: int = 10
    damping: float = DAMPING
    mass_log_range: tuple[float, float] = (-1.0, 1.0)
    position_std: float = 1.0
    velocity_std: float = 0.5

    def __post_init__(self) -> None:
        if self.law not in LAWS:
            raise ConfigError(f"unknown N-body force law {self.law!r}; known: {', '.join(LAWS)}")
        if self.dim not in (2, 3) or self.num_particles < 2:
            raise ConfigError(f"an N-body system needs dim 2 or 3 and >= 2 particles, got {self.dim}, "
                              f"{self.num_particles}")

    @property
    def name(self) -> str:
        return f"nbody-{self.law}-{self.dim}d" + (f"-n{self.num_particles}" if self.num_particles != 4 else "")

    def describe(self) -> dict[str, Any]:
        """The ``system`` a dataset's meta records."""
        d = dataclasses.asdict(self)
        d["mass_log_range"] = list(self.mass_log_range)
        return {"name": self.name, **d, "integrator": "velocity Verlet", "step": self.dt / self.substeps}

    def sample(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Masses, charges, positions and velocities of one episode's initial state."""
        n, d = self.num_particles, self.dim
        mass = np.exp(rng.uniform(*self.mass_log_range, size=n))
        charge = rng.choice([-1.0, 1.0], size=n)
        x = rng.normal(0.0, self.position_std, size=(n, d))
        v = rng.normal(0.0, self.velocity_std, size=(n, d))
        v -= (mass[:, None] * v).sum(0) / mass.sum()
        return {"masses": mass, "charges": charge, "x": x, "v": v}

    def rollout(self, x, v, mass, charge, steps: int):
        """Positions, velocities and true accelerations ``[steps + 1, N, D]``."""
        def accel(xx, vv):
            return accelerations(self.law, xx, vv, mass, charge, self.damping)

        return verlet(accel, np.asarray(x, float), np.asarray(v, float), self.dt, steps, self.substeps)


def is_nbody_name(name: object) -> bool:
    return isinstance(name, str) and name.startswith("nbody-")


def get_nbody_system(name: str) -> NBodySystem:
    """The system named ``nbody-LAW-Dd[-nN]``."""
    m = NAME.match(name)
    if not m or m["law"] not in LAWS:
        raise GndesignError(f"unknown N-body system {name!r}: use nbody-LAW-Dd or nbody-LAW-Dd-nN with LAW one of "
                            f"{', '.join(LAWS)} and D 2 or 3 (e.g. nbody-spring-2d, nbody-r2-3d-n8)")
    return NBodySystem(m["law"], int(m["dim"]), int(m["n"] or 4))


def nbody_system_names() -> list[str]:
    return [f"nbody-{law}-{d}d" for law in LAWS for d in (2, 3)]


def min_distance(x: np.ndarray) -> float:
    """Closest approach over frames ``x [T, N, D]``."""
    d = np.linalg.norm(x[:, :, None] - x[:, None, :], axis=-1)
    n = x.shape[1]
    d[:, np.arange(n), np.arange(n)] = np.inf
    return float(d.min())


def _accept(x: np.ndarray, a: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(a)) and min_distance(x) >= MIN_DISTANCE)


def generate_episodes(system: NBodySystem, seed: int, episodes: range | list[int], steps: int
                      ) -> list[dict[str, np.ndarray]]:
    """Episodes ``episodes`` of a dataset with ``seed`` (the shard arrays of each), simulated
    together: each episode's k-th draw is the k-th from its own stream, so the result is the same
    as one at a time."""
    rngs = {i: episode_rng(seed, i) for i in episodes}
    done: dict[int, dict[str, np.ndarray]] = {}
    for _ in range(MAX_DRAWS):
        pending = [i for i in episodes if i not in done]
        if not pending:
            break
        draws = [system.sample(rngs[i]) for i in pending]
        batch = {k: np.stack([d[k] for d in draws]) for k in draws[0]}
        with np.errstate(all="ignore"):
            x, v, a = system.rollout(batch["x"], batch["v"], batch["masses"], batch["charges"], steps)
        for b, i in enumerate(pending):
            if _accept(x[:, b], a[:, b]):
                done[i] = {"positions": x[:, b], "velocities": v[:, b], "accelerations": a[:, b],
                           "masses": batch["masses"][b], "charges": batch["charges"][b]}
    missing = [i for i in episodes if i not in done]
    if missing:
        raise GndesignError(f"{system.name}: no episode without a close encounter (< {MIN_DISTANCE}) in {MAX_DRAWS} "
                            f"draws (episode {missing[0]}): use shorter episodes (--control-steps)")
    return [done[i] for i in episodes]


def generate_episode(system: NBodySystem, seed: int, episode: int, steps: int) -> dict[str, np.ndarray]:
    """Episode ``episode`` of a dataset with ``seed``: the shard arrays of one episode."""
    return generate_episodes(system, seed, [episode], steps)[0]


def generate_nbody_dataset(name: str | NBodySystem, episodes: int, steps: int, seed: int, out_dir: str | os.PathLike,
                           overwrite: bool = False, shard_size: int = 32) -> dict[str, Any]:
    """Generate ``episodes`` episodes of ``steps`` frames (plus the initial one) into ``out_dir``,
    atomically, in shards of ``shard_size`` episodes. Returns a report dict."""
    system = get_nbody_system(name) if isinstance(name, str) else name
    for label, value, low in (("episodes", episodes, 1), ("steps", steps, 2), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(f"{label} must be an integer >= {low}, got {value!r}")
    t0 = time.perf_counter()
    eps = [ep for start, stop in shard_ranges(episodes, shard_size)
           for ep in generate_episodes(system, int(seed), range(start, stop), int(steps))]
    arrays = {k: np.stack([e[k] for e in eps]) for k in eps[0]}
    generator = {"episode_rng": "numpy.random.default_rng(numpy.random.SeedSequence([seed, episode]))",
                 "masses": "exp(U(mass_log_range))", "charges": "+-1 uniform", "positions": "N(0, position_std)",
                 "velocities": "N(0, velocity_std), centre-of-mass motion removed",
                 "rejection": f"redrawn while the closest approach < {MIN_DISTANCE} (at most {MAX_DRAWS} draws)",
                 "shards": len(shard_ranges(episodes, shard_size))}
    path = write_nbody_dataset(out_dir, arrays, system.describe(), seed, generator, overwrite, shard_size)
    seconds = time.perf_counter() - t0
    log.info("wrote %s: %d episodes x %d steps of %s in %.1f s", path, episodes, steps, system.name, seconds)
    return {"path": Path(path), "system": system.name, "episodes": episodes, "steps": steps, "seconds": seconds}
