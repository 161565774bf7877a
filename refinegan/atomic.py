"""Atomic file writes: every output refinegan writes appears complete or not at all.

A file is written to a temporary name in its own directory (unique per writer, so two writers
never share one), flushed to disk (``fsync``), then moved into place with `os.replace`, which is
atomic on POSIX file systems. On any failure (an exception, Ctrl-C) the temporary file is removed
and the error propagates; a file killed with SIGKILL leaves only a ``*.tmp`` file, never one
under the final name.

Use `atomic_path` as a context manager around whatever writes the file::

    with atomic_path(out) as tmp:
        h5py.File(tmp, "w") ...        # or torch.save(obj, tmp), fig.savefig(tmp, format="png")

or `temporary_path` / `commit` / `discard` for a writer that stays open across calls
(`refinegan.io.StampWriter`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "temporary_path", "commit", "discard", "TMP_SUFFIX"]

TMP_SUFFIX = ".tmp"


def temporary_path(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside ``path``: ``<name>.<random hex>.tmp`` (parent created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f"{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Flush ``tmp`` to disk and move it to ``path`` (atomically); then sync the directory."""
    tmp, path = Path(tmp), Path(path)
    _fsync(tmp)
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # not every file system can sync a directory
        _fsync(path.parent)
    return path


def discard(tmp: str | os.PathLike) -> None:
    """Remove a temporary file if it is there."""
    with contextlib.suppress(FileNotFoundError):
        Path(tmp).unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes ``path``, on failure it is removed."""
    tmp = temporary_path(path)
    try:
        yield tmp
        commit(tmp, path)
    except BaseException:
        discard(tmp)
        raise
