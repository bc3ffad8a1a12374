"""The system registry: dm_control suite domains and MJCF files as :class:`System` objects.

A :class:`System` holds a compiled base model, its MJCF text and assets, the control timestep,
per-episode randomization of physical parameters (:meth:`System.sample_params`) and randomized
initial states that cover the state space (:meth:`System.initial_state`).

Names: ``pendulum``, ``cartpole``, ``acrobot``, ``cheetah`` and ``swimmerN`` (``N >= 3`` links);
any path to an MJCF ``.xml`` file (or MJCF text) works too.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from gndesign.datasets.params import apply_params, model_params, param_shapes
from gndesign.errors import GndesignError, ModelError
from gndesign.io import sha256_bytes
from gndesign.tree import mujoco_reason, reject_directory

log = logging.getLogger(__name__)

# Relative (multiplicative) ranges of the per-episode physical parameters. Body inertia follows
# the mass factor of its body, so it has no range of its own.
DEFAULT_RANDOMIZATION: dict[str, tuple[float, float]] = {
    "body_mass": (0.8, 1.25),
    "dof_damping": (0.8, 1.25),
    "actuator_gear": (0.8, 1.25),
}

_DESCRIPTIONS = {
    "pendulum": "dm_control pendulum: one actuated hinge (nq=nv=nu=1), 0.02 s control step",
    "cartpole": "dm_control cartpole: cart on a rail + unactuated pole (nq=nv=2, nu=1), 0.01 s",
    "acrobot": "dm_control acrobot: two-link, elbow actuated (nq=nv=2, nu=1), 0.01 s",
    "swimmerN": "dm_control swimmer with N >= 3 links, e.g. swimmer6 (nq=nv=N+2, nu=N-1), 0.03 s",
    "cheetah": "dm_control half-cheetah: planar runner with contacts (nq=nv=9, nu=6), 0.01 s",
}
SYSTEM_NAMES: tuple[str, ...] = tuple(_DESCRIPTIONS)
MJCF_NOTE = "or a path to an MJCF .xml file"


class UnknownSystemError(GndesignError):
    """A system name that is neither registered nor an MJCF file."""


def list_systems() -> list[str]:
    """Registered system names (``swimmerN`` stands for swimmer3, swimmer4, ...); any MJCF file
    path is accepted by :func:`get_system` as well."""
    return list(SYSTEM_NAMES)


def describe_systems() -> list[tuple[str, str]]:
    """``(name, description)`` of every registered system, then the MJCF file entry."""
    return [*_DESCRIPTIONS.items(), ("PATH.xml", "any MuJoCo MJCF file (control step = timestep)")]


# ----------------------------------------------------------------------------------------------
# Initial states
# ----------------------------------------------------------------------------------------------

InitHook = Callable[
    ["System", mujoco.MjModel, np.random.Generator, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]
]


@dataclass(frozen=True)
class InitConfig:
    """How :meth:`System.initial_state` samples a state.

    Positions: limited hinges and slides uniform in their range; unlimited hinges uniform in
    ``[-pi, pi]`` (when ``unlimited_hinges``); unlimited slides ``qpos0 + N(0, slide_pos_sigma)``;
    balls a random unit quaternion (a rotation up to the range when limited); free joints keep
    their position with a random orientation. Then ``settle_steps`` physics steps with zero
    control (so a legged body rests on the floor instead of inside it), then velocity noise
    ``N(0, rot_vel_sigma)`` on rotational and ``N(0, lin_vel_sigma)`` on translational dofs.
    ``hook`` may post-process ``(qpos, qvel)``.
    """

    rot_vel_sigma: float = 0.5
    lin_vel_sigma: float = 0.1
    slide_pos_sigma: float = 0.1
    unlimited_hinges: bool = True
    unlimited_slides: bool = True
    settle_steps: int = 0
    hook: InitHook | None = None


def _random_quaternion(rng: np.random.Generator, max_angle: float | None = None) -> np.ndarray:
    if max_angle is None:
        q = rng.standard_normal(4)
        return q / np.linalg.norm(q)
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = rng.uniform(0.0, max_angle)
    return np.concatenate([[math.cos(angle / 2)], math.sin(angle / 2) * axis])


# ----------------------------------------------------------------------------------------------
# System
# ----------------------------------------------------------------------------------------------


@dataclass
class System:
    """A MuJoCo system with per-episode randomized parameters and initial states.

    ``randomization`` maps ``body_mass``, ``dof_damping``, ``actuator_gear`` to relative
    ``(low, high)`` ranges of a uniform factor; ``randomize=False`` gives nominal parameters.
    """

    name: str
    mjcf: str
    assets: dict[str, bytes]
    model: mujoco.MjModel
    control_timestep: float
    n_substeps: int
    randomization: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_RANDOMIZATION))
    randomize: bool = True
    init: InitConfig = field(default_factory=InitConfig)
    source: str = ""  # what get_system() was given (rebuilds the system in worker processes)
    _workspace: tuple[mujoco.MjModel, mujoco.MjData] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ranges = {**DEFAULT_RANDOMIZATION, **(self.randomization or {})}
        unknown = sorted(set(ranges) - set(DEFAULT_RANDOMIZATION))
        if unknown:
            raise GndesignError(f"unknown randomization keys {unknown}: use {sorted(DEFAULT_RANDOMIZATION)}")
        clean = {}
        for key, value in ranges.items():
            lo, hi = (float(v) for v in value)
            if not (0 < lo <= hi and math.isfinite(hi)):
                raise GndesignError(f"randomization range for {key} must be 0 < low <= high, got {value}")
            clean[key] = (lo, hi)
        self.randomization = clean
        if not self.source:
            self.source = self.name

    # -- description ----------------------------------------------------------------------
    def mjcf_sha256(self) -> str:
        return sha256_bytes(self.mjcf.encode("utf-8"))

    # The base model's sizes (every episode's model has the same).
    nq = property(lambda self: self.model.nq, doc="Number of position coordinates.")
    nv = property(lambda self: self.model.nv, doc="Number of degrees of freedom.")
    nu = property(lambda self: self.model.nu, doc="Number of actuators.")
    nbody = property(lambda self: self.model.nbody, doc="Number of bodies, the world included.")

    @property
    def timestep(self) -> float:
        return float(self.model.opt.timestep)

    def ctrlrange(self) -> np.ndarray:
        """``[nu, 2]`` control bounds; unlimited actuators get ``[-1, 1]``."""
        rng = np.array(self.model.actuator_ctrlrange, dtype=np.float64).reshape(self.nu, 2)
        limited = np.array(self.model.actuator_ctrllimited, dtype=bool).reshape(self.nu)
        rng[~limited] = (-1.0, 1.0)
        return rng

    # -- physical parameters --------------------------------------------------------------
    def nominal_params(self) -> dict[str, np.ndarray]:
        """The base model's ``body_mass [nbody]``, ``body_inertia [nbody, 3]``,
        ``dof_damping [nv]``, ``actuator_gear [nu, 6]`` (float64)."""
        return model_params(self.model)

    def sample_params(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Per-episode parameters: each body's mass and inertia scaled by one factor, each dof's
        damping and each actuator's gear (all 6 entries) by another, uniform in the ranges."""
        params = self.nominal_params()
        if not self.randomize:
            return params
        r = self.randomization
        mass_f = rng.uniform(*r["body_mass"], size=self.nbody)
        damp_f = rng.uniform(*r["dof_damping"], size=self.nv)
        gear_f = rng.uniform(*r["actuator_gear"], size=self.nu)
        params["body_mass"] *= mass_f
        params["body_inertia"] *= mass_f[:, None]
        params["dof_damping"] *= damp_f
        params["actuator_gear"] *= gear_f[:, None]
        return params

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return param_shapes(self.nbody, self.nv, self.nu)

    def make_model(self, params: Mapping[str, Any] | None = None) -> mujoco.MjModel:
        """A copy of the base model with ``params`` (keys :data:`gndesign.datasets.params.PARAM_KEYS`) written in."""
        if params is None:
            params = self.nominal_params()
        return apply_params(self.model, params)

    def workspace(self, params: Mapping[str, Any]) -> tuple[mujoco.MjModel, mujoco.MjData]:
        """A model with ``params`` written in and an ``MjData`` for it, both reused from call to
        call (so only valid until the next call): the fast path of :meth:`make_model` for
        generating many episodes in one process. Every parameter and every constant derived from
        them is rewritten, so the result does not depend on earlier calls."""
        if self._workspace is None:
            model = copy.deepcopy(self.model)
            self._workspace = (model, mujoco.MjData(model))
        model, data = self._workspace
        apply_params(model, params, inplace=True, data=data)
        return model, data

    # -- initial states -------------------------------------------------------------------
    def initial_state(self, model: mujoco.MjModel, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A random state ``(qpos [nq], qvel [nv])`` for ``model`` (see :class:`InitConfig`)."""
        cfg = self.init
        qpos = np.array(model.qpos0, dtype=np.float64)
        qvel = np.zeros(model.nv)
        rot_dof = np.zeros(model.nv, dtype=bool)
        for j in range(model.njnt):
            jtype = model.jnt_type[j]
            a, d = model.jnt_qposadr[j], model.jnt_dofadr[j]
            limited = bool(model.jnt_limited[j])
            lo, hi = model.jnt_range[j]
            if jtype == mujoco.mjtJoint.mjJNT_HINGE:
                rot_dof[d] = True
                if limited:
                    qpos[a] = rng.uniform(lo, hi)
                elif cfg.unlimited_hinges:
                    qpos[a] = rng.uniform(-np.pi, np.pi)
            elif jtype == mujoco.mjtJoint.mjJNT_SLIDE:
                if limited:
                    qpos[a] = rng.uniform(lo, hi)
                elif cfg.unlimited_slides:
                    qpos[a] += cfg.slide_pos_sigma * rng.standard_normal()
            elif jtype == mujoco.mjtJoint.mjJNT_BALL:
                rot_dof[d : d + 3] = True
                qpos[a : a + 4] = _random_quaternion(rng, hi if limited else None)
            elif jtype == mujoco.mjtJoint.mjJNT_FREE:
                rot_dof[d + 3 : d + 6] = True
                qpos[a + 3 : a + 7] = _random_quaternion(rng)
        if cfg.settle_steps > 0:
            data = mujoco.MjData(model)
            data.qpos[:] = qpos
            mujoco.mj_step(model, data, nstep=cfg.settle_steps)
            qpos, qvel = data.qpos.copy(), data.qvel.copy()
            if not (np.all(np.isfinite(qpos)) and np.all(np.isfinite(qvel))):
                raise ModelError(f"{self.name}: the state diverged while settling the initial pose")
        sigma = np.where(rot_dof, cfg.rot_vel_sigma, cfg.lin_vel_sigma)
        qvel = qvel + sigma * rng.standard_normal(model.nv)
        if cfg.hook is not None:
            qpos, qvel = cfg.hook(self, model, rng, qpos, qvel)
        return qpos, qvel


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

# name -> (control timestep, init config); dm_control's control timesteps.
_SUITE: dict[str, tuple[float, InitConfig]] = {
    "pendulum": (0.02, InitConfig(rot_vel_sigma=1.0)),
    # Pole anywhere on the circle, cart anywhere on the rail (the slider is limited).
    "cartpole": (0.01, InitConfig(rot_vel_sigma=1.0, lin_vel_sigma=0.5)),
    "acrobot": (0.01, InitConfig(rot_vel_sigma=1.0)),
    # dm_control's cheetah: leg joints uniform in their limits, the root pose left at rest, then
    # 200 physics steps with zero control to settle on the floor.
    "cheetah": (
        0.01,
        InitConfig(
            rot_vel_sigma=0.5, lin_vel_sigma=0.2, unlimited_hinges=False, unlimited_slides=False, settle_steps=200
        ),
    ),
    # Heading anywhere, joints within their limits, root a little off the origin; swimmers are
    # slow, hence the small linear velocities.
    "swimmer": (0.03, InitConfig(rot_vel_sigma=0.5, lin_vel_sigma=0.05, slide_pos_sigma=0.1)),
}

_SWIMMER = re.compile(r"swimmer(.*)", re.IGNORECASE)
#: The most links a swimmer can have: each link is a body nested in the previous one, and MuJoCo's
#: XML reader (TinyXML2) refuses documents nested deeper than 500 elements; dm_control's swimmer
#: puts its first link 4 levels deep, so swimmer496 is the longest that compiles.
MAX_SWIMMER_LINKS = 496


def _unknown(name: str) -> UnknownSystemError:
    return UnknownSystemError(
        f"unknown system {name!r}: choose one of {', '.join(SYSTEM_NAMES)} "
        f"(swimmerN with N >= 3, e.g. swimmer6) {MJCF_NOTE}"
    )


def _suite_source(domain: str, arg: int | None) -> tuple[str, dict[str, bytes]]:
    from dm_control import suite

    module = getattr(suite, domain)
    xml, assets = module.get_model_and_assets() if arg is None else module.get_model_and_assets(arg)
    text = xml.decode("utf-8") if isinstance(xml, bytes) else str(xml)
    return text, {str(k): bytes(v) for k, v in assets.items()}


def _compile(text: str, assets: Mapping[str, bytes], where: str) -> mujoco.MjModel:
    try:
        return mujoco.MjModel.from_xml_string(text, dict(assets))
    except (ValueError, mujoco.FatalError) as e:
        raise ModelError(f"cannot load MJCF {where}: {mujoco_reason(e)}") from None


def _substeps(control_timestep: float, timestep: float, name: str) -> int:
    n = int(round(control_timestep / timestep))
    if n < 1 or abs(n * timestep - control_timestep) > 1e-9:
        raise ModelError(
            f"{name}: control timestep {control_timestep} is not a multiple of the model timestep {timestep}"
        )
    return n


def _gather_assets(path: Path) -> dict[str, bytes]:
    """Files an MJCF file includes or references, keyed as MuJoCo looks them up, so the model
    can be rebuilt from its text alone (in a dataset). Best effort: unreadable files are skipped
    and the caller checks that the text compiles with what was found."""
    base = path.parent
    assets: dict[str, bytes] = {}

    def visit(file: Path, dirs: dict[str, str]) -> None:
        try:
            root = ET.parse(file).getroot()
        except (OSError, ET.ParseError):
            return
        for comp in root.iter("compiler"):
            asset_dir = comp.get("assetdir")
            if asset_dir is not None:
                dirs.update(mesh=asset_dir, texture=asset_dir)
            if comp.get("meshdir") is not None:
                dirs["mesh"] = comp.get("meshdir", "")
            if comp.get("texturedir") is not None:
                dirs["texture"] = comp.get("texturedir", "")
        for elem in root.iter():
            for attr, value in elem.attrib.items():
                if not attr.startswith("file") or not value:
                    continue
                if elem.tag == "include":
                    key = value
                elif elem.tag in ("texture", "skin") and attr.startswith("file"):
                    key = str(Path(dirs.get("texture", "")) / value)
                else:
                    key = str(Path(dirs.get("mesh", "")) / value)
                target = Path(key) if Path(key).is_absolute() else base / key
                if key in assets or not target.is_file():
                    continue
                assets[key] = target.read_bytes()
                if elem.tag == "include":
                    visit(target, dirs)

    visit(path, {})
    return assets


def _from_file(path: Path) -> System:
    reject_directory(path)
    if not path.is_file():
        raise UnknownSystemError(
            f"MJCF file {path} does not exist: give an existing .xml file or one of {', '.join(SYSTEM_NAMES)}"
        )
    try:
        model = mujoco.MjModel.from_xml_path(str(path))
    except (ValueError, mujoco.FatalError) as e:
        raise ModelError(f"cannot load MJCF {path}: {mujoco_reason(e)}") from None
    text = path.read_text(encoding="utf-8", errors="replace")
    assets = _gather_assets(path)
    try:
        mujoco.MjModel.from_xml_string(text, assets)
    except (ValueError, mujoco.FatalError) as e:
        log.warning(
            "MJCF %s does not compile from its text and gathered assets (%s); datasets "
            "of it will not be self-contained",
            path,
            mujoco_reason(e),
        )
    dt = float(model.opt.timestep)
    return System(path.stem, text, assets, model, dt, 1, source=str(path))


def get_system(
    name_or_path: str | Path,
    randomization: Mapping[str, tuple[float, float]] | None = None,
    randomize: bool = True,
    init: InitConfig | None = None,
) -> System:
    """The system called ``name_or_path`` (see :func:`list_systems`), an MJCF file path, or
    MJCF text (starting with ``<``).

    ``randomization`` overrides :data:`DEFAULT_RANDOMIZATION` entries; ``randomize=False``
    samples nominal parameters; ``init`` replaces the system's initial-state configuration.
    """
    source = str(name_or_path)
    text = source.strip()
    if text.startswith("<"):
        model = _compile(text, {}, "text")
        dt = float(model.opt.timestep)
        system = System("mjcf", text, {}, model, dt, 1, source=source)
    elif (
        isinstance(name_or_path, Path)
        or text.lower().endswith(".xml")
        or os.sep in text
        or "/" in text
        or Path(text).is_file()
    ):
        system = _from_file(Path(text).expanduser())
    else:
        key = text.lower()
        match = _SWIMMER.fullmatch(key)
        if match:
            n_text = match.group(1)
            if not n_text.isdigit() or not 3 <= int(n_text) <= MAX_SWIMMER_LINKS:
                raise UnknownSystemError(
                    f"bad swimmer {text!r}: N in swimmerN must be an integer >= 3 and <= {MAX_SWIMMER_LINKS} "
                    f"(e.g. swimmer6; each link is a body nested in the previous one, and MuJoCo's XML "
                    f"reader nests at most 500 elements)")
            n = int(n_text)
            xml, assets = _suite_source("swimmer", n)
            control_dt, cfg = _SUITE["swimmer"]
            name = f"swimmer{n}"
        elif key in _SUITE and key != "swimmer":
            xml, assets = _suite_source(key, None)
            control_dt, cfg = _SUITE[key]
            name = key
        else:
            reject_directory(Path(text))
            raise _unknown(text)
        model = _compile(xml, assets, name)
        n_sub = _substeps(control_dt, float(model.opt.timestep), name)
        system = System(name, xml, assets, model, control_dt, n_sub, init=cfg, source=name)
    if randomization:
        system.randomization = {**system.randomization, **randomization}
        system.__post_init__()
    system.randomize = bool(randomize)
    if init is not None:
        system.init = init
    return system


__all__ = [
    "DEFAULT_RANDOMIZATION",
    "SYSTEM_NAMES",
    "InitConfig",
    "System",
    "UnknownSystemError",
    "describe_systems",
    "get_system",
    "list_systems",
]
