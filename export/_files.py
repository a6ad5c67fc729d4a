"""Folders written whole or not at all, and sizes on disk.

An export is built in a temporary folder beside its destination
(``.tmp-<pid>-<name>``, the marker of `tfvqvae.atomic`) and renamed into
place at the end, so a reader, or a run killed half-way, never sees a
half-written export under the final name.
"""

import contextlib
import os
import shutil
from pathlib import Path

from tfvqvae.atomic import TEMP_MARKER


def refuse_existing(path, overwrite, marker=None):
    """Raises unless ``path`` may be written: it does not exist, or ``overwrite`` may replace it.

    Args:
        path: the folder to write.
        overwrite: whether an existing folder may be replaced.
        marker: a file name; with it, ``overwrite`` replaces only an empty
            folder or one holding ``marker`` (an earlier export), never an
            unrelated folder given by mistake.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"Export path exists and is not a folder: {path}")
    if not path.exists():
        return
    if not overwrite:
        raise FileExistsError(
            f"Export folder {path} already exists: pass --overwrite (overwrite=True) to replace it."
        )
    if marker is not None and any(path.iterdir()) and not (path / marker).is_file():
        raise FileExistsError(
            f"{path} is not empty and holds no {marker}: --overwrite replaces an earlier "
            "export only; choose another --out."
        )


def _replace(temp, final, overwrite, marker):
    refuse_existing(final, overwrite, marker)
    old = None
    if final.exists():
        old = final.with_name(f"{TEMP_MARKER}{os.getpid()}-old-{final.name}")
        os.replace(final, old)
    try:
        os.replace(temp, final)
    except BaseException:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(final, overwrite=False, marker=None):
    """Yields an empty temporary folder beside ``final``; renames it to ``final`` on success.

    On an exception the temporary folder is deleted and ``final`` is left as
    it was. With ``overwrite`` an existing ``final`` is replaced (renamed
    away, the new folder renamed in, then the old one deleted); without it,
    FileExistsError, before anything is written. ``marker``: see
    `refuse_existing`.
    """
    final = Path(final)
    refuse_existing(final, overwrite, marker)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.with_name(f"{TEMP_MARKER}{os.getpid()}-{final.name}")
    if temp.exists():
        shutil.rmtree(temp)
    temp.mkdir()
    try:
        yield temp
        _replace(temp, final, overwrite, marker)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)


def size_on_disk(path):
    """Bytes of a file, or of every file under a folder."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def human_size(num_bytes):
    """``1234567`` -> ``"1.2 MB"`` (powers of 1000)."""
    size = float(num_bytes)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
