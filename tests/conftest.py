import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# Test models are tiny: one thread is faster than two and immune to a busy machine.
torch.set_num_threads(1)

# An articulated chain with every joint type: free root, ball, several joints on one body
# (hinge, slide, hinge with offset anchors) and a welded body.
ALL_JOINTS_XML = """
<mujoco>
  <worldbody>
    <body name="root" pos="0.1 0.2 1"><freejoint name="free"/><geom size=".1" mass="1"/>
      <body name="b" pos="0.3 0 0" quat="0.9 0.1 0.2 0.3">
        <joint name="ball" type="ball" pos="0.05 0 0"/><geom size=".1" mass="2"/>
        <body name="c" pos="0 0.2 0.1">
          <joint name="h1" type="hinge" axis="0 1 1" pos="0.1 0 0.02"/>
          <joint name="s1" type="slide" axis="1 0 0"/>
          <joint name="h2" type="hinge" axis="1 0 0" pos="0 .1 0"/>
          <geom size=".1" mass="1"/>
          <body name="welded" pos="0 0 0.2"><geom size=".1" mass="0.5"/></body>
        </body>
      </body>
    </body>
  </worldbody>
  <actuator><motor joint="h1" gear="3"/><motor joint="ball" gear="1 2 3 0 0 0"/></actuator>
</mujoco>
"""


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def cartpole_data(tmp_path_factory):
    """A tiny cartpole dataset (8 episodes x 40 steps), generated once per test session."""
    from envs.generate import generate_dataset

    out = tmp_path_factory.mktemp("data") / "cartpole"
    generate_dataset("cartpole", episodes=8, steps=40, seed=0, out_dir=out, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def arm_data(tmp_path_factory):
    """A planar two-link arm (an MJCF file outside the registry, no dm_control): 6 episodes x 30 steps."""
    from envs.generate import generate_dataset

    out = tmp_path_factory.mktemp("data") / "arm"
    generate_dataset("envs/task_data/arm.xml", episodes=6, steps=30, seed=0, out_dir=out, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def swimmer_data(tmp_path_factory):
    """A tiny swimmer4 dataset (15 MuJoCo substeps per control step)."""
    from envs.generate import generate_dataset

    out = tmp_path_factory.mktemp("data") / "swimmer4"
    generate_dataset("swimmer4", episodes=4, steps=20, seed=1, out_dir=out, workers=1, progress=False)
    return out


# The particle scene of the unit tests (frame units: dt 0.02 s) and its falling-particle data.
PARTICLE_SCENE = {"particle_radius": 0.02, "obstacle_radius": 0.015, "x_min": -0.5, "x_max": 0.5, "floor": 0.0,
                  "dt": 0.02, "gravity": [0.0, -9.81]}
FIXED_OBSTACLE = [[-0.45, 0.45], [-0.35, 0.45], [-0.25, 0.45]]


def falling_particles(episodes: int = 3, steps: int = 12, n: int = 6, k: int = 2, seed: int = 0, push: float = 0.0,
                      fixed_obstacle: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic particle data: positions ``[episodes, steps+1, n, 2]``, obstacle vertices
    ``[episodes, k+1, 2]`` and designs ``[episodes, k]``.

    Particles released at rest fall (semi-implicit Euler in frame units of :data:`PARTICLE_SCENE`)
    and stop on the floor; ``push`` adds sideways kicks (a fraction of gravity's velocity change
    per frame, normal). The obstacle is a random polyline (``k`` segments of designs in [-1, 1]),
    or with ``fixed_obstacle`` :data:`FIXED_OBSTACLE` and zero designs (2 segments). The particles
    ignore the obstacle.
    """
    rng = np.random.default_rng(seed)
    r, g = PARTICLE_SCENE["particle_radius"], PARTICLE_SCENE["gravity"][1] * PARTICLE_SCENE["dt"] ** 2
    x = np.zeros((episodes, steps + 1, n, 2))
    x[:, 0, :, 0] = rng.uniform(-0.4, 0.4, (episodes, n))
    x[:, 0, :, 1] = rng.uniform(0.1, 0.4, (episodes, n))
    v = np.zeros((episodes, n, 2))
    for t in range(steps):
        v[..., 1] += g
        if push:
            v[..., 0] += rng.normal(0.0, push * abs(g), (episodes, n))
        nxt = x[:, t] + v
        landed = nxt[..., 1] < r
        nxt[..., 1] = np.where(landed, r, nxt[..., 1])
        v[..., 1] = np.where(landed, 0.0, v[..., 1])
        x[:, t + 1] = nxt
    if fixed_obstacle:
        return x, np.tile(np.array([FIXED_OBSTACLE]), (episodes, 1, 1)), np.zeros((episodes, 2))
    design = rng.uniform(-1, 1, (episodes, k))
    angles = np.cumsum(design, axis=1)
    seg = 0.1 * np.stack([np.cos(angles), np.sin(angles)], -1)
    obstacle = np.concatenate([np.tile([[[-0.1, 0.3]]], (episodes, 1, 1)), seg], 1).cumsum(1)
    return x, obstacle, design
