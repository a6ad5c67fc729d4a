"""LookupFreeQuantizer (LFQ, MAGVIT-v2 section 3.1, https://arxiv.org/abs/2310.05737).

Expected values come from the NumPy references below (float64): the sign
quantiser and its index written from equations (1)-(2); the entropy penalty
both as the paper states it, over all 2^D codes with a softmax soft
assignment, and in the per-channel form the layer documents; gradients from
their derivatives worked out by hand. The layer is only ever under test.
"""

import itertools
import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvqvae
from tfvqvae import LookupFreeQuantizer
from tests.models.test_vqvae import images
from tests.models.test_vqvae import tiny_model


# ---------------------------------------------------------- NumPy reference
def ref_quantize(z, scale=1.0):
    """(q(z) = ±scale by sign, sign(0) = −1; index Σ_i 2^i 1[z_i > 0])."""
    z = np.asarray(z, np.float64)
    bits = z > 0
    return np.where(bits, scale, -scale), (bits * 2 ** np.arange(z.shape[-1])).sum(-1)


def ref_codebook(dim, scale=1.0):
    """Every code in index order (bit 0 the fastest), from itertools.product."""
    rows = itertools.product((-scale, scale), repeat=dim)  # the last element varies fastest
    return np.array([row[::-1] for row in rows], np.float64)


def entropy(p, axis=-1):
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=axis)


def ref_joint_entropies(z, scale, tau):
    """The paper's terms over all 2^D codes: soft assignment softmax_c(−‖z − c‖² / τ).

    Returns (E[H(q(z))], H(E[q(z)])) in nats, exact, at O(2^D) per position.
    """
    flat = np.asarray(z, np.float64).reshape(-1, z.shape[-1])
    codes = ref_codebook(z.shape[-1], scale)
    logits = -((flat[:, None, :] - codes[None]) ** 2).sum(-1) / tau
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return entropy(probs).mean(), entropy(probs.mean(0))


def binary_entropy(p):
    return entropy(np.stack([p, 1 - p], -1))


def ref_factorised_entropies(z, scale, tau):
    """The layer's documented form: Σ_i H_b(p_i) per position; Σ_i H_b(mean p_i)."""
    flat = np.asarray(z, np.float64).reshape(-1, z.shape[-1])
    p = 1.0 / (1.0 + np.exp(-4.0 * scale * flat / tau))
    return binary_entropy(p).sum(1).mean(), binary_entropy(p.mean(0)).sum()


# ---------------------------------------------------------- forward values
def test_hand_computed_code():
    # bits (1, 0, 1, 0): sign(0) = −1 as in equation (1); index 1 + 4 = 5.
    layer = LookupFreeQuantizer(4, codebook_scale=0.5)
    out = layer.quantize_with_losses(np.array([[0.3, -1.0, 2.0, 0.0]], np.float32))
    np.testing.assert_array_equal(out.indices.numpy(), [5])
    np.testing.assert_array_equal(out.quantized.numpy(), [[0.5, -0.5, 0.5, -0.5]])


@pytest.mark.parametrize("dim, scale", [(1, 1.0), (5, 1.0), (12, 0.25)])
def test_values_and_indices_match_numpy(dim, scale):
    rng = np.random.default_rng(dim)
    z = rng.normal(size=(3, 4, 5, dim)).astype(np.float32)
    z[0, 0, 0] = 0.0  # the sign(0) = −1 case
    layer = LookupFreeQuantizer(dim, codebook_scale=scale)
    out = layer.quantize_with_losses(z)
    q, indices = ref_quantize(z, scale)
    np.testing.assert_array_equal(out.quantized.numpy(), q)
    np.testing.assert_array_equal(out.indices.numpy(), indices)
    np.testing.assert_array_equal(layer.indices(z).numpy(), indices)
    assert out.indices.dtype == tf.int32 and layer.num_embeddings == 2**dim


@pytest.mark.parametrize("dim", [1, 2, 3, 6])
def test_index_code_bijection_is_exhaustive(dim):
    layer = LookupFreeQuantizer(dim, codebook_scale=2.0)
    k = 2**dim
    codes = layer.lookup(tf.range(k)).numpy()
    np.testing.assert_array_equal(codes, ref_codebook(dim, 2.0))
    assert len(np.unique(codes, axis=0)) == k
    np.testing.assert_array_equal(layer.codes_to_indices(codes).numpy(), np.arange(k))
    np.testing.assert_array_equal(layer.indices(codes).numpy(), np.arange(k))


@pytest.mark.parametrize("training", [False, True])
def test_straight_through_gradient_is_identity(training):
    z = tf.constant(np.random.default_rng(1).normal(size=(2, 3, 3, 5)).astype(np.float32))
    weights = np.random.default_rng(2).normal(size=z.shape).astype(np.float32)
    layer = LookupFreeQuantizer(5, add_losses=False)
    with tf.GradientTape() as tape:
        tape.watch(z)
        total = tf.reduce_sum(layer(z, training=training) * weights)
    np.testing.assert_array_equal(tape.gradient(total, z).numpy(), weights)


# --------------------------------------------------------- entropy penalty
@pytest.mark.parametrize("scale, tau", [(1.0, 1.0), (1.0, 0.3), (0.5, 2.0)])
def test_per_sample_entropy_is_the_exact_entropy_over_all_codes(scale, tau):
    z = np.random.default_rng(3).normal(size=(4, 3, 3, 4)).astype(np.float32) * 0.5
    per_sample, codebook = LookupFreeQuantizer(
        4, codebook_scale=scale, entropy_temperature=tau).entropy_terms(z)
    exact_per_sample, exact_codebook = ref_joint_entropies(z, scale, tau)
    np.testing.assert_allclose(float(per_sample), exact_per_sample, rtol=1e-5)
    # The codebook term is the per-channel (sub-group of one) approximation ...
    np.testing.assert_allclose(float(codebook), ref_factorised_entropies(z, scale, tau)[1],
                               rtol=1e-5)
    # ... an upper bound on the exact entropy of the mean assignment.
    assert exact_codebook <= float(codebook) + 1e-6


def test_penalty_extremes_hand_computed():
    # Every one of the 8 codes once, far from 0: each assignment is sure
    # (E[H] ≈ 0) and each bit is +1 half the time (Σ H_b(1/2) = 3 ln 2).
    codes = ref_codebook(3) * 10
    layer = LookupFreeQuantizer(3, entropy_cost=0.5, diversity_gamma=0.8)
    per_sample, codebook = layer.entropy_terms(codes.astype(np.float32))
    assert abs(float(per_sample)) < 1e-12
    np.testing.assert_allclose(float(codebook), 3 * math.log(2), rtol=1e-6)
    out = layer.quantize_with_losses(codes.astype(np.float32))
    np.testing.assert_allclose(float(out.codebook_loss), -0.5 * 0.8 * 3 * math.log(2), rtol=1e-6)
    np.testing.assert_array_equal(out.counts.numpy(), np.ones(8))
    np.testing.assert_allclose(float(out.perplexity), 8.0, rtol=1e-6)
    # All at one code: no codebook entropy either.
    same = np.tile([[10.0, -10.0, 10.0]], (5, 1)).astype(np.float32)
    assert abs(float(layer.entropy_terms(same)[1])) < 1e-6


def _loss_case():
    rng = np.random.default_rng(4)
    return rng.normal(size=(2, 3, 4, 3)).astype(np.float32) * 0.7


def test_losses_match_numpy():
    z = _loss_case()
    lam, beta, gamma, scale, tau = 0.3, 0.4, 0.7, 0.5, 0.2
    layer = LookupFreeQuantizer(3, entropy_cost=lam, commitment_cost=beta,
                                diversity_gamma=gamma, codebook_scale=scale,
                                entropy_temperature=tau)
    out = layer.quantize_with_losses(z)
    per_sample, codebook = ref_factorised_entropies(z, scale, tau)
    np.testing.assert_allclose(float(out.codebook_loss), lam * (per_sample - gamma * codebook),
                               rtol=1e-5)
    q, _ = ref_quantize(z, scale)
    np.testing.assert_allclose(float(out.commitment_loss), beta * np.mean((z - q) ** 2), rtol=1e-6)
    assert out.codebook_loss.dtype == out.commitment_loss.dtype == tf.float32


def test_loss_gradient_matches_the_hand_derived_one():
    # a = 4sz/τ, σ = σ(a); d H_b(σ(a)) / da = −a σ(1 − σ); d H_b(m) / dm = ln((1 − m) / m).
    z = _loss_case()
    lam, beta, gamma, scale, tau = 0.3, 0.4, 0.7, 0.5, 1.0
    layer = LookupFreeQuantizer(3, entropy_cost=lam, commitment_cost=beta,
                                diversity_gamma=gamma, codebook_scale=scale,
                                entropy_temperature=tau)
    zt = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(zt)
        loss = layer.quantize_with_losses(zt).loss
    grad = tape.gradient(loss, zt).numpy()

    flat = z.astype(np.float64).reshape(-1, 3)
    n = flat.shape[0]
    c = 4 * scale / tau
    a = c * flat
    sig = 1 / (1 + np.exp(-a))
    m = sig.mean(0)
    d_per_sample = -a * sig * (1 - sig) * c / n
    d_codebook = np.log((1 - m) / m) * sig * (1 - sig) * c / n
    q, _ = ref_quantize(flat, scale)
    d_commit = 2 * (flat - q) / flat.size
    expected = lam * (d_per_sample - gamma * d_codebook) + beta * d_commit
    np.testing.assert_allclose(grad.reshape(-1, 3), expected, rtol=1e-4, atol=1e-7)


def test_call_registers_the_loss_sum_once_unless_told_not_to():
    z = _loss_case()
    layer = LookupFreeQuantizer(3)
    layer(z)
    assert len(layer.losses) == 1
    np.testing.assert_allclose(float(layer.losses[0]),
                               float(layer.quantize_with_losses(z).loss), rtol=1e-6)
    quiet = LookupFreeQuantizer(3, add_losses=False)
    quiet(z)
    assert quiet.losses == []


def test_counts_and_perplexity_match_numpy():
    z = np.random.default_rng(5).normal(size=(6, 5, 4)).astype(np.float32)
    out = LookupFreeQuantizer(4).quantize_with_losses(z)
    counts = np.bincount(ref_quantize(z)[1].reshape(-1), minlength=16)
    assert (counts == 0).any()
    np.testing.assert_array_equal(out.counts.numpy(), counts)
    p = counts[counts > 0] / counts.sum()
    np.testing.assert_allclose(float(out.perplexity), np.exp(-(p * np.log(p)).sum()), rtol=1e-6)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_give_in_range_codes_and_no_state(value):
    layer = LookupFreeQuantizer(3)
    z = np.ones((4, 3), np.float32)
    z[2, 1] = value
    out = layer.quantize_with_losses(z, training=True, batch_finite=tf.constant(False))
    expected_bit = 1 if value == np.inf else 0  # NaN > 0 is false, like −inf
    assert out.indices.numpy()[2] == 1 + 2 * expected_bit + 4
    assert out.counts.numpy().sum() == 4
    assert layer.weights == []  # nothing a bad batch could change


# ------------------------------------------------------------------ lookup
def test_lookup_out_of_range_eager_graph_and_unvalidated():
    layer = LookupFreeQuantizer(3)
    with pytest.raises(ValueError, match=re.escape("[0, 8). Received: values in [-1, 8]")):
        layer.lookup(np.array([3, -1, 8], np.int32))
    checked = tf.function(lambda i: layer.lookup(i))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[0, 8\)"):
        checked(tf.constant([8]))
    unchecked = tf.function(lambda i: layer.lookup(i, validate=False))
    np.testing.assert_array_equal(unchecked(tf.constant([7])).numpy(), [[1, 1, 1]])
    for bad in (8, 9, -1):  # never wraps round to a valid code
        with pytest.raises(tf.errors.InvalidArgumentError, match="not in"):
            unchecked(tf.constant([bad]))
    with pytest.raises(TypeError, match="dtype=float32"):
        layer.lookup(np.array([1.0], np.float32))


# -------------------------------------------------------------- arguments
@pytest.mark.parametrize("name, value, what", [
    ("embedding_dim", 0, "a positive integer"),
    ("embedding_dim", 2.0, "a positive integer"),
    ("embedding_dim", True, "a positive integer"),
    ("embedding_dim", 31, "at most 30"),
    ("embedding_dim", 64, "at most 30"),
    ("entropy_cost", -0.1, "a finite number >= 0"),
    ("entropy_cost", float("nan"), "a finite number >= 0"),
    ("commitment_cost", -1, "a finite number >= 0"),
    ("diversity_gamma", -0.5, "a finite number >= 0"),
    ("diversity_gamma", float("inf"), "a finite number >= 0"),
    ("codebook_scale", 0, "a finite number > 0"),
    ("codebook_scale", -1.0, "a finite number > 0"),
    ("entropy_temperature", 0.0, "a finite number > 0"),
    ("entropy_temperature", "0.1", "a finite number > 0"),
])
def test_bad_arguments_raise_value_error_naming_the_value(name, value, what):
    args = {"embedding_dim": 4, name: value}
    with pytest.raises(ValueError, match=re.escape(what) + ".*" + re.escape(
            f"Received: {name}={value!r}")):
        LookupFreeQuantizer(**args)


def test_thirty_bits_is_the_largest_codebook():
    layer = LookupFreeQuantizer(30)
    assert layer.num_embeddings == 2**30
    last = layer.lookup(np.array([2**30 - 1], np.int32)).numpy()
    np.testing.assert_array_equal(last, np.ones((1, 30)))
    assert int(layer.indices(last)[0]) == 2**30 - 1


def test_bad_inputs_are_named():
    layer = LookupFreeQuantizer(3)
    with pytest.raises(ValueError, match=r"embedding_dim=3.*shape=\(2, 4\)"):
        layer.indices(np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match="dtype=int64"):
        layer(np.zeros((2, 3), np.int64))


# ------------------------------------------------------------ mixed precision
def test_mixed_float16_computes_in_float32_and_outputs_float16():
    keras.config.set_dtype_policy("mixed_float16")
    layer = LookupFreeQuantizer(4, codebook_scale=0.5, entropy_temperature=1.0)
    z = np.random.default_rng(6).normal(size=(2, 4, 4, 4)).astype(np.float32)
    z16 = tf.cast(z, tf.float16)
    out = layer.quantize_with_losses(z16)
    assert layer(z).dtype == tf.float16 and out.quantized.dtype == tf.float16
    for name in ("codebook_loss", "commitment_loss", "counts", "perplexity"):
        assert getattr(out, name).dtype == tf.float32, name
    seen = z16.numpy().astype(np.float64)
    q, indices = ref_quantize(seen, 0.5)
    np.testing.assert_array_equal(out.indices.numpy(), indices)
    np.testing.assert_array_equal(out.quantized.numpy(), q)
    per_sample, codebook = ref_factorised_entropies(seen, 0.5, 1.0)
    np.testing.assert_allclose(float(out.codebook_loss), 0.1 * (per_sample - codebook), rtol=1e-5)


# --------------------------------------------------------- MirroredStrategy
def _replica_outputs(strategy, layer, batch):
    dist = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(batch).batch(len(batch)))

    @tf.function
    def step(x):
        def replica(z):
            out = layer.quantize_with_losses(z, training=True)
            return out.counts, out.codebook_loss, out.commitment_loss

        return strategy.run(replica, args=(x,))

    results = step(next(iter(dist)))
    return [[t.numpy() for t in strategy.experimental_local_results(r)] for r in results]


def test_mirrored_counts_and_penalty_equal_one_device_and_numpy(mirrored_strategy):
    batch = np.random.default_rng(7).normal(size=(16, 2, 2, 3)).astype(np.float32)
    kwargs = dict(entropy_cost=0.5, diversity_gamma=0.9, entropy_temperature=0.5)
    with mirrored_strategy.scope():
        counts, penalty, commit = _replica_outputs(
            mirrored_strategy, LookupFreeQuantizer(3, **kwargs), batch)
    single = _replica_outputs(tf.distribute.get_strategy(), LookupFreeQuantizer(3, **kwargs), batch)
    assert len(counts) == 2
    expected_counts = np.bincount(ref_quantize(batch)[1].reshape(-1), minlength=8)
    per_sample, codebook = ref_factorised_entropies(batch, 1.0, 0.5)
    for replica in range(2):  # the global batch's values on every replica
        np.testing.assert_array_equal(counts[replica], expected_counts)
        np.testing.assert_allclose(penalty[replica], 0.5 * (per_sample - 0.9 * codebook),
                                   rtol=1e-5)
        np.testing.assert_allclose(penalty[replica], single[1][0], rtol=1e-6)
    np.testing.assert_array_equal(single[0][0], expected_counts)
    # The commitment term is a per-replica mean (like VectorQuantizer's): equal halves.
    np.testing.assert_allclose(np.mean(commit), single[2][0], rtol=1e-6)


@pytest.mark.filterwarnings("ignore:`shuffle=True` was passed:UserWarning")
@pytest.mark.slow  # default-suite time: the slow run keeps it
def test_mirrored_fit_matches_one_device(mirrored_strategy, one_device_strategy):
    """The penalty's global-batch sums are all-reduced with their gradients: same weights."""
    x = images(32, 8, 8, 1, seed=8)

    def run(strategy):
        keras.utils.set_random_seed(1)
        with strategy.scope():
            model = tiny_model(quantizer=LookupFreeQuantizer(4, entropy_cost=1.0,
                                                             entropy_temperature=0.5))
            model.compile(optimizer=keras.optimizers.Adam(1e-2))
        model.fit(tf.data.Dataset.from_tensor_slices(x).batch(16), epochs=1, verbose=0)
        return model

    single = run(one_device_strategy)
    mirrored = run(mirrored_strategy)
    assert mirrored.distribute_strategy.num_replicas_in_sync == 2
    for a, b in zip(single.weights, mirrored.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)


# ------------------------------------------------------------------ models
@pytest.mark.slow  # default-suite time: the slow run keeps it
def test_vqvae_fit_then_keras_file_round_trip_gives_identical_codes(tmp_path):
    quantizer = LookupFreeQuantizer(5, entropy_cost=0.2, commitment_cost=0.3,
                                    diversity_gamma=0.9, codebook_scale=0.5)
    model = tiny_model(quantizer=quantizer, hidden_channels=8)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = images(16, 8, 8, 1, seed=1)
    history = model.fit(x, batch_size=8, epochs=1, verbose=0).history
    for name in ("loss", "mse", "codebook_loss", "commitment_loss", "perplexity"):
        assert np.isfinite(history[name][0]), name
    path = tmp_path / "lfq.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.quantizer) is LookupFreeQuantizer
    assert loaded.quantizer.get_config() == quantizer.get_config()
    codes = model.encode(x).numpy()
    assert len(np.unique(codes)) > 3
    np.testing.assert_array_equal(loaded.encode(x).numpy(), codes)
    np.testing.assert_array_equal(loaded.decode(codes).numpy(), model.decode(codes).numpy())
    with pytest.raises(ValueError, match=r"\[0, 32\)"):
        model.decode(np.full((1, 2, 2), 32, np.int32))


def test_a_hierarchy_mixes_every_quantizer_kind():
    model = tfvqvae.HierarchicalVQVAE(
        num_levels=3, image_channels=1, hidden_channels=8, residual_channels=4,
        num_residual_layers=1,
        quantizers=[LookupFreeQuantizer(4), tfvqvae.FiniteScalarQuantizer([5, 3]),
                    tfvqvae.VectorQuantizerEMA(8, 3, kmeans_init=False)],
    )
    model.compile(optimizer="adam")
    x = images(4, 32, 32, 1)
    logs = model.evaluate(x, batch_size=4, verbose=0, return_dict=True)
    assert np.isfinite(logs["loss"]) and np.isfinite(logs["top_codebook_loss"])
    # LFQ's entropy penalty is reported; FSQ and the EMA quantizer have no codebook term.
    assert "middle_codebook_loss" not in logs and "bottom_codebook_loss" not in logs
    assert model.level_num_embeddings == {"top": 16, "middle": 15, "bottom": 8}
    codes = model.encode(x)
    assert model.decode(*codes).shape == x.shape


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

    model = tiny_model(quantizer=LookupFreeQuantizer(8), hidden_channels=8)
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
        "savedmodel": (tf.errors.InvalidArgumentError, r"top_codes must lie in \[0, 256\)"),
        "tflite-float32": (RuntimeError, "gather index out of bounds"),
        "onnx": (Exception, "out of data bounds"),
    }
    assert set(errors) == set(runners)
    for bad in (256, -1):
        codes = {"top": np.zeros((2, 4, 4), np.int32)}
        codes["top"][1, 3, 2] = bad
        for artifact, (kind, message) in errors.items():
            with pytest.raises(kind, match=message):
                runners[artifact].decode(codes)
