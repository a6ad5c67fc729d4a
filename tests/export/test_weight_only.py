"""TFLite weight_only files (int8 weights, float compute) and runs trained with --int8-kernels.

A kernel on TFLite's per-channel int8 grid is stored without loss, so the
weight_only file of a snapped model computes what Keras computes: the
property checked here against the Keras model itself.
"""

import json

import numpy as np
import pytest

from tfvqvae.export import export_run
from tfvqvae.export import load_run
from tfvqvae.export import verify_export
from tfvqvae.export.saved_model import export_saved_model
from tfvqvae.export.tflite import TFLiteRunner
from tfvqvae.export.tflite import convert_tflite
from tfvqvae.export.tflite import tflite_operators
from tfvqvae.export.verify import KerasRunner
from tfvqvae.models.kernel_grid import on_grid
from tfvqvae.models.kernel_grid import snap_kernels
from tfvqvae.training import TrainConfig
from tfvqvae.training import train
from tests.export.conftest import TINY


def test_weight_only_file_of_a_snapped_model_computes_what_keras_does(vqvae_run, tmp_path):
    run = load_run(vqvae_run)
    images = run.images("test", 256)
    snap_kernels(run.model)  # in memory: the session's run folder is left as it is
    source = tmp_path / "savedmodel"
    export_saved_model(run.model, source, run.image_shape, tflite_only=True)
    path = tmp_path / "weight_only.tflite"
    path.write_bytes(convert_tflite(source, "weight_only"))
    assert "DEQUANTIZE" in tflite_operators(path)
    runner, keras_runner = TFLiteRunner(path, run.model.levels), KerasRunner(run.model)
    codes, expected = runner.encode(images)["top"], keras_runner.encode(images)["top"]
    # Lossless weights: measured 100 % of the codes; float32 rounding may move a tie.
    assert np.mean(codes == expected) >= 0.999 and len(np.unique(expected)) > 4
    reference = keras_runner.decode({"top": expected})
    np.testing.assert_allclose(runner.decode({"top": expected}), reference, rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def snapped_run(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mnist-vqvae2-int8-kernels"
    metrics = train(TrainConfig(out=str(out), data_dir=str(shared_data), model="vqvae2",
                                image_size=32, int8_kernels=True, **TINY), verbose=0)
    return out, metrics


@pytest.mark.slow  # trains a VQ-VAE-2 run (about 35 s); the in-memory test above stays
def test_int8_kernels_puts_the_saved_model_on_the_grid(snapped_run, vqvae2_run):
    out, metrics = snapped_run
    run = load_run(out)
    assert on_grid(run.model) and not on_grid(load_run(vqvae2_run).model)
    kernels = [v for v in run.model.weights if v.path.endswith("/kernel")]
    assert metrics["int8_kernels"] == len(kernels) > 10
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["int8_kernels"] == len(kernels)
    assert json.loads((out / "config.json").read_text())["int8_kernels"] is True
    # The test metrics are the snapped model's: evaluate it again and compare.
    test = run.images("test", 10000)
    mse = float(np.mean((run.model.predict(test, verbose=0) - test) ** 2))
    assert saved["test"]["mse"] == pytest.approx(mse, rel=1e-3)


@pytest.mark.slow  # two exports of VQ-VAE-2 runs (about 60 s)
def test_weight_only_file_of_a_snapped_model_keeps_its_codes(snapped_run, vqvae2_run, tmp_path):
    out, _ = snapped_run
    result = export_run(out, tmp_path / "snapped", formats="tflite",
                        tflite_modes="float32,weight_only", sample=False)
    path = result.artifacts["tflite-weight_only"]
    operators = tflite_operators(path)
    assert "DEQUANTIZE" in operators and not [op for op in operators if op.startswith("CUSTOM")]
    assert result.sizes["tflite-weight_only"] < 0.7 * result.sizes["tflite-float32"]
    rows = {row.artifact: row for row in verify_export(result, out, num_images=256)}
    snapped = rows["tflite-weight_only"]
    assert snapped.quantized
    # Lossless weights: the codes and reconstructions of Keras, up to float32 rounding
    # (measured: 100 % of codes, mean |difference| 1e-7).
    assert snapped.agreement >= 99.9, snapped.agreement
    assert snapped.mean_abs_diff < 1e-4
    # The unsnapped run's weight_only file moves more codes: its kernels are rounded.
    plain = export_run(vqvae2_run, tmp_path / "plain", formats="tflite",
                       tflite_modes="weight_only", sample=False)
    row = {r.artifact: r for r in verify_export(plain, vqvae2_run, num_images=256)}
    assert row["tflite-weight_only"].agreement < snapped.agreement
    assert row["tflite-weight_only"].mean_abs_diff > 10 * snapped.mean_abs_diff
