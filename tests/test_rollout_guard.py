"""The one MuJoCo rollout guard (envs.rollout_guard) behind both dataset generators, and the
generators' output pinned to the bytes they produced before the guard was shared."""

import dataclasses
import hashlib

import mujoco
import numpy as np
import pytest

from envs.generate import generate_dataset, generate_episode
from envs.obstacle.scene import SceneConfig
from envs.obstacle.simulation import episode_setup, generate_obstacle_dataset, simulate
from envs.rollout_guard import FATAL_WARNINGS, SimulationError, check_rollout, episode_rng, fatal_warnings
from envs.systems import get_system

# A body falling under an absurd gravity: MuJoCo's accelerations overflow at the first step.
DIVERGING_MJCF = """<mujoco><option gravity="0 0 -1e300"/>
  <worldbody><body><joint name="j" type="slide" axis="0 0 1"/><geom size="0.1"/></body></worldbody>
  <actuator><motor joint="j"/></actuator>
</mujoco>"""


def test_both_generators_raise_the_one_simulation_error(tmp_path):
    with pytest.raises(SimulationError) as trajectory:
        generate_dataset(DIVERGING_MJCF, 1, 5, 0, tmp_path / "t", progress=False)
    scene = dataclasses.replace(SceneConfig(), n_particles=6, frames=5, gravity=(0.0, -1e300))
    with pytest.raises(SimulationError) as particles:
        generate_obstacle_dataset(scene, tmp_path / "o", episodes=1, seed=0)
    assert type(trajectory.value) is type(particles.value) is SimulationError
    # Both name who failed, what MuJoCo reported and what to change.
    assert "episode 0 (seed 0): mjcf: MuJoCo rollout failed (bad qacc (the simulation diverged) x1); reduce the " \
        "randomization ranges" in str(trajectory.value)
    assert str(particles.value) == ("obstacle scene: MuJoCo rollout failed (bad qacc (the simulation diverged) x1); "
                                    "lower the timestep or stiffen solref")
    assert not (tmp_path / "t").exists() and not (tmp_path / "o").exists()


def test_the_check_names_warnings_and_non_finite_states():
    model = mujoco.MjModel.from_xml_string(DIVERGING_MJCF)
    data = mujoco.MjData(model)
    check_rollout(data, np.zeros(3), who="x", advice="y")  # nothing counted, all finite
    with pytest.raises(SimulationError, match=r"^x: MuJoCo rollout failed \(non-finite state\); y$"):
        check_rollout(data, np.zeros(3), np.array([0.0, np.nan]), who="x", advice="y")
    mujoco.mj_step(model, data)
    assert fatal_warnings(data) == ["bad qacc (the simulation diverged) x1"]
    assert all(hasattr(mujoco.mjtWarning, name) for name in FATAL_WARNINGS)  # names MuJoCo knows


def test_episode_rng_depends_only_on_seed_and_episode():
    assert episode_rng(3, 1).random() == episode_rng(3, 1).random()
    assert len({episode_rng(s, e).random() for s in (0, 1) for e in (0, 1)}) == 4


def _digest(arrays) -> str:
    h = hashlib.sha256()
    for name, a in arrays:
        a = np.ascontiguousarray(a)
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def test_generated_episodes_are_unchanged():
    # Recorded before the obstacle scene and trajectory generation shared the guard and the episode
    # stream (issue 11): every array a dataset stores, bit for bit. The files add only metadata, whose
    # format is gndesign's (a MuJoCo or numpy upgrade may legitimately change these numbers too).
    system = get_system("cartpole")
    episodes = [generate_episode(system, 7, i, 10) for i in range(3)]
    digest = _digest([(f"{i}/{k}", ep[k]) for i, ep in enumerate(episodes) for k in sorted(ep)])
    assert digest == "3253f966826704df7890eb76a42508cf84bcb20e97ccbfeaf9a47d5ac02559a2"
    cfg = dataclasses.replace(SceneConfig(), n_particles=12, frames=8)
    setups = [episode_setup(cfg, 5, i) for i in range(3)]
    designs, inits = np.stack([d for d, _ in setups]), np.stack([p for _, p in setups])
    digest = _digest([("designs", designs), ("inits", inits), ("positions", simulate(cfg, designs, inits))])
    assert digest == "40bfb3a788b6862d44a74e13d648454c5e46a138d80067af06198d80c0adeb0c"
