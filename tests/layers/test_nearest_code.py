"""Nearest-code search (one matmul and in row blocks) and the segment sums.

Every expected value comes from NumPy (``numpy_reference``, float64) or from
the TensorFlow op that the faster form replaces.
"""

import importlib

import numpy as np
import pytest
import tensorflow as tf

from tfvqvae import VectorQuantizer
from tfvqvae import VectorQuantizerEMA
from tests.layers import numpy_reference as ref

# tfvqvae.layers re-exports the `kmeans` function under the module's name.
km = importlib.import_module("tfvqvae.layers.kmeans")

K, D = 37, 8


def data(n, k=K, d=D, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, d)).astype(np.float32),
        rng.normal(size=(k, d)).astype(np.float32),
    )


def test_code_scores_are_distances_less_z_norm():
    z, codebook = data(50)
    expected = ref.distances(z, codebook) - np.sum(z.astype(np.float64) ** 2, 1)[:, None]
    scores = km.code_scores(tf.constant(z), tf.constant(codebook)).numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)


def test_code_scores_equal_the_unfused_formula_bit_for_bit():
    # −2 is folded into the codebook: exact in floating point.
    z, codebook = data(300, k=64, d=16, seed=1)
    z, codebook = tf.constant(z), tf.constant(codebook)

    @tf.function
    def both(z, codebook):
        unfused = tf.reduce_sum(tf.square(codebook), axis=1) - 2.0 * tf.matmul(
            z, codebook, transpose_b=True
        )
        return km.code_scores(z, codebook), unfused

    fused, unfused = both(z, codebook)
    np.testing.assert_array_equal(fused.numpy(), unfused.numpy())


# N around the block size: smaller, equal, one more, an exact multiple, a
# multiple plus a remainder, and a single-row last block.
@pytest.mark.parametrize("n", [1, 6, 7, 8, 14, 21, 50, 57])
@pytest.mark.parametrize("block_rows", [1, 7])
def test_blocked_indices_match_numpy_argmin(n, block_rows):
    z, codebook = data(n, seed=n)
    expected = ref.nearest(z, codebook)
    plain = km.nearest_code(tf.constant(z), tf.constant(codebook))
    blocked = km.nearest_code(tf.constant(z), tf.constant(codebook), block_rows=block_rows)
    assert blocked.dtype == tf.int32
    assert tuple(blocked.shape) == (n,)
    np.testing.assert_array_equal(plain.numpy(), expected)
    np.testing.assert_array_equal(blocked.numpy(), expected)


def test_blocked_indices_at_block_boundaries():
    # Row r sits next to code (r mod K): every block, including the padded
    # last one, must return its own rows' codes in order.
    k, block_rows, n = 5, 4, 23
    codebook = 10.0 * np.eye(k, D, dtype=np.float32)
    rows = np.arange(n) % k
    z = codebook[rows] + 0.01 * np.random.default_rng(3).normal(size=(n, D)).astype(np.float32)
    got = km.nearest_code(tf.constant(z), tf.constant(codebook), block_rows=block_rows)
    np.testing.assert_array_equal(got.numpy(), rows)


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("n", [0, 5, 6, 19, 64])
def test_blocked_indices_with_unknown_batch_size(jit_compile, n):
    # Dynamic N takes a tf.cond between the one-matmul and blocked forms.
    z, codebook = data(n, seed=100 + n)

    @tf.function(
        jit_compile=jit_compile,
        input_signature=[tf.TensorSpec([None, D]), tf.TensorSpec([K, D])],
    )
    def find(z, codebook):
        return km.nearest_code(z, codebook, block_rows=6)

    got = find(tf.constant(z), tf.constant(codebook)).numpy()
    assert got.shape == (n,)
    np.testing.assert_array_equal(got, ref.nearest(z, codebook))


def test_blocked_indices_large_random_problem():
    # Several blocks of a bigger codebook; ties have probability zero.
    z, codebook = data(3000, k=700, d=32, seed=7)
    got = km.nearest_code(tf.constant(z), tf.constant(codebook), block_rows=256)
    np.testing.assert_array_equal(got.numpy(), ref.nearest(z, codebook))


@pytest.mark.parametrize("num_segments", [1, 7, 300])
def test_segment_sum_matches_numpy_and_unsorted_segment_sum(num_segments):
    rng = np.random.default_rng(num_segments)
    values = rng.normal(size=(500, 6)).astype(np.float32)
    indices = rng.integers(0, num_segments, size=500).astype(np.int32)
    _, expected = ref.counts_and_sums(values, indices, num_segments)
    got = km.segment_sum(tf.constant(values), tf.constant(indices), num_segments)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(
        got.numpy(), tf.math.unsorted_segment_sum(values, indices, num_segments).numpy()
    )
    counts = km.segment_sum(tf.ones([500]), tf.constant(indices), num_segments)
    np.testing.assert_array_equal(counts.numpy(), np.bincount(indices, minlength=num_segments))


# ------------------------------------------- the layers' blocked training path
def small_blocks(layer, block_rows):
    """Makes ``layer`` search in blocks of ``block_rows`` rows."""
    layer._block_elements = block_rows * layer.num_embeddings
    return layer


@pytest.mark.parametrize("cls", [VectorQuantizer, VectorQuantizerEMA])
@pytest.mark.parametrize("block_rows", [1, 4, 9])
def test_layer_blocked_path_matches_numpy(cls, block_rows):
    # 2 * 5 * 3 = 30 rows: 30 one-row blocks, 7 full blocks + 2 rows, 3 + 3.
    rng = np.random.default_rng(block_rows)
    codebook = rng.normal(size=(K, D)).astype(np.float32)
    z = rng.normal(size=(2, 5, 3, D)).astype(np.float32)
    layer = small_blocks(cls(K, D), block_rows)
    layer.build((None, D))
    layer.codebook.assign(codebook)
    if cls is VectorQuantizerEMA:
        layer.ema_embedding_sum.assign(codebook)
    expected = ref.nearest(z, codebook)
    out = layer.quantize_with_losses(tf.constant(z), training=False)
    np.testing.assert_array_equal(out.indices.numpy(), expected)
    np.testing.assert_array_equal(layer.indices(z).numpy(), expected)  # one-matmul path
    np.testing.assert_array_equal(
        out.counts.numpy(), np.bincount(expected.reshape(-1), minlength=K)
    )
    np.testing.assert_allclose(out.quantized.numpy(), codebook[expected], atol=1e-6)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_ema_step_in_blocks_matches_numpy(jit_compile):
    rng = np.random.default_rng(5)
    codebook = rng.normal(size=(K, D)).astype(np.float32)
    batches = [rng.normal(size=(4, 11, D)).astype(np.float32) for _ in range(3)]
    layer = small_blocks(VectorQuantizerEMA(K, D, decay=0.8, epsilon=1e-3, kmeans_init=False, restart_unused_after=None), 5)
    layer.build((None, D))
    layer.codebook.assign(codebook)
    layer.ema_embedding_sum.assign(codebook)

    @tf.function(jit_compile=jit_compile)
    def step(z):
        return layer.quantize_with_losses(z, training=True).indices

    big_n, m, e = np.ones(K), codebook.astype(np.float64), codebook.astype(np.float64)
    for z in batches:
        big_n, m, e, idx, _ = ref.ema_step(big_n, m, e, z, 0.8, 1e-3)
        np.testing.assert_array_equal(step(tf.constant(z)).numpy().reshape(-1), idx)
    np.testing.assert_allclose(layer.ema_cluster_size.numpy(), big_n, rtol=1e-6)
    np.testing.assert_allclose(layer.ema_embedding_sum.numpy(), m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.codebook.numpy(), e, rtol=1e-5, atol=1e-6)
