"""gndesign: differentiable inverse design and planning with learned graph-network simulators.

The core package. It knows MuJoCo's model format but never imports ``envs``, ``planners`` or
``workflows`` (the application layer, which wires the three together).
"""

__version__ = "0.1.0"

from gndesign import gl as _gl

# Before any MuJoCo import: a MUJOCO_GL that MuJoCo would fail to import with disables rendering instead.
_gl.configure()
