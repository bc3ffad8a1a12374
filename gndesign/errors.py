"""Errors a user can act on.

Every error raised for bad input is a :class:`GndesignError` whose message is one line saying what
was wrong and how to fix it; the command line prints it without a traceback.
"""


class GndesignError(Exception):
    """Bad input or state that the user can fix; the message says how."""


class ModelError(GndesignError):
    """A MuJoCo model that gndesign cannot turn into a graph (or cannot load)."""


class DatasetError(GndesignError):
    """A dataset that is missing, truncated, malformed or for another system."""


class ConfigError(GndesignError):
    """A configuration value or command-line argument that is not valid."""
