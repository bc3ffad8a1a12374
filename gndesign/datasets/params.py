"""The physical parameters of an episode: the MuJoCo model fields a dataset randomizes per episode.

``PARAM_KEYS`` names them (the ``mujoco.MjModel`` fields of the same names); one episode's values
have the shapes of :func:`param_shapes`. Datasets store them per episode, the kinematic tree keeps
the model's own values, and the learned simulators take them as features.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np

from gndesign.datasets.values import check_values
from gndesign.errors import GndesignError

PARAM_KEYS = ("body_mass", "body_inertia", "dof_damping", "actuator_gear")


def param_shapes(nbody: int, nv: int, nu: int) -> dict[str, tuple[int, ...]]:
    """Shapes of one episode's physical parameters, keyed as in :data:`PARAM_KEYS`."""
    return {
        "body_mass": (nbody,),
        "body_inertia": (nbody, 3),
        "dof_damping": (nv,),
        "actuator_gear": (nu, 6),
    }


def model_params(model) -> dict[str, np.ndarray]:
    """The physical parameters of a ``mujoco.MjModel`` (float64 copies)."""
    return {key: np.array(getattr(model, key), dtype=np.float64) for key in PARAM_KEYS}


def validate_params(
    params: Mapping[str, Any], nbody: int, nv: int, nu: int, error: type[GndesignError] = GndesignError
) -> dict[str, np.ndarray]:
    """Check keys, shapes and values of one episode's parameters; return float64 copies."""
    missing = [k for k in PARAM_KEYS if k not in params]
    extra = sorted(set(params) - set(PARAM_KEYS))
    if missing or extra:
        raise error(
            f"physical parameters must have exactly the keys {list(PARAM_KEYS)}; missing {missing}, unexpected {extra}"
        )
    out = {}
    for key, shape in param_shapes(nbody, nv, nu).items():
        value = np.asarray(params[key], dtype=np.float64)
        if value.shape != shape:
            raise error(f"physical parameter {key} has shape {value.shape}, the model needs {shape}")
        out[key] = value.copy()
    check_param_values({k: v[None] for k, v in out.items()}, error)
    return out


def check_param_values(params: Mapping[str, np.ndarray], error: type[GndesignError] = GndesignError,
                       where: str = "", fix: str = "") -> None:
    """Refuse physical parameters ``{key: [episodes, ...]}`` (shapes already checked) that no model
    can have: non-finite or absurd (:data:`MAX_ABS`) values, negative masses, inertias or damping,
    or a body other than the world (body 0) without mass. The one-line message starts with
    ``where`` and ends with ``fix``."""
    for key in PARAM_KEYS:
        check_values(f"physical parameter {key}", params[key], error, where, fix, nonnegative=key != "actuator_gear")
    mass = params["body_mass"][:, 1:]
    if mass.size and np.any(mass <= 0):
        ep, body = (int(i) for i in np.argwhere(mass <= 0)[0])
        episode = f" in episode {ep}" if len(mass) > 1 else ""
        raise error(f"{where}physical parameter body_mass must be positive, body {body + 1} has "
                    f"{mass[ep, body]:g}{episode}{': ' + fix if fix else ''}")


def apply_params(model, params: Mapping[str, Any], *, inplace: bool = False, data=None):
    """``model`` (a ``mujoco.MjModel``) with ``params`` written into the fields of the same names
    and the constants derived from them (``mj_setConst``) recomputed: a copy, or ``model`` itself
    when ``inplace`` (copying a model takes milliseconds). ``data``: an ``MjData`` of the model
    to use as scratch space for ``mj_setConst`` (it is left in an unspecified state)."""
    import mujoco

    checked = validate_params(params, model.nbody, model.nv, model.nu)
    new = model if inplace else copy.deepcopy(model)
    for key, value in checked.items():
        getattr(new, key)[...] = value
    mujoco.mj_setConst(new, mujoco.MjData(new) if data is None else data)
    return new
