"""Atomic file writes: write to a temporary name in the same folder, then rename.

A reader (or a run killed half-way) never sees a half-written file under the
final name: ``os.replace`` is atomic on POSIX when both names are on the same
file system, which is why the temporary file lives beside the target.
"""

import contextlib
import json
import os
import shutil
from pathlib import Path

TEMP_MARKER = ".tmp-"


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside ``path``; renames it to ``path`` on success.

    The temporary name keeps the suffix of ``path`` (Keras insists on
    ``.keras`` / ``.weights.h5``). On an exception the temporary file or
    folder is removed and ``path`` is left as it was; an OSError with an
    errno (ENOSPC, EFBIG, EACCES, ...) is raised again as the same type with
    a message that names ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f"{TEMP_MARKER}{os.getpid()}-{path.name}")
    try:
        yield temp
        os.replace(temp, path)
    except OSError as error:
        if error.errno is None or str(path) in str(error):
            raise
        # A full disk (ENOSPC), a file-size limit (EFBIG), a read-only folder:
        # the OS's message names no file; this one names the file not written.
        raise type(error)(
            error.errno, f"Could not write {path}: {error.strerror or error}"
        ) from error
    finally:
        if temp.is_dir():
            shutil.rmtree(temp, ignore_errors=True)
        elif temp.exists():
            temp.unlink()


def write_bytes(path, data):
    """Writes ``data`` to ``path`` atomically."""
    with atomic_path(path) as temp:
        with open(temp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_json(path, obj):
    """Writes ``obj`` as indented JSON to ``path`` atomically."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def remove_stale_temporaries(folder):
    """Deletes temporary files a killed writer left in ``folder``."""
    folder = Path(folder)
    if folder.is_dir():
        for leftover in folder.glob(f"{TEMP_MARKER}*"):
            if leftover.is_file():
                leftover.unlink()
