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
    fields of the same names (see :func:`apply_params`)
    All values are finite. ``state[t+1]`` is ``n_substeps`` calls of ``mujoco.mj_step`` from
    ``state[t]`` with ``data.ctrl = action[t]``, on the base model with the episode's parameters
    written in and ``mujoco.mj_setConst`` applied.

To bring your own data, call :func:`write_dataset` with arrays of the shapes above.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gndesign.errors import DatasetError, GndesignError
from gndesign.io import atomic_write_json, atomic_write_npz, sha256_bytes, sha256_file

FORMAT_NAME = "gndesign-trajectories"
SCHEMA_VERSION = 1
META_FILE = "meta.json"
STATS_FILE = "stats.json"
SHARD_PATTERN = "shard-{:05d}.npz"
PARAM_KEYS = ("body_mass", "body_inertia", "dof_damping", "actuator_gear")
STATE_KEYS = ("qpos", "qvel", "action")
STAT_FEATURES = ("qpos", "qvel", "action", "qacc")
SHARD_KEYS = (*STATE_KEYS, "episode", *PARAM_KEYS)
REQUIRED_META_KEYS = (
    "format",
    "schema_version",
    "system",
    "mjcf",
    "mjcf_sha256",
    "assets",
    "timestep",
    "control_timestep",
    "n_substeps",
    "nq",
    "nv",
    "nu",
    "nbody",
    "episodes",
    "steps",
    "seed",
    "randomize",
    "randomization",
    "versions",
    "stats_sha256",
    "shards",
)
REGENERATE = "regenerate the dataset (gndesign generate)"


# ----------------------------------------------------------------------------------------------
# Physical parameters
# ----------------------------------------------------------------------------------------------


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
        if not np.all(np.isfinite(value)):
            raise error(f"physical parameter {key} has non-finite values")
        if np.any(value < 0) and key != "actuator_gear":
            raise error(f"physical parameter {key} has negative values (min {value.min():g})")
        out[key] = value.copy()
    # The world body (0) has no mass; every other body must be able to move.
    if nbody > 1 and np.any(out["body_mass"][1:] <= 0):
        bad = int(np.flatnonzero(out["body_mass"][1:] <= 0)[0]) + 1
        raise error(f"physical parameter body_mass must be positive, body {bad} has {out['body_mass'][bad]:g}")
    return out


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


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------


@dataclass
class RunningStats:
    """Per-component count, mean, sum of squared deviations (``m2``), min and max of ``[N, D]``
    samples. Merging is Chan et al.'s parallel update: merging the same parts in the same order
    gives bit-identical results, whichever process computed each part."""

    count: int
    mean: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> RunningStats:
        return cls(0, np.zeros(dim), np.zeros(dim), np.full(dim, np.inf), np.full(dim, -np.inf))

    @classmethod
    def from_samples(cls, x: np.ndarray) -> RunningStats:
        """Statistics of samples ``x [N, D]``."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"expected samples [N, D], got shape {x.shape}")
        if x.shape[0] == 0:
            return cls.empty(x.shape[1])
        mean = x.mean(axis=0)
        return cls(x.shape[0], mean, ((x - mean) ** 2).sum(axis=0), x.min(axis=0), x.max(axis=0))

    def merge(self, other: RunningStats) -> RunningStats:
        if other.count == 0:
            return copy.deepcopy(self)
        if self.count == 0:
            return copy.deepcopy(other)
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / n)
        return RunningStats(n, mean, m2, np.minimum(self.min, other.min), np.maximum(self.max, other.max))

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.count, 1))

    def to_json(self) -> dict[str, Any]:
        return {
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "min": self.min.tolist(),
            "max": self.max.tolist(),
            "count": int(self.count),
        }


def episode_stats(
    qpos: np.ndarray, qvel: np.ndarray, action: np.ndarray, control_timestep: float
) -> dict[str, RunningStats]:
    """Statistics of a block of episodes: ``qpos [E, T+1, nq]``, ``qvel [E, T+1, nv]``,
    ``action [E, T, nu]``; ``qacc`` is the finite difference of ``qvel`` over a control step."""
    qacc = (qvel[:, 1:] - qvel[:, :-1]) / control_timestep
    feats = {"qpos": qpos, "qvel": qvel, "action": action, "qacc": qacc}
    return {k: RunningStats.from_samples(v.reshape(-1, v.shape[-1])) for k, v in feats.items()}


def merge_stats(parts: Sequence[Mapping[str, RunningStats]]) -> dict[str, RunningStats]:
    """Merge per-shard statistics in the given (shard) order."""
    if not parts:
        raise ValueError("no statistics to merge")
    out = dict(parts[0])
    for part in parts[1:]:
        out = {k: out[k].merge(part[k]) for k in STAT_FEATURES}
    return out


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def shard_filename(index: int) -> str:
    return SHARD_PATTERN.format(index)


def shard_ranges(episodes: int, shard_size: int) -> list[tuple[int, int]]:
    """Episode ranges ``[(start, stop), ...]`` of shards of ``shard_size`` episodes."""
    if shard_size < 1:
        raise GndesignError(f"shard size must be >= 1, got {shard_size}")
    return [(s, min(s + shard_size, episodes)) for s in range(0, episodes, shard_size)]


def write_shard(directory: str | os.PathLike, index: int, arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Write one shard (arrays keyed as :data:`SHARD_KEYS`) atomically; return its ``meta.json``
    entry ``{"file", "episodes": [start, stop], "sha256"}``."""
    missing = [k for k in SHARD_KEYS if k not in arrays]
    if missing:
        raise GndesignError(f"shard {index} lacks arrays {missing}")
    out = {k: np.ascontiguousarray(arrays[k], dtype=np.float64) for k in SHARD_KEYS if k != "episode"}
    out["episode"] = np.ascontiguousarray(arrays["episode"], dtype=np.int64)
    episodes = out["episode"]
    if episodes.ndim != 1 or len(episodes) == 0 or np.any(np.diff(episodes) != 1):
        raise GndesignError(f"shard {index}: episode indices must be consecutive, got {episodes}")
    name = shard_filename(index)
    sha = atomic_write_npz(Path(directory) / name, out)
    return {"file": name, "episodes": [int(episodes[0]), int(episodes[-1]) + 1], "sha256": sha}


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
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
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
    directory = Path(directory)
    stats_obj = {k: stats[k].to_json() for k in STAT_FEATURES}
    atomic_write_json(directory / STATS_FILE, stats_obj)
    meta = dict(meta)
    meta["stats_sha256"] = sha256_file(directory / STATS_FILE)
    atomic_write_json(directory / META_FILE, meta)


@contextlib.contextmanager
def staging_directory(out_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory next to ``out_dir``; when the block succeeds, rename it
    onto ``out_dir``. On any exception (KeyboardInterrupt included) the temporary directory is
    removed, so a failed write leaves nothing behind."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        # mkdtemp makes a private (0700) directory; a dataset is meant to be shared.
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
        yield tmp
        check_out_dir(out_dir, overwrite)
        old = None
        if out_dir.exists() and any(out_dir.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
            os.replace(out_dir, old / "data")
        elif out_dir.exists():
            out_dir.rmdir()
        try:
            os.replace(tmp, out_dir)
        except BaseException:
            if old is not None:  # put the previous dataset back
                os.replace(old / "data", out_dir)
                old.rmdir()
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _is_dataset_file(name: str) -> bool:
    return name in (META_FILE, STATS_FILE) or (name.startswith("shard-") and name.endswith(".npz"))


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out_dir`` unless ``overwrite``; even then, only replace a directory
    that holds nothing but dataset files (never delete someone's other files)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DatasetError(f"output path {out_dir} exists and is not a directory: choose another path")
    if not out_dir.exists():
        return
    names = [p.name for p in out_dir.iterdir()]
    if names and not overwrite:
        raise DatasetError(
            f"output directory {out_dir} exists and is not empty: choose another path or pass "
            "overwrite (--overwrite) to replace it"
        )
    others = sorted(n for n in names if not _is_dataset_file(n))
    if names and others:
        raise DatasetError(
            f"output directory {out_dir} holds files that are not part of a dataset ({others[:3]}): "
            "refusing to replace it; choose another path"
        )


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
    shapes = param_shapes(nbody, nv, nu)
    params = {k: np.asarray(params[k], dtype=np.float64) for k in PARAM_KEYS}
    for k, shape in shapes.items():
        if params[k].shape != (n, *shape):
            raise DatasetError(f"params[{k!r}] has shape {params[k].shape}, expected {(n, *shape)}")
    with staging_directory(out_dir, overwrite) as tmp:
        shards, parts = [], []
        for index, (start, stop) in enumerate(shard_ranges(n, shard_size)):
            arrays = {
                "qpos": qpos[start:stop],
                "qvel": qvel[start:stop],
                "action": action[start:stop],
                "episode": np.arange(start, stop, dtype=np.int64),
                **{k: params[k][start:stop] for k in PARAM_KEYS},
            }
            shards.append(write_shard(tmp, index, arrays))
            parts.append(episode_stats(arrays["qpos"], arrays["qvel"], arrays["action"], control_timestep))
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
        finalize(tmp, meta, merge_stats(parts))
    return Path(out_dir)


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def read_meta(path: Path, format_name: str, description: str, schema_version: int, required: Sequence[str],
              regenerate: str) -> dict[str, Any]:
    """Read ``path/meta.json`` and check what every dataset format shares: it exists and parses, its
    ``format`` is ``format_name`` (else: not a ``description``), its ``schema_version`` is the one
    this gndesign reads and it has the ``required`` keys. Errors end with ``regenerate``."""
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise DatasetError(f"{path} is not a gndesign dataset or generation was interrupted (no {META_FILE}): "
                           f"{regenerate}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{meta_path} cannot be read ({_one_line(e)}): {regenerate}") from None
    if not isinstance(meta, dict) or meta.get("format") != format_name:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise DatasetError(f"{meta_path} is not a {description} (format {fmt!r}, expected {format_name!r})")
    version = meta.get("schema_version")
    if version != schema_version:
        raise DatasetError(f"{meta_path} has schema_version {version!r} but this gndesign reads version "
                           f"{schema_version}: {regenerate} with this gndesign")
    missing = [k for k in required if k not in meta]
    if missing:
        raise DatasetError(f"{meta_path} lacks required keys {missing}: {regenerate}")
    return meta


def load_stats(path: Path, sha256: str, dims: Mapping[str, int], regenerate: str) -> dict[str, dict[str, np.ndarray]]:
    """Read and validate ``path/stats.json``: its sha256, and per feature of ``dims`` the
    ``mean``, ``std``, ``min`` and ``max`` vectors of that length and the ``count``."""
    stats_path = path / STATS_FILE
    if not stats_path.is_file():
        raise DatasetError(f"{stats_path} is missing: {regenerate}")
    if sha256_file(stats_path) != sha256:
        raise DatasetError(f"{stats_path} is corrupted (sha256 mismatch): {regenerate}")
    raw = json.loads(stats_path.read_text(encoding="utf-8"))
    stats: dict[str, dict[str, np.ndarray]] = {}
    for feature, dim in dims.items():
        entry = raw.get(feature)
        if not isinstance(entry, dict):
            raise DatasetError(f"{stats_path} lacks feature {feature!r}: {regenerate}")
        stats[feature] = {}
        for field in ("mean", "std", "min", "max"):
            value = np.asarray(entry.get(field, []), dtype=np.float64)
            if value.shape != (dim,):
                raise DatasetError(f"{stats_path}: {feature}.{field} has shape {value.shape}, expected ({dim},)")
            stats[feature][field] = value
        stats[feature]["count"] = np.int64(entry.get("count", 0))
    return stats


def load_shards(path: Path, shards: Sequence[Mapping[str, Any]], shapes: Mapping[str, tuple[int, ...]],
                regenerate: str) -> dict[str, np.ndarray]:
    """Read and validate the shards listed in a dataset's meta (``{"file", "episodes", "sha256"}``).

    Every shard must exist, match its sha256, hold exactly the arrays of ``shapes`` (per-episode
    shapes; ``episode`` int64 with the listed indices, the rest finite float64). Returns the
    arrays concatenated over shards (without ``episode``). Errors name the shard and end with
    ``regenerate`` (how to fix it).
    """
    parts: dict[str, list[np.ndarray]] = {k: [] for k in shapes}
    for entry in shards:
        name = entry["file"]
        file = path / name
        if not file.is_file():
            raise DatasetError(f"shard {name} listed in {META_FILE} is missing from {path}: {regenerate}")
        if sha256_file(file) != entry["sha256"]:
            raise DatasetError(f"shard {file} is truncated or corrupted (sha256 mismatch): {regenerate}")
        start, stop = entry["episodes"]
        try:
            with np.load(file, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except Exception as e:  # noqa: BLE001 - any unreadable archive is the same user error
            raise DatasetError(f"shard {file} cannot be read ({_one_line(e)}): {regenerate}") from None
        if sorted(arrays) != sorted(shapes):
            raise DatasetError(f"shard {file} has arrays {sorted(arrays)}, expected {sorted(shapes)}: {regenerate}")
        for key, shape in shapes.items():
            arr = arrays[key]
            dtype = np.int64 if key == "episode" else np.float64
            if arr.dtype != dtype:
                raise DatasetError(
                    f"array {key} in shard {name} has dtype {arr.dtype}, expected {np.dtype(dtype)}: {regenerate}")
            if arr.shape != (stop - start, *shape):
                raise DatasetError(f"array {key} in shard {name} has shape {arr.shape}, expected "
                                   f"{(stop - start, *shape)} from {META_FILE}: {regenerate}")
            if key == "episode":
                if not np.array_equal(arr, np.arange(start, stop)):
                    raise DatasetError(f"shard {name} holds episodes {arr.tolist()}, {META_FILE} says "
                                       f"{start}..{stop - 1}: {regenerate}")
                continue
            finite = np.isfinite(arr).reshape(len(arr), -1).all(axis=1)
            if not finite.all():
                first = start + int(np.flatnonzero(~finite)[0])
                raise DatasetError(f"array {key} in shard {name} has non-finite values (first in episode "
                                   f"{first}): {regenerate}")
            parts[key].append(arr)
    return {k: np.concatenate(v, axis=0) for k, v in parts.items() if k != "episode"}


class TrajectoryDataset:
    """A loaded, validated dataset; all episodes in memory.

    Arrays: ``qpos [N, T+1, nq]``, ``qvel [N, T+1, nv]``, ``action [N, T, nu]``,
    ``params[key] [N, ...]`` (see the module docstring).
    """

    def __init__(
        self,
        path: Path,
        meta: dict[str, Any],
        stats: dict[str, dict[str, np.ndarray]],
        arrays: dict[str, np.ndarray],
    ) -> None:
        self.path = path
        self.meta = meta
        self.stats = stats
        self.qpos: np.ndarray = arrays["qpos"]
        self.qvel: np.ndarray = arrays["qvel"]
        self.action: np.ndarray = arrays["action"]
        self.params: dict[str, np.ndarray] = {k: arrays[k] for k in PARAM_KEYS}

    # -- loading ----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike, expected_system: str | None = None) -> TrajectoryDataset:
        """Load and validate the dataset in directory ``path``.

        ``expected_system``: a system name or an MJCF sha256; a dataset of another system is
        refused. Every problem raises :class:`DatasetError` with a one-line message.
        """
        path = Path(path)
        if not path.exists():
            raise DatasetError(f"dataset directory {path} does not exist: {REGENERATE} first")
        if not path.is_dir():
            raise DatasetError(f"dataset path {path} is not a directory: pass the dataset directory")
        meta = cls._load_meta(path)
        if expected_system is not None:
            cls._check_system(path, meta, expected_system)
        stats = cls._load_stats(path, meta)
        arrays = cls._load_shards(path, meta)
        return cls(path, meta, stats, arrays)

    @staticmethod
    def _load_meta(path: Path) -> dict[str, Any]:
        meta_path = path / META_FILE
        meta = read_meta(path, FORMAT_NAME, "gndesign dataset description", SCHEMA_VERSION, REQUIRED_META_KEYS,
                         REGENERATE)
        for key in ("nq", "nv", "nu", "nbody", "episodes", "steps", "n_substeps"):
            if not isinstance(meta[key], int) or isinstance(meta[key], bool) or meta[key] < 0:
                raise DatasetError(f"{meta_path}: {key} must be a non-negative integer: {REGENERATE}")
        if meta["steps"] < 1 or meta["episodes"] < 1:
            raise DatasetError(f"{meta_path}: a dataset needs episodes >= 1 and steps >= 1")
        shards = meta["shards"]
        expected_start = 0
        for entry in shards if isinstance(shards, list) else [None]:
            ok = (
                isinstance(entry, dict)
                and isinstance(entry.get("file"), str)
                and Path(entry["file"]).name == entry["file"]
                and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("episodes"), list)
                and len(entry["episodes"]) == 2
                and entry["episodes"][0] == expected_start
                and entry["episodes"][1] > expected_start
            )
            if not ok:
                raise DatasetError(f"{meta_path}: malformed shard list entry {entry!r}: {REGENERATE}")
            expected_start = entry["episodes"][1]
        if expected_start != meta["episodes"]:
            raise DatasetError(
                f"{meta_path}: shards cover {expected_start} episodes, meta says {meta['episodes']}: {REGENERATE}"
            )
        return meta

    @staticmethod
    def _check_system(path: Path, meta: Mapping[str, Any], expected: str) -> None:
        if expected in (meta["system"], meta["mjcf_sha256"]):
            return
        raise DatasetError(
            f"dataset {path} is for system {meta['system']!r} (mjcf sha256 "
            f"{meta['mjcf_sha256'][:12]}...), expected {expected!r}: use a dataset generated for "
            "that system"
        )

    @staticmethod
    def _load_stats(path: Path, meta: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
        dims = {"qpos": meta["nq"], "qvel": meta["nv"], "action": meta["nu"], "qacc": meta["nv"]}
        return load_stats(path, meta["stats_sha256"], dims, REGENERATE)

    @staticmethod
    def _load_shards(path: Path, meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
        nq, nv, nu, nbody, steps = (meta[k] for k in ("nq", "nv", "nu", "nbody", "steps"))
        shapes = {
            "qpos": (steps + 1, nq),
            "qvel": (steps + 1, nv),
            "action": (steps, nu),
            "episode": (),
            **param_shapes(nbody, nv, nu),
        }
        return load_shards(path, meta["shards"], shapes, REGENERATE)

    # -- accessors --------------------------------------------------------------------------
    @property
    def num_episodes(self) -> int:
        return int(self.meta["episodes"])

    def __len__(self) -> int:
        return self.num_episodes

    @property
    def steps(self) -> int:
        return int(self.meta["steps"])

    @property
    def system(self) -> str:
        return self.meta["system"]

    @property
    def mjcf(self) -> str:
        return self.meta["mjcf"]

    @property
    def mjcf_sha256(self) -> str:
        return self.meta["mjcf_sha256"]

    @property
    def assets(self) -> dict[str, bytes]:
        return decode_assets(self.meta["assets"])

    @property
    def timestep(self) -> float:
        return float(self.meta["timestep"])

    @property
    def control_timestep(self) -> float:
        return float(self.meta["control_timestep"])

    @property
    def n_substeps(self) -> int:
        return int(self.meta["n_substeps"])

    @property
    def qacc(self) -> np.ndarray:
        """``[N, T, nv]`` finite-difference accelerations over one control step."""
        return (self.qvel[:, 1:] - self.qvel[:, :-1]) / self.control_timestep

    def episode(self, i: int) -> dict[str, np.ndarray]:
        """One episode: ``qpos [T+1, nq]``, ``qvel [T+1, nv]``, ``action [T, nu]`` and its
        physical parameters (keys of :data:`PARAM_KEYS`)."""
        if not -self.num_episodes <= i < self.num_episodes:
            raise IndexError(f"episode {i} out of range for {self.num_episodes} episodes")
        out = {"qpos": self.qpos[i], "qvel": self.qvel[i], "action": self.action[i]}
        out.update({k: v[i] for k, v in self.params.items()})
        return out

    def split(self, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Deterministic ``(train, validation)`` episode indices (sorted int64 arrays)."""
        if not 0.0 <= val_fraction < 1.0:
            raise DatasetError(f"validation fraction must be in [0, 1), got {val_fraction}")
        n = self.num_episodes
        n_val = int(round(val_fraction * n))
        if val_fraction > 0 and n > 1:
            n_val = min(max(n_val, 1), n - 1)
        perm = np.random.default_rng(np.random.SeedSequence([seed, n])).permutation(n)
        return np.sort(perm[n_val:]).astype(np.int64), np.sort(perm[:n_val]).astype(np.int64)

    def base_model(self):
        """The system's ``mujoco.MjModel`` rebuilt from the stored MJCF and assets."""
        import mujoco

        try:
            return mujoco.MjModel.from_xml_string(self.mjcf, self.assets)
        except ValueError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else "unknown error"
            raise DatasetError(f"the MJCF stored in {self.path} does not compile ({first})") from None

    def build_model(self, episode: int | None = None):
        """The MuJoCo model of ``episode`` (its physical parameters written in), or the base
        model when ``episode`` is None."""
        model = self.base_model()
        if episode is None:
            return model
        return apply_params(model, {k: v[episode] for k, v in self.params.items()})
