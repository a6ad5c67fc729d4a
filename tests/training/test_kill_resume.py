"""Any command, killed at any moment, finishes with the same command (real processes).

Each test runs ``python -m tfvqvae_cli`` in a child process and kills it at a
named point (`tfvqvae.killpoints`: the child SIGKILLs itself when
``TFVQVAE_KILL_AT`` names the point it reaches), then runs the same command
again and compares the result with an uninterrupted run of the same
configuration, made once per module: the weights must be bit-identical
(single-process CPU training is deterministic here).
"""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tfvqvae.data import load_codes
from tfvqvae.finite import nonfinite_weights
from tfvqvae.killpoints import ENV

from tests.training.cli_helpers import refused

TRAIN_FLAGS = [
    "--dataset", "digits", "--max-train-examples", "256", "--epochs", "3",
    "--batch-size", "64", "--learning-rate", "2e-3", "--num-embeddings", "16",
    "--embedding-dim", "4", "--hidden-channels", "16", "--residual-channels", "8",
    "--num-residual-layers", "1", "--num-downsamples", "1", "--grid-pairs", "4",
    "--backup-every", "0",
]
EPOCH_CHECKPOINTS = 3  # one per epoch of TRAIN_FLAGS (--backup-every 0)
PRIOR_FLAGS = [
    "--prior-epochs", "2", "--prior-batch-size", "64", "--prior-max-train-examples", "256",
    "--prior-hidden-channels", "8", "--prior-num-blocks", "1", "--prior-kernel-size", "3",
    "--num-samples", "4", "--export-formats", "",
]
TIMEOUT_S = 900  # a busy machine stretches every run

# Real processes, about 15-30 s each: CI runs them with `-m slow`; the
# argument refusals below stay in the default suite.
slow = pytest.mark.slow


def tfvqvae(*args, kill_at=None, file_size_limit=None):
    """Runs ``tfvqvae ARGS`` in a fresh interpreter; returns the CompletedProcess."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop(ENV, None)
    if kill_at is not None:
        env[ENV] = kill_at

    def limit():
        if file_size_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run(
        [sys.executable, "-m", "tfvqvae_cli", *args], env=env, capture_output=True,
        text=True, timeout=TIMEOUT_S, preexec_fn=limit,
    )


def killed(result):
    return result.returncode == -signal.SIGKILL


def error_line(result):
    """The one ``tfvqvae ...: error:`` line of a refused or failed command."""
    lines = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def weights(path):
    model = keras.saving.load_model(path)
    return model, [np.asarray(w) for w in model.get_weights()]


def assert_same_model(path, reference):
    model, values = weights(path)
    ref_model, ref_values = weights(reference)
    assert len(values) == len(ref_values)
    for got, want in zip(values, ref_values):
        np.testing.assert_array_equal(got, want)
    assert int(model.optimizer.iterations) == int(ref_model.optimizer.iterations)


def temporaries(folder):
    return [p for p in folder.rglob("*") if p.name.startswith(".tmp-")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted ``tfvqvae pipeline`` (VQ-VAE, codes, prior) of the test configuration."""
    out = tmp_path_factory.mktemp("reference") / "run"
    result = tfvqvae("pipeline", "--out", str(out), *TRAIN_FLAGS, *PRIOR_FLAGS)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@slow
@pytest.mark.parametrize("kill_at", ["checkpoint:staged", "checkpoint:renamed:2"])
def test_train_killed_around_a_checkpoint_finishes_with_the_same_command(
        reference, tmp_path, kill_at):
    """Killed while writing the first checkpoint (nothing to resume from: it starts
    again) or between the second checkpoint's rename and its pointer (the file
    is complete but unnamed: it is found and used)."""
    out = tmp_path / "run"
    command = ["train", "--out", str(out), *TRAIN_FLAGS]
    assert killed(tfvqvae(*command, kill_at=kill_at))
    assert (out / "config.json").is_file() and not (out / "model.keras").exists()
    if kill_at == "checkpoint:staged":
        assert not (out / "checkpoints" / "latest.json").exists()
        assert temporaries(out)  # the half-written first checkpoint

    result = tfvqvae(*command)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_model(out / "model.keras", reference / "model.keras")
    assert temporaries(out) == []
    # One row per epoch, none lost or doubled by the kill.
    rows = (out / "history.csv").read_text().strip().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["0", "1", "2"]
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["epoch"] == 3


@slow
def test_train_killed_before_its_final_save_finishes(reference, tmp_path):
    out = tmp_path / "run"
    command = ["train", "--out", str(out), *TRAIN_FLAGS]
    assert killed(tfvqvae(*command, kill_at="train:final-save"))
    assert not (out / "model.keras").exists() and not (out / "metrics.json").exists()
    result = tfvqvae(*command)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_model(out / "model.keras", reference / "model.keras")


@slow
def test_pipeline_killed_in_prior_training_continues_from_that_stage(reference, tmp_path):
    out = tmp_path / "run"
    command = ["pipeline", "--out", str(out), *TRAIN_FLAGS, *PRIOR_FLAGS]
    # The VQ-VAE's checkpoints, then the prior's first one: killed just after it.
    assert killed(tfvqvae(*command, kill_at=f"checkpoint:saved:{EPOCH_CHECKPOINTS + 1}"))
    assert (out / "metrics.json").is_file() and not (out / "prior-top" / "model.keras").exists()
    vqvae_bytes = (out / "model.keras").read_bytes()
    codes_bytes = (out / "codes" / "codes-train-00000-of-00001.tfrecord").read_bytes()

    result = tfvqvae(*command)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "kept the finished stages: vqvae, codes" in result.stdout
    assert (out / "model.keras").read_bytes() == vqvae_bytes  # not trained again
    assert (out / "codes" / "codes-train-00000-of-00001.tfrecord").read_bytes() == codes_bytes
    assert_same_model(out / "prior-top" / "model.keras", reference / "prior-top" / "model.keras")
    assert temporaries(out) == []

    # Everything finished: the same command keeps every training stage.
    again = tfvqvae(*command)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "kept the finished stages: vqvae, codes, prior-top" in again.stdout


@slow
def test_extract_codes_killed_after_its_first_split_finishes(reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference, run, ignore=shutil.ignore_patterns("codes", "prior-*"))
    command = ["extract-codes", "--run", str(run)]
    assert killed(tfvqvae(*command, kill_at="extract-codes:written"))
    assert (run / "codes" / "codes-train-00000-of-00001.tfrecord").is_file()
    assert not list((run / "codes").glob("*codes-test*"))  # nor a temporary file

    result = tfvqvae(*command)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("train: kept ") and str(
        run / "codes" / "codes-train-00000-of-00001.tfrecord") in lines[0]
    assert lines[1].startswith("test: wrote ") and str(
        run / "codes" / "codes-test-00000-of-00001.tfrecord") in lines[1]
    for split in ("train", "test"):  # the same records and header (but the model's path)
        name = f"codes-{split}.tfrecord"
        got, want = code_records(run / "codes" / name), code_records(reference / "codes" / name)
        assert got[1] == want[1]
        for field in want[0]:
            np.testing.assert_array_equal(got[0][field], want[0][field])
    assert temporaries(run) == []


def code_records(path):
    dataset, metadata = load_codes(path)
    rows = list(dataset.as_numpy_iterator())
    metadata = dict(metadata, source={k: v for k, v in metadata["source"].items() if k != "model"})
    return {key: np.stack([row[key] for row in rows]) for key in rows[0]}, metadata


@slow
def test_truncated_checkpoint_falls_back_to_the_previous_one(reference, tmp_path):
    out = tmp_path / "run"
    command = ["train", "--out", str(out), *TRAIN_FLAGS]
    assert killed(tfvqvae(*command, kill_at="checkpoint:saved:2"))
    newest = out / "checkpoints" / "epoch-0002.keras"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # a damaged copy, a bad block

    result = tfvqvae(*command)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch-0002.keras" in result.stderr and "epoch-0001.keras" in result.stderr
    assert "not a complete .keras file" in result.stderr
    assert_same_model(out / "model.keras", reference / "model.keras")


@slow
def test_diverging_run_saves_nothing_non_finite(tmp_path):
    out = tmp_path / "run"
    command = ["train", "--out", str(out), *TRAIN_FLAGS, "--learning-rate", "1e12"]
    result = tfvqvae(*command)
    assert result.returncode == 1, result.stderr[-3000:]
    line = error_line(result)
    assert "step" in line and ("checkpoint" in line) and "NaN" in line
    for name in ("model.keras", "reconstructions.png", "metrics.json"):
        assert not (out / name).exists()
    for checkpoint in (out / "checkpoints").glob("*.keras"):
        assert nonfinite_weights(keras.saving.load_model(checkpoint)) == []
    # The same command fails the same way, one line, and still saves nothing.
    again = tfvqvae(*command)
    assert again.returncode == 1 and error_line(again)
    assert not (out / "model.keras").exists()


@pytest.mark.parametrize("flag, value, interval", [
    ("--commitment-cost", "inf", "[0, ∞)"),
    ("--commitment-cost", "-0.5", "[0, ∞)"),
    ("--learning-rate", "nan", "(0, ∞)"),
    ("--learning-rate", "-inf", "(0, ∞)"),
    ("--decay", "1", "(0, 1)"),
])
def test_non_finite_hyperparameters_are_refused(tmp_path, capsys, flag, value, interval):
    """Refused by the argument parser, before TensorFlow is imported."""
    out = tmp_path / "run"
    line = refused(["train", "--out", str(out), *TRAIN_FLAGS, f"{flag}={value}"], capsys)
    assert f"argument {flag}: must be a finite number in {interval}. Received: '{value}'" in line
    assert not out.exists()


def test_non_finite_hyperparameters_are_refused_by_the_dataclass_too():
    from tfvqvae.training.config import TrainConfig

    with pytest.raises(ValueError, match=r"commitment_cost must be a finite number in \[0, ∞\)\. "
                                         r"Received: commitment_cost=inf"):
        TrainConfig(commitment_cost=float("inf"))


def test_non_finite_hyperparameter_refused_by_the_command(tmp_path):
    out = tmp_path / "run"
    result = tfvqvae("train", "--out", str(out), *TRAIN_FLAGS, "--commitment-cost", "inf")
    assert result.returncode == 2
    assert "--commitment-cost: must be a finite number in [0, ∞)" in error_line(result)
    assert "tensorflow" not in result.stderr.lower()  # refused before TensorFlow loads
    assert not out.exists()


@slow
def test_resume_with_changed_flags_is_refused_naming_them(reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out, ignore=shutil.ignore_patterns("codes", "prior-*", "export"))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    result = tfvqvae("train", "--out", str(out), "--resume", "--epochs", "4",
                     "--num-embeddings", "512", "--batch-size", "8")
    assert result.returncode == 2
    line = error_line(result)
    assert "--num-embeddings 512 (saved: 16)" in line and "--batch-size 8 (saved: 64)" in line
    assert "only --epochs may change" in line
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before

    # Without them, --resume needs no other flag: the run's own settings are used.
    result = tfvqvae("train", "--out", str(out), "--resume", "--epochs", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    model = keras.saving.load_model(out / "model.keras")
    assert int(model.optimizer.iterations) == 4 * 4


@slow
def test_truncated_model_file_is_named_as_such(reference, tmp_path):
    truncated = tmp_path / "model.keras"
    data = (reference / "model.keras").read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    result = tfvqvae("extract-codes", "--run", str(reference), "--model-file", str(truncated),
                     "--out", str(tmp_path / "codes"))
    assert result.returncode == 2
    line = error_line(result)
    assert str(truncated) in line and "not a complete .keras file" in line
    assert "File not found" not in line


@slow
def test_full_disk_during_a_checkpoint_names_the_file_and_resumes(reference, tmp_path):
    """A per-file size limit below a checkpoint's size (147 kB here; the other files
    stay under 4 kB) makes the first checkpoint's write fail in the OS, as a
    full disk would (EFBIG here, ENOSPC there: the same path through the code)."""
    out = tmp_path / "run"
    command = ["train", "--out", str(out), *TRAIN_FLAGS]
    result = tfvqvae(*command, file_size_limit=64_000)
    assert result.returncode == 2
    line = error_line(result)
    assert str(out / "checkpoints" / "epoch-0001.keras") in line
    assert "No checkpoint has been written yet" in line
    assert not (out / "checkpoints" / "epoch-0001.keras").exists()
    assert temporaries(out) == []

    result = tfvqvae(*command)  # space freed: the same command finishes
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_model(out / "model.keras", reference / "model.keras")


def _mnist_folder(root):
    """The first 256 + 64 MNIST test images as PNG files: ROOT/train/<digit>/, ROOT/test/<digit>/."""
    import tensorflow as tf

    from tfvqvae.data import load_dataset

    shared = Path(__file__).resolve().parents[3] / "shared" / "data"
    data_dir = shared / "mnist" if (shared / "mnist").is_dir() else shared
    mnist = load_dataset("mnist", "test", data_dir=str(data_dir))
    for split, part in (("train", slice(0, 256)), ("test", slice(256, 320))):
        for i, (image, label) in enumerate(zip(mnist.images[part], mnist.labels[part])):
            path = root / split / str(label) / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(tf.io.encode_png(image).numpy())
    return root


@slow
def test_training_on_a_streamed_folder_killed_mid_epoch_resumes_bit_identically(tmp_path):
    """A folder read file by file (no array in memory), random flips on, killed right
    after the mid-epoch backup of step 2: the same command skips the two batches
    it already took and ends with the uninterrupted run's weights."""
    folder = _mnist_folder(tmp_path / "images")
    flags = [
        "--dataset", f"folder:{folder}", "--image-size", "16", "--random-flip",
        "--epochs", "2", "--batch-size", "64", "--learning-rate", "2e-3",
        "--num-embeddings", "16", "--embedding-dim", "4", "--hidden-channels", "16",
        "--residual-channels", "8", "--num-residual-layers", "1", "--num-downsamples", "1",
        "--grid-pairs", "4", "--backup-every", "2",
    ]
    reference = tmp_path / "reference"
    result = tfvqvae("train", "--out", str(reference), *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "run"
    assert killed(tfvqvae("train", "--out", str(out), *flags, kill_at="checkpoint:saved:1"))
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["step"] == 2
    result = tfvqvae("train", "--out", str(out), *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_model(out / "model.keras", reference / "model.keras")


@slow  # two real training processes (about 30 s); tests/data/test_image_folder_stream.py
# and test_prepare_cli.py check the naming and --skip-corrupt in the default suite
def test_unreadable_image_file_fails_the_run_in_one_line_naming_it(tmp_path):
    import tensorflow as tf

    folder = tmp_path / "images"
    for split in ("train", "test"):
        for i in range(64):
            path = folder / split / f"{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(tf.io.encode_png(np.full((8, 8, 1), i, np.uint8)).numpy())
    (folder / "train" / "007.png").write_bytes(b"\x89PNG broken")
    flags = ["--dataset", f"folder:{folder}", "--epochs", "1", "--batch-size", "16",
             "--num-embeddings", "8", "--embedding-dim", "4", "--hidden-channels", "8",
             "--residual-channels", "4", "--num-residual-layers", "1",
             "--num-downsamples", "1", "--grid-pairs", "2", "--backup-every", "0"]
    result = tfvqvae("train", "--out", str(tmp_path / "run"), *flags)
    assert result.returncode != 0
    assert "007.png" in error_line(result) and "--skip-corrupt" in error_line(result)
    result = tfvqvae("train", "--out", str(tmp_path / "run2"), *flags, "--skip-corrupt")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipped 1 unreadable image file(s)" in result.stderr and "007.png" in result.stderr
