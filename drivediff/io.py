"""Atomic file writing: write to a temporary name in the target directory, then rename into place.

A crash or an error while writing never leaves a half-written file under the final name, and an
existing file is replaced only once the new one is complete. A folder that cannot be made, or a file that
cannot be created there, is a DrivediffError naming the path (the CLI prints it as one line).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from drivediff.errors import DrivediffError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_dirs(folder: str | os.PathLike) -> Path:
    """Create ``folder`` and its parents if needed; a clear error when a file is in the way or the system
    refuses."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        for p in (folder, *folder.parents):
            if p.exists() and not p.is_dir():
                raise DrivediffError(f"cannot create the folder {folder}: {p} is a file") from None
        raise DrivediffError(f"cannot create the folder {folder}: {e.strerror or e}") from None
    return folder


def atomic_write(path: str | os.PathLike, write: Callable[[object], None], binary: bool = True) -> Path:
    """Call ``write(fh)`` on a temporary file next to ``path``, then rename it to ``path``.

    The file gets the usual permissions (0666 minus the umask), not mkstemp's private 0600.
    """
    path = Path(path)
    if path.is_dir():
        raise DrivediffError(f"cannot write {path}: it is a folder")
    make_dirs(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise DrivediffError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb" if binary else "w") as fh:
            write(fh)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
