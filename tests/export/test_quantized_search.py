"""The searches of the quantised TFLite sources pick the NumPy nearest code in float32."""

import numpy as np
import pytest
import tensorflow as tf

from tfvqvae import VectorQuantizerEMA
from tfvqvae import VQVAE
from tfvqvae.export.quantized_search import half_squared_norm
from tfvqvae.export.quantized_search import norm_channels_for
from tfvqvae.export.quantized_search import quantization_search
from tfvqvae.export.quantized_search import scores_search
from tfvqvae.export.quantized_search import split_codebook
from tfvqvae.export.quantized_search import split_window_search
from tfvqvae.export.quantized_search import window_for
from tfvqvae.export.quantized_search import window_search


def _quantizer(codebook):
    quantizer = VectorQuantizerEMA(len(codebook), codebook.shape[1])
    quantizer.build((None, codebook.shape[1]))
    quantizer.codebook.assign(codebook)
    return quantizer


def _nearest(z, codebook):
    d = ((z[:, None, :].astype(np.float64) - codebook[None].astype(np.float64)) ** 2).sum(-1)
    return d.argmin(axis=1), np.sort(d, axis=1)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    codebook = rng.normal(2.0, 1.0, (32, 6)).astype(np.float32)  # offset from the origin
    z = (codebook[rng.integers(0, 32, 500)] + rng.normal(0, 0.3, (500, 6))).astype(np.float32)
    return codebook, z


def _clear_ties(z, codebook, indices):
    """Rows whose two nearest codes are not float32-tied (the only ones a float32 graph must get)."""
    _, d = _nearest(z, codebook)
    return indices[(d[:, 1] - d[:, 0]) > 1e-4 * (1 + d[:, 1])]


def test_scores_search_is_the_nearest_code(data):
    codebook, z = data
    got = scores_search(_quantizer(codebook))(tf.constant(z.reshape(20, 25, 6))).numpy()
    assert got.shape == (20, 25) and got.dtype == np.int32
    want, _ = _nearest(z, codebook)
    rows = _clear_ties(z, codebook, np.arange(len(z)))
    np.testing.assert_array_equal(got.reshape(-1)[rows], want[rows])


def test_window_search_is_the_nearest_code_inside_and_outside_the_window(data):
    codebook, z = data
    quantizer = _quantizer(codebook)
    window = window_for(quantizer, z[:100])
    far = codebook[:5] + 40.0  # beyond every code by far more than the window: the fallback
    queries = np.concatenate([z, far]).astype(np.float32)
    got = window_search(quantizer, window)(tf.constant(queries)).numpy()
    want, d = _nearest(queries, codebook)
    assert (0.5 * d[-5:, 0] > window).all()
    rows = _clear_ties(queries, codebook, np.arange(len(queries)))
    np.testing.assert_array_equal(got[rows], want[rows])


def test_window_for_matches_its_definition(data):
    codebook, z = data
    quantizer = _quantizer(codebook)
    window = window_for(quantizer, z, margin=1.5)
    _, d = _nearest(z, codebook)
    assert window == pytest.approx(1.5 * 0.5 * d[:, 0].max(), rel=1e-9)


@pytest.mark.parametrize("groups", [1, 3])
def test_window_search_is_the_nearest_code_for_any_norm_channels(data, groups):
    codebook, z = data
    quantizer = _quantizer(codebook)
    got = window_search(quantizer, window_for(quantizer, z), groups)(tf.constant(z)).numpy()
    want, _ = _nearest(z, codebook)
    rows = _clear_ties(z, codebook, np.arange(len(z)))
    np.testing.assert_array_equal(got[rows], want[rows])


@pytest.mark.parametrize("bad", [np.zeros((0, 6)), np.full((3, 6), np.nan)])
def test_window_for_refuses_empty_or_nonfinite_vectors(data, bad):
    with pytest.raises(ValueError, match="finite encoder outputs"):
        window_for(_quantizer(data[0]), bad)


def test_window_search_refuses_a_bad_window(data):
    with pytest.raises(ValueError, match="positive and finite"):
        window_search(_quantizer(data[0]), float("nan"), 1)


def test_split_window_search_is_the_nearest_code_inside_and_outside_the_window(data):
    codebook, z = data
    quantizer = _quantizer(codebook)
    window = window_for(quantizer, z[:100])
    far = codebook[:5] + 40.0
    queries = np.concatenate([z, far]).astype(np.float32)
    search = split_window_search(quantizer, window, norm_channels_for(quantizer, z[:100]))
    got = search(tf.constant(queries.reshape(1, -1, 6))).numpy().reshape(-1)
    want, d = _nearest(queries, codebook)
    assert (0.5 * d[-5:, 0] > window).all()
    rows = _clear_ties(queries, codebook, np.arange(len(queries)))
    np.testing.assert_array_equal(got[rows], want[rows])


def _tflite_int8_rows(weights):
    """TFLite's symmetric per-row int8 weights, dequantised (NumPy): s = max|row| / 127."""
    scale = np.abs(weights).max(axis=1, keepdims=True) / 127.0
    return np.round(weights / scale) * scale


@pytest.mark.parametrize("residual_scale", [1.0, 64.0, 200.0])
def test_split_codebook_is_stored_exactly_by_int8_rows(data, residual_scale):
    codebook, _ = data
    scale, hi, lo = split_codebook(_quantizer(codebook), residual_scale)
    centred = codebook.astype(np.float64) - codebook.astype(np.float64).mean(axis=0)
    assert scale == pytest.approx(np.abs(centred).max())
    np.testing.assert_allclose(hi + lo, centred / scale, atol=1e-12)
    np.testing.assert_allclose(hi * 127, np.round(hi * 127), atol=1e-9)
    assert np.abs(lo).max() <= 0.5 / 127 + 1e-12
    groups = 3
    rows = np.concatenate([hi, residual_scale * lo, -np.ones((len(hi), groups))], axis=1)
    stored = _tflite_int8_rows(rows)
    np.testing.assert_allclose(stored[:, :6], hi, atol=1e-12)  # the int8 grid holds hi exactly
    np.testing.assert_array_equal(stored[:, 12:], -1.0)
    # lo is held to half a step of 1 / 127 after scaling by R: 1 / (254 R).
    error = np.abs(stored[:, 6:12] / residual_scale - lo).max()
    assert error <= 0.5 / 127 / residual_scale + 1e-12
    plain_error = np.abs(_tflite_int8_rows(centred / scale) - centred / scale).max()
    assert residual_scale == 1.0 or error < plain_error / 10


@pytest.mark.parametrize("residual_scale", [0.5, 254.0, float("nan")])
def test_split_codebook_refuses_a_residual_scale_out_of_range(data, residual_scale):
    with pytest.raises(ValueError, match=r"R must lie in \[1, 254\)"):
        split_codebook(_quantizer(data[0]), residual_scale)


def test_norm_channels_for_matches_its_definition(data):
    codebook, z = data
    quantizer = _quantizer(codebook)
    flat = z.astype(np.float64) - codebook.astype(np.float64).mean(axis=0)
    scale = np.abs(codebook - codebook.mean(axis=0)).max()
    want = int(np.ceil(0.5 * (flat**2).sum(axis=1).max() / (scale * np.abs(flat).max())))
    assert norm_channels_for(quantizer, z) == max(1, want)
    assert norm_channels_for(quantizer, np.tile(codebook.mean(axis=0), (3, 1))) == 1
    with pytest.raises(ValueError, match="finite encoder outputs"):
        norm_channels_for(quantizer, np.full((2, 6), np.inf))


def _convert(function, dim, samples, mode):
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function(tf.TensorSpec([None, dim], tf.float32))], function)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([samples[i:i + 50]]
                                                for i in range(0, len(samples), 50))
    converter.target_spec.supported_ops = (
        [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] if mode == "int8" else
        [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8])
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=converter.convert())

    def run(x):
        interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    return run


@pytest.mark.parametrize("mode", ["int8", "int16x8"])
def test_half_squared_norm_is_not_saturated_by_quantization(mode):
    rng = np.random.default_rng(3)
    samples = rng.normal(0.0, 1.0, (400, 32)).astype(np.float32)
    want = 0.5 * (samples.astype(np.float64) ** 2).sum(axis=1)

    @tf.function
    def matmul_norm(x):
        return half_squared_norm(x)

    @tf.function
    def summed_norm(x):
        return 0.5 * tf.reduce_sum(x * x, axis=1, keepdims=True)

    got = _convert(matmul_norm, 32, samples, mode)(samples)[:, 0]
    # One output scale over [0, max]: within a few of its steps everywhere.
    step = want.max() / (127 if mode == "int8" else 32767)
    assert np.abs(got - want).max() < 4 * step + 0.02 * want.max() * (mode == "int8")
    summed = _convert(summed_norm, 32, samples, mode)(samples)[:, 0]
    if mode == "int16x8":
        # The cause the matmul avoids: the 16-bit SUM keeps the scale of x², so it
        # saturates near the largest single square, far below ½‖x‖² of most rows.
        assert summed.max() < 0.5 * want.max()
    else:  # the int8 SUM is requantised
        assert np.abs(summed - want).max() < 0.05 * want.max()


def test_quantization_search_swaps_and_restores_the_quantizers_search():
    model = VQVAE(image_channels=1, hidden_channels=8, residual_channels=4,
                  quantizer=VectorQuantizerEMA(16, 4), num_downsamples=2)
    images = np.random.default_rng(1).uniform(0, 1, (4, 8, 8, 1)).astype(np.float32)
    codes = model.encode(images).numpy()
    with pytest.raises(ValueError, match="needs calibration images"):
        with quantization_search(model, "window"):
            pass
    with pytest.raises(ValueError, match="must be one of"):
        with quantization_search(model, "nearest"):
            pass
    for search in ("scores", "window", "split_window"):
        with quantization_search(model, search, images):
            assert "indices" in vars(model.quantizer)
            np.testing.assert_array_equal(model.encode(images).numpy(), codes)
        assert "indices" not in vars(model.quantizer)
    np.testing.assert_array_equal(model.encode(images).numpy(), codes)


@pytest.mark.parametrize("quantizer", [
    lambda: VectorQuantizerEMA(16, 4, use_cosine_similarity=True),
    lambda: VectorQuantizerEMA(16, 4, codebook_dim=2),
    lambda: __import__("tfvqvae").FiniteScalarQuantizer([4, 4]),
], ids=["cosine", "codebook_dim", "fsq"])
def test_quantizers_without_a_plain_codebook_keep_their_own_search(quantizer):
    model = VQVAE(image_channels=1, hidden_channels=8, residual_channels=4,
                  quantizer=quantizer(), num_downsamples=2)
    images = np.random.default_rng(2).uniform(0, 1, (4, 8, 8, 1)).astype(np.float32)
    codes = model.encode(images).numpy()
    for search in ("scores", "window", "split_window"):
        with quantization_search(model, search, images):
            assert "indices" not in vars(model.quantizer)
            np.testing.assert_array_equal(model.encode(images).numpy(), codes)


def test_tflite_runner_names_levels_that_do_not_match_the_file(tmp_path):
    from tfvqvae.export.saved_model import export_saved_model
    from tfvqvae.export.tflite import TFLiteRunner
    from tfvqvae.export.tflite import export_tflite

    model = VQVAE(image_channels=1, hidden_channels=8, residual_channels=4,
                  quantizer=VectorQuantizerEMA(16, 4), num_downsamples=2)
    model(np.zeros((1, 8, 8, 1), np.float32))
    export_saved_model(model, tmp_path / "sm", (8, 8, 1))
    path = export_tflite(tmp_path / "sm", tmp_path / "f.tflite")
    assert TFLiteRunner(path, ("top",)).encode(np.zeros((1, 8, 8, 1), np.float32))["top"].shape \
        == (1, 2, 2)
    with pytest.raises(ValueError, match=r"encodes to \['top_codes'\].*levels=\['top', 'bottom'\]"):
        TFLiteRunner(path, ("top", "bottom"))
