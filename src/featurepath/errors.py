"""One exception type for every user-facing problem.

The CLI catches :class:`FeaturepathError` and prints its message as one line (no traceback), so
every bad input — config, SAE file, model name, JSONL log — must be raised as this type with a
message that names what is wrong and, where possible, what to run instead.
"""

from __future__ import annotations

import errno


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


class StorageError(FeaturepathError):
    """The disk refused a write (full, read-only, over quota, no permission); work that was
    committed before is intact."""


#: errno values that mean "the storage refused", as opposed to a bug: each becomes one line.
STORAGE_ERRNOS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def storage_error(exc: OSError, hint: str = "") -> StorageError | None:
    """One-line :class:`StorageError` for an ``OSError`` the storage raised, else ``None``.

    Used by the run store (which adds "rerun with --resume") and by the CLI's last line of
    defence, so that every command's output directory being read-only or full is reported the
    same way whichever library (pandas, pyarrow, zarr, matplotlib) did the write.
    """
    what = STORAGE_ERRNOS.get(exc.errno or -1)
    if what is None:
        return None
    where = exc.filename or exc.filename2
    if not where:  # pyarrow names the file only in its message: "... local file 'X'. ..."
        import re

        m = re.search(r"'([^']+)'", str(exc))
        where = m.group(1) if m else None
    text = f"{what}: cannot write {where}" if where else what
    return StorageError(text + (f"; {hint}" if hint else ""))
