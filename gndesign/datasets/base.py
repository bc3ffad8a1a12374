"""The sharded-dataset base that every on-disk dataset format declares itself against.

A dataset is a directory holding

* ``meta.json``: a JSON object with at least ``format`` (the format's name), ``schema_version``,
  ``episodes``, ``steps``, ``stats_sha256`` and ``shards``, the list, in episode order, of
  ``{"file", "episodes": [start, stop], "sha256"}`` (shards tile episodes ``0..N`` without gaps).
  It is written last: its presence marks a complete dataset.
* ``stats.json``: ``{feature: {"mean", "std", "min", "max": [D], "count": int}}`` over all episodes.
* ``shard-00000.npz``, ``shard-00001.npz``, ...: uncompressed ``.npz`` (no pickles) of the
  shard's episodes, every array float64 with a leading episode axis, plus ``episode [e]`` int64
  (the global episode indices), all values finite.

A format (:class:`DatasetFormat`) names its meta keys, shard arrays and statistics; a loaded dataset
class derives from :class:`ShardedDataset` and adds the checks and accessors of its format. Writers
stage everything in a temporary directory renamed onto the output at the end
(:func:`staging_directory`), so an interrupted write leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from gndesign.datasets.staging import locked_tempdir, remove_stale_staging
from gndesign.errors import DatasetError, GndesignError
from gndesign.io import atomic_write_json, atomic_write_npz, sha256_file
from gndesign.processes import sigterm_as_interrupt

META_FILE = "meta.json"
STATS_FILE = "stats.json"
SHARD_PATTERN = "shard-{:05d}.npz"


def one_line(text: object) -> str:
    """``text`` on one line (error messages quote exceptions this way)."""
    return " ".join(str(text).split())


@dataclass(frozen=True)
class DatasetFormat:
    """What a dataset format declares: its ``meta.json`` ``format`` name and ``schema_version``,
    a ``description`` for errors ("not a <description>"), the meta keys it requires, its shard
    arrays (``episode`` included, written in this order), its statistics features and how a user
    fixes a broken dataset (``regenerate``, the end of every error message)."""

    name: str
    schema_version: int
    description: str
    required_meta_keys: tuple[str, ...]
    shard_keys: tuple[str, ...]
    stat_features: tuple[str, ...]
    regenerate: str


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


def merge_stats(parts: Sequence[Mapping[str, RunningStats]]) -> dict[str, RunningStats]:
    """Merge per-shard statistics (each ``{feature: RunningStats}``) in the given (shard) order."""
    if not parts:
        raise ValueError("no statistics to merge")
    out = dict(parts[0])
    for part in parts[1:]:
        out = {k: out[k].merge(part[k]) for k in out}
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


def write_shard(directory: str | os.PathLike, index: int, arrays: Mapping[str, np.ndarray],
                keys: Sequence[str]) -> dict[str, Any]:
    """Write shard ``index`` (``arrays`` holding every name of ``keys``: float64 arrays and the
    ``episode`` indices, int64) atomically; return its ``meta.json`` entry
    ``{"file", "episodes": [start, stop], "sha256"}``."""
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise GndesignError(f"shard {index} lacks arrays {missing}")
    # The array order inside the file is part of its bytes: the keys' order, episode last.
    out = {k: np.ascontiguousarray(arrays[k], dtype=np.float64) for k in keys if k != "episode"}
    out["episode"] = np.ascontiguousarray(arrays["episode"], dtype=np.int64)
    episodes = out["episode"]
    if episodes.ndim != 1 or len(episodes) == 0 or np.any(np.diff(episodes) != 1):
        raise GndesignError(f"shard {index}: episode indices must be consecutive, got {episodes}")
    name = shard_filename(index)
    sha = atomic_write_npz(Path(directory) / name, out)
    return {"file": name, "episodes": [int(episodes[0]), int(episodes[-1]) + 1], "sha256": sha}


def write_episode_shards(directory: str | os.PathLike, fmt: DatasetFormat, arrays: Mapping[str, np.ndarray],
                         shard_size: int, stats: Callable[[dict[str, np.ndarray]], dict[str, RunningStats]]
                         ) -> tuple[list[dict[str, Any]], dict[str, RunningStats]]:
    """Write per-episode ``arrays`` (each ``[episodes, ...]``) as shards of ``fmt`` of at most
    ``shard_size`` episodes (the ``episode`` indices added); return the shards' ``meta.json``
    entries and the merged ``stats`` of every shard's arrays."""
    n = len(next(iter(arrays.values())))
    shards, parts = [], []
    for index, (start, stop) in enumerate(shard_ranges(n, shard_size)):
        chunk = {k: v[start:stop] for k, v in arrays.items()}
        chunk["episode"] = np.arange(start, stop, dtype=np.int64)
        shards.append(write_shard(directory, index, chunk, fmt.shard_keys))
        parts.append(stats(chunk))
    return shards, merge_stats(parts)


def write_stats(directory: str | os.PathLike, stats: Mapping[str, RunningStats], features: Sequence[str]) -> str:
    """Write ``stats.json`` (the ``features`` of ``stats``, in that order); return its sha256."""
    path = Path(directory) / STATS_FILE
    atomic_write_json(path, {k: stats[k].to_json() for k in features})
    return sha256_file(path)


@contextlib.contextmanager
def staging_directory(out_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory next to ``out_dir``; when the block succeeds, rename it
    onto ``out_dir``. On any exception (KeyboardInterrupt included, and SIGTERM, handled like it
    meanwhile) the temporary directory is removed, so a failed write leaves nothing behind; what a
    killed write (SIGKILL) left is removed when the same output is written next
    (:func:`gndesign.datasets.staging.remove_stale_staging`)."""
    out_dir = Path(out_dir)
    remove_stale_staging(out_dir)
    check_out_dir(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with sigterm_as_interrupt(), locked_tempdir(out_dir.parent, f".{out_dir.name}.", ".tmp") as tmp:
        try:
            # mkdtemp makes a private (0700) directory; a dataset is meant to be shared.
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o777 & ~umask)
            yield tmp
            check_out_dir(out_dir, overwrite)
            _replace_dir(tmp, out_dir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def _replace_dir(new: Path, out_dir: Path) -> None:
    """Rename directory ``new`` onto ``out_dir``; a previous non-empty ``out_dir`` is moved aside
    first (into a locked ``.old`` directory, so a rerun can restore it if this process dies in
    between) and deleted after."""
    if not (out_dir.exists() and any(out_dir.iterdir())):
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(new, out_dir)
        return
    with locked_tempdir(out_dir.parent, f".{out_dir.name}.", ".old") as old:
        os.replace(out_dir, old / "data")
        try:
            os.replace(new, out_dir)
        except BaseException:  # put the previous dataset back
            os.replace(old / "data", out_dir)
            old.rmdir()
            raise
        shutil.rmtree(old, ignore_errors=True)


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


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def read_format(path: str | os.PathLike) -> str | None:
    """The ``format`` named by ``path/meta.json``, or None when there is no readable JSON object
    there (not a dataset, or an interrupted generation)."""
    try:
        meta = json.loads((Path(path) / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta.get("format") if isinstance(meta, dict) else None


def read_meta(path: Path, fmt: DatasetFormat) -> dict[str, Any]:
    """Read ``path/meta.json`` and check what every format shares: it exists and parses, its
    ``format`` and ``schema_version`` are ``fmt``'s, it has ``fmt``'s required keys, and its shard
    list tiles ``0..episodes``. Errors end with ``fmt.regenerate``."""
    meta_path = path / META_FILE
    regenerate = fmt.regenerate
    if not meta_path.is_file():
        raise DatasetError(f"{path} is not a gndesign dataset or generation was interrupted (no {META_FILE}): "
                           f"{regenerate}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{meta_path} cannot be read ({one_line(e)}): {regenerate}") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt.name:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise DatasetError(f"{meta_path} is not a {fmt.description} (format {found!r}, expected {fmt.name!r})")
    version = meta.get("schema_version")
    if version != fmt.schema_version:
        raise DatasetError(f"{meta_path} has schema_version {version!r} but this gndesign reads version "
                           f"{fmt.schema_version}: {regenerate} with this gndesign")
    missing = [k for k in fmt.required_meta_keys if k not in meta]
    if missing:
        raise DatasetError(f"{meta_path} lacks required keys {missing}: {regenerate}")
    return meta


def check_shard_list(meta_path: Path, meta: Mapping[str, Any], regenerate: str) -> None:
    """The ``shards`` entries of ``meta`` are well formed and tile episodes ``0..episodes``."""
    shards = meta["shards"]
    expected_start = 0
    for entry in shards if isinstance(shards, list) and shards else [None]:
        ok = (isinstance(entry, dict) and isinstance(entry.get("file"), str)
              and Path(entry["file"]).name == entry["file"] and isinstance(entry.get("sha256"), str)
              and isinstance(entry.get("episodes"), list) and len(entry["episodes"]) == 2
              and entry["episodes"][0] == expected_start and entry["episodes"][1] > expected_start)
        if not ok:
            raise DatasetError(f"{meta_path}: malformed shard list entry {entry!r}: {regenerate}")
        expected_start = entry["episodes"][1]
    if expected_start != meta["episodes"]:
        raise DatasetError(f"{meta_path}: shards cover {expected_start} episodes, meta says "
                           f"{meta['episodes']}: {regenerate}")


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


def _load_shard(path: Path, entry: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]],
                regenerate: str) -> dict[str, np.ndarray]:
    """One shard's arrays, checked against its sha256 and the per-episode ``shapes``."""
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
        raise DatasetError(f"shard {file} cannot be read ({one_line(e)}): {regenerate}") from None
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
    return arrays


def load_shards(path: Path, shards: Sequence[Mapping[str, Any]], shapes: Mapping[str, tuple[int, ...]],
                regenerate: str) -> dict[str, np.ndarray]:
    """Read and validate the shards listed in a dataset's meta (``{"file", "episodes", "sha256"}``).

    Every shard must exist, match its sha256, hold exactly the arrays of ``shapes`` (per-episode
    shapes; ``episode`` int64 with the listed indices, the rest finite float64). Returns the
    arrays concatenated over shards (without ``episode``). Errors name the shard and end with
    ``regenerate`` (how to fix it).
    """
    parts = [_load_shard(path, entry, shapes, regenerate) for entry in shards]
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in shapes if k != "episode"}


def split_episodes(n: int, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic ``(train, validation)`` indices (sorted int64 arrays) of ``n`` episodes: a
    permutation seeded by ``(seed, n)``; at least one episode on each side when both can have one."""
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"validation fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n > 1:
        n_val = min(max(n_val, 1), n - 1)
    perm = np.random.default_rng(np.random.SeedSequence([seed, n])).permutation(n)
    return np.sort(perm[n_val:]).astype(np.int64), np.sort(perm[:n_val]).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Loaded datasets
# ----------------------------------------------------------------------------------------------


def meta_field(key: str, cast: Callable[[Any], Any] | None = None, doc: str | None = None) -> property:
    """A read-only property: ``meta[key]`` of a loaded dataset (passed through ``cast``)."""
    if cast is None:
        return property(lambda self: self.meta[key], doc=doc)
    return property(lambda self: cast(self.meta[key]), doc=doc)


class ShardedDataset:
    """A loaded, validated dataset of one format, all episodes in memory: ``path``, ``meta`` (the
    ``meta.json`` object), ``stats`` (``{feature: {"mean", "std", "min", "max", "count"}}``).

    A format's class sets :attr:`FORMAT` and implements :meth:`_check_meta`,
    :meth:`_check_expected`, :meth:`_stat_dims`, :meth:`_shard_shapes` and :meth:`_adopt` (keep
    the shard arrays, concatenated over shards).
    """

    FORMAT: ClassVar[DatasetFormat]

    def __init__(self, path: Path, meta: dict[str, Any], stats: dict[str, dict[str, np.ndarray]],
                 arrays: dict[str, np.ndarray]) -> None:
        self.path = path
        self.meta = meta
        self.stats = stats
        self._adopt(arrays)

    def _adopt(self, arrays: dict[str, np.ndarray]) -> None:
        """Keep the shard arrays ``{key: [N, ...]}`` (without ``episode``) as attributes."""
        raise NotImplementedError

    @classmethod
    def _load(cls, path: str | os.PathLike, expected: Any = None):
        """Load and validate the dataset in directory ``path``; ``expected`` (None: anything) is
        checked by :meth:`_check_expected`. Every problem raises :class:`DatasetError`."""
        path = Path(path)
        regenerate = cls.FORMAT.regenerate
        if not path.exists():
            raise DatasetError(f"dataset directory {path} does not exist: {regenerate} first")
        if not path.is_dir():
            raise DatasetError(f"dataset path {path} is not a directory: pass the dataset directory")
        meta = read_meta(path, cls.FORMAT)
        cls._check_meta(path / META_FILE, meta)
        check_shard_list(path / META_FILE, meta, regenerate)
        if expected is not None:
            cls._check_expected(path, meta, expected)
        stats = load_stats(path, meta["stats_sha256"], cls._stat_dims(meta), regenerate)
        arrays = load_shards(path, meta["shards"], cls._shard_shapes(meta), regenerate)
        return cls(path, meta, stats, arrays)

    @classmethod
    def _check_meta(cls, meta_path: Path, meta: dict[str, Any]) -> None:
        """Format-specific checks of ``meta`` (its required keys are present)."""
        raise NotImplementedError

    @classmethod
    def _check_expected(cls, path: Path, meta: Mapping[str, Any], expected: Any) -> None:
        raise NotImplementedError

    @classmethod
    def _stat_dims(cls, meta: Mapping[str, Any]) -> dict[str, int]:
        """``{feature: dimension}`` of ``stats.json``."""
        raise NotImplementedError

    @classmethod
    def _shard_shapes(cls, meta: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        """Per-episode shapes of the shard arrays (``episode``: ``()``)."""
        raise NotImplementedError

    num_episodes = meta_field("episodes", int)
    steps = meta_field("steps", int, "``T``: the steps (frames minus one) of every episode.")

    def __len__(self) -> int:
        return self.num_episodes

    def _check_index(self, i: int) -> None:
        if not -self.num_episodes <= i < self.num_episodes:
            raise IndexError(f"episode {i} out of range for {self.num_episodes} episodes")

    def split(self, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Deterministic ``(train, validation)`` episode indices (sorted int64 arrays)."""
        return split_episodes(self.num_episodes, val_fraction, seed)
