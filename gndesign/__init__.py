"""gndesign: differentiable inverse design and planning with learned graph-network simulators.

The core package. It knows MuJoCo's model format but never imports ``envs`` or ``planners``
(only :mod:`gndesign.cli`, the command line, wires the three together).
"""

__version__ = "0.1.0"


def _register_gymnasium_envs() -> None:
    """Register gndesign's gymnasium ids (entry points are strings: nothing is imported now)."""
    try:
        import gymnasium
    except ImportError:  # gymnasium is a dependency, but the core works without it
        return
    ids = {
        "gndesign/CartpoleSwingup-v0": ("envs.gym_envs:DmControlGymEnv", {"task": "cartpole-swingup"}),
        "gndesign/Swimmer6-v0": ("envs.gym_envs:DmControlGymEnv", {"task": "swimmer6"}),
        "gndesign/Learned-v0": ("envs.gym_envs:LearnedGymEnv", {}),
    }
    for env_id, (entry, kwargs) in ids.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry, kwargs=kwargs)


_register_gymnasium_envs()
