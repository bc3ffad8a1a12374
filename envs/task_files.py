"""Tasks as data: the YAML task file, read, checked and written back.

A task file names, for any MJCF or registered system, the reward (or cost) as terms of the one
objective library (:mod:`gndesign.specs`) over named quantities of the state, its parameters, the
initial-state distribution, the episode length and control timestep, and optional constraints of
the constraint library; :class:`envs.tasks.Task` turns it into a differentiable reward. Example
(the shipped ``cartpole-swingup``; ``gndesign tasks --show NAME`` prints the others)::

    name: cartpole-swingup
    system: cartpole                # a registered system or an MJCF path (relative to this file)
    dm_control: [cartpole, swingup] # optional: the suite task that judges it (else true MuJoCo)
    episode_steps: 1000
    planning: {horizon: 120, replan_every: 1}
    quantities:                     # name -> one of the quantity kinds below
      pole_cos: {xmat: [pole_1], entry: zz}
      cart_position: {qpos: [slider]}
      control: {ctrl: [slide]}
      angular_vel: {qvel: [hinge_1]}
    reward: {kind: product, terms: [{kind: affine, quantity: pole_cos, offset: 0.5, scale: 0.5}, ...]}
    initial_state: {qpos: {slider: {normal: [0, 0.01]}, hinge_1: {normal: [3.14159, 0.01]}}}

Quantity kinds (``axes``: a subset of ``x, y, z``; ``frame``: a body whose axes express a vector):
``qpos: [joints]``, ``qvel: [joints]`` (joint coordinates and velocities), ``ctrl: [actuators]``
(or ``all``), ``xpos: [bodies]`` (origins ``[B, n, 3]``), ``xmat: [bodies]`` with ``entry: zz``
(orientation entries), ``point: POINT`` (a position), ``vector: {from: POINT, to: POINT}`` and
``distance: {from: POINT, to: POINT}``. A ``POINT`` is ``{body: NAME}``, ``{site: NAME}``,
``{geom: NAME}``, a list of 3 numbers, or the name of a parameter.

``parameters: {NAME: {value: [...], range: [[lo, hi] | null, ...]}}``: a vector the quantities
may use (e.g. a target); ``value`` may read the model (``{geom_pos: NAME}``, ``{site_pos: NAME}``,
``{body_pos: NAME}``), and then a judging environment's model supplies it at every reset; ``range``
draws elements uniformly per episode (``null``: keep the value).

``initial_state: {qpos: {JOINT: DIST}, qvel: {JOINT: DIST}}`` (joint names may be glob patterns):
``DIST`` is a number, ``{uniform: [lo, hi]}``, ``{uniform: range}`` (the joint's limits) or
``{normal: [mean, std]}``; coordinates not named start at ``qpos0`` and zero velocity. Without
``initial_state``, episodes start as data generation does (:meth:`envs.systems.System.initial_state`).

``policy: {observe: [QUANTITY, ...], ignore: [JOINT, ...]}``: what a policy learned for the task
(``gndesign policy train``) sees beyond the state: the named quantities (e.g. the target in the
head's frame, which carries per-episode parameters), and joints whose coordinates it does not see
(e.g. a free swimmer's ``rootx, rooty``, so that it does not depend on where it is). A task with
parameters drawn per episode needs ``policy.observe`` for a policy.

``constraints: [{constraint: "wall axis=x upper=1.2 nodes=cart quantity=xpos", mode: penalty}]``:
``penalty`` subtracts the constraint's penalty from the reward; ``hard`` adds it to the planning
cost with weight :data:`HARD_WEIGHT` (the reward, and so the return, stays the task's).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gndesign.errors import ConfigError
from gndesign.io import atomic_write_text, read_yaml_mapping
from gndesign.specs import from_spec, parse_constraint

TASK_DATA = Path(__file__).resolve().parent / "task_data"
#: The weight of a ``hard`` constraint in the planning cost.
HARD_WEIGHT = 1000.0
QUANTITY_KINDS = ("qpos", "qvel", "ctrl", "xpos", "xmat", "point", "vector", "distance")
POINT_KINDS = ("body", "site", "geom")
MODEL_FIELDS = {"geom_pos": "geom", "site_pos": "site", "body_pos": "body"}
AXES = {"x": 0, "y": 1, "z": 2}
KEYS = ("name", "description", "system", "dm_control", "episode_steps", "control_timestep", "planning",
        "quantities", "reward", "cost", "parameters", "initial_state", "constraints", "policy")


class TaskFileError(ConfigError):
    """A task file that cannot be used: the message names the file and the field."""


@dataclass
class TaskSpec:
    """A task file's content, checked for form (names are checked against the system when a
    :class:`envs.tasks.Task` is built). ``objective`` holds the reward or cost spec, ``sign``
    ``+1`` for a reward and ``-1`` for a cost."""

    name: str
    system: str
    quantities: dict[str, dict]
    objective: dict
    sign: int = 1
    description: str = ""
    dm_control: list[str] | None = None
    episode_steps: int = 1000
    control_timestep: float | None = None
    planning: dict = field(default_factory=dict)
    parameters: dict[str, dict] = field(default_factory=dict)
    initial_state: dict | None = None
    constraints: list[dict] = field(default_factory=list)
    policy: dict = field(default_factory=dict)
    path: str = ""  # where it was read from (names it in errors; resolves a relative MJCF path)

    def fail(self, where: str, message: str) -> TaskFileError:
        return TaskFileError(f"task file {self.path or self.name}: {where}: {message}")

    def to_dict(self) -> dict:
        """The task file's mapping (what :func:`save_task_file` writes)."""
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out["system"] = self.system
        if self.dm_control:
            out["dm_control"] = list(self.dm_control)
        out["episode_steps"] = self.episode_steps
        if self.control_timestep is not None:
            out["control_timestep"] = self.control_timestep
        if self.planning:
            out["planning"] = self.planning
        out["quantities"] = self.quantities
        out["reward" if self.sign > 0 else "cost"] = self.objective
        for key in ("parameters", "initial_state", "constraints", "policy"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out

    def resolved_system(self) -> str:
        """The system name, or the MJCF path resolved against the task file's folder."""
        s = self.system
        if self.path and (s.lower().endswith(".xml") or "/" in s) and not os.path.isabs(s):
            return str(Path(self.path).resolve().parent / s)
        return s


def _need(cond: bool, spec: TaskSpec, where: str, message: str) -> None:
    if not cond:
        raise spec.fail(where, message)


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _names(value: Any, spec: TaskSpec, where: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    _need(isinstance(items, list) and items and all(isinstance(n, str) for n in items), spec, where,
          f"expected a name or a list of names, got {value!r}")
    return list(items)


def _check_axes(q: Mapping, spec: TaskSpec, where: str) -> None:
    if "axes" in q:
        axes = q["axes"]
        _need(isinstance(axes, list) and axes and all(a in AXES for a in axes), spec, f"{where}.axes",
              f"expected a list of x, y, z, got {axes!r}")


def _check_point(p: Any, spec: TaskSpec, where: str) -> None:
    if isinstance(p, str):
        _need(p in spec.parameters, spec, where, f"{p!r} is not a parameter (parameters: "
              f"{', '.join(spec.parameters) or 'none'}); a point is {{body|site|geom: NAME}}, 3 numbers or a parameter")
    elif isinstance(p, list):
        _need(len(p) == 3 and all(_finite(x) for x in p), spec, where, f"a point needs 3 finite numbers, got {p!r}")
    else:
        _need(isinstance(p, Mapping) and len(p) == 1 and next(iter(p)) in POINT_KINDS
              and isinstance(next(iter(p.values())), str), spec, where,
              f"a point is {{body|site|geom: NAME}}, 3 numbers or a parameter name, got {p!r}")


def _check_quantity(name: str, q: Any, spec: TaskSpec) -> None:
    where = f"quantities.{name}"
    _need(isinstance(q, Mapping), spec, where, f"expected a mapping like {{qpos: [JOINT]}}, got {q!r}")
    kinds = [k for k in q if k in QUANTITY_KINDS]
    _need(len(kinds) == 1, spec, where, f"name exactly one quantity kind ({', '.join(QUANTITY_KINDS)}), got "
          f"{sorted(q)}")
    kind = kinds[0]
    allowed = {kind, "axes", "frame", "entry"}
    extra = sorted(set(q) - allowed)
    _need(not extra, spec, where, f"unknown key {extra[0]!r} (a {kind} quantity takes {', '.join(sorted(allowed))})"
          if extra else "")
    if kind in ("qpos", "qvel", "xpos", "xmat"):
        _names(q[kind], spec, f"{where}.{kind}")
    if kind == "ctrl" and q[kind] != "all":
        _names(q[kind], spec, f"{where}.ctrl")
    if kind == "xmat":
        e = q.get("entry")
        _need(isinstance(e, str) and len(e) == 2 and set(e) <= set(AXES), spec, f"{where}.entry",
              f"expected two of x, y, z (row, column), e.g. zz, got {e!r}")
    if kind == "point":
        _check_point(q[kind], spec, f"{where}.point")
    if kind in ("vector", "distance"):
        v = q[kind]
        _need(isinstance(v, Mapping) and set(v) == {"from", "to"}, spec, f"{where}.{kind}",
              f"expected {{from: POINT, to: POINT}}, got {v!r}")
        _check_point(v["from"], spec, f"{where}.{kind}.from")
        _check_point(v["to"], spec, f"{where}.{kind}.to")
    if "frame" in q:
        _need(isinstance(q["frame"], str), spec, f"{where}.frame", f"expected a body name, got {q['frame']!r}")
    _check_axes(q, spec, where)


def _check_parameter(name: str, p: Any, spec: TaskSpec) -> None:
    where = f"parameters.{name}"
    _need(isinstance(p, Mapping) and "value" in p and set(p) <= {"value", "range"}, spec, where,
          f"expected {{value: ..., range: ...}}, got {p!r}")
    value = p["value"]
    if isinstance(value, Mapping):
        _need(len(value) == 1 and next(iter(value)) in MODEL_FIELDS and isinstance(next(iter(value.values())), str),
              spec, f"{where}.value", f"a value read from the model is {{geom_pos|site_pos|body_pos: NAME}}, "
              f"got {value!r}")
        size = 3
    else:
        vals = value if isinstance(value, list) else [value]
        _need(vals and all(_finite(x) for x in vals), spec, f"{where}.value",
              f"expected finite numbers, got {value!r}")
        size = len(vals)
    if "range" in p:
        rng = p["range"]
        _need(isinstance(rng, list) and len(rng) == size, spec, f"{where}.range",
              f"expected {size} entries [low, high] (or null), got {rng!r}")
        for i, r in enumerate(rng):
            if r is None:
                continue
            _need(isinstance(r, list) and len(r) == 2 and all(_finite(x) for x in r), spec, f"{where}.range[{i}]",
                  f"expected finite [low, high], got {r!r}")
            _need(r[0] <= r[1], spec, f"{where}.range[{i}]", f"empty range {r!r}: low must not exceed high")


def _check_dist(d: Any, spec: TaskSpec, where: str) -> None:
    if _finite(d):
        return
    ok = isinstance(d, Mapping) and len(d) == 1 and next(iter(d)) in ("uniform", "normal")
    _need(ok, spec, where, f"expected a number, {{uniform: [lo, hi]}}, {{uniform: range}} or {{normal: [mean, std]}},"
          f" got {d!r}")
    kind, arg = next(iter(d.items()))
    if kind == "uniform" and arg == "range":
        return
    _need(isinstance(arg, list) and len(arg) == 2 and all(_finite(x) for x in arg), spec, f"{where}.{kind}",
          f"expected two finite numbers, got {arg!r}")
    _need(arg[0] <= arg[1] if kind == "uniform" else arg[1] >= 0, spec, f"{where}.{kind}",
          "empty range: low must not exceed high" if kind == "uniform" else "std must be >= 0")


def _check_policy(spec: TaskSpec) -> None:
    p = spec.policy
    _need(isinstance(p, Mapping) and set(p) <= {"observe", "ignore"}, spec, "policy",
          f"expected {{observe: [QUANTITY, ...], ignore: [JOINT, ...]}}, got {p!r}")
    for name in _names(p["observe"], spec, "policy.observe") if "observe" in p else []:
        _need(name in spec.quantities, spec, "policy.observe", f"{name!r} is not a quantity (quantities: "
              f"{', '.join(spec.quantities)})")
        _need("ctrl" not in spec.quantities[name], spec, "policy.observe",
              f"{name!r} is a control: a policy observes the state, not its own action")
    if "ignore" in p:
        _names(p["ignore"], spec, "policy.ignore")


def task_from_dict(raw: Any, path: str | os.PathLike = "") -> TaskSpec:
    """Check a task file's mapping for form; ``path`` names the file in errors."""
    label = str(path) or "<mapping>"
    if not isinstance(raw, Mapping):
        raise TaskFileError(f"task file {label}: must hold a mapping of keys to values")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise TaskFileError(f"task file {label}: {unknown[0]}: unknown key (a task file has {', '.join(KEYS)})")
    for key in ("name", "system", "quantities"):
        if key not in raw:
            raise TaskFileError(f"task file {label}: {key}: missing (a task file needs name, system, quantities and "
                                "a reward or a cost)")
    if ("reward" in raw) == ("cost" in raw):
        raise TaskFileError(f"task file {label}: reward: give exactly one of reward and cost")
    sign = 1 if "reward" in raw else -1
    spec = TaskSpec(name=str(raw["name"]), system=str(raw["system"]), quantities=dict(raw["quantities"] or {}),
                    objective=raw["reward"] if sign > 0 else raw["cost"], sign=sign,
                    description=str(raw.get("description", "")), dm_control=raw.get("dm_control"),
                    episode_steps=raw.get("episode_steps", 1000), control_timestep=raw.get("control_timestep"),
                    planning=dict(raw.get("planning") or {}), parameters=dict(raw.get("parameters") or {}),
                    initial_state=raw.get("initial_state"), constraints=list(raw.get("constraints") or []),
                    policy=raw.get("policy") or {}, path=str(path))
    _need(isinstance(spec.episode_steps, int) and spec.episode_steps > 0, spec, "episode_steps",
          f"expected a positive integer, got {spec.episode_steps!r}")
    ct = spec.control_timestep
    _need(ct is None or (_finite(ct) and ct > 0), spec, "control_timestep", f"expected a positive number, got {ct!r}")
    _need(spec.dm_control is None or (isinstance(spec.dm_control, list) and len(spec.dm_control) == 2), spec,
          "dm_control", f"expected [domain, task], got {spec.dm_control!r}")
    for key, value in spec.planning.items():
        _need(key in ("horizon", "replan_every", "planners"), spec, f"planning.{key}",
              "unknown key (planning has horizon, replan_every, planners)")
        if key != "planners":
            _need(isinstance(value, int) and value > 0, spec, f"planning.{key}",
                  f"expected a positive integer, got {value!r}")
    _need(bool(spec.quantities), spec, "quantities", "name at least one quantity")
    for name, p in spec.parameters.items():
        _check_parameter(name, p, spec)
    for name, q in spec.quantities.items():
        _check_quantity(name, q, spec)
    try:
        from_spec(spec.objective)
    except ConfigError as e:
        raise spec.fail("reward" if sign > 0 else "cost", str(e)) from None
    if spec.initial_state is not None:
        _need(isinstance(spec.initial_state, Mapping) and set(spec.initial_state) <= {"qpos", "qvel"}, spec,
              "initial_state", f"expected {{qpos: {{JOINT: DIST}}, qvel: {{JOINT: DIST}}}}, got {spec.initial_state!r}")
        for part, dists in spec.initial_state.items():
            _need(isinstance(dists, Mapping), spec, f"initial_state.{part}", "expected a mapping JOINT -> DIST")
            for joint, d in dists.items():
                _check_dist(d, spec, f"initial_state.{part}.{joint}")
    _check_policy(spec)
    for i, c in enumerate(spec.constraints):
        where = f"constraints[{i}]"
        _need(isinstance(c, Mapping) and "constraint" in c and set(c) <= {"constraint", "mode"}, spec, where,
              f"expected {{constraint: 'KIND key=value ...', mode: penalty|hard}}, got {c!r}")
        _need(c.get("mode", "penalty") in ("penalty", "hard"), spec, f"{where}.mode",
              f"expected penalty or hard, got {c.get('mode')!r}")
        try:
            parse_constraint(c["constraint"]) if isinstance(c["constraint"], str) else from_spec(c["constraint"])
        except ConfigError as e:
            raise spec.fail(where, str(e)) from None
    return spec


def load_task_file(path: str | os.PathLike) -> TaskSpec:
    """Read and check the task file ``path`` (one-line :class:`TaskFileError` naming the file)."""
    return task_from_dict(read_yaml_mapping(path, "task file", TaskFileError), path)


def task_yaml(spec: TaskSpec) -> str:
    return yaml.safe_dump(spec.to_dict(), sort_keys=False, default_flow_style=None, width=110)


def save_task_file(spec: TaskSpec, path: str | os.PathLike) -> Path:
    """Write ``spec`` as YAML (atomically); :func:`load_task_file` reads it back equal."""
    atomic_write_text(path, task_yaml(spec))
    return Path(path)


def shipped_tasks() -> dict[str, Path]:
    """The shipped task files by name (``swimmerN`` stands for swimmer3, swimmer4, ...)."""
    return {p.stem: p for p in sorted(TASK_DATA.glob("*.yaml"))}


def find_task(name: str) -> TaskSpec | None:
    """The shipped task ``name`` (``swimmer6`` instantiates ``swimmerN`` with ``N = 6``), or None."""
    files = shipped_tasks()
    if name in files:
        return load_task_file(files[name])
    for stem, path in files.items():
        if stem.endswith("N") and name.startswith(stem[:-1]) and name[len(stem) - 1:].isdigit():
            return load_template(path, name[len(stem) - 1:])
    return None


def load_template(path: Path, n: str) -> TaskSpec:
    """A shipped family of tasks (``swimmerN.yaml``) with ``{N}`` replaced by ``n``."""
    return task_from_dict(yaml.safe_load(path.read_text(encoding="utf-8").replace("{N}", n)), path)
