"""Control tasks declared as data, with differentiable rewards equal to dm_control's.

A :class:`Task` binds a task file (:mod:`envs.task_files`) to a system: its reward is written in
the shared objective library (:mod:`gndesign.objectives`) over named quantities computed
differentiably from the state by torch forward kinematics. As in dm_control, the reward of a step
is evaluated on the state the step reaches and the action that was applied:
``r_t = R(qpos_{t+1}, qvel_{t+1}, a_t)``. Task parameters that are not part of the dynamics (the
swimmer's target) live in the task, one row per episode of a lockstep batch.

The shipped tasks (``cartpole-swingup``, ``swimmerN``) are files under ``envs/task_data``.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import mujoco
import numpy as np
import torch

from envs.systems import System, get_system
from envs.task_files import (
    AXES,
    HARD_WEIGHT,
    MODEL_FIELDS,
    TaskSpec,
    find_task,
    load_task_file,
    load_template,
    shipped_tasks,
)
from gndesign.constraint_sets import bind_constraints
from gndesign.constraints import ConstraintContext
from gndesign.errors import GndesignError
from gndesign.kinematics import forward_kinematics
from gndesign.objectives import Objective, Sum
from gndesign.specs import from_spec, parse_constraint
from gndesign.tree import HINGE, SLIDE, KinematicTree

#: Each planner's options, shared by the tasks unless a task file overrides them
#: (``planning: {planners: {cem: {...}}}``; the command line: ``--set planner.KEY=VALUE``). The
#: gradient planner spends a quarter of CEM's and MPPI's model evaluations per decision (8 x 6
#: rollouts against 64 x 3).
PLANNER_OPTIONS = {
    "gradient": {"iterations": 5, "restarts": 8, "lr": 0.3},
    "cem": {"population": 64, "elites": 8, "iterations": 3},
    "mppi": {"samples": 64, "iterations": 3, "temperature": 0.1},
    "random": {"samples": 512},
}
_OBJ = {"body": mujoco.mjtObj.mjOBJ_BODY, "site": mujoco.mjtObj.mjOBJ_SITE, "geom": mujoco.mjtObj.mjOBJ_GEOM,
        "joint": mujoco.mjtObj.mjOBJ_JOINT, "actuator": mujoco.mjtObj.mjOBJ_ACTUATOR}
_QPOS_SIZE = {0: 7, 1: 4, 2: 1, 3: 1}  # free, ball, slide, hinge
_DOF_SIZE = {0: 6, 1: 3, 2: 1, 3: 1}


class Task:
    """A system, a differentiable reward and the environment that judges it (dm_control's task
    when the file names one, else true MuJoCo with the file's reward and initial states).

    Attributes:
        spec: the task file's content; ``name``: its name; ``system``: the system.
        reward_objective: the reward (or minus the cost) as an objective over :meth:`quantities`.
        episode_steps: the episode length in control steps.
        planning_horizon: the MPC horizon in control steps.
        replan_every: MPC replans every this many control steps.
        planner_options: each planner's options, by planner name (copy before changing them).
        params: the parameters, ``{name: [P]}`` or ``[E, P]`` (one row per episode of a batch).

    The planner settings live with the task, as in MuJoCo MPC: a horizon that solves one task
    fails another.
    """

    def __init__(self, spec: TaskSpec, system: System | None = None):
        self.spec = spec
        self.name = spec.name
        self.system = system if system is not None else _system(spec)
        if spec.control_timestep is not None:
            _set_control_timestep(self.system, spec)
        self.tree = KinematicTree.from_model(self.system.model, self.system.name)
        self.model = self.system.model
        self.episode_steps = spec.episode_steps
        self.planning_horizon = spec.planning.get("horizon", 30)
        self.replan_every = spec.planning.get("replan_every", 1)
        over = spec.planning.get("planners") or {}
        self.planner_options = {k: dict(v, **over.get(k, {})) for k, v in PLANNER_OPTIONS.items()}
        self.domain, self.task = spec.dm_control or (None, None)
        self._nominal = {n: self._nominal_value(n, p) for n, p in spec.parameters.items()}
        self.params = {n: v.clone() for n, v in self._nominal.items()}
        self._quantities = {n: self._quantity(n, q) for n, q in spec.quantities.items()}
        objective = from_spec(spec.objective)
        self.reward_objective = objective if spec.sign > 0 else objective * -1.0  # a cost: minus the reward
        self.penalty, self.hard = self._constraints("penalty"), self._constraints("hard")
        self._init = self._initial_state_plan()
        self.policy_observe = list(_as_list(spec.policy.get("observe", [])))
        self.policy_ignore = self._joint_index(_as_list(spec.policy.get("ignore", [])), "policy.ignore", dof=False)

    # ------------------------------------------------------------------- names and parameters
    def fail(self, where: str, message: str) -> GndesignError:
        return self.spec.fail(where, message)

    def _id(self, kind: str, name: str, where: str) -> int:
        i = mujoco.mj_name2id(self.model, _OBJ[kind], name)
        if i < 0:
            n = {"body": self.model.nbody, "site": self.model.nsite, "geom": self.model.ngeom,
                 "joint": self.model.njnt, "actuator": self.model.nu}[kind]
            names = [mujoco.mj_id2name(self.model, _OBJ[kind], j) or "" for j in range(n)]
            raise self.fail(where, f"{kind} {name!r} is not in {self.system.name} ({kind}s: "
                            f"{', '.join(x for x in names if x) or 'none'})")
        return i

    def _nominal_value(self, name: str, p: Mapping) -> torch.Tensor:
        value = p["value"]
        if isinstance(value, Mapping):
            fld, obj = next(iter(value.items()))
            i = self._id(MODEL_FIELDS[fld], obj, f"parameters.{name}.value")
            return torch.as_tensor(np.array(getattr(self.model, fld)[i]), dtype=torch.float64)
        return torch.as_tensor(np.atleast_1d(np.asarray(value, dtype=np.float64)))

    def draw_params(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One episode's parameters: elements with a ``range`` drawn uniformly, the rest nominal."""
        out = {}
        for name, p in self.spec.parameters.items():
            v = self._nominal[name].numpy().copy()
            for i, r in enumerate(p.get("range") or []):
                if r is not None:
                    v[i] = rng.uniform(r[0], r[1])
            out[name] = v
        return out

    def draw_param_rows(self, n: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """``n`` episodes' parameters drawn as :meth:`draw_params` does: ``{name: [n, P]}``."""
        draws = [self.draw_params(rng) for _ in range(n)]
        return {name: torch.as_tensor(np.stack([d[name] for d in draws])) for name in self._nominal}

    def observed_parameters(self) -> np.ndarray:
        """The elements of the current (single-episode) parameters drawn per episode, e.g. the
        swimmer's target x, y: what an observation shows of the task."""
        parts = [self.params[n].reshape(-1)[[i for i, r in enumerate(p.get("range") or []) if r is not None]]
                 for n, p in self.spec.parameters.items()]
        return torch.cat(parts).numpy() if parts else np.zeros(0)

    def set_params(self, params: Mapping[str, object]) -> None:
        """Set parameters: ``[P]``, or ``[E, P]`` (one row per episode of a lockstep batch)."""
        for name, value in params.items():
            if name not in self._nominal:
                raise GndesignError(f"task {self.name} has no parameter {name!r} (it has "
                                    f"{', '.join(self._nominal) or 'none'})")
            v = torch.as_tensor(np.asarray(value, dtype=np.float64))
            P = self._nominal[name].shape[0]
            if v.shape[-1:] != (P,) or v.dim() > 2:
                raise ValueError(f"task parameter {name} is [{P}] or [episodes, {P}], got {list(v.shape)}")
            self.params[name] = v

    def __getattr__(self, name: str):  # a task's parameters read as attributes: task.target
        params = self.__dict__.get("params", {})
        if name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def set_target(self, xyz) -> None:
        """The ``target`` parameter ``[3]``, or ``[E, 3]``: one per episode of a lockstep batch."""
        self.set_params({"target": xyz})

    # ------------------------------------------------------------------- quantities
    def _rows(self, value: torch.Tensor, like: torch.Tensor, name: str) -> torch.Tensor:
        """``value`` for each of ``like``'s rows: ``[P]``, or ``[B, P]`` for a batch of episodes."""
        value = value.to(like)
        if value.dim() == 1:
            return value
        B, E = like.shape[0], value.shape[0]
        if B % E:
            raise ValueError(f"{B} rows cannot be split among the {E} episodes' targets (task parameter {name})")
        return value.repeat_interleave(B // E, 0)

    def _point(self, p, where: str) -> Callable:
        if isinstance(p, str):
            return lambda kin, params, like: self._rows(params[p], like, p)
        if isinstance(p, list):
            const = torch.tensor(p, dtype=torch.float64)
            return lambda kin, params, like: const.to(like)
        kind, name = next(iter(p.items()))
        i = self._id(kind, name, where)
        if kind == "body":
            return lambda kin, params, like: kin.xpos[:, i]
        body = int(getattr(self.model, f"{kind}_bodyid")[i])
        local = torch.as_tensor(np.array(getattr(self.model, f"{kind}_pos")[i]), dtype=torch.float64)
        return lambda kin, params, like: kin.xpos[:, body] + (kin.xmat[:, body] @ local.to(like)[:, None])[..., 0]

    def _joint_index(self, names: list[str], where: str, dof: bool) -> list[int]:
        idx = []
        for n in names:
            j = self._id("joint", n, where)
            t = int(self.model.jnt_type[j])
            start = int(self.model.jnt_dofadr[j] if dof else self.model.jnt_qposadr[j])
            idx += list(range(start, start + (_DOF_SIZE if dof else _QPOS_SIZE)[t]))
        return idx

    def _quantity(self, name: str, q: Mapping) -> Callable:
        """A function ``(qpos, qvel, action, kin, params) -> tensor [B, ...]`` for one quantity."""
        where = f"quantities.{name}"
        kind = next(k for k in q if k not in ("axes", "frame", "entry"))
        arg = q[kind]
        axes = [AXES[a] for a in q.get("axes", ["x", "y", "z"])]
        if kind in ("qpos", "qvel"):
            idx = self._joint_index([arg] if isinstance(arg, str) else arg, f"{where}.{kind}", kind == "qvel")
            if kind == "qpos":
                return lambda qp, qv, a, kin, prm: qp[:, idx]
            return lambda qp, qv, a, kin, prm: qv[:, idx]
        if kind == "ctrl":
            idx = list(range(self.model.nu)) if arg == "all" else \
                [self._id("actuator", n, f"{where}.ctrl") for n in ([arg] if isinstance(arg, str) else arg)]
            return lambda qp, qv, a, kin, prm: a[:, idx]
        if kind in ("xpos", "xmat"):
            ids = [self._id("body", n, f"{where}.{kind}") for n in ([arg] if isinstance(arg, str) else arg)]
            if kind == "xpos":
                return lambda qp, qv, a, kin, prm: kin.xpos[:, ids][..., axes]
            r, c = AXES[q["entry"][0]], AXES[q["entry"][1]]
            return lambda qp, qv, a, kin, prm: kin.xmat[:, ids, r, c]
        frame = self._id("body", q["frame"], f"{where}.frame") if "frame" in q else None
        if kind == "point":
            pt = self._point(arg, f"{where}.point")
            vec = lambda qp, qv, a, kin, prm: pt(kin, prm, qp).expand(qp.shape[0], 3)  # noqa: E731
        else:
            src, dst = self._point(arg["from"], f"{where}.{kind}.from"), self._point(arg["to"], f"{where}.{kind}.to")
            vec = lambda qp, qv, a, kin, prm: dst(kin, prm, qp) - src(kin, prm, qp)  # noqa: E731

        def value(qp, qv, a, kin, prm):
            d = vec(qp, qv, a, kin, prm)
            if frame is not None:  # the vector in the frame body's axes (dm_control: d.dot(xmat))
                d = (d[:, None, :] @ kin.xmat[:, frame])[:, 0]
            d = d[:, axes]
            return torch.sqrt((d * d).sum(-1) + 1e-12) if kind == "distance" else d

        return value

    def quantities(self, qpos: torch.Tensor, qvel: torch.Tensor, action: torch.Tensor,
                   params: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The reward's named quantities, plus the state under the names test-time constraints use
        (:mod:`gndesign.constraints`): ``qpos [B, nq]``, ``qvel [B, nv]`` and ``positions`` (also
        ``xpos``) ``[B, nbody, 3]``, the body origins in the world frame. ``params``: the task
        parameters to use (default: :attr:`params`)."""
        kin = forward_kinematics(self.tree, qpos)
        prm = self.params if params is None else {k: torch.as_tensor(v) for k, v in params.items()}
        out = {n: f(qpos, qvel, action, kin, prm) for n, f in self._quantities.items()}
        return {**out, **self.state_quantities(qpos, qvel, kin)}

    def observation(self, qpos: torch.Tensor, qvel: torch.Tensor,
                    params: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``[B, C]``: the quantities a policy observes beyond the state (the task file's
        ``policy.observe``, flattened in order; ``C = 0`` without them). ``params`` as in :meth:`quantities`."""
        if not self.policy_observe:
            return qpos.new_zeros(qpos.shape[0], 0)
        kin = forward_kinematics(self.tree, qpos)
        prm = self.params if params is None else {k: torch.as_tensor(v) for k, v in params.items()}
        none = qpos.new_zeros(qpos.shape[0], self.tree.nu)
        parts = [self._quantities[n](qpos, qvel, none, kin, prm) for n in self.policy_observe]
        return torch.cat([p.reshape(qpos.shape[0], -1) for p in parts], -1)

    def state_quantities(self, qpos: torch.Tensor, qvel: torch.Tensor, kin=None) -> dict[str, torch.Tensor]:
        """``qpos``, ``qvel``, ``positions`` and ``xpos`` (see :meth:`quantities`); ``kin``: the
        forward kinematics of ``qpos`` if already computed."""
        xpos = (kin if kin is not None else forward_kinematics(self.tree, qpos)).xpos
        return {"qpos": qpos, "qvel": qvel, "positions": xpos, "xpos": xpos}

    def constraint_context(self) -> ConstraintContext:
        """What constraints on this task's quantities may name: bodies, hinge and slide joints
        (bind them with :func:`gndesign.constraints.bind_constraints` to use them as planner costs)."""
        t = self.tree
        joints = {n: int(t.jnt_qposadr[j]) for j, n in enumerate(t.joint_names)
                  if n and t.jnt_type[j] in (HINGE, SLIDE)}
        return ConstraintContext(num_nodes=t.nbody, node_names=list(t.body_names), node_kind="body",
                                 joints=joints, nq=t.nq, dim=3, margin=0.0)

    def _constraints(self, mode: str) -> Objective | None:
        terms = []
        for i, c in enumerate(self.spec.constraints):
            if c.get("mode", "penalty") == mode:
                c = c["constraint"]
                obj = parse_constraint(c) if isinstance(c, str) else from_spec(c)
                try:
                    terms.append(bind_constraints(obj, self.constraint_context()))
                except GndesignError as e:
                    raise self.fail(f"constraints[{i}]", str(e)) from None
        return None if not terms else terms[0] if len(terms) == 1 else Sum(terms)

    def reward(self, qpos: torch.Tensor, qvel: torch.Tensor, action: torch.Tensor,
               params: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``[B]`` rewards of reaching ``qpos [B, nq], qvel [B, nv]`` with ``action [B, nu]``
        (minus the ``penalty`` constraints)."""
        q = self.quantities(qpos, qvel, action, params)
        r = self.reward_objective(q)
        return r if self.penalty is None else r - self.penalty(q)

    def cost(self, qpos: torch.Tensor, qvel: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Planner cost ``[B]``: minus the return of ``actions [B, H, nu]`` along the rollout
        ``qpos [B, H+1, nq], qvel [B, H+1, nv]`` (all steps scored in one batched call), plus the
        ``hard`` constraints' penalties weighted :data:`envs.task_files.HARD_WEIGHT`."""
        B, H = actions.shape[:2]
        qp, qv, a = qpos[:, 1:].reshape(B * H, -1), qvel[:, 1:].reshape(B * H, -1), actions.reshape(B * H, -1)
        c = -self.reward(qp, qv, a).reshape(B, H).sum(1)
        if self.hard is not None:
            c = c + HARD_WEIGHT * self.hard(self.quantities(qp, qv, a)).reshape(B, H).sum(1)
        return c

    # ------------------------------------------------------------------- initial states
    def _initial_state_plan(self) -> list[tuple[str, list[int], object, list[int]]] | None:
        if self.spec.initial_state is None:
            return None
        names = [mujoco.mj_id2name(self.model, _OBJ["joint"], j) or "" for j in range(self.model.njnt)]
        plan = []
        for part, dists in self.spec.initial_state.items():
            for pattern, dist in dists.items():
                where = f"initial_state.{part}.{pattern}"
                joints = [j for j, n in enumerate(names) if n and fnmatch.fnmatchcase(n, pattern)]
                if not joints:
                    raise self.fail(where, f"no joint of {self.system.name} matches {pattern!r} (joints: "
                                    f"{', '.join(n for n in names if n)})")
                for j in joints:
                    if int(self.model.jnt_type[j]) not in (2, 3) and not (part == "qvel" and _finite_num(dist)):
                        raise self.fail(where, f"joint {names[j]!r} is not a hinge or slide joint")
                    if isinstance(dist, Mapping) and dist.get("uniform") == "range" and not self.model.jnt_limited[j]:
                        raise self.fail(where, f"joint {names[j]!r} has no limits: give {{uniform: [lo, hi]}}")
                idx = self._joint_index([names[j] for j in joints], where, part == "qvel")
                plan.append((part, idx, dist, joints))
        return plan

    def initial_state(self, model: mujoco.MjModel, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """An episode's ``(qpos [nq], qvel [nv])``: the task file's distribution, or the system's
        data-generation one when the file gives none."""
        if self._init is None:
            return self.system.initial_state(model, rng)
        qpos, qvel = np.array(model.qpos0, dtype=np.float64), np.zeros(model.nv)
        for part, idx, dist, joints in self._init:
            target = qpos if part == "qpos" else qvel
            for k, i in enumerate(idx):
                if _finite_num(dist):
                    target[i] = float(dist)
                    continue
                kind, arg = next(iter(dist.items()))
                if arg == "range":
                    arg = model.jnt_range[joints[k]]
                target[i] = rng.uniform(arg[0], arg[1]) if kind == "uniform" else rng.normal(arg[0], arg[1])
        return qpos, qvel

    # ------------------------------------------------------------------- ground truth
    def make_env(self, seed: int | None = None):
        """The environment this task is judged in: dm_control's task if the file names one, else
        :class:`envs.task_env.MujocoTaskEnv` (true MuJoCo, the file's reward and initial states)."""
        if self.domain is not None:
            from dm_control import suite

            return suite.load(self.domain, self.task, task_kwargs={"random": seed})
        from envs.task_env import MujocoTaskEnv

        return MujocoTaskEnv(self, seed)

    def env_params(self, env) -> dict[str, np.ndarray]:
        """The task parameters of a freshly reset environment ``env`` (``{name: [P]}``)."""
        own = getattr(env, "task_params", None)
        if own is not None:
            return own
        out = {}
        for name, p in self.spec.parameters.items():
            if isinstance(p["value"], Mapping):
                fld, obj = next(iter(p["value"].items()))
                out[name] = np.array(getattr(env.physics.model, fld)[self._id(MODEL_FIELDS[fld], obj, name)])
            else:
                out[name] = self._nominal[name].numpy()
        return out

    def sync_from_env(self, env) -> None:
        """Read the task parameters (e.g. a target position) from a freshly reset environment."""
        self.set_params(self.env_params(env))

    def sync_from_envs(self, envs) -> None:
        """Read the parameters of ``E`` freshly reset environments that run in lockstep: each
        becomes a batch of ``E``, and the reward reads its rows episode-major (``B`` rows are ``E``
        blocks of ``B / E``, as :meth:`planners.base.Planner.evaluate` lays them out)."""
        per_env = [self.env_params(env) for env in envs]
        self.set_params({n: np.stack([p[n] for p in per_env]) for n in self.spec.parameters})

    def state_from_env(self, env) -> tuple[np.ndarray, np.ndarray]:
        return env.physics.data.qpos.copy(), env.physics.data.qvel.copy()


def _as_list(names) -> list[str]:
    return [names] if isinstance(names, str) else list(names)


def _finite_num(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and np.isfinite(x)


def _system(spec: TaskSpec) -> System:
    try:
        return get_system(spec.resolved_system())
    except GndesignError as e:
        raise spec.fail("system", str(e)) from None


def _set_control_timestep(system: System, spec: TaskSpec) -> None:
    dt = float(system.model.opt.timestep)
    n = round(spec.control_timestep / dt)
    if n < 1 or abs(n * dt - spec.control_timestep) > 1e-9 * max(1.0, spec.control_timestep):
        raise spec.fail("control_timestep", f"{spec.control_timestep} is not a multiple of {system.name}'s "
                        f"timestep {dt}")
    system.control_timestep, system.n_substeps = n * dt, n


def list_tasks() -> dict[str, str]:
    """The shipped tasks: name -> description."""
    out = {}
    for stem, path in shipped_tasks().items():
        spec = load_template(path, "N") if stem.endswith("N") else load_task_file(path)
        out[stem] = spec.description
    return out


def get_task(name: str | os.PathLike, system: str | System | None = None) -> Task:
    """A shipped task (``cartpole-swingup`` (or ``cartpole``), ``swimmerN`` with N >= 3; see
    :func:`list_tasks`) or a task file path; ``system``: run it on this system (a name, an MJCF
    path or a :class:`System`) instead of the one the file names (names are checked against it)."""
    text = str(name)
    if text.lower().endswith((".yaml", ".yml")) or os.sep in text or Path(text).is_file():
        spec = load_task_file(text)
    else:
        spec = find_task("cartpole-swingup" if text == "cartpole" else text)
        if spec is None or (text.startswith("swimmer") and int(text[7:] or 0) < 3):
            raise GndesignError(f"unknown task {text!r}: choose a shipped task ({', '.join(shipped_tasks())}; "
                                "swimmerN with N >= 3, e.g. swimmer6; see `gndesign tasks`) or a task file path")
    if system is not None and not isinstance(system, System):
        try:
            system = get_system(system)
        except GndesignError as e:
            raise GndesignError(f"{e} (the system to run task {spec.name} on)") from None
    return Task(spec, system)
