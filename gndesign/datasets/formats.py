"""Which format a dataset directory holds (by its ``meta.json``)."""

from __future__ import annotations

import os
from pathlib import Path

from gndesign.datasets import nbody, particles, trajectories
from gndesign.datasets.base import META_FILE, read_format
from gndesign.errors import DatasetError

#: The short name of each format, keyed by the ``format`` its ``meta.json`` names.
FORMATS = {trajectories.FORMAT.name: "trajectories", particles.FORMAT.name: "particles", nbody.FORMAT.name: "nbody"}


def dataset_format(path: str | os.PathLike) -> str:
    """``"trajectories"``, ``"particles"`` or ``"nbody"``: the format of the dataset in directory ``path``.

    Raises:
        DatasetError: ``path`` does not exist, has no readable ``meta.json`` or names another format.
    """
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"dataset directory {path} does not exist: generate it first (gndesign generate)")
    found = read_format(path)
    if found not in FORMATS:
        what = f"names format {found!r}" if found is not None else f"has no readable {META_FILE}"
        raise DatasetError(f"{path} is not a gndesign dataset ({what}; expected one of {sorted(FORMATS)}): "
                           "pass a directory written by gndesign generate")
    return FORMATS[found]
