"""The searches of the quantised TFLite sources pick the NumPy nearest code in float32."""

import numpy as np
import pytest
import tensorflow as tf

from tfvqvae import VectorQuantizerEMA
from tfvqvae import VQVAE
from tfvqvae.export.quantized_search import quantization_search
from tfvqvae.export.quantized_search import scores_search
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
    for search in ("scores", "window"):
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
    for search in ("scores", "window"):
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
