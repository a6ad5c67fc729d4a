"""Models whose levels have codes with a depth axis (residual and grouped quantisers).

Right values come from NumPy: the stage-by-stage residual search and the
head-by-head search on the encoder's output (float64), per-code counts of
the codes for the usage metrics, and a depth-1 residual quantiser, which must
give a plain vector quantiser's codes (a property).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvqvae
from tfvqvae.metrics import CodebookUsage

K, D = 8, 4


def rvq(depth, shared=False, **kwargs):
    return tfvqvae.ResidualVectorQuantizer(
        depth, K, D, shared_codebook=shared, kmeans_init=False, restart_unused_after=None,
        **kwargs)


def grouped(heads, shared=False):
    return tfvqvae.GroupedVectorQuantizer(
        heads, K, D, shared_codebook=shared, kmeans_init=False, restart_unused_after=None)


def vq():
    return tfvqvae.VectorQuantizerEMA(K, D, kmeans_init=False, restart_unused_after=None)


def vqvae(quantizer):
    return tfvqvae.VQVAE(image_channels=1, hidden_channels=8, residual_channels=4,
                         num_residual_layers=1, quantizer=quantizer)


def vqvae2(top, bottom):
    return tfvqvae.VQVAE2(image_channels=1, hidden_channels=8, residual_channels=4,
                          num_residual_layers=1, top_quantizer=top, bottom_quantizer=bottom)


def images(n, size, seed=0):
    return np.random.default_rng(seed).random((n, size, size, 1), dtype=np.float32)


def nearest(vectors, codebook):
    """Index of the nearest row of ``codebook`` (float64), shape vectors.shape[:-1]."""
    v = np.asarray(vectors, np.float64)
    e = np.asarray(codebook, np.float64)
    return ((v[..., None, :] - e) ** 2).sum(-1).argmin(-1)


def codebooks(quantizer):
    return [np.asarray(stage.codebook, np.float64) for stage in quantizer.quantizers]


def residual_codes(z, books):
    """SoundStream's Algorithm 1: stage i codes the residual left by stages < i."""
    residual, codes = np.asarray(z, np.float64), []
    for book in books:
        k = nearest(residual, book)
        codes.append(k)
        residual = residual - book[k]
    return np.stack(codes, -1)


def grouped_codes(z, books):
    """Head h codes channels [h D/H, (h + 1) D/H) on its own."""
    z = np.asarray(z, np.float64)
    width = z.shape[-1] // len(books)
    return np.stack([nearest(z[..., h * width:(h + 1) * width], book)
                     for h, book in enumerate(books)], -1)


def lookup(codes, books, combine):
    parts = [book[codes[..., i]] for i, book in enumerate(books)]
    return sum(parts) if combine == "sum" else np.concatenate(parts, -1)


# ------------------------------------------------------------------ encode
@pytest.mark.parametrize("shared", [False, True])
def test_rvq_vqvae_codes_are_the_numpy_residual_search(shared):
    keras.utils.set_random_seed(0)
    model = vqvae(rvq(3, shared))
    x = images(4, 16)
    codes = model.encode(x)
    assert codes.dtype == tf.int32 and codes.shape == (4, 4, 4, 3)
    z = model.encoder(x).numpy()
    books = codebooks(model.quantizer)
    expected = residual_codes(z, books)
    np.testing.assert_array_equal(codes.numpy(), expected)
    assert len(np.unique(expected[..., 1])) > 1  # the later stages do choose
    # decode = decoder(Σ_i e_i[k_i]) and the forward pass agrees with it.
    latents = lookup(expected, books, "sum").astype(np.float32)
    np.testing.assert_allclose(model.decode(codes).numpy(), model.decoder(latents).numpy(),
                               atol=1e-5)
    np.testing.assert_allclose(model(x).numpy(), model.decode(codes).numpy(), atol=1e-5)


def test_grouped_vqvae_codes_are_the_numpy_head_search():
    keras.utils.set_random_seed(1)
    model = vqvae(grouped(2))
    x = images(3, 8)
    codes = model.encode(x)
    assert codes.shape == (3, 2, 2, 2)
    books = codebooks(model.quantizer)
    expected = grouped_codes(model.encoder(x).numpy(), books)
    np.testing.assert_array_equal(codes.numpy(), expected)
    latents = lookup(expected, books, "concat").astype(np.float32)
    np.testing.assert_allclose(model.decode(codes).numpy(), model.decoder(latents).numpy(),
                               atol=1e-5)


def test_levels_api_of_depth_and_scalar_levels():
    model = vqvae2(rvq(3), vq())
    assert model.level_code_depths == {"top": 3, "bottom": None}
    assert model.level_num_embeddings == {"top": K, "bottom": K}
    assert model.code_shapes((32, 16)) == {"top": (4, 2, 3), "bottom": (8, 4)}
    codes = model.encode_levels(images(2, 16))
    assert {level: tuple(c.shape) for level, c in codes.items()} == {
        "top": (2, 2, 2, 3), "bottom": (2, 4, 4)}
    # An empty batch gets empty maps of the same shapes.
    empty = model.encode_levels(np.zeros((0, 16, 16, 1), np.float32))
    assert {level: tuple(c.shape) for level, c in empty.items()} == {
        "top": (0, 2, 2, 3), "bottom": (0, 4, 4)}
    assert vqvae(vq()).level_code_depths == {"top": None}
    assert vqvae(vq()).code_shapes((8, 8)) == {"top": (2, 2)}


def test_depth_level_latents_feed_the_level_below():
    """The bottom codes are the NumPy search on the bottom encoder given Σ_i e_i[k_i] of the top."""
    keras.utils.set_random_seed(2)
    model = vqvae2(rvq(2), grouped(2))
    x = images(2, 16)
    top, bottom = model.encode(x)
    features = model._encode_features(tf.constant(x), False)
    top_books = codebooks(model.top_quantizer)
    np.testing.assert_array_equal(top.numpy(), residual_codes(features["top"].numpy(),
                                                              top_books))
    top_latents = tf.constant(lookup(top.numpy(), top_books, "sum"), tf.float32)
    h_bottom = model._pre_quantization(1, features, [top_latents], False).numpy()
    np.testing.assert_array_equal(
        bottom.numpy(), grouped_codes(h_bottom, codebooks(model.bottom_quantizer)))
    np.testing.assert_allclose(model.decode(top, bottom).numpy(), model(x).numpy(), atol=1e-5)


def test_depth_one_rvq_gives_the_codes_of_a_plain_vq():
    """Property: a one-stage residual quantiser is its stage: same codes, same images."""
    keras.utils.set_random_seed(3)
    plain = vqvae2(vq(), vq())
    keras.utils.set_random_seed(3)
    residual = vqvae2(rvq(1), vq())
    residual.set_weights(plain.get_weights())  # the same weights, in the same order
    x = images(2, 16)
    (t0, b0), (t1, b1) = plain.encode(x), residual.encode(x)
    assert t1.shape == (*t0.shape, 1)
    np.testing.assert_array_equal(t1.numpy()[..., 0], t0.numpy())
    np.testing.assert_array_equal(b1.numpy(), b0.numpy())
    np.testing.assert_allclose(residual.decode(t1, b1).numpy(), plain.decode(t0, b0).numpy(),
                               atol=1e-6)


# ------------------------------------------------------------------ decode checks
def test_decode_refuses_codes_without_or_with_the_wrong_depth():
    model = vqvae2(rvq(3), vq())
    top, bottom = model.encode(images(2, 16))
    with pytest.raises(ValueError, match=r"\(batch, height, width, 3\).*Received: "
                                         r"top_codes with shape=\(2, 2, 2\)"):
        model.decode(top[..., 0], bottom)
    with pytest.raises(ValueError, match=r"\(batch, height, width, 3\).*Received: "
                                         r"top_codes with shape=\(2, 2, 2, 2\)"):
        model.decode(top[..., :2], bottom)
    with pytest.raises(ValueError, match=r"\(batch, height, width\)\. Received: "
                                         r"bottom_codes with shape=\(2, 4, 4, 1\)"):
        model.decode(top, bottom[..., None])
    with pytest.raises(TypeError, match="top_codes with dtype=float32"):
        model.decode(tf.cast(top, tf.float32), bottom)
    with pytest.raises(ValueError, match="twice its height and width"):
        model.decode(top, bottom[:, :2])
    with pytest.raises(ValueError):  # a code out of [0, K) in one stage only
        model.decode(tf.tensor_scatter_nd_update(top, [[0, 1, 1, 2]], [K]), bottom)
    one = vqvae(rvq(2))
    with pytest.raises(ValueError, match=r"\(batch, height, width, 2\).*Received: "
                                         r"codes with shape=\(1, 2, 2\)"):
        one.decode(np.zeros((1, 2, 2), np.int32))
    with pytest.raises(KeyError):
        model.decode_levels({"top": top})


def test_levels_of_different_depths_decode_and_keep_the_size_check():
    model = tfvqvae.HierarchicalVQVAE(
        num_levels=3, image_channels=1, hidden_channels=8, residual_channels=4,
        num_residual_layers=1, quantizers=[rvq(2), vq(), grouped(4)])
    assert model.level_code_depths == {"top": 2, "middle": None, "bottom": 4}
    codes = model.encode_levels(images(1, 32))
    assert [tuple(c.shape) for c in codes.values()] == [(1, 2, 2, 2), (1, 4, 4), (1, 8, 8, 4)]
    assert model.decode_levels(codes).shape == (1, 32, 32, 1)
    assert model.decode_top_levels(list(codes.values()), 1).shape == (1, 32, 32, 1)
    with pytest.raises(ValueError, match="The bottom code map must have the middle map's"):
        model.decode(codes["top"], codes["middle"], codes["bottom"][:, :4, :4])


# ------------------------------------------------------------------ metrics
def numpy_usage(codes, shared):
    """(usage %, dead codes) of (N, Q) codes: means over the Q codebooks, or the union."""
    if shared:
        used = [len(np.unique(codes))]
    else:
        used = [len(np.unique(codes[:, q])) for q in range(codes.shape[1])]
    used = float(np.mean(used))
    return 100.0 * used / K, K - used


def numpy_perplexity(codes):
    """Mean over the stages of exp(entropy) of each stage's code frequencies."""
    values = []
    for q in range(codes.shape[1]):
        p = np.bincount(codes[:, q], minlength=K) / len(codes)
        p = p[p > 0]
        values.append(np.exp(-(p * np.log(p)).sum()))
    return float(np.mean(values))


@pytest.mark.parametrize("make, shared", [(rvq, False), (rvq, True), (grouped, False)])
def test_evaluate_metrics_of_a_depth_level_from_its_codes(make, shared):
    keras.utils.set_random_seed(4)
    model = vqvae(make(2, shared=shared))
    model.compile(optimizer="adam")
    x = images(6, 8)
    logs = model.evaluate(x, batch_size=6, verbose=0, return_dict=True)
    codes = model.encode(x).numpy().reshape(-1, 2)
    usage, dead = numpy_usage(codes, shared)
    assert logs["usage"] == pytest.approx(usage)
    assert logs["dead_codes"] == pytest.approx(dead)
    assert logs["perplexity"] == pytest.approx(numpy_perplexity(codes), rel=1e-5)
    # These codes tell the two rules apart (pooled over the stages vs mean per codebook).
    assert numpy_usage(codes, not shared) != (usage, dead)


@pytest.mark.slow  # default-suite time: the slow run keeps it
def test_training_a_depth_model_with_dropout_and_saving_it(tmp_path):
    keras.utils.set_random_seed(5)
    model = vqvae2(rvq(3, quantizer_dropout=0.5), grouped(2, shared=True))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = images(8, 16)
    history = model.fit(x, batch_size=4, epochs=2, verbose=0).history
    for name in ("loss", "top_perplexity", "top_usage", "top_dead_codes", "bottom_usage"):
        assert np.all(np.isfinite(history[name])), name
    assert 0.0 < history["top_usage"][-1] <= 100.0
    assert [m.num_codebooks for m in model._usage.values()] == [3, None]  # bottom: pooled
    codes = model.encode_levels(x)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert loaded.level_code_depths == {"top": 3, "bottom": 2}
    assert type(loaded.top_quantizer) is tfvqvae.ResidualVectorQuantizer
    assert loaded.top_quantizer.quantizer_dropout == 0.5
    for level, level_codes in loaded.encode_levels(x).items():
        np.testing.assert_array_equal(level_codes.numpy(), codes[level].numpy())
    np.testing.assert_allclose(loaded.decode_levels(codes).numpy(),
                               model.decode_levels(codes).numpy(), atol=1e-6)
    loaded.fit(x, batch_size=4, epochs=1, verbose=0)  # the optimizer state came back


def test_a_serialized_depth_quantizer_is_accepted():
    config = keras.layers.serialize(rvq(2))
    model = vqvae(config)
    assert isinstance(model.quantizer, tfvqvae.ResidualVectorQuantizer)
    assert model.level_code_depths == {"top": 2}
    with pytest.raises(TypeError, match="ResidualVectorQuantizer or GroupedVectorQuantizer"):
        vqvae(keras.layers.Dense(4))


def test_codebook_usage_with_several_codebooks():
    metric = CodebookUsage(4, prefix="top_", num_codebooks=2)
    metric.update_state([[3.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    metric.update_state([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]])
    # Codebook 0 used codes {0, 2}, codebook 1 all four: mean 3 of 4.
    result = {k: float(v) for k, v in metric.result().items()}
    assert result == {"top_usage": 75.0, "top_dead_codes": 1.0}
    assert CodebookUsage.from_config(metric.get_config()).num_codebooks == 2
    assert "num_codebooks" not in CodebookUsage(4).get_config()  # as before for one codebook
    with pytest.raises(ValueError, match="num_codebooks=0"):
        CodebookUsage(4, num_codebooks=0)
