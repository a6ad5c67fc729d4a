"""`train` / `train-prior` with strategies, precision, XLA, step backups and auto-resume."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

from tfvqvae.training import TrainConfig
from tfvqvae.training import train
from tfvqvae.training.checkpoints import StepBackup
from tfvqvae.training.checkpoints import latest_state

REPO = Path(__file__).resolve().parents[2]
TINY = dict(
    dataset="digits", max_train_examples=128, epochs=1, batch_size=32, learning_rate=2e-3,
    num_embeddings=16, embedding_dim=4, hidden_channels=16, residual_channels=8,
    num_residual_layers=1, num_downsamples=1, grid_pairs=2, kmeans_init=True,
    restart_unused_after=2,
)


def tiny_config(out, **overrides):
    return TrainConfig(out=str(out), **{**TINY, **overrides})


def saved_weights(out):
    return [w.numpy() for w in keras.saving.load_model(out / "model.keras").weights]


# Default-suite time: mirrored equality stays in tests/models/test_vqvae.py (EMA codebook)
# and the resumed mirrored run below stays.
@pytest.mark.slow
def test_mirrored_training_matches_one_device(tmp_path, mirrored_strategy, one_device_strategy):
    """The library path (build under the strategy, fit, save) is exact over 2 replicas."""
    one = train(tiny_config(tmp_path / "one"), verbose=0, strategy=one_device_strategy)
    two = train(tiny_config(tmp_path / "two"), verbose=0, strategy=mirrored_strategy)
    assert (one["replicas"], two["replicas"]) == (1, 2)
    for a, b in zip(saved_weights(tmp_path / "one"), saved_weights(tmp_path / "two")):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert two["test"]["mse"] == pytest.approx(one["test"]["mse"], rel=1e-4)


def test_global_batch_must_split_over_replicas(tmp_path, mirrored_strategy):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="33 does not split evenly over 2 replicas"):
        train(tiny_config(out, batch_size=33), verbose=0, strategy=mirrored_strategy)
    assert not out.exists()  # refused before anything was written


def test_fewer_images_than_a_batch_is_named(tmp_path):
    with pytest.raises(ValueError, match="fewer than one global batch of 256"):
        train(tiny_config(tmp_path / "run", batch_size=256), verbose=0)


@pytest.mark.slow  # about 30 s each; tests/models/test_mixed_precision.py keeps the fit steps
@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_mixed_precision_and_xla_training(tmp_path, precision):
    out = tmp_path / "run"
    metrics = train(tiny_config(out, mixed_precision=precision, jit_compile=True), verbose=0)
    assert all(np.isfinite(v) for v in (metrics["test"]["mse"], metrics["test"]["perplexity"]))
    model = keras.saving.load_model(out / "model.keras")
    assert model.encoder.compute_dtype == precision
    assert model.quantizer.codebook.dtype == "float32"
    saved = json.loads((out / "config.json").read_text())
    assert saved["mixed_precision"] == precision and saved["jit_compile"] is True
    # Resuming keeps the policy and the optimizer state (loss scale included).
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # e.g. "Skipping variable loading"
        resumed = keras.saving.load_model(out / "checkpoints" / "epoch-0001.keras")
    assert resumed.encoder.compute_dtype == precision
    # float16 scales the loss dynamically and skips steps whose gradients
    # overflow (the optimizer then does not count them); bfloat16 never does.
    scaled = precision == "float16"
    assert isinstance(resumed.optimizer, keras.optimizers.LossScaleOptimizer) == scaled
    steps = int(resumed.optimizer.iterations)
    assert steps == 4 or (scaled and 1 <= steps < 4)
    train(tiny_config(out, mixed_precision=precision, jit_compile=True, epochs=2),
          resume=True, verbose=0)
    final = keras.saving.load_model(out / "model.keras")
    assert final.encoder.compute_dtype == precision
    assert steps + 4 >= int(final.optimizer.iterations) > steps


def test_bad_precision_is_named():
    with pytest.raises(ValueError, match="'fp8'"):
        TrainConfig(mixed_precision="fp8")
    with pytest.raises(ValueError, match="jit_compile=1"):
        TrainConfig(jit_compile=1)


def test_same_command_resumes_an_interrupted_run_and_nothing_else(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(out), verbose=0)
    (out / "metrics.json").unlink()  # as if killed after the last checkpoint
    (out / "model.keras").unlink()
    # A different request is refused rather than silently resumed.
    with pytest.raises(FileExistsError, match=r"other settings: --learning-rate 0.001 "
                       r"\(saved: 0.002\)"):
        train(tiny_config(out, learning_rate=1e-3), verbose=0)
    train(tiny_config(out), verbose=0)  # the same one resumes: nothing left to run
    assert int(keras.saving.load_model(out / "model.keras").optimizer.iterations) == 4
    # A finished run is not resumed by running it again.
    with pytest.raises(FileExistsError, match="--overwrite"):
        train(tiny_config(out), verbose=0)


class _Saver:
    """Stands in for a Keras model: `save` writes the step it was called at."""

    weights = ()  # checked for NaN / Inf before every save: none here

    def __init__(self):
        self.saved = []

    def save(self, path):
        Path(path).write_text("model")
        self.saved.append(Path(path).name)


def test_step_backup_counts_global_steps_from_a_resumed_position(tmp_path):
    folder = tmp_path / "checkpoints"
    backup = StepBackup(folder, every=2, steps_per_epoch=5, initial_step=7)
    saver = _Saver()
    backup._model = saver  # what Keras' set_model does
    backup.on_epoch_begin(1)  # partial epoch 1: its steps 8, 9, 10
    for batch in range(3):
        backup.on_train_batch_end(batch)
    backup.on_epoch_begin(2)  # steps 11 .. 15
    for batch in range(2):
        backup.on_train_batch_end(batch)
    # Step 10 ends epoch 2 and is left to EpochCheckpoint.
    assert [name.split("-", 2)[-1] for name in saver.saved] == [
        "step-00000008.keras", "step-00000012.keras"  # written as .tmp-PID-NAME, renamed
    ]
    state = latest_state(folder)
    assert (state["step"], state["epoch"], state["path"].name) == (12, 2, "step-00000012.keras")
    assert sorted(p.name for p in folder.iterdir()) == ["latest.json", "step-00000012.keras"]


def _cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    env.pop("TF_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "tfvqvae.training.cli", *args], env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow  # two real processes (about 25 s); the library path is
# test_mirrored_training_matches_one_device
def test_cli_mirrored_on_split_cpu(tmp_path):
    out = tmp_path / "run"
    flags = ["--dataset", "digits", "--max-train-examples", "64", "--epochs", "1",
             "--batch-size", "32", "--num-embeddings", "8", "--embedding-dim", "4",
             "--hidden-channels", "8", "--residual-channels", "4",
             "--num-residual-layers", "1", "--num-downsamples", "1", "--backup-every", "1"]
    result = _cli("train", "--out", str(out), "--strategy", "mirrored", "--cpu-replicas", "2",
                  "--mixed-precision", "bfloat16", *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["replicas"] == 2
    refused = _cli("train", "--out", str(tmp_path / "other"), "--cpu-replicas", "2", *flags)
    assert refused.returncode == 2
    assert "--cpu-replicas only applies to --strategy mirrored" in refused.stderr


def test_jit_compile_over_mirrored_replicas_is_refused_up_front(tmp_path, mirrored_strategy):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="jit_compile=True does not work"):
        train(tiny_config(out, jit_compile=True), verbose=0, strategy=mirrored_strategy)
    assert not out.exists()
