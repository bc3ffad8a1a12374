"""What every ground-truth MuJoCo rollout that makes data shares: its check and its random stream.

MuJoCo does not raise when a simulation goes wrong: it counts a warning and, after a divergence,
resets the state (which therefore stays finite). :func:`check_rollout` turns the warnings after
which a rollout cannot be trusted (:data:`FATAL_WARNINGS`), and non-finite states, into a
:class:`SimulationError`. Trajectory generation (:mod:`envs.generate`) and the obstacle scene
(:mod:`envs.obstacle.simulation`) both use it.

Episode ``i`` of a dataset with seed ``s`` draws everything from :func:`episode_rng` ``(s, i)``, so
a dataset does not depend on how its episodes are split over worker processes.
"""

from __future__ import annotations

import mujoco
import numpy as np

from gndesign.errors import GndesignError

# MuJoCo warning name -> what it means, for the error message.
FATAL_WARNINGS = {
    "mjWARN_BADQPOS": "bad qpos",
    "mjWARN_BADQVEL": "bad qvel",
    "mjWARN_BADQACC": "bad qacc (the simulation diverged)",
    "mjWARN_BADCTRL": "bad ctrl",
    "mjWARN_CNSTRFULL": "constraint buffer full",
    "mjWARN_CONTACTFULL": "contact buffer full",
}


class SimulationError(GndesignError):
    """MuJoCo produced non-finite values or a numerical warning during a rollout."""


def fatal_warnings(data: mujoco.MjData) -> list[str]:
    """The fatal warnings ``data`` has counted since its last reset, e.g. ``["bad qacc (the
    simulation diverged) x3"]`` (empty when the rollout can be trusted)."""
    counts = {name: data.warning[int(getattr(mujoco.mjtWarning, name))].number for name in FATAL_WARNINGS}
    return [f"{FATAL_WARNINGS[name]} x{n}" for name, n in counts.items() if n > 0]


def check_rollout(data: mujoco.MjData, *states: np.ndarray, who: str, advice: str) -> None:
    """Raise :class:`SimulationError` if ``data`` counted a fatal warning or a state array (any
    shape) holds a non-finite value. The message names ``who`` rolled out, what went wrong and
    ``advice`` (what to change)."""
    problems = fatal_warnings(data)
    if problems or not all(np.all(np.isfinite(s)) for s in states):
        raise SimulationError(f"{who}: MuJoCo rollout failed ({', '.join(problems) or 'non-finite state'}); {advice}")


def episode_rng(seed: int, episode: int) -> np.random.Generator:
    """The random stream of episode ``episode`` of a dataset with ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(episode)]))
