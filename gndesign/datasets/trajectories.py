"""Trajectory datasets: the on-disk format, its writer and a validating loader.

A dataset is a directory of ground-truth MuJoCo rollouts of one system, each episode with its own
(randomized) physical parameters. Everything needed to rebuild the MuJoCo model (MJCF text and the
files it includes) is stored inside, so the core can use a dataset without ``envs``.

Format (schema version 1)
-------------------------
``DIR/meta.json`` (JSON object, written last: its presence marks a complete dataset)
    ``format``           ``"gndesign-trajectories"``
    ``schema_version``   ``1``
    ``system``           system name (``"cartpole"``, ``"swimmer6"``, the MJCF file's stem, ...)
    ``mjcf``             the MJCF text of the base model
    ``mjcf_sha256``      sha256 of ``mjcf`` encoded as UTF-8 (identifies the system)
    ``assets``           ``{name: base64}``: files the MJCF includes or references (dm_control's
                         ``./common/*.xml``, meshes, ...), keyed as MuJoCo looks them up; the model is
                         ``mujoco.MjModel.from_xml_string(mjcf, {name: b64decode(data)})``
    ``timestep``         MuJoCo physics timestep ``opt.timestep`` [s]
    ``control_timestep`` time between two recorded states [s] (= ``n_substeps * timestep``)
    ``n_substeps``       ``mj_step`` calls per control step, the action held constant over them
    ``nq``, ``nv``, ``nu``, ``nbody``  model sizes (``nbody`` counts the world body)
    ``episodes``, ``steps``  number of episodes ``N`` and control steps per episode ``T``
    ``seed``             generation seed (``null`` for data brought from elsewhere)
    ``randomize``        whether physical parameters were randomized per episode
    ``randomization``    ``{param: [low, high]}`` relative (multiplicative) ranges
    ``generator``        free-form description of how states and actions were sampled
    ``versions``         ``{"gndesign", "mujoco", "numpy"}`` used to write the data
    ``stats_sha256``     sha256 of ``stats.json``
    ``shards``           list, in episode order, of ``{"file", "episodes": [start, stop], "sha256"}``
                         (episodes ``start <= i < stop``; shards tile ``0..N`` without gaps)
    There are no timestamps, host names, absolute paths or worker counts: the same generation
    seed gives byte-identical files.

``DIR/stats.json``  normalization statistics over all episodes, features ``qpos [nq]``,
    ``qvel [nv]``, ``action [nu]`` and ``qacc [nv]`` where
    ``qacc[t] = (qvel[t+1] - qvel[t]) / control_timestep`` (a finite difference over one control
    step, not MuJoCo's instantaneous ``qacc``). Each feature is
    ``{"mean": [...], "std": [...], "min": [...], "max": [...], "count": int}``; ``std`` is the
    population standard deviation (``ddof=0``), ``count`` the number of samples per component
    (``N*(T+1)`` for states, ``N*T`` for actions and accelerations).

``DIR/shard-00000.npz``, ``shard-00001.npz``, ... uncompressed ``.npz`` (no pickles), for the
    ``E`` episodes of the shard, all float64 except ``episode``:
    ``qpos [E, T+1, nq]``  ``qvel [E, T+1, nv]``  states at control steps ``0..T``
    ``action [E, T, nu]``  ``ctrl`` applied from state ``t`` to state ``t+1``
    ``episode [E]`` int64  global episode indices ``start..stop-1``
    ``body_mass [E, nbody]``  ``body_inertia [E, nbody, 3]``  ``dof_damping [E, nv]``
    ``actuator_gear [E, nu, 6]``  the episode's physical parameters, the values of the MjModel
    fields of the same names (see :mod:`gndesign.datasets.params`)
    All values are finite. ``state[t+1]`` is ``n_substeps`` calls of ``mujoco.mj_step`` from
    ``state[t]`` with ``data.ctrl = action[t]``, on the base model with the episode's parameters
    written in and ``mujoco.mj_setConst`` applied.

To bring your own data, call :func:`write_dataset` with arrays of the shapes above. The directory
layout, shard files and their validation are those of every format (:mod:`gndesign.datasets.base`).
"""

from __future__ import annotations

import base64
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gndesign.datasets.base import (
    META_FILE,
    DatasetFormat,
    RunningStats,
    ShardedDataset,
    meta_field,
    staging_directory,
    write_episode_shards,
    write_stats,
)
from gndesign.datasets.params import PARAM_KEYS, apply_params, check_param_values, param_shapes
from gndesign.datasets.values import check_values
from gndesign.errors import DatasetError
from gndesign.io import atomic_write_json, sha256_bytes

STATE_KEYS = ("qpos", "qvel", "action")
FORMAT = DatasetFormat(
    name="gndesign-trajectories",
    schema_version=1,
    description="gndesign dataset description",
    required_meta_keys=("format", "schema_version", "system", "mjcf", "mjcf_sha256", "assets", "timestep",
                        "control_timestep", "n_substeps", "nq", "nv", "nu", "nbody", "episodes", "steps", "seed",
                        "randomize", "randomization", "versions", "stats_sha256", "shards"),
    shard_keys=(*STATE_KEYS, *PARAM_KEYS, "episode"),
    stat_features=("qpos", "qvel", "action", "qacc"),
    regenerate="regenerate the dataset (gndesign generate)",
)


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------


def episode_stats(
    qpos: np.ndarray, qvel: np.ndarray, action: np.ndarray, control_timestep: float
) -> dict[str, RunningStats]:
    """Statistics of a block of episodes: ``qpos [E, T+1, nq]``, ``qvel [E, T+1, nv]``,
    ``action [E, T, nu]``; ``qacc`` is the finite difference of ``qvel`` over a control step."""
    qacc = (qvel[:, 1:] - qvel[:, :-1]) / control_timestep
    feats = {"qpos": qpos, "qvel": qvel, "action": action, "qacc": qacc}
    # Explicit row counts: a passive system's actions are [E, T, 0], which reshape(-1, 0) refuses.
    return {k: RunningStats.from_samples(v.reshape(math.prod(v.shape[:-1]), v.shape[-1])) for k, v in feats.items()}


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def encode_assets(assets: Mapping[str, bytes]) -> dict[str, str]:
    return {name: base64.b64encode(bytes(assets[name])).decode("ascii") for name in sorted(assets)}


def decode_assets(encoded: Mapping[str, str]) -> dict[str, bytes]:
    return {name: base64.b64decode(data) for name, data in encoded.items()}


def package_versions() -> dict[str, str]:
    import mujoco

    import gndesign

    return {"gndesign": gndesign.__version__, "mujoco": mujoco.__version__, "numpy": np.__version__}


def make_meta(
    *,
    system: str,
    mjcf: str,
    assets: Mapping[str, bytes],
    timestep: float,
    control_timestep: float,
    n_substeps: int,
    nq: int,
    nv: int,
    nu: int,
    nbody: int,
    episodes: int,
    steps: int,
    seed: int | None,
    randomize: bool,
    randomization: Mapping[str, Sequence[float]],
    shards: Sequence[Mapping[str, Any]],
    generator: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``meta.json`` object (without ``stats_sha256``, which :func:`finalize` adds)."""
    return {
        "format": FORMAT.name,
        "schema_version": FORMAT.schema_version,
        "system": system,
        "mjcf": mjcf,
        "mjcf_sha256": sha256_bytes(mjcf.encode("utf-8")),
        "assets": encode_assets(assets),
        "timestep": float(timestep),
        "control_timestep": float(control_timestep),
        "n_substeps": int(n_substeps),
        "nq": int(nq),
        "nv": int(nv),
        "nu": int(nu),
        "nbody": int(nbody),
        "episodes": int(episodes),
        "steps": int(steps),
        "seed": None if seed is None else int(seed),
        "randomize": bool(randomize),
        "randomization": {k: [float(v) for v in randomization[k]] for k in sorted(randomization)},
        "generator": dict(generator or {}),
        "versions": package_versions(),
        "shards": [dict(s) for s in shards],
    }


def finalize(directory: str | os.PathLike, meta: Mapping[str, Any], stats: Mapping[str, RunningStats]) -> None:
    """Write ``stats.json`` then ``meta.json`` (last, so it marks a complete dataset)."""
    meta = dict(meta)
    meta["stats_sha256"] = write_stats(directory, stats, FORMAT.stat_features)
    atomic_write_json(Path(directory) / META_FILE, meta)


def write_dataset(
    out_dir: str | os.PathLike,
    *,
    system: str,
    mjcf: str,
    assets: Mapping[str, bytes] | None = None,
    timestep: float,
    control_timestep: float,
    n_substeps: int,
    qpos: np.ndarray,
    qvel: np.ndarray,
    action: np.ndarray,
    params: Mapping[str, np.ndarray],
    nbody: int,
    seed: int | None = None,
    randomize: bool = False,
    randomization: Mapping[str, Sequence[float]] | None = None,
    shard_size: int = 32,
    generator: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write in-memory trajectories as a dataset (for data generated elsewhere).

    ``qpos [N, T+1, nq]``, ``qvel [N, T+1, nv]``, ``action [N, T, nu]``, ``params`` keyed as
    :data:`PARAM_KEYS` with a leading episode axis ``N``.
    """
    qpos, qvel, action = (np.asarray(a, dtype=np.float64) for a in (qpos, qvel, action))
    if qpos.ndim != 3 or qvel.ndim != 3 or action.ndim != 3:
        raise DatasetError("qpos, qvel and action must be [episodes, time, dim] arrays")
    n, t1, nq = qpos.shape
    nv, nu = qvel.shape[2], action.shape[2]
    if qvel.shape[:2] != (n, t1) or action.shape[:2] != (n, t1 - 1) or t1 < 2:
        raise DatasetError(
            f"inconsistent shapes qpos {qpos.shape}, qvel {qvel.shape}, action {action.shape}: "
            "need [N, T+1, nq], [N, T+1, nv], [N, T, nu] with T >= 1"
        )
    check_timing(f"write_dataset({system!r})", timestep, control_timestep, n_substeps)
    check_sizes(f"the arrays given for {system!r}", {"nq": nq, "nv": nv, "nu": nu, "nbody": nbody},
                compile_mjcf(mjcf, assets or {}, f"the MJCF given for {system!r}"))
    shapes = param_shapes(nbody, nv, nu)
    missing = [k for k in PARAM_KEYS if k not in params]
    if missing:
        raise DatasetError(f"params lacks {missing}: give every one of {list(PARAM_KEYS)}")
    params = {k: np.asarray(params[k], dtype=np.float64) for k in PARAM_KEYS}
    for k, shape in shapes.items():
        if params[k].shape != (n, *shape):
            raise DatasetError(f"params[{k!r}] has shape {params[k].shape}, expected {(n, *shape)}")
    for name, array in (("qpos", qpos), ("qvel", qvel), ("action", action)):
        check_values(name, array, DatasetError)
    check_param_values(params, DatasetError)
    with staging_directory(out_dir, overwrite) as tmp:
        shards, stats = write_episode_shards(
            tmp, FORMAT, {"qpos": qpos, "qvel": qvel, "action": action, **params}, shard_size,
            lambda chunk: episode_stats(chunk["qpos"], chunk["qvel"], chunk["action"], control_timestep))
        meta = make_meta(
            system=system,
            mjcf=mjcf,
            assets=assets or {},
            timestep=timestep,
            control_timestep=control_timestep,
            n_substeps=n_substeps,
            nq=nq,
            nv=nv,
            nu=nu,
            nbody=nbody,
            episodes=n,
            steps=t1 - 1,
            seed=seed,
            randomize=randomize,
            randomization=randomization or {},
            shards=shards,
            generator=generator,
        )
        finalize(tmp, meta, stats)
    return Path(out_dir)


def compile_mjcf(mjcf: str, assets: Mapping[str, bytes], what: str):
    """The ``mujoco.MjModel`` of ``mjcf`` (``what`` names it in the error if it does not compile)."""
    import mujoco

    try:
        return mujoco.MjModel.from_xml_string(mjcf, dict(assets))
    except (ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unknown error"
        raise DatasetError(f"{what} does not compile ({first})") from None


def check_timing(what: str, timestep: Any, control_timestep: Any, n_substeps: Any, fix: str = "") -> None:
    """Refuse a timestep or control timestep that is not a positive number, or ``n_substeps < 1``."""
    for key, value in (("timestep", timestep), ("control_timestep", control_timestep)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < float("inf"):
            raise DatasetError(f"{what}: {key} must be a positive number of seconds, got {value!r}"
                               f"{': ' + fix if fix else ''}")
    if isinstance(n_substeps, bool) or not isinstance(n_substeps, numbers.Integral) or n_substeps < 1:
        raise DatasetError(f"{what}: n_substeps must be a positive integer, got {n_substeps!r}"
                           f"{': ' + fix if fix else ''}")


def check_sizes(what: str, sizes: Mapping[str, int], model, fix: str = "") -> None:
    """Refuse ``sizes`` (``nq``, ``nv``, ``nu``, ``nbody``) that differ from the MuJoCo ``model``'s."""
    for key, value in sizes.items():
        if value != getattr(model, key):
            raise DatasetError(f"{what}: {key} is {value} but the MJCF's model has {key} {getattr(model, key)}"
                               f"{': ' + fix if fix else ''}")


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


class TrajectoryDataset(ShardedDataset):
    """A loaded, validated trajectory dataset; all episodes in memory.

    Arrays: ``qpos [N, T+1, nq]``, ``qvel [N, T+1, nv]``, ``action [N, T, nu]``,
    ``params[key] [N, ...]`` (see the module docstring).
    """

    FORMAT = FORMAT

    def _adopt(self, arrays: dict[str, np.ndarray]) -> None:
        self.qpos: np.ndarray = arrays["qpos"]
        self.qvel: np.ndarray = arrays["qvel"]
        self.action: np.ndarray = arrays["action"]
        self.params: dict[str, np.ndarray] = {k: arrays[k] for k in PARAM_KEYS}
        where, fix = f"dataset {self.path}: ", FORMAT.regenerate
        for name in STATE_KEYS:
            check_values(name, arrays[name], DatasetError, where, fix)
        check_param_values(self.params, DatasetError, where, fix)

    @classmethod
    def load(cls, path: str | os.PathLike, expected_system: str | None = None) -> TrajectoryDataset:
        """Load and validate the dataset in directory ``path``.

        ``expected_system``: a system name or an MJCF sha256; a dataset of another system is
        refused. Every problem raises :class:`DatasetError` with a one-line message.
        """
        return cls._load(path, expected_system)

    @classmethod
    def _check_meta(cls, meta_path: Path, meta: dict[str, Any]) -> None:
        for key in ("nq", "nv", "nu", "nbody", "episodes", "steps", "n_substeps"):
            if not isinstance(meta[key], int) or isinstance(meta[key], bool) or meta[key] < 0:
                raise DatasetError(f"{meta_path}: {key} must be a non-negative integer: {FORMAT.regenerate}")
        if meta["steps"] < 1 or meta["episodes"] < 1:
            raise DatasetError(f"{meta_path}: a dataset needs episodes >= 1 and steps >= 1")
        check_timing(str(meta_path), meta["timestep"], meta["control_timestep"], meta["n_substeps"], FORMAT.regenerate)
        if not isinstance(meta["mjcf"], str) or not isinstance(meta["assets"], dict):
            raise DatasetError(f"{meta_path}: mjcf must be MJCF text and assets an object: {FORMAT.regenerate}")
        try:
            assets = decode_assets(meta["assets"])
        except (TypeError, ValueError):
            raise DatasetError(f"{meta_path}: assets are not base64 text: {FORMAT.regenerate}") from None
        model = compile_mjcf(meta["mjcf"], assets, f"the MJCF stored in {meta_path}")
        check_sizes(meta_path, {k: meta[k] for k in ("nq", "nv", "nu", "nbody")}, model, FORMAT.regenerate)
        k = meta.get("action_repeat", 1)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise DatasetError(f"{meta_path}: action_repeat must be a positive integer, got {k!r}: {FORMAT.regenerate}")

    @classmethod
    def _check_expected(cls, path: Path, meta: Mapping[str, Any], expected: str) -> None:
        if expected in (meta["system"], meta["mjcf_sha256"]):
            return
        raise DatasetError(
            f"dataset {path} is for system {meta['system']!r} (mjcf sha256 "
            f"{meta['mjcf_sha256'][:12]}...), expected {expected!r}: use a dataset generated for "
            "that system"
        )

    @classmethod
    def _stat_dims(cls, meta: Mapping[str, Any]) -> dict[str, int]:
        return {"qpos": meta["nq"], "qvel": meta["nv"], "action": meta["nu"], "qacc": meta["nv"]}

    @classmethod
    def _shard_shapes(cls, meta: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        nq, nv, nu, nbody, steps = (meta[k] for k in ("nq", "nv", "nu", "nbody", "steps"))
        return {"qpos": (steps + 1, nq), "qvel": (steps + 1, nv), "action": (steps, nu), "episode": (),
                **param_shapes(nbody, nv, nu)}

    # -- accessors --------------------------------------------------------------------------
    system = meta_field("system")
    mjcf = meta_field("mjcf")
    mjcf_sha256 = meta_field("mjcf_sha256")
    assets = meta_field("assets", decode_assets, "``{name: bytes}``: the files the MJCF includes.")
    timestep = meta_field("timestep", float)
    control_timestep = meta_field("control_timestep", float)
    n_substeps = meta_field("n_substeps", int)

    @property
    def action_repeat(self) -> int:
        """Control steps per recorded step (each action held that long; 1 unless generated with
        ``--action-repeat``); ``control_timestep`` is already that many base control timesteps."""
        return int(self.meta.get("action_repeat", 1))

    @property
    def qacc(self) -> np.ndarray:
        """``[N, T, nv]`` finite-difference accelerations over one control step."""
        return (self.qvel[:, 1:] - self.qvel[:, :-1]) / self.control_timestep

    def episode(self, i: int) -> dict[str, np.ndarray]:
        """One episode: ``qpos [T+1, nq]``, ``qvel [T+1, nv]``, ``action [T, nu]`` and its
        physical parameters (keys of :data:`PARAM_KEYS`)."""
        self._check_index(i)
        out = {"qpos": self.qpos[i], "qvel": self.qvel[i], "action": self.action[i]}
        out.update({k: v[i] for k, v in self.params.items()})
        return out

    def base_model(self):
        """The system's ``mujoco.MjModel`` rebuilt from the stored MJCF and assets."""
        return compile_mjcf(self.mjcf, self.assets, f"the MJCF stored in {self.path}")

    def build_model(self, episode: int | None = None):
        """The MuJoCo model of ``episode`` (its physical parameters written in), or the base
        model when ``episode`` is None."""
        model = self.base_model()
        if episode is None:
            return model
        return apply_params(model, {k: v[episode] for k, v in self.params.items()})
