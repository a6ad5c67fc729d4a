"""Folders written whole or not at all, and sizes on disk.

An export is built in a temporary folder beside its destination
(``.tmp-<pid>-<name>``, the marker of `tfvqvae.atomic`) and moved into
place at the end, so a reader, or a run killed half-way, never sees a
half-written export under the final name.

Replacing an existing export keeps a complete export (the old one or the new
one) under the final name at every instant: on Linux the two folders are
swapped in one ``renameat2(RENAME_EXCHANGE)`` call and the old one, now under
the temporary name, is deleted. Where that call is missing (other systems,
file systems without it) the old folder is renamed to ``.tmp-<pid>-old-<name>``
and the new one renamed in; a run killed between those two renames leaves no
folder under the final name, and the next export to it (`recover_stale`, run
at its start) renames the old one back. Every start also deletes the
temporary folders of killed runs beside the destination.
"""

import contextlib
import ctypes
import errno
import os
import re
import shutil
import sys
from pathlib import Path

from tfvqvae.atomic import TEMP_MARKER
from tfvqvae.killpoints import killpoint

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# renameat2 answers these where the kernel or the file system cannot exchange (EXDEV:
# overlay file systems that cannot rename a lower-layer folder in place).
_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV}


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


def temp_name(final, pid=None, old=False):
    """The temporary name beside ``final`` used by process ``pid`` (default: this one).

    ``old=True``: where the two-rename fallback parks the folder it replaces.
    """
    final = Path(final)
    pid = os.getpid() if pid is None else int(pid)
    return final.with_name(f"{TEMP_MARKER}{pid}-{'old-' if old else ''}{final.name}")


def pid_alive(pid):
    """Whether process ``pid`` exists (a process we may not signal counts as alive).

    Not a positive pid: True, so that nothing is ever deleted on its account.
    """
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:  # not a pid this system can have
        return False
    return True


def _leftovers(final):
    """[(pid, is_old, path)] of the temporary folders beside ``final``, any process."""
    pattern = re.compile(rf"{re.escape(TEMP_MARKER)}(\d+)-(old-)?{re.escape(final.name)}")
    found = []
    if not final.parent.is_dir():
        return found
    for entry in final.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2) is not None, entry))
    return found


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def recover_stale(final):
    """Undoes what killed runs left beside ``final``; returns the paths it restored or removed.

    Only folders of processes that no longer run are touched
    (``.tmp-<pid>-<name>`` and ``.tmp-<pid>-old-<name>`` with a dead
    ``pid``); a live process's are left alone. When ``final`` is missing and
    a dead run's ``.tmp-<pid>-old-<name>`` exists (the run was killed between
    the two renames of the fallback), that folder is renamed back to
    ``final`` (the newest, when several). Every other dead run's temporary
    folder is deleted.
    """
    final = Path(final)
    dead = [(is_old, path) for pid, is_old, path in _leftovers(final) if not pid_alive(pid)]
    touched = []
    olds = sorted((path for is_old, path in dead if is_old and path.is_dir()),
                  key=lambda p: p.stat().st_mtime, reverse=True)
    if olds and not os.path.lexists(final):
        os.rename(olds[0], final)
        touched.append(final)
        dead = [(is_old, path) for is_old, path in dead if path != olds[0]]
    for _, path in dead:
        _remove(path)
        touched.append(path)
    return touched


def _load_renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):  # no libc handle, or a libc older than glibc 2.28
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                         ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_renameat2 = _load_renameat2()


def exchange(a, b):
    """Swaps the names ``a`` and ``b`` in one atomic step; False where the system cannot.

    Linux ``renameat2(..., RENAME_EXCHANGE)``. Returns False, having changed
    nothing, without that call (other systems, old C libraries) or when the
    kernel or the file system refuses the flag (ENOSYS, EINVAL, EOPNOTSUPP, EXDEV).

    Raises:
        OSError: any other failure (a missing path, no permission, ...).
    """
    if _renameat2 is None:
        return False
    result = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, f"renameat2(RENAME_EXCHANGE) failed: {os.strerror(code)}", str(a), None,
                  str(b))


def _replace(temp, final, overwrite, marker, label=None):
    """Moves the complete folder ``temp`` to ``final``, replacing an existing ``final``.

    A complete export stays under ``final`` at every instant where `exchange`
    works; otherwise ``final`` is missing between two renames, and
    `recover_stale` restores the old folder if the process dies there.
    ``label``: prefix of the kill point ``<label>:between-renames``.
    """
    refuse_existing(final, overwrite, marker)
    if not final.exists():
        os.replace(temp, final)
        return
    if exchange(temp, final):
        # ``temp`` now holds the old export; ``final`` the new one.
        if label:
            killpoint(f"{label}:between-renames")
        shutil.rmtree(temp, ignore_errors=True)
        return
    old = temp_name(final, old=True)
    if os.path.lexists(old):
        _remove(old)
    os.replace(final, old)
    if label:
        killpoint(f"{label}:between-renames")
    try:
        os.replace(temp, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(final, overwrite=False, marker=None, label=None):
    """Yields an empty temporary folder beside ``final``; moves it to ``final`` on success.

    First runs `recover_stale` (restores ``final`` from a killed run's old
    copy, deletes killed runs' temporary folders). On an exception the
    temporary folder is deleted and ``final`` is left as it was. With
    ``overwrite`` an existing ``final`` is replaced, keeping the old or the
    new folder under ``final`` at every instant (see the module docstring);
    without it, FileExistsError, before anything is written. ``marker``: see
    `refuse_existing`. ``label``: with it, the kill points
    ``<label>:staged`` (the new folder complete, nothing replaced yet) and
    ``<label>:between-renames`` (see `tfvqvae.killpoints`).

    Raises:
        FileExistsError, NotADirectoryError: see `refuse_existing`.
    """
    final = Path(final)
    recover_stale(final)
    refuse_existing(final, overwrite, marker)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_name(final)
    if os.path.lexists(temp):
        _remove(temp)
    temp.mkdir()
    try:
        yield temp
        if label:
            killpoint(f"{label}:staged")
        _replace(temp, final, overwrite, marker, label)
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
