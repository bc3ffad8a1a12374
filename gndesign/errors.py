"""Errors a user can act on.

Every error raised for bad input is a :class:`GndesignError` whose message is one line saying what
was wrong and how to fix it; the command line prints it without a traceback.
"""

import contextlib
from collections.abc import Iterator


class GndesignError(Exception):
    """Bad input or state that the user can fix; the message says how."""


class ModelError(GndesignError):
    """A MuJoCo model that gndesign cannot turn into a graph (or cannot load)."""


class DatasetError(GndesignError):
    """A dataset that is missing, truncated, malformed or for another system."""


class ConfigError(GndesignError):
    """A configuration value or command-line argument that is not valid."""


@contextlib.contextmanager
def writing(path) -> Iterator[None]:
    """Turn an operating-system failure to write ``path`` (disk full, read-only or missing
    directory) into a one-line :class:`GndesignError` naming the file. Writers are atomic
    (:mod:`gndesign.io`): the file is left as it was, nothing partial remains."""
    try:
        yield
    except OSError as e:
        raise GndesignError(f"cannot write {path}: {e.strerror or e} (nothing was written: free disk space or "
                            "choose a writable location)") from None
