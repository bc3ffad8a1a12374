"""Staging directories that a killed writer may leave behind, and how the next write finds them.

A dataset is written into ``.<name>.XXXXXXXX.tmp`` next to its output ``<name>`` and renamed onto
it at the end; replacing an existing dataset moves the old one into ``.<name>.XXXXXXXX.old`` for
the moment of the swap (see :func:`gndesign.datasets.base.staging_directory`). Python cleans both
up on errors, Ctrl-C and SIGTERM, but not when the process is killed outright (SIGKILL, a crash,
a power cut). The writer holds an exclusive ``flock`` on each such directory while it lives, so
the next write of the same output can tell a dead writer's leftovers (no lock) from a running
writer's directory (locked) and removes only the former (:func:`remove_stale_staging`), or puts
the previous dataset back if the writer died in the middle of the swap.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # no flock (Windows): no locks, so nothing is ever removed as stale
    fcntl = None

log = logging.getLogger(__name__)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@contextlib.contextmanager
def locked_tempdir(parent: Path, prefix: str, suffix: str) -> Iterator[Path]:
    """A new directory ``parent/<prefix>XXXXXXXX<suffix>`` (:func:`tempfile.mkdtemp`) on which this
    process holds an exclusive ``flock`` until the block ends, whatever it is renamed to meanwhile."""
    while True:
        path = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
        if fcntl is None:
            fd = None
            break
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # removed as stale between mkdtemp and open: make another
            continue
        # Holding the lock, the directory is ours unless a cleanup removed it just before.
        if _try_lock(fd) and path.is_dir():
            break
        os.close(fd)
    try:
        yield path
    finally:
        if fd is not None:
            os.close(fd)


def remove_stale_staging(out_dir: Path) -> list[Path]:
    """Remove the staging directories of ``out_dir`` that no living writer holds (see the module
    docstring), each with a warning; when a writer died in the middle of replacing ``out_dir``,
    first move the previous dataset back onto ``out_dir``. Returns the directories removed."""
    parent = out_dir.parent
    if fcntl is None or not parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(out_dir.name)}\.[a-z0-9_]{{8}}\.(tmp|old)")
    removed = []
    for path in sorted(parent.iterdir()):
        if not pattern.fullmatch(path.name) or path.is_symlink() or not path.is_dir():
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            if not _try_lock(fd):  # a running write of the same output
                continue
            old_data = path / "data"
            if path.suffix == ".old" and old_data.is_dir() and not out_dir.exists():
                os.replace(old_data, out_dir)
                log.warning("restored %s from %s: a write replacing it was killed before it finished", out_dir, path)
            files = sum(len(names) for _, _, names in os.walk(path))
            shutil.rmtree(path)
            log.warning("removed %s (%d files), left by a write of %s that was killed", path, files, out_dir)
            removed.append(path)
        finally:
            os.close(fd)
    return removed
