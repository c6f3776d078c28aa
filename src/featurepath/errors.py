"""One exception type for every user-facing problem.

The CLI catches :class:`FeaturepathError` and prints its message as one line (no traceback), so
every bad input — config, SAE file, model name, JSONL log — must be raised as this type with a
message that names what is wrong and, where possible, what to run instead.
"""

from __future__ import annotations


class FeaturepathError(Exception):
    """A problem the user can fix; its message is shown as is."""


class ConfigError(FeaturepathError):
    """A bad value in a config file or on the command line."""


class ModelLoadError(FeaturepathError):
    """A model spec that cannot be loaded."""


class SAEFormatError(FeaturepathError):
    """An SAE file or directory that is missing, corrupt or does not match the model."""


class DataError(FeaturepathError):
    """Input data (JSONL logs, run stores) that cannot be used."""
