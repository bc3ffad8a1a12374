"""Particle datasets (the obstacle-design scene): the on-disk format, its writer and a loader.

An episode is a set of ``N`` particles released at rest that fall onto a kinematic obstacle (a
polyline of ``K`` segments from an anchor, its ``K`` joint angles being the design) and settle on
the floor between two walls. The scene's physical description is stored with the data, so a model
trained on it remembers the scene and refuses another (see :func:`scene_mismatch`).

Format (schema version 1)
-------------------------
``DIR/meta.json`` (JSON object, written last: its presence marks a complete dataset)
    ``format``           ``"gndesign-particles"``
    ``schema_version``   ``1``
    ``scene``            the scene configuration (a JSON object); it holds at least
                         ``particle_radius`` [m], ``obstacle_radius`` [m] (capsule radius),
                         ``x_min``, ``x_max`` (x of the inner faces of the two walls), ``floor``
                         (z of the floor surface), ``dt`` (time between two frames [s]) and
                         ``gravity`` (``[gx, gz]`` [m/s^2])
    ``scene_sha256``     sha256 of the canonical JSON of ``scene`` (:func:`scene_sha256`)
    ``episodes``, ``steps``  number of episodes ``E`` and frames per episode minus one ``T``
    ``num_particles``    ``N``; ``num_segments``: ``K``
    ``seed``             generation seed (``null`` for data brought from elsewhere)
    ``generator``        free-form description of how designs and layouts were sampled
    ``versions``         ``{"gndesign", "numpy"}`` used to write the data
    ``stats_sha256``     sha256 of ``stats.json``
    ``shards``           list, in episode order, of ``{"file", "episodes": [start, stop], "sha256"}``
    No timestamps, host names or absolute paths: the same inputs give byte-identical files.

``DIR/stats.json``  statistics over all particles, frames and episodes, in *frame units* (metres
    per frame, the units the learned simulator works in), each
    ``{"mean": [2], "std": [2], "min": [2], "max": [2], "count": int}``:
    ``position`` (``x[t]``), ``velocity`` (``x[t+1] - x[t]``) and ``acceleration``
    (``x[t+1] - 2 x[t] + x[t-1]``).

``DIR/shard-00000.npz``, ... uncompressed ``.npz`` (no pickles), for the ``e`` episodes of the
    shard, float64 except ``episode``:
    ``positions [e, T+1, N, 2]``  particle centres ``(x, z)`` at frames ``0..T`` (frame 0 at rest)
    ``obstacle [e, K+1, 2]``       the obstacle polyline's vertices ``(x, z)`` (anchor first)
    ``design [e, K]``              the design (joint angles) the obstacle comes from
    ``episode [e]`` int64          global episode indices
    All values are finite.

Write with :func:`write_particle_dataset`; load with :meth:`ParticleDataset.load`. The directory layout,
shard files and their validation are those of every format (:mod:`gndesign.datasets.base`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gndesign.datasets.base import (
    META_FILE,
    DatasetFormat,
    RunningStats,
    ShardedDataset,
    meta_field,
    one_line,
    staging_directory,
    write_episode_shards,
    write_stats,
)
from gndesign.datasets.values import check_values
from gndesign.errors import DatasetError
from gndesign.io import atomic_write_json, sha256_bytes

SCENE_KEYS = ("particle_radius", "obstacle_radius", "x_min", "x_max", "floor", "dt", "gravity")
# Further physical keys a scene may have (MuJoCo's contact and integration settings): compared too,
# as is every key naming one of PHYSICS_WORDS (e.g. ``obstacle_friction``).
PHYSICS_KEYS = ("timestep", "substeps", "friction", "solref", "solimp", "density", "restitution", "damping")
PHYSICS_WORDS = ("friction", "restitution", "damping", "stiffness", "solref", "solimp", "density", "gravity", "radius")
FORMAT = DatasetFormat(
    name="gndesign-particles",
    schema_version=1,
    description="particle dataset",
    required_meta_keys=("format", "schema_version", "scene", "scene_sha256", "episodes", "steps", "num_particles",
                        "num_segments", "seed", "generator", "versions", "stats_sha256", "shards"),
    shard_keys=("positions", "obstacle", "design", "episode"),
    stat_features=("position", "velocity", "acceleration"),
    regenerate="regenerate the dataset (gndesign generate obstacle-scene)",
)


# ----------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------


def _canonical(scene: Mapping[str, Any]) -> Any:
    """``scene`` as plain JSON types (numpy scalars and arrays, tuples become numbers and lists)."""
    try:
        return json.loads(json.dumps(scene, sort_keys=True, default=_json_default))
    except (TypeError, ValueError) as e:
        raise DatasetError(f"the scene must be JSON-serializable ({one_line(e)})") from None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON-serializable")


def validate_scene(scene: Mapping[str, Any], where: str = "scene", error: type[Exception] = DatasetError
                   ) -> dict[str, Any]:
    """Check the scene's physical keys (:data:`SCENE_KEYS`); return it as plain JSON types."""
    if not isinstance(scene, Mapping):
        raise error(f"{where} must be a mapping with keys {list(SCENE_KEYS)}, got {type(scene).__name__}")
    out = _canonical(scene)
    missing = [k for k in SCENE_KEYS if k not in out]
    if missing:
        raise error(f"{where} lacks keys {missing} (needs {list(SCENE_KEYS)})")

    def number(key: str) -> float:
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise error(f"{where}: {key} must be a finite number, got {v!r}")
        return float(v)

    for key in ("particle_radius", "obstacle_radius", "dt"):
        if number(key) <= 0:
            raise error(f"{where}: {key} must be positive, got {out[key]!r}")
    number("floor")
    if number("x_min") >= number("x_max"):
        raise error(f"{where}: x_min ({out['x_min']}) must be below x_max ({out['x_max']})")
    g = out["gravity"]
    if (not isinstance(g, list) or len(g) != 2
            or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in g)):
        raise error(f"{where}: gravity must be [gx, gz] (two finite numbers), got {g!r}")
    return out


def scene_sha256(scene: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no whitespace) of ``scene``."""
    text = json.dumps(_canonical(scene), sort_keys=True, separators=(",", ":"))
    return sha256_bytes(text.encode("utf-8"))


def _same_value(a: Any, b: Any, rtol: float = 1e-9) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_value(x, y, rtol) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k], rtol) for k in a)
    return a == b


def scene_mismatch(trained: Mapping[str, Any], other: Mapping[str, Any],
                   keys: Iterable[str] | None = None) -> list[str]:
    """The keys on which scene ``other`` differs from ``trained`` (numbers compared to 1e-9
    relative), as ``"key: trained vs other"`` strings; empty when they agree.

    ``keys``: the keys to compare. By default the physical ones: :data:`SCENE_KEYS`, and those of
    :data:`PHYSICS_KEYS` or naming a word of :data:`PHYSICS_WORDS` that either scene has. Layout
    keys (number of particles, source region, obstacle segments and anchor, episode length) are not
    compared: a learned simulator is local and may be used zero-shot on other layouts of the same
    physics.
    """
    a, b = _canonical(trained), _canonical(other)
    if keys is None:
        extra = sorted(k for k in {*a, *b} - set(SCENE_KEYS)
                       if k in PHYSICS_KEYS or any(w in k for w in PHYSICS_WORDS))
        names = [*SCENE_KEYS, *extra]
    else:
        names = list(keys)
    out = []
    for k in names:
        if k not in a and k not in b:
            continue
        if k not in b or k not in a:
            out.append(f"{k}: {a.get(k, '<missing>')!r} vs {b.get(k, '<missing>')!r}")
        elif not _same_value(a[k], b[k]):
            out.append(f"{k}: {a[k]!r} vs {b[k]!r}")
    return out


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------


def particle_stats(positions: np.ndarray) -> dict[str, RunningStats]:
    """Statistics (frame units) of ``positions [e, T+1, N, 2]``: positions, finite-difference
    velocities ``x[t+1] - x[t]`` and accelerations ``x[t+1] - 2 x[t] + x[t-1]``."""
    vel = positions[:, 1:] - positions[:, :-1]
    acc = vel[:, 1:] - vel[:, :-1]
    feats = {"position": positions, "velocity": vel, "acceleration": acc}
    return {k: RunningStats.from_samples(v.reshape(-1, 2)) for k, v in feats.items()}


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    import gndesign

    return {"gndesign": gndesign.__version__, "numpy": np.__version__}


def write_particle_dataset(
    path: str | os.PathLike,
    positions: np.ndarray,
    obstacle: np.ndarray,
    design: np.ndarray,
    scene: Mapping[str, Any],
    seed: int | None,
    overwrite: bool = False,
    *,
    generator: Mapping[str, Any] | None = None,
    shard_size: int = 64,
) -> Path:
    """Write a particle dataset (see the module docstring) to directory ``path``, atomically.

    Args:
        positions: ``[E, T+1, N, 2]`` particle centres ``(x, z)`` [m] at every frame.
        obstacle: ``[E, K+1, 2]`` the obstacle polyline's vertices ``(x, z)`` [m].
        design: ``[E, K]`` the designs (joint angles) the obstacles come from.
        scene: the scene configuration (JSON-serializable; see :data:`SCENE_KEYS`).
        seed: the generation seed (None for data from elsewhere).
        overwrite: replace an existing dataset at ``path`` (never a directory of other files).
        generator: free-form description of the sampling, stored in ``meta.json``.
        shard_size: episodes per shard.

    Raises:
        DatasetError: bad shapes, non-finite values, an incomplete scene or an occupied ``path``.
    """
    scene = validate_scene(scene)
    positions = np.asarray(positions, dtype=np.float64)
    obstacle = np.asarray(obstacle, dtype=np.float64)
    design = np.asarray(design, dtype=np.float64)
    if positions.ndim != 4 or positions.shape[-1] != 2:
        raise DatasetError(f"positions must be [episodes, T+1, particles, 2], got shape {positions.shape}")
    n_ep, t1, n_part, _ = positions.shape
    if n_ep < 1 or t1 < 3 or n_part < 1:
        raise DatasetError(f"positions {positions.shape}: need at least 1 episode, 3 frames and 1 particle")
    if design.ndim != 2 or design.shape[0] != n_ep or design.shape[1] < 1:
        raise DatasetError(f"design must be [{n_ep}, K] with K >= 1, got shape {design.shape}")
    k = design.shape[1]
    if obstacle.shape != (n_ep, k + 1, 2):
        raise DatasetError(f"obstacle must be [{n_ep}, {k + 1}, 2] (K+1 vertices for K={k} segments), "
                           f"got shape {obstacle.shape}")
    for name, arr in (("positions", positions), ("obstacle", obstacle), ("design", design)):
        check_values(name, arr, DatasetError)
    with staging_directory(path, overwrite) as tmp:
        arrays = {"positions": positions, "obstacle": obstacle, "design": design}
        shards, stats = write_episode_shards(tmp, FORMAT, arrays, shard_size,
                                             lambda chunk: particle_stats(chunk["positions"]))
        stats_sha256 = write_stats(tmp, stats, FORMAT.stat_features)
        meta = {
            "format": FORMAT.name, "schema_version": FORMAT.schema_version, "scene": scene,
            "scene_sha256": scene_sha256(scene), "episodes": n_ep, "steps": t1 - 1, "num_particles": n_part,
            "num_segments": k, "seed": None if seed is None else int(seed), "generator": dict(generator or {}),
            "versions": _versions(), "stats_sha256": stats_sha256, "shards": shards,
        }
        atomic_write_json(tmp / META_FILE, _canonical(meta))
    return Path(path)


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


class ParticleDataset(ShardedDataset):
    """A loaded, validated particle dataset; all episodes in memory.

    Arrays: ``positions [E, T+1, N, 2]``, ``obstacle [E, K+1, 2]``, ``design [E, K]``;
    ``scene`` (dict), ``stats`` (``{feature: {"mean", "std", "min", "max": [2], "count"}}`` in
    frame units), ``meta`` (the ``meta.json`` object).
    """

    FORMAT = FORMAT

    def _adopt(self, arrays: dict[str, np.ndarray]) -> None:
        self.positions: np.ndarray = arrays["positions"]
        self.obstacle: np.ndarray = arrays["obstacle"]
        self.design: np.ndarray = arrays["design"]
        for name in ("positions", "obstacle", "design"):
            check_values(name, arrays[name], DatasetError, f"dataset {self.path}: ", FORMAT.regenerate)

    @classmethod
    def load(cls, path: str | os.PathLike, expected_scene: Mapping[str, Any] | None = None) -> ParticleDataset:
        """Load and validate the particle dataset in directory ``path``.

        ``expected_scene``: refuse a dataset whose scene differs (see :func:`scene_mismatch`).
        Every problem raises :class:`DatasetError` with a one-line message.
        """
        return cls._load(path, expected_scene)

    @classmethod
    def _check_meta(cls, meta_path: Path, meta: dict[str, Any]) -> None:
        validate_scene(meta["scene"], f"{meta_path}: scene")
        if scene_sha256(meta["scene"]) != meta["scene_sha256"]:
            raise DatasetError(f"{meta_path}: scene does not match scene_sha256 (edited by hand?): "
                               f"{FORMAT.regenerate}")
        for key in ("episodes", "steps", "num_particles", "num_segments"):
            if not isinstance(meta[key], int) or isinstance(meta[key], bool) or meta[key] < 1:
                raise DatasetError(f"{meta_path}: {key} must be a positive integer, got {meta[key]!r}")
        if meta["steps"] < 2:
            raise DatasetError(f"{meta_path}: episodes need at least 2 steps (3 frames), got {meta['steps']}")

    @classmethod
    def _check_expected(cls, path: Path, meta: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
        diff = scene_mismatch(meta["scene"], expected)
        if diff:
            raise DatasetError(f"dataset {path} was generated for another scene ({'; '.join(diff)})")

    @classmethod
    def _stat_dims(cls, meta: Mapping[str, Any]) -> dict[str, int]:
        return dict.fromkeys(FORMAT.stat_features, 2)

    @classmethod
    def _shard_shapes(cls, meta: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        t1, n, k = meta["steps"] + 1, meta["num_particles"], meta["num_segments"]
        return {"positions": (t1, n, 2), "obstacle": (k + 1, 2), "design": (k,), "episode": ()}

    # -- accessors ----------------------------------------------------------------------------
    scene = meta_field("scene")
    num_particles = meta_field("num_particles", int)
    num_segments = meta_field("num_segments", int)

    @property
    def dt(self) -> float:
        return float(self.meta["scene"]["dt"])

    def episode(self, i: int) -> dict[str, np.ndarray]:
        """One episode: ``positions [T+1, N, 2]``, ``obstacle [K+1, 2]``, ``design [K]``."""
        self._check_index(i)
        return {"positions": self.positions[i], "obstacle": self.obstacle[i], "design": self.design[i]}
