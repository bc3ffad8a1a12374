"""N-body datasets: particles under a pairwise force law (:mod:`gndesign.nbody_laws`), with their
masses, charges and true accelerations.

Format (schema version 1)
-------------------------
``DIR/meta.json`` (written last)
    ``format`` ``"gndesign-nbody"``, ``schema_version`` ``1``
    ``system``      ``{"name", "law", "dim", "num_particles", "dt", "substeps", "integrator",
                    "damping", ...sampling ranges}``: the physics the data holds
    ``episodes``, ``steps``  ``E`` and frames per episode minus one ``T``
    ``num_particles``, ``dim``  ``N`` and ``D`` (2 or 3)
    ``seed``, ``generator``, ``versions``, ``stats_sha256``, ``shards`` (as every format)
``DIR/stats.json``  ``position``, ``velocity``, ``acceleration`` statistics (``[D]`` each, SI units)
``DIR/shard-00000.npz``, ... float64 except ``episode``:
    ``positions, velocities, accelerations [e, T+1, N, D]`` (the true accelerations ``sum_j F_ij / m_i``
    at every frame), ``masses, charges [e, N]``, ``episode [e]`` int64.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
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
from gndesign.datasets.values import check_values
from gndesign.errors import DatasetError
from gndesign.io import atomic_write_json
from gndesign.nbody_laws import LAWS

FORMAT = DatasetFormat(
    name="gndesign-nbody",
    schema_version=1,
    description="N-body dataset",
    required_meta_keys=("format", "schema_version", "system", "episodes", "steps", "num_particles", "dim", "seed",
                        "generator", "versions", "stats_sha256", "shards"),
    shard_keys=("positions", "velocities", "accelerations", "masses", "charges", "episode"),
    stat_features=("position", "velocity", "acceleration"),
    regenerate="regenerate the dataset (gndesign generate nbody-LAW-Dd)",
)
FRAME_KEYS = ("positions", "velocities", "accelerations")


def nbody_stats(chunk: Mapping[str, np.ndarray]) -> dict[str, RunningStats]:
    d = chunk["positions"].shape[-1]
    return {f: RunningStats.from_samples(chunk[k].reshape(-1, d))
            for f, k in zip(FORMAT.stat_features, FRAME_KEYS, strict=True)}


def write_nbody_dataset(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], system: Mapping[str, Any],
                        seed: int | None, generator: Mapping[str, Any], overwrite: bool = False,
                        shard_size: int = 32) -> Path:
    """Write an N-body dataset (module docstring) to ``path`` atomically from ``arrays`` (the shard
    keys but ``episode``, each ``[E, ...]``) and the ``system`` description."""
    law, dim = system.get("law"), system.get("dim")
    if law not in LAWS or dim not in (2, 3):
        raise DatasetError(f"N-body system must name a law of {LAWS} and dim 2 or 3, got {law!r}, {dim!r}")
    pos = np.asarray(arrays["positions"], dtype=np.float64)
    if pos.ndim != 4 or pos.shape[-1] != dim or pos.shape[1] < 2:
        raise DatasetError(f"positions must be [episodes, T+1 >= 2, N, {dim}], got {pos.shape}")
    e, _, n, _ = pos.shape
    out = {}
    for key in FORMAT.shard_keys[:-1]:
        arr = np.asarray(arrays[key], dtype=np.float64)
        want = pos.shape if key in FRAME_KEYS else (e, n)
        if arr.shape != want:
            raise DatasetError(f"{key} must have shape {want}, got {arr.shape}")
        check_values(key, arr, DatasetError)
        out[key] = arr
    if np.any(out["masses"] <= 0):
        raise DatasetError("masses must be positive")
    import gndesign

    with staging_directory(path, overwrite) as tmp:
        shards, stats = write_episode_shards(tmp, FORMAT, out, shard_size, nbody_stats)
        meta = {"format": FORMAT.name, "schema_version": FORMAT.schema_version, "system": dict(system),
                "episodes": e, "steps": pos.shape[1] - 1, "num_particles": n, "dim": dim,
                "seed": None if seed is None else int(seed), "generator": dict(generator),
                "versions": {"gndesign": gndesign.__version__, "numpy": np.__version__},
                "stats_sha256": write_stats(tmp, stats, FORMAT.stat_features), "shards": shards}
        atomic_write_json(tmp / META_FILE, meta)
    return Path(path)


def system_mismatch(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The physical keys (law, dimension, step, damping) on which two N-body systems differ."""
    return [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in ("law", "dim", "dt", "damping") if a.get(k) != b.get(k)]


class NBodyDataset(ShardedDataset):
    """A loaded, validated N-body dataset: ``positions, velocities, accelerations [E, T+1, N, D]``,
    ``masses, charges [E, N]``, ``system`` (dict), ``stats``, ``meta``."""

    FORMAT = FORMAT

    def _adopt(self, arrays: dict[str, np.ndarray]) -> None:
        for key in FORMAT.shard_keys[:-1]:
            setattr(self, key, arrays[key])

    @classmethod
    def load(cls, path: str | os.PathLike, expected_system: Mapping[str, Any] | None = None) -> NBodyDataset:
        """Load and validate; ``expected_system``: refuse data of another law, dimension or step."""
        return cls._load(path, expected_system)

    @classmethod
    def _check_meta(cls, meta_path: Path, meta: dict[str, Any]) -> None:
        system = meta["system"]
        if not isinstance(system, dict) or system.get("law") not in LAWS or meta["dim"] not in (2, 3):
            raise DatasetError(f"{meta_path}: system must name a law of {LAWS} and dim 2 or 3: {FORMAT.regenerate}")
        for key in ("episodes", "steps", "num_particles"):
            if not isinstance(meta[key], int) or isinstance(meta[key], bool) or meta[key] < 1:
                raise DatasetError(f"{meta_path}: {key} must be a positive integer, got {meta[key]!r}")

    @classmethod
    def _check_expected(cls, path: Path, meta: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
        diff = system_mismatch(expected, meta["system"])
        if diff:
            raise DatasetError(f"dataset {path} holds another N-body system ({'; '.join(diff)})")

    @classmethod
    def _stat_dims(cls, meta: Mapping[str, Any]) -> dict[str, int]:
        return dict.fromkeys(FORMAT.stat_features, meta["dim"])

    @classmethod
    def _shard_shapes(cls, meta: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        t1, n, d = meta["steps"] + 1, meta["num_particles"], meta["dim"]
        return {"positions": (t1, n, d), "velocities": (t1, n, d), "accelerations": (t1, n, d),
                "masses": (n,), "charges": (n,), "episode": ()}

    system = meta_field("system")
    num_particles = meta_field("num_particles", int)
    dim = meta_field("dim", int)

    @property
    def law(self) -> str:
        return str(self.system["law"])
