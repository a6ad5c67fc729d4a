"""A NaN or Inf weight is refused before export; NaN or Inf outputs fail verification.

Expected counts come from the arrays the tests poison (NumPy), not from the
exporter; "nothing written" is read from the file system.
"""

import json
import math

import keras
import numpy as np
import pytest

import tfvqvae
from tfvqvae.export import VerifyRow
from tfvqvae.export import check_agreement
from tfvqvae.export import export_run
from tfvqvae.export import exporter
from tfvqvae.export.verify import KerasRunner
from tfvqvae.export.verify import verify_runners
from tfvqvae.training import cli

IMAGE_SIZE = 16


def _tiny_vqvae():
    model = tfvqvae.VQVAE(
        image_channels=1, hidden_channels=8, residual_channels=4, num_residual_layers=1,
        quantizer=tfvqvae.VectorQuantizerEMA(8, 4, decay=0.9, kmeans_init=False, restart_unused_after=None),
    )
    model(np.random.default_rng(0).random((2, IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.float32))
    return model


def _variable(model, layer_name, suffix):
    layer = next(layer for layer in model.layers if layer.name == layer_name)
    matches = [v for v in layer.weights if v.path.endswith(suffix)]
    assert len(matches) == 1, [v.path for v in layer.weights]
    return matches[0]


def _poison(variable, indices, value):
    values = np.array(variable.numpy())
    values.flat[indices] = value
    variable.assign(values)
    return int(np.count_nonzero(~np.isfinite(values))), values.size


def _run_folder(path, model):
    path.mkdir(parents=True)
    model.save(path / "model.keras")
    # The offline digits (in scikit-learn's wheel), for --verify's test images.
    (path / "config.json").write_text(json.dumps({"dataset": "digits", "image_size": IMAGE_SIZE}))
    return path


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))


@pytest.mark.parametrize("layer_name, suffix, indices, value", [
    ("vector_quantizer_ema", "codebook", [5], np.nan),
    ("decoder", "upsample1/kernel", [0, 3, 7], np.inf),
    ("encoder", "downsample0/bias", [1], -np.inf),
])
def test_a_non_finite_weight_is_refused_before_anything_is_written(
        tmp_path, layer_name, suffix, indices, value):
    model = _tiny_vqvae()
    bad, size = _poison(_variable(model, layer_name, suffix), indices, value)
    assert bad == len(indices)
    run = _run_folder(tmp_path / "run", model)
    out = tmp_path / "export"
    with pytest.raises(ValueError) as raised:
        export_run(run, out)
    message = str(raised.value)
    assert "\n" not in message
    assert str(run / "model.keras") in message
    assert f"{layer_name}/" in message and suffix in message
    assert f"{bad} of {size} values NaN or Inf" in message
    assert not out.exists() and _leftovers(tmp_path) == []


def test_the_first_bad_weight_is_named_and_every_bad_value_counted(tmp_path):
    model = _tiny_vqvae()
    first, first_size = _poison(_variable(model, "vector_quantizer_ema", "codebook"),
                                [0, 1], np.nan)
    second, _ = _poison(_variable(model, "decoder", "upsample1/bias"), [0], np.inf)
    run = _run_folder(tmp_path / "run", model)
    with pytest.raises(ValueError, match=(
            rf"vector_quantizer_ema/codebook holds {first} of {first_size} values NaN or Inf "
            rf"\({first + second} in 2 variables in all\)")):
        export_run(run, tmp_path / "export")


def test_a_prior_with_a_non_finite_weight_is_refused(tmp_path):
    model = _tiny_vqvae()
    run = _run_folder(tmp_path / "run", model)
    shape = model.code_shapes((IMAGE_SIZE, IMAGE_SIZE))["top"]
    prior = tfvqvae.PixelCNNPrior(8, shape, hidden_channels=8, num_blocks=1, kernel_size=3)
    prior(np.zeros((1, *shape), np.int32))
    embeddings = next(v for v in prior.weights if v.path.endswith("embeddings"))
    bad, size = _poison(embeddings, [2], np.nan)
    (run / "prior-top").mkdir()
    prior.save(run / "prior-top" / "model.keras")
    with pytest.raises(ValueError, match=rf"prior-top/model.keras has non-finite weights .*"
                                         rf"embeddings holds {bad} of {size} value"):
        export_run(run, tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_the_command_refuses_a_non_finite_model_in_one_line(tmp_path, capsys):
    model = _tiny_vqvae()
    _poison(_variable(model, "vector_quantizer_ema", "codebook"), [3], np.nan)
    run = _run_folder(tmp_path / "run", model)
    out = tmp_path / "export"
    assert cli.main(["export", "--run", str(run), "--out", str(out), "--verify"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tfvqvae export: error: ")
    assert "vector_quantizer_ema/codebook" in err[0] and "non-finite" in err[0]
    assert not out.exists() and _leftovers(tmp_path) == []


class _Broken:
    """A runner that answers like Keras except for ``value`` in one reconstruction pixel."""

    def __init__(self, model, value):
        self._keras = KerasRunner(model)
        self.levels = self._keras.levels
        self.value = value

    def encode(self, images):
        return self._keras.encode(images)

    def decode(self, codes):
        return self._keras.decode(codes)

    def reconstruct(self, images):
        out = np.array(self._keras.reconstruct(images))
        out[0, 1, 2, 0] = self.value
        return out


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_verify_fails_an_artifact_with_a_non_finite_output_despite_equal_codes(value):
    model = _tiny_vqvae()
    images = np.random.default_rng(1).random((6, IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.float32)
    rows = verify_runners(model, {"savedmodel": _Broken(model, value)}, images, batch_size=3)
    keras_row, broken = rows
    assert broken.agreement == 100.0  # every code equal: the case the check used to pass
    # Two batches of 3, one bad pixel in each batch's first image.
    assert broken.nonfinite == 2 and broken.num_values == images.size
    assert math.isnan(broken.psnr_db)
    failures = check_agreement(rows)
    assert failures == [f"savedmodel: 2 of {images.size} reconstruction values are NaN or Inf"]
    assert keras_row.nonfinite == 0


def _row(artifact, psnr_db=20.0, max_abs_diff=0.0, mean_abs_diff=0.0):
    return VerifyRow(artifact, False, 10, 100.0, {"top": 100.0}, max_abs_diff, mean_abs_diff,
                     psnr_db, 1.0, 0, 100)


def test_check_agreement_fails_non_finite_psnr_or_differences():
    rows = [_row("savedmodel"), _row("onnx", psnr_db=math.nan),
            _row("tflite-float32", max_abs_diff=math.nan), _row("keras", psnr_db=-math.inf),
            _row("tflite-int8", mean_abs_diff=math.inf), _row("perfect", psnr_db=math.inf)]
    failures = check_agreement(rows)
    assert [f.split(":")[0] for f in failures] == ["onnx", "tflite-float32", "keras",
                                                   "tflite-int8"]
    assert "PSNR nan" in failures[0] and "max abs diff nan" in failures[1]
    assert "PSNR -inf" in failures[2] and "mean abs diff inf" in failures[3]
    assert all("\n" not in f for f in failures)


def test_verify_on_the_command_line_exits_1_on_a_non_finite_output(tmp_path, capsys,
                                                                   monkeypatch):
    model = _tiny_vqvae()
    run = _run_folder(tmp_path / "run", model)
    out = tmp_path / "export"
    real_open_runners = exporter.open_runners

    def broken_savedmodel(result, num_threads=None):
        runners = real_open_runners(result, num_threads)
        loaded = keras.saving.load_model(run / "model.keras", compile=False)
        runners["savedmodel"] = _Broken(loaded, np.nan)
        return runners

    monkeypatch.setattr(exporter, "open_runners", broken_savedmodel)
    argv = ["export", "--run", str(run), "--out", str(out), "--verify", "--verify-images", "8"]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    fails = [line for line in captured.err.splitlines() if line.startswith("FAIL")]
    assert fails == [f"FAIL savedmodel: 1 of {8 * IMAGE_SIZE * IMAGE_SIZE} reconstruction "
                     "values are NaN or Inf"]
