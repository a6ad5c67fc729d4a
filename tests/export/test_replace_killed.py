"""Replacing an export, killed at any moment: the old or the new one stays under the final name.

The kills are real: a child process runs `staged_dir` with
``TFVQVAE_KILL_AT`` set and SIGKILLs itself at the named point
(`tfvqvae.killpoints`). The right answer is read from the file system: which
folder lies under the final name and what its files hold, which temporary
folders remain. The children load ``_files`` without importing TensorFlow
(a stub ``tfvqvae`` package pointing at the source folders), so each takes
well under a second.
"""

import ctypes
import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import tfvqvae
import tfvqvae.export
from tfvqvae.export import _files

MARKER = "export.json"
TIMEOUT = 600  # seconds; the machine may be busy

# Imports tfvqvae.export._files from the source folders without tfvqvae/__init__ (TensorFlow).
PRELUDE = f"""
import sys, types
for name, folder in (("tfvqvae", {str(Path(tfvqvae.__file__).parent)!r}),
                     ("tfvqvae.export", {str(Path(tfvqvae.export.__file__).parent)!r})):
    module = types.ModuleType(name)
    module.__path__ = [folder]
    sys.modules[name] = module
from pathlib import Path
from tfvqvae.export import _files
"""

WRITE_NEW = """
with _files.staged_dir(final, overwrite=True, marker="export.json", label="export") as temp:
    (temp / "export.json").write_text('{"tag": "new"}')
    (temp / "data").mkdir()
    (temp / "data" / "blob.bin").write_bytes(b"new" * 1000)
"""


def _write_export(folder, tag):
    folder.mkdir(parents=True)
    (folder / MARKER).write_text(json.dumps({"tag": tag}))
    (folder / "data").mkdir()
    (folder / "data" / "blob.bin").write_bytes(tag.encode() * 1000)


def _tag(folder):
    """The export's tag, after checking that its files are whole."""
    tag = json.loads((folder / MARKER).read_text())["tag"]
    assert (folder / "data" / "blob.bin").read_bytes() == tag.encode() * 1000
    return tag


def _temporaries(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))


def _run_child(final, body, kill_at=None):
    env = {k: v for k, v in os.environ.items() if k != "TFVQVAE_KILL_AT"}
    if kill_at:
        env["TFVQVAE_KILL_AT"] = kill_at
    code = PRELUDE + f"final = Path({str(final)!r})\n" + textwrap.dedent(body)
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE,
                             text=True)
    _, stderr = child.communicate(timeout=TIMEOUT)
    return child.returncode, child.pid, stderr


def _dead_pid():
    """The pid of a process that has exited (checked with the OS)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=TIMEOUT)
    with pytest.raises(ProcessLookupError):
        os.kill(child.pid, 0)
    return child.pid


def _exchange_works():
    with tempfile.TemporaryDirectory() as folder:
        a, b = Path(folder, "a"), Path(folder, "b")
        a.mkdir()
        b.mkdir()
        return _files.exchange(a, b)


needs_exchange = pytest.mark.skipif(
    not _exchange_works(), reason="renameat2(RENAME_EXCHANGE) is not available here"
)


@needs_exchange
def test_exchange_swaps_two_folders_atomically(tmp_path):
    _write_export(tmp_path / "a", "a")
    _write_export(tmp_path / "b", "b")
    assert _files.exchange(tmp_path / "a", tmp_path / "b") is True
    assert _tag(tmp_path / "a") == "b" and _tag(tmp_path / "b") == "a"
    with pytest.raises(FileNotFoundError):
        _files.exchange(tmp_path / "a", tmp_path / "missing")
    assert _tag(tmp_path / "a") == "b"


def test_exchange_reports_unsupported_and_replace_falls_back(tmp_path, monkeypatch):
    def refuses(*args):
        ctypes.set_errno(errno.EINVAL)  # a file system without RENAME_EXCHANGE
        return -1

    monkeypatch.setattr(_files, "_renameat2", refuses)
    _write_export(tmp_path / "a", "a")
    _write_export(tmp_path / "b", "b")
    assert _files.exchange(tmp_path / "a", tmp_path / "b") is False
    assert _tag(tmp_path / "a") == "a" and _tag(tmp_path / "b") == "b"

    final = tmp_path / "export"
    _write_export(final, "old")
    with _files.staged_dir(final, overwrite=True, marker=MARKER) as temp:
        (temp / MARKER).write_text(json.dumps({"tag": "new"}))
        (temp / "data").mkdir()
        (temp / "data" / "blob.bin").write_bytes(b"new" * 1000)
    assert _tag(final) == "new"
    assert _temporaries(tmp_path) == []

    monkeypatch.setattr(_files, "_renameat2", None)  # no renameat2 in the C library
    assert _files.exchange(tmp_path / "a", tmp_path / "b") is False


@needs_exchange
def test_killed_after_the_exchange_keeps_the_new_export_and_the_rerun_cleans_up(tmp_path):
    final = tmp_path / "export"
    _write_export(final, "old")
    code, pid, stderr = _run_child(final, WRITE_NEW, kill_at="export:between-renames")
    assert code == -signal.SIGKILL, stderr
    assert _tag(final) == "new"  # whole, at the instant of the kill
    leftover = tmp_path / f".tmp-{pid}-export"
    assert _temporaries(tmp_path) == [leftover.name]
    assert _tag(leftover) == "old"  # the exchanged-out old export, not yet deleted

    assert _files.recover_stale(final) == [leftover]
    assert _temporaries(tmp_path) == [] and _tag(final) == "new"


def test_killed_between_the_two_renames_of_the_fallback_restores_the_old_export(tmp_path):
    final = tmp_path / "export"
    _write_export(final, "old")
    body = "_files.exchange = lambda a, b: False\n" + WRITE_NEW
    code, pid, stderr = _run_child(final, body, kill_at="export:between-renames")
    assert code == -signal.SIGKILL, stderr
    # The one instant the fallback has no folder under the final name...
    assert not final.exists()
    assert _tag(tmp_path / f".tmp-{pid}-old-export") == "old"
    assert _tag(tmp_path / f".tmp-{pid}-export") == "new"

    # ...so the next run, without --overwrite, finds the old export back in place and refuses.
    with pytest.raises(FileExistsError, match="already exists"):
        with _files.staged_dir(final, overwrite=False, marker=MARKER):
            pass
    assert _tag(final) == "old"
    assert _temporaries(tmp_path) == []

    # The same command again finishes the replacement.
    code, _, stderr = _run_child(final, body)
    assert code == 0, stderr
    assert _tag(final) == "new" and _temporaries(tmp_path) == []


def test_killed_once_staged_keeps_the_old_export_and_the_rerun_replaces_it(tmp_path):
    final = tmp_path / "export"
    _write_export(final, "old")
    code, pid, stderr = _run_child(final, WRITE_NEW, kill_at="export:staged")
    assert code == -signal.SIGKILL, stderr
    assert _tag(final) == "old"
    assert _temporaries(tmp_path) == [f".tmp-{pid}-export"]
    code, _, stderr = _run_child(final, WRITE_NEW)
    assert code == 0, stderr
    assert _tag(final) == "new" and _temporaries(tmp_path) == []


def test_only_dead_processes_leftovers_are_removed(tmp_path):
    final = tmp_path / "export"
    _write_export(final, "current")
    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        os.kill(live.pid, 0)  # alive: raises if not
        _write_export(tmp_path / f".tmp-{dead}-export", "killed-new")
        _write_export(tmp_path / f".tmp-{dead}-old-export", "killed-old")
        _write_export(tmp_path / f".tmp-{live.pid}-export", "running")
        _write_export(tmp_path / f".tmp-{live.pid}-old-export", "running-old")
        _write_export(tmp_path / f".tmp-{dead}-other", "another export's")
        _write_export(tmp_path / f".tmp-{dead}-old-export.bak", "another name")

        with _files.staged_dir(final, overwrite=True, marker=MARKER) as temp:
            _write_export(temp / "inner", "unused")
            (temp / MARKER).write_text(json.dumps({"tag": "new"}))
        assert json.loads((final / MARKER).read_text()) == {"tag": "new"}
        assert _temporaries(tmp_path) == sorted([
            f".tmp-{live.pid}-export", f".tmp-{live.pid}-old-export",
            f".tmp-{dead}-other", f".tmp-{dead}-old-export.bak",
        ])
        assert _tag(tmp_path / f".tmp-{live.pid}-export") == "running"
        assert _tag(tmp_path / f".tmp-{live.pid}-old-export") == "running-old"
        assert _tag(tmp_path / f".tmp-{dead}-other") == "another export's"
    finally:
        live.kill()
        live.wait(timeout=TIMEOUT)


def test_a_live_processes_old_copy_is_not_restored(tmp_path):
    """A running export between its two renames: its old copy is its own to move back."""
    final = tmp_path / "export"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        _write_export(tmp_path / f".tmp-{live.pid}-old-export", "theirs")
        assert _files.recover_stale(final) == []
        assert not final.exists()
        assert _temporaries(tmp_path) == [f".tmp-{live.pid}-old-export"]
    finally:
        live.kill()
        live.wait(timeout=TIMEOUT)


def test_pid_liveness(monkeypatch):
    assert _files.pid_alive(os.getpid()) is True
    assert _files.pid_alive(_dead_pid()) is False
    assert _files.pid_alive(0) is True  # never "dead": nothing is deleted for it

    def not_ours(pid, sig):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(_files.os, "kill", not_ours)
    assert _files.pid_alive(12345) is True  # another user's process is alive
