"""FiniteScalarQuantizer (FSQ, Mentzer et al. 2023, https://arxiv.org/abs/2309.15505).

Expected values come from the NumPy reference below (float64, written from
section 3 and appendix A.1 of the paper), from ``itertools.product`` for the
codebook order, or by hand; the layer is only ever the thing under test.
"""

import itertools
import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvqvae
from tfvqvae import FiniteScalarQuantizer
from tests.models.test_vqvae import images
from tests.models.test_vqvae import tiny_model

EPS = 1e-3  # ε of the paper's bound (appendix A.1)


# ---------------------------------------------------------- NumPy reference
def ref_bound(z, levels):
    """f(z) = tanh(z + tan(o/h)) · h − o, h = (L − 1)(1 − ε)/2, o = 1/2 for even L."""
    levels = np.asarray(levels, np.float64)
    half_l = (levels - 1) * (1 - EPS) / 2
    offset = np.where(levels % 2 == 0, 0.5, 0.0)
    return np.tanh(np.asarray(z, np.float64) + np.tan(offset / half_l)) * half_l - offset


def ref_quantize(z, levels):
    """(normalised codes round(f) / ⌊L/2⌋, indices Σ (round(f) + ⌊L/2⌋) Π_{j<i} L_j)."""
    half_width = np.asarray(levels) // 2
    rounded = np.round(ref_bound(z, levels))  # half to even, like the paper's jnp.round
    basis = np.cumprod([1] + list(levels[:-1]))
    indices = ((rounded + half_width).astype(np.int64) * basis).sum(-1)
    return rounded / half_width, indices


def ref_codebook(levels):
    """Every code in index order (channel 0 the fastest digit), from itertools.product."""
    grids = [(np.arange(n) - n // 2) / (n // 2) for n in levels]
    rows = itertools.product(*reversed(grids))  # the last element varies fastest
    return np.array([row[::-1] for row in rows], np.float64)


def near_a_rounding_boundary(z, levels, tol=1e-4):
    bounded = ref_bound(z, levels)
    return np.abs(bounded - np.floor(bounded) - 0.5) < tol


LEVEL_SETS = [[8, 5, 5, 5], [2, 3, 4], [7, 5, 5, 5, 5], [6]]


# ------------------------------------------------------------ forward values
@pytest.mark.parametrize("levels", LEVEL_SETS, ids=str)
def test_quantized_values_and_indices_match_numpy(levels):
    rng = np.random.default_rng(len(levels))
    z = (rng.normal(size=(3, 5, 7, len(levels))) * rng.choice([0.3, 1, 4], size=(3, 5, 7, 1))
         ).astype(np.float32)
    layer = FiniteScalarQuantizer(levels)
    out = layer.quantize_with_losses(z)
    codes, indices = ref_quantize(z, levels)
    ok = ~near_a_rounding_boundary(z, levels).any(-1)  # float32 vs float64 ties
    assert ok.mean() > 0.99
    np.testing.assert_allclose(out.quantized.numpy()[ok], codes[ok], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(out.indices.numpy()[ok], indices[ok])
    np.testing.assert_array_equal(layer.indices(z).numpy(), out.indices.numpy())
    assert out.indices.dtype == tf.int32 and out.indices.shape == z.shape[:-1]
    assert layer.num_embeddings == math.prod(levels) and layer.embedding_dim == len(levels)


def test_bound_matches_numpy():
    levels = [8, 5, 4, 2]
    z = np.random.default_rng(1).normal(size=(40, 4)).astype(np.float32) * 3
    np.testing.assert_allclose(
        FiniteScalarQuantizer(levels).bound(z).numpy(), ref_bound(z, levels), rtol=0, atol=2e-6
    )


@pytest.mark.parametrize("level", [2, 3, 4, 5, 8, 9])
def test_each_channel_takes_exactly_its_levels_values_in_minus_one_one(level):
    # A dense sweep far into both tails: every one of the L values appears, no other.
    z = np.linspace(-30, 30, 60001, dtype=np.float32)[:, None]
    out = FiniteScalarQuantizer([level]).quantize_with_losses(z)
    values = np.unique(out.quantized.numpy())
    np.testing.assert_allclose(values, (np.arange(level) - level // 2) / (level // 2), atol=1e-7)
    assert values.min() >= -1.0 and values.max() <= 1.0
    np.testing.assert_array_equal(np.unique(out.indices.numpy()), np.arange(level))


def test_hand_computed_codes_for_levels_8_5():
    # f(0) = tanh(tan(o/h)) h − o ≈ 0 for both: code (0, 0) → digits (4, 2) → index 4 + 8·2 = 20.
    # z = ±30 saturates the bound: (−4/4, −2/2) → index 0; (3/4, 2/2) → 7 + 8·4 = 39.
    layer = FiniteScalarQuantizer([8, 5])
    z = np.array([[0.0, 0.0], [-30.0, -30.0], [30.0, 30.0]], np.float32)
    out = layer.quantize_with_losses(z)
    np.testing.assert_array_equal(out.indices.numpy(), [20, 0, 39])
    np.testing.assert_allclose(out.quantized.numpy(), [[0, 0], [-1, -1], [0.75, 1]], atol=1e-7)


def test_two_levels_threshold_sits_at_minus_the_papers_shift():
    # L = 2: h = 0.4995, o = 1/2, s = tan(o / h) ≈ 1.5597; f = −1/2 where tanh(z + s) = 0.
    threshold = -math.tan(0.5 / (0.5 * (1 - EPS)))
    z = np.array([[threshold - 1e-3], [threshold + 1e-3], [0.0]], np.float32)
    np.testing.assert_array_equal(FiniteScalarQuantizer([2]).indices(z).numpy(), [0, 1, 1])


# --------------------------------------------------------------- bijection
@pytest.mark.parametrize("levels", [[3, 4, 2], [2, 2, 2, 2], [5, 3], [8, 6, 5], [7]], ids=str)
def test_index_code_bijection_is_exhaustive(levels):
    layer = FiniteScalarQuantizer(levels)
    k = math.prod(levels)
    all_codes = layer.lookup(tf.range(k)).numpy()
    np.testing.assert_allclose(all_codes, ref_codebook(levels), rtol=0, atol=1e-7)
    assert len(np.unique(all_codes, axis=0)) == k  # injective, so a bijection onto C
    np.testing.assert_array_equal(layer.codes_to_indices(all_codes).numpy(), np.arange(k))
    # Every code is reached: quantise a preimage under f of a value that
    # rounds to the code (ẑ moved 1/4 inside f's range (−h − o, h − o)).
    levels_f = np.asarray(levels, np.float64)
    half_l = (levels_f - 1) * (1 - EPS) / 2
    offset = np.where(levels_f % 2 == 0, 0.5, 0.0)
    target = np.clip(ref_codebook(levels) * (levels_f // 2),  # ẑ
                     -half_l - offset + 0.25, half_l - offset - 0.25)
    z = np.arctanh((target + offset) / half_l) - np.tan(offset / half_l)
    np.testing.assert_array_equal(layer.indices(z.astype(np.float32)).numpy(), np.arange(k))


def test_quantized_output_is_the_lookup_of_its_indices():
    layer = FiniteScalarQuantizer([8, 5, 5, 5])
    z = np.random.default_rng(2).normal(size=(4, 3, 3, 4)).astype(np.float32) * 2
    out = layer.quantize_with_losses(z)
    np.testing.assert_allclose(layer.lookup(out.indices).numpy(), out.quantized.numpy(), atol=1e-7)
    np.testing.assert_array_equal(layer.codes_to_indices(out.quantized).numpy(),
                                  out.indices.numpy())


# -------------------------------------------------------- straight-through
@pytest.mark.parametrize("training", [False, True])
def test_gradient_is_the_bounds_derivative_through_the_rounding(training):
    levels = [8, 5, 4]
    rng = np.random.default_rng(3)
    z = rng.normal(size=(2, 4, 4, 3)).astype(np.float32) * 1.5
    weights = rng.normal(size=z.shape).astype(np.float32)
    layer = FiniteScalarQuantizer(levels)
    zt = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(zt)
        total = tf.reduce_sum(layer(zt, training=training) * weights)
    levels_f = np.asarray(levels, np.float64)
    half_l = (levels_f - 1) * (1 - EPS) / 2
    shift = np.tan(np.where(levels_f % 2 == 0, 0.5, 0.0) / half_l)
    d_bound = half_l * (1 - np.tanh(z + shift) ** 2)  # f'(z); round contributes 1
    np.testing.assert_allclose(tape.gradient(total, zt).numpy(),
                               weights * d_bound / (levels_f // 2), rtol=1e-5, atol=1e-7)


# ------------------------------------------------- losses, counts, perplexity
def test_no_losses_and_counts_and_perplexity_match_numpy():
    levels = [5, 4]
    z = np.random.default_rng(4).normal(size=(5, 6, 2)).astype(np.float32)
    layer = FiniteScalarQuantizer(levels)
    out = layer.quantize_with_losses(z, training=True)
    counts = np.bincount(ref_quantize(z, levels)[1].reshape(-1), minlength=20)
    assert (counts == 0).any() and (counts > 0).sum() > 2
    np.testing.assert_array_equal(out.counts.numpy(), counts)
    p = counts[counts > 0] / counts.sum()
    np.testing.assert_allclose(out.perplexity.numpy(), np.exp(-(p * np.log(p)).sum()), rtol=1e-6)
    for name in ("codebook_loss", "commitment_loss", "loss"):
        assert getattr(out, name).dtype == tf.float32
        assert float(getattr(out, name)) == 0.0
    assert layer.weights == [] and layer(z).shape == z.shape and layer.losses == []


@pytest.mark.parametrize("value, digits", [(np.inf, [7, 4]), (-np.inf, [0, 0]), (np.nan, None)])
def test_non_finite_inputs_give_in_range_codes_and_no_state(value, digits):
    layer = FiniteScalarQuantizer([8, 5])
    z = np.zeros((3, 2), np.float32)
    z[1] = value
    out = layer.quantize_with_losses(z, training=True, batch_finite=tf.constant(False))
    indices = out.indices.numpy()
    assert ((indices >= 0) & (indices < 40)).all()
    assert indices[0] == indices[2] == 20
    if digits is not None:  # the bound saturates: the extreme code of each channel
        assert indices[1] == digits[0] + 8 * digits[1]
    assert out.counts.numpy().sum() == 3
    assert layer.weights == []  # nothing a bad batch could change


# ------------------------------------------------------------------ lookup
@pytest.mark.parametrize("bad, received", [([-1], "[-1, -1]"), ([40], "[40, 40]"),
                                           ([0, -3, 41], "[-3, 41]")])
def test_lookup_out_of_range_raises_value_error_naming_values(bad, received):
    with pytest.raises(ValueError, match=r"\[0, 40\)\. Received: values in " + re.escape(received)):
        FiniteScalarQuantizer([8, 5]).lookup(np.array(bad, np.int32))


def test_lookup_out_of_range_in_graph_mode_raises_and_unvalidated_gather_fails():
    layer = FiniteScalarQuantizer([8, 5])
    checked = tf.function(lambda i: layer.lookup(i))
    unchecked = tf.function(lambda i: layer.lookup(i, validate=False))
    np.testing.assert_allclose(checked(tf.constant([39])).numpy(), [[0.75, 1.0]])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[0, 40\)"):
        checked(tf.constant([40]))
    # Without the check, index K reads past the value table: the gather fails
    # (as a codebook gather does), rather than wrapping round to a valid code.
    with pytest.raises(tf.errors.InvalidArgumentError, match="not in"):
        unchecked(tf.constant([40]))


def test_lookup_refuses_non_integers_and_int64_beyond_int32():
    layer = FiniteScalarQuantizer([8, 5])
    with pytest.raises(TypeError, match="dtype=float32"):
        layer.lookup(np.array([1.0], np.float32))
    with pytest.raises(ValueError, match="Received: values in"):
        layer.lookup(np.array([2**32 + 1], np.int64))


# -------------------------------------------------------- arguments, inputs
@pytest.mark.parametrize("levels", [[], [8, 1], [8, 0], [5, -2], [2.0, 3], [True, 3], "855", 8,
                                    None, [np.int64(5)], [2] * 31, [65536, 32768]])
def test_bad_levels_raise_value_error_naming_the_value(levels):
    with pytest.raises(ValueError, match=re.escape(f"Received: levels={levels!r}")):
        FiniteScalarQuantizer(levels)


def test_int32_indices_are_exact_up_to_the_largest_codebook():
    layer = FiniteScalarQuantizer([65535, 32768])
    k = 65535 * 32768
    assert layer.num_embeddings == k and k < 2**31  # 2**31 − 32768
    # Last code: digits (65534, 32767) → ((65534 − 32767) / 32767, (32767 − 16384) / 16384).
    code = layer.lookup(np.array([k - 1], np.int32)).numpy()
    np.testing.assert_array_equal(code, [[1.0, 16383 / 16384]])
    assert int(layer.codes_to_indices(code)[0]) == k - 1
    with pytest.raises(ValueError, match=rf"\[0, {k}\)"):
        layer.lookup(np.array([k], np.int64))


def test_bad_inputs_are_named():
    layer = FiniteScalarQuantizer([8, 5, 5])
    with pytest.raises(ValueError, match=r"embedding_dim=3.*shape=\(2, 4\)"):
        layer.indices(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"shape=\(3,\)"):
        layer.quantize_with_losses(np.zeros((3,), np.float32))
    with pytest.raises(TypeError, match="dtype=int32"):
        layer(np.zeros((2, 3), np.int32))


# ------------------------------------------------------- recommended levels
def test_recommended_levels_are_the_papers_table():
    # Table 1 of the paper, typed from it.
    table = {8: [8, 6, 5], 10: [8, 5, 5, 5], 12: [7, 5, 5, 5, 5], 14: [8, 8, 8, 6, 5],
             16: [8, 8, 8, 5, 5, 5]}
    for bits, levels in table.items():
        assert FiniteScalarQuantizer.recommended_levels(2**bits) == levels
        # Within 10 % of the target size: 240, 1000, 4375, 15360, 64000.
        assert abs(math.log2(math.prod(levels)) - bits) < 0.1
    layer = FiniteScalarQuantizer(FiniteScalarQuantizer.recommended_levels(2**10))
    assert layer.num_embeddings == 1000


@pytest.mark.parametrize("size", [1000, 2**9, 2**18, 0, 1024.0, "1024"])
def test_recommended_levels_refuse_other_sizes(size):
    with pytest.raises(ValueError, match=re.escape(f"Received: codebook_size={size!r}")):
        FiniteScalarQuantizer.recommended_levels(size)


# ------------------------------------------------------------ mixed precision
def test_mixed_float16_computes_in_float32_and_outputs_float16():
    keras.config.set_dtype_policy("mixed_float16")
    levels = [8, 5, 5, 5]
    layer = FiniteScalarQuantizer(levels)
    z = np.random.default_rng(5).normal(size=(2, 4, 4, 4)).astype(np.float32)
    z16 = tf.cast(z, tf.float16)
    out = layer.quantize_with_losses(z16)
    assert layer(z).dtype == tf.float16 and out.quantized.dtype == tf.float16
    for name in ("codebook_loss", "commitment_loss", "counts", "perplexity"):
        assert getattr(out, name).dtype == tf.float32, name
    z_seen = z16.numpy().astype(np.float64)
    codes, indices = ref_quantize(z_seen, levels)
    np.testing.assert_array_equal(out.indices.numpy(), indices)
    np.testing.assert_array_equal(out.quantized.numpy().astype(np.float64), codes)  # exact in fp16


# --------------------------------------------------------- MirroredStrategy
def _replica_counts(strategy, layer, batch):
    dist = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(batch).batch(len(batch)))

    @tf.function
    def step(x):
        return strategy.run(lambda z: layer.quantize_with_losses(z, training=True).counts,
                            args=(x,))

    return [c.numpy() for c in strategy.experimental_local_results(step(next(iter(dist))))]


def test_mirrored_counts_equal_one_device_and_numpy(mirrored_strategy):
    levels = [4, 3]
    batch = np.random.default_rng(6).normal(size=(16, 2, 2, 2)).astype(np.float32)
    expected = np.bincount(ref_quantize(batch, levels)[1].reshape(-1), minlength=12)
    with mirrored_strategy.scope():
        mirrored = _replica_counts(mirrored_strategy, FiniteScalarQuantizer(levels), batch)
    single = _replica_counts(tf.distribute.get_strategy(), FiniteScalarQuantizer(levels), batch)
    assert len(mirrored) == 2 and len(single) == 1
    for counts in mirrored + single:  # every replica holds the global batch's counts
        np.testing.assert_array_equal(counts, expected)


# ------------------------------------------------------------------ models
def _spread_encoder(model, factor=20.0):
    """Scales the encoder's last convolution so the untrained codes are not all one code."""
    layer = model.encoder.get_layer("pre_quantization")
    layer.kernel.assign(layer.kernel * factor)


def test_vqvae_fit_then_keras_file_round_trip_gives_identical_codes(tmp_path):
    model = tiny_model(quantizer=FiniteScalarQuantizer([5, 4, 3]), hidden_channels=8)
    _spread_encoder(model)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = images(16, 8, 8, 1, seed=1)
    history = model.fit(x, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and history["commitment_loss"][0] == 0.0
    assert "codebook_loss" not in history  # no codebook term to report
    path = tmp_path / "fsq.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.quantizer) is FiniteScalarQuantizer
    assert loaded.quantizer.levels == [5, 4, 3]
    codes = model.encode(x).numpy()
    assert len(np.unique(codes)) > 3
    np.testing.assert_array_equal(loaded.encode(x).numpy(), codes)
    np.testing.assert_array_equal(loaded.decode(codes).numpy(), model.decode(codes).numpy())
    with pytest.raises(ValueError, match=r"\[0, 60\)"):
        model.decode(np.full((1, 2, 2), 60, np.int32))


def test_hierarchical_models_take_fsq_levels_and_configs():
    x = images(2, 16, 16, 1)
    model = tfvqvae.VQVAE2(
        image_channels=1, hidden_channels=8, residual_channels=4, num_residual_layers=1,
        top_quantizer=FiniteScalarQuantizer([5, 3]),
        bottom_quantizer=keras.layers.serialize(FiniteScalarQuantizer([8, 5, 5])),  # a config too
    )
    top, bottom = model.encode(x)
    assert model.level_num_embeddings == {"top": 15, "bottom": 200}
    assert top.shape == (2, 2, 2) and bottom.shape == (2, 4, 4)
    assert model.decode(top, bottom).shape == x.shape
    three = tfvqvae.HierarchicalVQVAE(
        num_levels=3, image_channels=1, hidden_channels=8, residual_channels=4,
        num_residual_layers=1, quantizers=[FiniteScalarQuantizer([3, 3]) for _ in range(3)])
    assert [tuple(c.shape) for c in three.encode(images(2, 32, 32, 1))] == [
        (2, 2, 2), (2, 4, 4), (2, 8, 8)]


# ------------------------------------------------------------------ export
@pytest.mark.slow  # default-suite time: the slow run keeps it
def test_export_gives_keras_codes_in_every_float_format(tmp_path):
    pytest.importorskip("tf2onnx")
    from tests.export.test_nonfinite_export import IMAGE_SIZE
    from tests.export.test_nonfinite_export import _run_folder
    from tfvqvae.data import load_dataset
    from tfvqvae.export import export_run
    from tfvqvae.export import open_runners
    from tfvqvae.export import verify_export
    from tfvqvae.export.tflite import tflite_operators

    model = tiny_model(quantizer=FiniteScalarQuantizer([8, 5, 5, 5]), hidden_channels=8)
    _spread_encoder(model)
    run = _run_folder(tmp_path / "run", model)
    result = export_run(run, tmp_path / "export", formats="savedmodel,tflite,onnx",
                        tflite_modes=("float32",))
    rows = {row.artifact: row for row in verify_export(result, run, num_images=64)}
    assert set(rows) == {"keras", "savedmodel", "tflite-float32", "onnx"}
    for artifact in ("savedmodel", "tflite-float32", "onnx"):
        assert rows[artifact].agreement == 100.0, artifact
        assert rows[artifact].max_abs_diff < 1e-5, artifact
    digits = load_dataset("digits", "test", image_size=IMAGE_SIZE).take(64)
    assert len(np.unique(model.encode(digits.as_float()).numpy())) > 10  # codes that vary
    operators = tflite_operators(result.artifacts["tflite-float32"])
    assert not [op for op in operators if op.startswith(("CUSTOM", "FLEX"))], operators
    # Out-of-range codes fail in every format (as tests/export/test_roundtrip.py
    # asks of a codebook gather), never wrap round to a valid code.
    runners = open_runners(result)
    errors = {
        "savedmodel": (tf.errors.InvalidArgumentError, r"top_codes must lie in \[0, 1000\)"),
        "tflite-float32": (RuntimeError, "gather index out of bounds"),
        "onnx": (Exception, "out of data bounds"),
    }
    assert set(errors) == set(runners)
    for bad in (1000, -1):
        codes = {"top": np.zeros((2, 4, 4), np.int32)}
        codes["top"][1, 3, 2] = bad
        for artifact, (kind, message) in errors.items():
            with pytest.raises(kind, match=message):
                runners[artifact].decode(codes)
