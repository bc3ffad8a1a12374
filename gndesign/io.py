"""Atomic, deterministic file writing and content hashing.

Files are written to a temporary file in the destination directory and renamed into place, so an
interrupted write never leaves a partial file under the final name. ``.npz`` archives are written
with fixed zip timestamps so the same arrays always give the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from gndesign.errors import GndesignError

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates private (0600) files; give the result the usual umask-based mode.
        umask = os.umask(0)
        os.umask(umask)
        tmp_path.chmod(0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Serialize arrays as an uncompressed ``.npz`` whose bytes depend only on the arrays."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def atomic_write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> str:
    """Write arrays atomically as a deterministic ``.npz``; return the file's sha256."""
    data = npz_bytes(arrays)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def machine_info(**extra: Any) -> dict[str, Any]:
    """What a benchmark result needs to say about the machine: cores, CPU model, torch and Python
    versions (plus ``extra``, e.g. threads per job)."""
    import platform

    import torch

    cpu = "unknown"
    with contextlib.suppress(OSError, StopIteration):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    return {"cores": os.cpu_count(), "cpu": cpu, "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), **extra}


# ------------------------------------------------------------------------------------ output paths
#: What a directory is, told by the files in it: a dataset (``meta.json``) or a training run
#: (``checkpoints/``, or ``config.yaml`` with ``metrics.csv``).
def artifact_kind(path: str | os.PathLike) -> str | None:
    """``dataset``, ``run directory`` or ``checkpoint`` when ``path`` is one (else None)."""
    p = Path(path)
    if p.is_dir():
        if (p / "meta.json").is_file():
            return "dataset"
        if (p / "checkpoints").is_dir() or ((p / "config.yaml").is_file() and (p / "metrics.csv").is_file()):
            return "run directory"
    elif p.is_file() and p.suffix == ".pt":
        return "checkpoint"
    return None


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(path: str | os.PathLike | None, kind: str = "file", inputs=(), overwrite: bool | None = False,
                 own: str | None = None, what: str = "--out") -> Path | None:
    """Check that a command may write ``path`` before it computes anything; raise a one-line
    :class:`GndesignError` saying why not and what to do. Returns the path (None for None).

    ``kind``: ``file`` (written atomically; its directory must exist) or ``dir`` (created, with its
    parents, if missing). Refused: a path whose nearest existing ancestor is not a writable directory; a directory where
    a file is needed or the other way round; a device, FIFO or socket; any of ``inputs`` (files or
    directories the command reads) or a path inside an input dataset or run directory; and, unless ``overwrite``,
    a checkpoint, or a path inside (or, for ``dir``, being) a dataset or a training run directory.
    ``own``: the artifact kind the command itself makes at a ``dir`` path (``dataset`` for
    ``generate``, ``run directory`` for ``train``): an existing one there is left to the command's
    own checks. ``what`` names the option in messages; ``overwrite=None``: the command has no
    ``--overwrite`` option (its messages do not offer one).
    """
    if path is None:
        return None
    p = Path(path)
    label = f"{what} {p}"
    anyway = "" if overwrite is None else " (or pass --overwrite to write there anyway)"
    if p.exists() or p.is_symlink():
        if not (p.is_file() or p.is_dir()):
            hint = "a file path (leave the option out to write nothing)" if kind == "file" else "a directory path"
            raise GndesignError(f"{label} is not a regular file or directory (a device, FIFO, socket or broken link): "
                                f"give {hint}")
        if kind == "file" and p.is_dir():
            raise GndesignError(f"{label} is a directory: give a file path, e.g. {p / ('result' + _suffix(what))}")
        if kind == "dir" and not p.is_dir():
            raise GndesignError(f"{label} exists and is not a directory: choose another path")
    full = p.resolve()
    for src in inputs:
        if src is None or not Path(src).exists():
            continue
        s = Path(src)
        same = full == s.resolve() or _same(p, s)
        if same or (artifact_kind(s) and s.resolve() in full.parents):
            raise GndesignError(f"{label} is {'' if same else 'inside '}an input of this command ({s}): writing "
                                "there would destroy what it reads; choose another path")
    chain = [full, *full.parents] if kind == "dir" else list(full.parents)
    for a in chain:
        found = artifact_kind(a)
        if not found or overwrite or (a == full and found == own):
            continue
        if a == full:
            raise GndesignError(f"{label} is a {found} that this command does not make: choose another path{anyway}")
        raise GndesignError(f"{label} is inside the {found} {a}: writing there would change it; choose another "
                            f"path{anyway}")
    if kind == "file" and artifact_kind(p) == "checkpoint" and not overwrite:
        raise GndesignError(f"{label} is a checkpoint: choose another path{anyway}")
    if kind == "file" and not full.parent.exists():
        raise GndesignError(f"{label}: the directory {p.parent} does not exist; create it first or choose another path")
    existing = next((a for a in chain if a.exists() or a.is_symlink()), None)
    if existing is None or not existing.is_dir():
        bad = existing if existing is not None else full.parent
        raise GndesignError(f"{label}: {bad} is not a directory, so nothing can be created under it; choose another "
                            "path")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        reason = e.strerror or e
        raise GndesignError(f"{label}: cannot create files in {existing} ({reason}); choose a writable path") from None
    return p


def check_outputs(paths: Mapping[str, str | os.PathLike | None], inputs=(), overwrite: bool | None = False,
                  kind: str = "file", own: str | None = None) -> None:
    """:func:`check_output` for each of a command's outputs, ``{option: path}`` (e.g. ``--out``,
    ``--plot``, ``--video``; None: not written); two options naming one path are refused too."""
    seen: dict[Path, str] = {}
    for what, path in paths.items():
        if path is None:
            continue
        key = Path(path).resolve()
        if key in seen:
            raise GndesignError(f"{seen[key]} and {what} both name {path}: give each its own file")
        seen[key] = what
        check_output(path, kind, inputs=inputs, overwrite=overwrite, own=own, what=what)


def _suffix(what: str) -> str:
    return {"--plot": ".png", "--video": ".gif"}.get(what, ".json")


# ------------------------------------------------------------------------------------ finiteness
def check_finite(value: Any, what: str, cause: str = "") -> None:
    """Raise a one-line :class:`GndesignError` if ``value`` (a tensor, array, number or a nested
    dict/list/tuple of them) holds NaN or infinity: ``what`` names it, ``cause`` says the likely
    reason and what to do. A non-finite rollout, plan or design is never a result."""
    if not _all_finite(value):
        raise GndesignError(f"{what} is not finite (NaN or infinity){': ' + cause if cause else ''}")


def _all_finite(value: Any) -> bool:
    if isinstance(value, Mapping):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_all_finite(v) for v in value)
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    if hasattr(value, "detach"):  # a torch tensor
        import torch

        return bool(torch.isfinite(value.detach()).all())
    if isinstance(value, np.ndarray) and value.dtype.kind in "fc":
        return bool(np.isfinite(value).all())
    return True


# ------------------------------------------------------------------------------------ YAML files
def read_yaml(path: str | os.PathLike, what: str, error: type[GndesignError] = GndesignError) -> Any:
    """What the JSON/YAML file ``path`` holds (empty file: None), or a one-line ``error`` naming
    ``what`` (e.g. ``scene file``) for a missing file, a directory, a binary file or a YAML syntax
    error (with its line and column)."""
    p = Path(path)
    if p.is_dir():
        raise error(f"{what} {p} is a directory: give a YAML file")
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} {p} does not exist") from None
    except UnicodeDecodeError:
        raise error(f"{what} {p} is not a text file (YAML/JSON expected)") from None
    except OSError as e:
        raise error(f"{what} {p} cannot be read: {e.strerror or e}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise error(f"{what} {p} is not valid YAML{where}: {problem}") from None


def read_yaml_mapping(path: str | os.PathLike, what: str, error: type[GndesignError] = GndesignError) -> dict:
    """The mapping in the JSON/YAML file ``path`` (empty file: ``{}``); see :func:`read_yaml`, and a
    file that does not hold a mapping is an ``error`` too."""
    loaded = read_yaml(path, what, error)
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise error(f"{what} {path} must hold a mapping of keys to values, got a {type(loaded).__name__}")
    return loaded
