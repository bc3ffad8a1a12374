"""Plausible values of stored data: every array a dataset writes or loads is finite and of sane
magnitude (:data:`MAX_ABS`), checked per episode, so one bad episode is named, never trained on."""

from __future__ import annotations

import numpy as np

from gndesign.errors import GndesignError

#: The largest magnitude a stored value may have (states, actions, physical parameters, particle
#: positions and designs, in SI units): anything beyond is a unit or overflow mistake, and its
#: square would overflow the normalization statistics.
MAX_ABS = 1e6


def check_values(name: str, array: np.ndarray, error: type[GndesignError] = GndesignError, where: str = "",
                 fix: str = "", nonnegative: bool = False) -> None:
    """Refuse ``array [episodes, ...]`` if any value is non-finite, beyond :data:`MAX_ABS` or (with
    ``nonnegative``) negative; the one-line message names ``name``, the first bad episode and value,
    starts with ``where`` and ends with ``fix``."""
    flat = np.asarray(array, dtype=np.float64).reshape(len(array), -1)
    with np.errstate(invalid="ignore"):
        checks = [(~np.isfinite(flat), "non-finite values"), (np.abs(flat) > MAX_ABS, f"values beyond {MAX_ABS:g}")]
        if nonnegative:
            checks.append((flat < 0, "negative values"))
    for bad, what in checks:
        rows = np.flatnonzero(bad.any(axis=1))
        if len(rows):
            ep = int(rows[0])
            first = flat[ep][bad[ep]][0]
            detail = f"first in episode {ep}: {first:g}" if len(flat) > 1 else f"{first:g}"
            raise error(f"{where}{name} has {what} ({detail}){': ' + fix if fix else ''}")
