"""The OpenGL backend MuJoCo renders with, chosen before MuJoCo is imported.

MuJoCo and dm_control read ``MUJOCO_GL`` when they are imported and raise there, failing every
command (rendering or not), when it names no backend they know or a backend whose library is
missing. :func:`configure` (run by ``import gndesign``, before any MuJoCo import of ours) sets the
headless default ``egl`` (Linux) and turns such a setting into ``disable``, remembering why
(:func:`problem`): rendering then fails, and whatever renders (a video) warns once and goes on
without it.
"""

from __future__ import annotations

import ctypes
import os
import sys

_LINUX = sys.platform.startswith("linux")
# Backends both MuJoCo and dm_control accept (dm_control has no glx; egl and osmesa are Linux
# only), with the library each loads when MuJoCo is imported (glfw's is loaded when rendering).
_LIBRARIES = {"egl": "EGL", "osmesa": "OSMesa"} if _LINUX else {}
_BACKENDS = (*_LIBRARIES, "glfw", "", "enable", "enabled", "on", "true", "1",
             "disable", "disabled", "off", "false", "0")

_problem: str | None = None


def problem() -> str | None:
    """Why :func:`configure` disabled rendering (None: it did not)."""
    return _problem


def _loadable(name: str) -> bool:
    """Whether ``lib<name>.so`` loads, tried the way PyOpenGL does (``.so``, then ``.so.9`` to ``.so.0``)."""
    for suffix in ("", *(f".{i}" for i in range(9, -1, -1))):
        try:
            ctypes.CDLL(f"lib{name}.so{suffix}")
            return True
        except OSError:
            continue
    return False


def check_backend(value: str) -> str | None:
    """Why MuJoCo would fail to import with ``MUJOCO_GL=value`` (None: it would not)."""
    backend = value.lower().strip()
    if backend not in _BACKENDS:
        return f"MUJOCO_GL={value!r} is not an OpenGL backend MuJoCo knows: use {', '.join((*_LIBRARIES, 'glfw'))}"
    if backend in _LIBRARIES and not _loadable(_LIBRARIES[backend]):
        return f"MUJOCO_GL={value!r} needs the lib{_LIBRARIES[backend]} library, which is not installed"
    return None


def configure() -> str | None:
    """Set ``MUJOCO_GL``: ``egl`` when unset (on Linux, headless rendering), ``disable`` when MuJoCo
    would fail to import with its value (:func:`check_backend`). Returns the reason rendering was
    disabled (None: it was not). Does nothing once MuJoCo is imported (the backend is then fixed)."""
    global _problem
    if "mujoco" in sys.modules:
        return _problem
    if _LINUX:
        os.environ.setdefault("MUJOCO_GL", "egl")
    value = os.environ.get("MUJOCO_GL")
    if value is not None and (reason := check_backend(value)) is not None:
        _problem = reason
        os.environ["MUJOCO_GL"] = "disable"
    return _problem
