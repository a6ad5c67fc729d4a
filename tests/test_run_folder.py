"""The run folder's layout (tfvqvae.run_folder) and its loading helpers' errors."""

from pathlib import Path

import keras
import numpy as np
import pytest

import tfvqvae
from tfvqvae import run_folder
from tfvqvae.run_folder import load_model
from tfvqvae.run_folder import load_priors
from tfvqvae.run_folder import read_run_config


def test_paths_are_the_documented_layout():
    run = Path("runs/r1")
    assert run_folder.model_file(run) == run / "model.keras"
    assert run_folder.config_file(run) == run / "config.json"
    assert run_folder.metrics_file(run) == run / "metrics.json"
    assert run_folder.history_file(run) == run / "history.csv"
    assert run_folder.logs_dir(run) == run / "logs"
    assert run_folder.reconstructions_file(run) == run / "reconstructions.png"
    assert run_folder.checkpoints_dir(run) == run / "checkpoints"
    assert run_folder.latest_file(run / "checkpoints") == run / "checkpoints" / "latest.json"
    assert run_folder.codes_dir(run) == run / "codes"
    assert run_folder.code_file_name("train") == "codes-train.tfrecord"
    assert run_folder.code_file(run, "test") == run / "codes" / "codes-test.tfrecord"
    assert run_folder.prior_dir(run, "top") == run / "prior-top"
    assert run_folder.prior_dir(run, "bottom") == run / "prior-bottom"
    assert run_folder.samples_file(run, 3) == run / "samples-seed3.png"
    assert run_folder.export_dir(run) == run / "export"
    # A prior's folder has a run's files under the same names.
    prior = run_folder.prior_dir(run, "top")
    assert run_folder.model_file(prior) == run / "prior-top" / "model.keras"
    assert run_folder.checkpoints_dir(prior) == run / "prior-top" / "checkpoints"
    # Strings work as well as paths, and every result is a Path.
    assert run_folder.model_file("runs/r1") == run / "model.keras"
    assert isinstance(run_folder.code_file("r", "train"), Path)


def test_the_module_docstring_draws_every_name():
    doc = run_folder.__doc__
    names = ["MODEL_FILE", "CONFIG_FILE", "METRICS_FILE", "HISTORY_FILE", "LOGS_DIR",
             "RECONSTRUCTIONS_FILE", "CHECKPOINTS_DIR", "LATEST_FILE", "CODES_DIR",
             "EXPORT_DIR"]
    for name in names:
        value = getattr(run_folder, name)
        assert name in doc and value in doc, name
    for drawn in ("codes-train.tfrecord", "prior-top/", "samples-seed<SEED>.png"):
        assert drawn in doc


def test_load_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="Run folder not found"):
        load_model(tmp_path / "missing")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        load_model(a_file)
    with pytest.raises(FileNotFoundError, match="not a tfvqvae run folder: it has no model.keras"):
        load_model(tmp_path)
    (tmp_path / "model.keras").write_bytes(b"")
    with pytest.raises(ValueError, match="model.keras: it is not a complete .keras file.*empty"):
        load_model(tmp_path)
    other = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    other.save(tmp_path / "model.keras")
    with pytest.raises(ValueError, match="holds a Sequential, not a tfvqvae VQVAE or VQVAE2"):
        load_model(tmp_path)


def _tiny_vqvae():
    return tfvqvae.VQVAE(image_channels=1, hidden_channels=4, residual_channels=2,
                         num_residual_layers=1, num_downsamples=1,
                         quantizer=tfvqvae.VectorQuantizerEMA(4, 2, kmeans_init=False, restart_unused_after=None))


def test_load_model_and_priors(tmp_path):
    model = _tiny_vqvae()
    model.save(run_folder.model_file(tmp_path))
    loaded = load_model(tmp_path, compile=False)
    assert isinstance(loaded, tfvqvae.VQVAE)
    x = np.random.default_rng(0).random((2, 4, 4, 1)).astype("float32")
    np.testing.assert_array_equal(loaded.encode(x), model.encode(x))

    with pytest.raises(FileNotFoundError,
                       match=r"No top prior at .*prior-top/model.keras: run `tfvqvae "
                             r"train-prior --run .* --level top` first"):
        load_priors(tmp_path, ["top"])
    assert load_priors(tmp_path, ["top"], required=False) == {}

    prior = tfvqvae.PixelCNNPrior(4, (2, 2), hidden_channels=4, num_blocks=1, kernel_size=3)
    run_folder.prior_dir(tmp_path, "top").mkdir()
    prior.save(run_folder.model_file(run_folder.prior_dir(tmp_path, "top")))
    priors = load_priors(tmp_path, ["top", "bottom"], required=False, compile=False)
    assert list(priors) == ["top"] and isinstance(priors["top"], tfvqvae.PixelCNNPrior)
    with pytest.raises(FileNotFoundError, match="No bottom prior at"):
        load_priors(tmp_path, ["top", "bottom"])

    run_folder.prior_dir(tmp_path, "bottom").mkdir()
    model.save(run_folder.model_file(run_folder.prior_dir(tmp_path, "bottom")))
    with pytest.raises(ValueError, match="holds a VQVAE, not a PixelCNNPrior"):
        load_priors(tmp_path, ["top", "bottom"])
    (run_folder.prior_dir(tmp_path, "bottom") / "model.keras").write_bytes(b"PK trunc")
    with pytest.raises(ValueError, match=r"Could not load the bottom prior .*prior-bottom"):
        load_priors(tmp_path, ["top", "bottom"])


def test_read_run_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="Configuration not found"):
        read_run_config(tmp_path)
    assert read_run_config(tmp_path, missing_ok=True) == {}
    run_folder.config_file(tmp_path).write_text('{"dataset": "digits"}')
    assert read_run_config(tmp_path) == {"dataset": "digits"}
    run_folder.config_file(tmp_path).write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object.*Received: a JSON list"):
        read_run_config(tmp_path, missing_ok=True)
    run_folder.config_file(tmp_path).write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        read_run_config(tmp_path)
