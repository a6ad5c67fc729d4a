"""Atomic writes: the final name holds either the old file or the complete new one."""

import json

import pytest

from tfvqvae import atomic


def test_write_json_replaces_whole_file(tmp_path):
    path = tmp_path / "a" / "m.json"
    atomic.write_json(path, {"x": 1})
    atomic.write_json(path, {"x": 2})
    assert json.loads(path.read_text()) == {"x": 2}
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]


def test_failed_write_keeps_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "model.keras"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(path) as temp:
            assert temp.suffix == ".keras" and temp.parent == tmp_path
            temp.write_text("half")
            raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_remove_stale_temporaries(tmp_path):
    (tmp_path / ".tmp-123-epoch-0001.keras").write_text("partial")
    (tmp_path / "epoch-0001.keras").write_text("done")
    atomic.remove_stale_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["epoch-0001.keras"]
