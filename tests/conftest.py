import os

os.environ.setdefault("MUJOCO_GL", "egl")

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
def swimmer_data(tmp_path_factory):
    """A tiny swimmer4 dataset (15 MuJoCo substeps per control step)."""
    from envs.generate import generate_dataset

    out = tmp_path_factory.mktemp("data") / "swimmer4"
    generate_dataset("swimmer4", episodes=4, steps=20, seed=1, out_dir=out, workers=1, progress=False)
    return out
