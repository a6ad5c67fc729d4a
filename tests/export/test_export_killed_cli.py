"""``tfvqvae export --overwrite`` killed at a named moment, then run again: as if never killed.

A real ``python -m tfvqvae_cli export`` process SIGKILLs itself at the point
``TFVQVAE_KILL_AT`` names (`tfvqvae.killpoints`). At that instant the export
folder must hold a whole export (the old one or the new one); the same
command run again must succeed, leave no temporary folder beside it, and
write what an uninterrupted export writes (same files, same manifest, same
outputs from the SavedModel).
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tfvqvae
from tfvqvae.export import export_run

IMAGE_SIZE = 16
TIMEOUT = 600  # seconds; the machine may be busy


def _tiny_run(path):
    model = tfvqvae.VQVAE(
        image_channels=1, hidden_channels=8, residual_channels=4, num_residual_layers=1,
        quantizer=tfvqvae.VectorQuantizerEMA(8, 4, decay=0.9, kmeans_init=False, restart_unused_after=None),
    )
    model(np.random.default_rng(0).random((2, IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.float32))
    path.mkdir(parents=True)
    model.save(path / "model.keras")
    (path / "config.json").write_text(json.dumps({"dataset": "digits", "image_size": IMAGE_SIZE}))
    return path


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))


def _outputs(export_folder):
    manifest = json.loads((export_folder / "export.json").read_text())
    loaded = tf.saved_model.load(str(export_folder / manifest["artifacts"]["savedmodel"]))
    images = np.random.default_rng(2).random((4, IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.float32)
    codes = loaded.signatures["encode"](images=tf.constant(images))
    recon = loaded.signatures["reconstruct"](images=tf.constant(images))
    return {k: v.numpy() for k, v in {**codes, **recon}.items()}


def _command(argv, kill_at=None):
    env = {k: v for k, v in os.environ.items() if k != "TFVQVAE_KILL_AT"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if kill_at:
        env["TFVQVAE_KILL_AT"] = kill_at
    child = subprocess.Popen([sys.executable, "-m", "tfvqvae_cli", *argv], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = child.communicate(timeout=TIMEOUT)
    return child.returncode, child.pid, stdout + stderr


@pytest.mark.slow
@pytest.mark.parametrize("point, whole_at_kill", [
    ("export:staged", {"previous"}),
    # Old or new: the exchange leaves the new one, the two-rename fallback the old one.
    ("export:between-renames", {"previous", "run"}),
])
def test_killed_export_overwrite_reruns_to_an_uninterrupted_export(tmp_path, point,
                                                                   whole_at_kill):
    run = _tiny_run(tmp_path / "run")
    reference = tmp_path / "reference" / "export"
    export_run(run, reference)
    out = tmp_path / "exports" / "export"
    export_run(run, out, name="previous")  # the export that --overwrite replaces
    argv = ["export", "--run", str(run), "--out", str(out), "--overwrite"]

    code, pid, output = _command(argv, kill_at=point)
    assert code == -signal.SIGKILL, output
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["name"] in whole_at_kill
    saved_model = out / manifest["artifacts"]["savedmodel"]
    assert (saved_model / "saved_model.pb").is_file()
    assert [p.name for p in (saved_model / "variables").iterdir() if p.suffix == ".index"]
    assert f".tmp-{pid}-export" in _leftovers(out.parent)

    code, _, output = _command(argv)
    assert code == 0, output
    assert _leftovers(out.parent) == []
    assert _files(out) == _files(reference)
    written, expected = (json.loads((f / "export.json").read_text()) for f in (out, reference))
    assert written.pop("sizes").keys() == expected.pop("sizes").keys()
    assert written == expected
    got, want = _outputs(out), _outputs(reference)
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
