"""MuJoCo systems, ground-truth dynamics, tasks and environments for gndesign.

Importing ``envs`` (or any of its modules) registers the gymnasium ids ``gndesign/CartpoleSwingup-v0``,
``gndesign/Swimmer6-v0`` and ``gndesign/Learned-v0`` (:mod:`envs.gym_envs`); ``gymnasium.make``
imports it for you when the id names the module: ``gymnasium.make("envs:gndesign/Learned-v0")``.
"""

# dm_control and MuJoCo pick their GL backend at import time: importing gndesign first sets it
# (headless egl by default; see gndesign.gl).
import gndesign  # noqa: F401

#: gymnasium id -> (entry point, keyword arguments); entry points are strings: nothing is imported now.
GYM_IDS = {
    "gndesign/CartpoleSwingup-v0": ("envs.gym_envs:DmControlGymEnv", {"task": "cartpole-swingup"}),
    "gndesign/Swimmer6-v0": ("envs.gym_envs:DmControlGymEnv", {"task": "swimmer6"}),
    "gndesign/Learned-v0": ("envs.gym_envs:LearnedGymEnv", {}),
}


def _register_gymnasium_envs() -> None:
    import gymnasium

    for env_id, (entry, kwargs) in GYM_IDS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry, kwargs=kwargs)


_register_gymnasium_envs()
