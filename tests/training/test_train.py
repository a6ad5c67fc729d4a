"""`tfvqvae train`: outputs, resume after a kill, bad input, the CLI."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvqvae.training import TrainConfig
from tfvqvae.training import cli
from tfvqvae.training import latest_checkpoint
from tfvqvae.training import train

TINY = dict(
    dataset="digits",
    max_train_examples=256,
    epochs=2,
    batch_size=64,
    learning_rate=2e-3,
    num_embeddings=16,
    embedding_dim=4,
    hidden_channels=16,
    residual_channels=8,
    num_residual_layers=1,
    num_downsamples=1,
    grid_pairs=4,
)


def tiny_config(out, **overrides):
    return TrainConfig(out=str(out), **{**TINY, **overrides})


def test_train_writes_every_artifact(tmp_path):
    out = tmp_path / "run"
    metrics = train(tiny_config(out), verbose=0)

    names = {p.name for p in out.iterdir()}
    assert {"config.json", "checkpoints", "logs", "history.csv", "model.keras",
            "reconstructions.png", "metrics.json"} <= names
    assert not [n for n in names if n.startswith(".tmp-")]

    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    test = saved["test"]
    assert saved["num_test_images"] == 297 and saved["num_train_images"] == 256
    assert 0 < test["mse"] < 0.2
    assert test["psnr_db"] == pytest.approx(10 * np.log10(1 / test["mse"]))
    assert 1 <= test["perplexity"] <= 16
    assert test["dead_codes"] == round(16 * (1 - test["usage_percent"] / 100))

    # The model file reproduces the reported test MSE on the test split.
    from tfvqvae.data import load_digits

    x = load_digits("test").as_float()
    model = keras.saving.load_model(out / "model.keras")
    mse = float(np.mean((model.predict(x, verbose=0) - x) ** 2))
    assert mse == pytest.approx(test["mse"], rel=1e-4)

    # 4 pairs of 8x8 images, scaled to 32x32 tiles with 1-pixel gaps.
    png = tf.io.decode_png((out / "reconstructions.png").read_bytes()).numpy()
    assert png.shape == (1 + 32 + 1, 1 + 8 * 33, 1)

    assert latest_checkpoint(out / "checkpoints")[0] == 2
    history = (out / "history.csv").read_text().strip().splitlines()
    assert len(history) == 3  # header + 2 epochs
    assert json.loads((out / "config.json").read_text())["epochs"] == 2


@pytest.mark.slow  # default-suite time: the killed-and-resumed real process stays
def test_resume_continues_from_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(out, epochs=1), verbose=0)
    first = keras.saving.load_model(out / "checkpoints" / "epoch-0001.keras")
    steps_per_epoch = int(first.optimizer.iterations)
    assert steps_per_epoch == 4  # 256 images / 64

    # A different architecture is refused, naming the setting and its saved
    # value: only `epochs` may change on resume. Nothing is written.
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(ValueError, match=r"--hidden-channels 32 \(saved: 16\).*--epochs"):
        train(tiny_config(out, epochs=3, hidden_channels=32), resume=True, verbose=0)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    train(tiny_config(out, epochs=3), resume=True, verbose=0)
    model = keras.saving.load_model(out / "model.keras")
    assert int(model.optimizer.iterations) == 3 * steps_per_epoch
    assert model.hidden_channels == 16
    rows = (out / "history.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"]
    assert latest_checkpoint(out / "checkpoints")[0] == 3
    assert sorted(p.name for p in (out / "checkpoints").glob("*.keras")) == [
        "epoch-0002.keras", "epoch-0003.keras"
    ]


def test_existing_output_folder_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "something").write_text("x")
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_config(out), verbose=0)
    assert (out / "something").read_text() == "x"


def test_bad_configuration_is_named():
    with pytest.raises(ValueError, match="quantizer='pq'"):
        TrainConfig(quantizer="pq")
    with pytest.raises(ValueError, match="epochs=0"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="Unknown configuration keys: \\['colour'\\]"):
        TrainConfig.from_dict({"colour": 1})


def test_image_size_not_divisible_is_named(tmp_path):
    with pytest.raises(ValueError, match="8x8 .* 2 \\*\\* num_downsamples = 16"):
        train(tiny_config(tmp_path / "run", num_downsamples=4), verbose=0)


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    code = cli.main(["train", "--dataset", "npz:" + str(tmp_path / "missing.npz"),
                     "--out", str(tmp_path / "run")])
    assert code == 2
    assert "missing.npz" in capsys.readouterr().err


def test_cli_flags_override_preset(tmp_path):
    from tfvqvae_cli.parser import build_parser
    from tfvqvae.training.train import config_from_args

    args = build_parser().parse_args(
        ["train", "--preset", "quickstart", "--epochs", "3", "--no-kmeans-init"])
    config = config_from_args(args)
    assert config.epochs == 3 and config.kmeans_init is False
    assert config.dataset == "digits" and config.out == "runs/quickstart"
    assert config.num_embeddings == 64  # from the preset


def _wait_for(path, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.2)
    return False


# The default suite's one real SIGKILL-and-resume run (about 30 s); the bit-exact
# step-backup runs of tests/training/test_fault_tolerance.py are slow.
def test_killed_run_resumes_and_leaves_no_partial_files(tmp_path):
    """SIGKILL after the first checkpoint; the same command with --resume finishes."""
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "tfvqvae.training.cli", "train", "--out", str(out),
        "--dataset", "digits", "--epochs", "40", "--batch-size", "16",
        "--num-embeddings", "16", "--embedding-dim", "4", "--hidden-channels", "16",
        "--residual-channels", "8", "--num-residual-layers", "1",
        "--num-downsamples", "1",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        assert _wait_for(out / "checkpoints" / "latest.json", timeout=600)
        time.sleep(1.0)  # let it get into the middle of a later epoch
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (out / "model.keras").exists()
    epoch, path = latest_checkpoint(out / "checkpoints")
    assert 1 <= epoch < 40
    keras.saving.load_model(path)  # the newest named checkpoint is complete

    finish = [*command[:command.index("--epochs") + 1], str(epoch + 1),
              *command[command.index("--epochs") + 2:], "--resume"]
    result = subprocess.run(finish, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    model = keras.saving.load_model(out / "model.keras")
    assert int(model.optimizer.iterations) == (epoch + 1) * 93  # 1500 // 16 full batches
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []


def test_codebook_cost_reaches_the_vq_quantizer_and_is_refused_for_ema():
    from tfvqvae.training.train import build_model

    model = build_model(TrainConfig(quantizer="vq", codebook_cost=0.5, commitment_cost=0.1))
    assert (model.quantizer.codebook_cost, model.quantizer.commitment_cost) == (0.5, 0.1)
    assert build_model(TrainConfig(quantizer="vq")).quantizer.codebook_cost == 1.0
    with pytest.raises(ValueError, match="quantizer='ema', codebook_cost=0.5"):
        TrainConfig(codebook_cost=0.5)
    with pytest.raises(ValueError, match=r"codebook_cost must be a finite number in \[0, ∞\)"):
        TrainConfig(quantizer="vq", codebook_cost=float("inf"))
