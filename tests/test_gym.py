"""Gymnasium environments: registration, check_env, 5-tuple API, rendering, learned-model env."""

import subprocess
import sys

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the ids)
from gndesign.config import load_config
from gndesign.training import train


@pytest.fixture(scope="module")
def tiny_checkpoint(cartpole_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "gym"
    cfg = load_config(None, ["model.latent_size=16", "model.mlp_hidden_size=16", "train.steps=3",
                             "train.batch_size=16", "train.stats_transitions=200"])
    cfg.data = [str(cartpole_data)]
    train(cfg, run, progress=False)
    return str(run / "checkpoints" / "latest.pt")


def _gl_available() -> bool:
    try:
        import mujoco

        from envs.systems import get_system

        r = mujoco.Renderer(get_system("pendulum").model, 16, 16)
        r.close()
        return True
    except Exception:  # noqa: BLE001 - any GL failure means no headless rendering here
        return False


@pytest.mark.parametrize("env_id", ["gndesign/CartpoleSwingup-v0", "gndesign/Swimmer6-v0"])
def test_dm_control_envs_pass_check_env(env_id):
    env = gymnasium.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    obs2, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert isinstance(reward, float) and 0.0 <= reward <= 1.0 and not terminated and not truncated
    # Same seed, same episode.
    again, _ = env.reset(seed=3)
    assert np.array_equal(obs, again)
    env.close()


def test_learned_env_passes_check_env(tiny_checkpoint):
    env = gymnasium.make("gndesign/Learned-v0", checkpoint=tiny_checkpoint, task="cartpole-swingup",
                         episode_steps=5)
    check_env(env.unwrapped, skip_render_check=True)
    env.reset(seed=0)
    for _ in range(5):
        *_, terminated, truncated, _ = env.step(env.action_space.sample())
    assert truncated and not terminated
    env.close()


@pytest.mark.skipif(not _gl_available(), reason="no headless OpenGL (MUJOCO_GL=egl or osmesa) on this machine")
def test_rgb_array_rendering(tiny_checkpoint):
    for env in (gymnasium.make("gndesign/CartpoleSwingup-v0", render_mode="rgb_array"),
                gymnasium.make("gndesign/Learned-v0", checkpoint=tiny_checkpoint, render_mode="rgb_array")):
        env.reset(seed=0)
        frame = env.render()
        assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8 and frame.std() > 0
        env.close()


def test_bad_actions_are_refused():
    env = gymnasium.make("gndesign/CartpoleSwingup-v0").unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([np.nan], dtype=np.float32))


def test_ids_are_registered_by_envs_not_by_the_core():
    # A fresh interpreter: the core registers nothing; an id that names its module imports envs.
    code = ("import gymnasium, gndesign\n"
            "assert 'gndesign/Swimmer6-v0' not in gymnasium.registry\n"
            "env = gymnasium.make('envs:gndesign/CartpoleSwingup-v0')\n"
            "assert env.observation_space.shape == (4,)\n"
            "assert 'gndesign/Learned-v0' in gymnasium.registry\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
