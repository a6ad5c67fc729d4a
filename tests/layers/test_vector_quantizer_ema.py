"""VectorQuantizerEMA: the EMA update (equation (3) + Laplace smoothing),
MirroredStrategy exactness, k-means initialisation and dead-code restarts.

Expected values come from ``numpy_reference`` (float64) or are written out by
hand.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfvqvae import VectorQuantizer
from tfvqvae import VectorQuantizerEMA
from tests.layers import numpy_reference as ref


def state(layer):
    """float64 copies of (N, m, e)."""
    return (
        layer.ema_cluster_size.numpy().astype(np.float64),
        layer.ema_embedding_sum.numpy().astype(np.float64),
        layer.codebook.numpy().astype(np.float64),
    )


def weights_snapshot(layer):
    return {w.path: w.numpy().copy() for w in layer.weights}


def assert_weights_unchanged(layer, before):
    after = weights_snapshot(layer)
    assert after.keys() == before.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)


# ------------------------------------------------------------ 6. EMA update
# K = 3, D = 2; code 2 is never chosen. Non-trivial starting state.
E0 = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 40.0]], np.float32)
N0 = np.array([2.0, 0.5, 3.0], np.float32)
M0 = np.array([[0.2, -0.4], [2.5, 0.5], [0.0, 90.0]], np.float32)
Z = np.array([[0.5, 0.0], [-0.5, 1.0], [3.0, 0.0], [5.0, 1.0]], np.float32)
DECAY, EPS = 0.9, 1e-3


def make_ema(codebook=E0, cluster_size=N0, embedding_sum=M0, **kwargs):
    k, d = np.shape(codebook)
    kwargs.setdefault("decay", DECAY)
    kwargs.setdefault("epsilon", EPS)
    kwargs.setdefault("kmeans_init", False)  # the paper's layer: the codebook given here
    kwargs.setdefault("restart_unused_after", None)
    layer = VectorQuantizerEMA(k, d, **kwargs)
    layer.build((None, d))
    layer.codebook.assign(codebook)
    layer.ema_cluster_size.assign(cluster_size)
    layer.ema_embedding_sum.assign(embedding_sum)
    return layer


def test_initial_state_is_n_one_m_codebook():
    layer = VectorQuantizerEMA(6, 3, kmeans_init=False, restart_unused_after=None)
    layer.build((None, 3))
    np.testing.assert_array_equal(layer.ema_cluster_size.numpy(), np.ones(6))
    np.testing.assert_array_equal(layer.ema_embedding_sum.numpy(), layer.codebook.numpy())
    assert float(layer.training_steps.numpy()) == 0.0
    for w in (layer.codebook, layer.ema_cluster_size, layer.ema_embedding_sum):
        assert w.dtype == "float32"
        assert not w.trainable


def test_one_ema_step_hand_computed():
    layer = make_ema()
    out = layer.quantize_with_losses(Z, training=True)
    # Assignment with the old codebook: z0, z1 -> code 0; z2, z3 -> code 1.
    np.testing.assert_array_equal(out.indices.numpy(), [0, 0, 1, 1])
    np.testing.assert_array_equal(out.counts.numpy(), [2.0, 2.0, 0.0])
    # N = 0.9 N0 + 0.1 n
    n = np.array([2.0, 0.65, 2.7])
    # m = 0.9 M0 + 0.1 Σz: Σz_0 = (0, 1), Σz_1 = (8, 1), Σz_2 = 0
    m = np.array([[0.18, -0.26], [3.05, 0.55], [0.0, 81.0]])
    total = 5.35
    smoothed = (n + EPS) / (total + 3 * EPS) * total
    e = m / smoothed[:, None]
    big_n, m_layer, e_layer = state(layer)
    np.testing.assert_allclose(big_n, n, rtol=1e-6)
    np.testing.assert_allclose(m_layer, m, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(e_layer, e, rtol=1e-6)
    # The unused code keeps decaying N but still has a finite smoothed size.
    np.testing.assert_allclose(e_layer[2], [0.0, 81.0 / smoothed[2]], rtol=1e-6)
    assert float(layer.training_steps.numpy()) == 1.0


def test_three_ema_steps_match_numpy_loop():
    rng = np.random.default_rng(0)
    layer = make_ema()
    big_n, m, e = N0.astype(np.float64), M0.astype(np.float64), E0.astype(np.float64)
    batches = [Z] + [
        (np.array([[0.0, 0.0], [4.0, 0.0]])[rng.integers(0, 2, 6)] + rng.normal(size=(6, 2)))
        .astype(np.float32)
        for _ in range(2)
    ]
    for step, z in enumerate(batches, start=1):
        expected_q = e[ref.nearest(z, e)]
        out = layer.quantize_with_losses(z, training=True)
        # The quantized output of a training step uses the pre-update codebook.
        np.testing.assert_allclose(out.quantized.numpy(), expected_q, rtol=0, atol=1e-5)
        big_n, m, e, idx, n = ref.ema_step(big_n, m, e, z, DECAY, EPS)
        np.testing.assert_array_equal(out.indices.numpy(), idx)
        np.testing.assert_array_equal(out.counts.numpy(), n)
        got_n, got_m, got_e = state(layer)
        np.testing.assert_allclose(got_n, big_n, rtol=1e-6, err_msg=f"N, step {step}")
        np.testing.assert_allclose(got_m, m, rtol=1e-6, atol=1e-6, err_msg=f"m, step {step}")
        np.testing.assert_allclose(got_e, e, rtol=1e-5, atol=1e-6, err_msg=f"e, step {step}")
        assert float(layer.training_steps.numpy()) == step


def test_ema_step_on_rank4_input_matches_numpy():
    rng = np.random.default_rng(4)
    k, d = 16, 4
    e0 = rng.normal(size=(k, d)).astype(np.float32)
    n0 = rng.uniform(0.5, 3.0, size=k).astype(np.float32)
    m0 = (e0 * n0[:, None]).astype(np.float32)
    z = rng.normal(size=(2, 4, 4, d)).astype(np.float32)
    layer = make_ema(e0, n0, m0, decay=0.8, epsilon=1e-5)
    layer(z, training=True)
    big_n, m, e, _, _ = ref.ema_step(n0, m0, e0, z, 0.8, 1e-5)
    got_n, got_m, got_e = state(layer)
    np.testing.assert_allclose(got_n, big_n, rtol=1e-6)
    np.testing.assert_allclose(got_m, m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_e, e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("how", ["training_false", "plain_call", "methods"])
def test_no_weight_changes_outside_training(how):
    layer = make_ema(restart_unused_after=1)
    before = weights_snapshot(layer)
    for _ in range(2):
        if how == "training_false":
            layer(Z, training=False)
            layer.quantize_with_losses(Z, training=False)
        elif how == "plain_call":
            layer(Z)
            layer.quantize_with_losses(Z)
        else:
            layer.indices(Z)
            layer.distances(Z)
            layer.lookup([0, 1, 2])
    assert_weights_unchanged(layer, before)


def test_no_kmeans_or_restart_outside_training():
    vq = VectorQuantizer(3, 2, kmeans_init=True, restart_unused_after=1)
    vq.build((None, 2))
    before = weights_snapshot(vq)
    vq(Z)
    vq(Z, training=False)
    assert_weights_unchanged(vq, before)


# ------------------------------------------------- 7. MirroredStrategy
def replica_values(variable):
    """The per-replica copies of a Keras variable created under a MirroredStrategy."""
    return [v.numpy() for v in variable.value.values]


K_M, D_M, GLOBAL_BATCH = 6, 3, 16


def mirrored_batches(num_steps=3, seed=0):
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=(GLOBAL_BATCH, 2, 2, D_M)).astype(np.float32) for _ in range(num_steps)
    ]


def run_steps(strategy, batches, codebook=None, **kwargs):
    """Builds a VectorQuantizerEMA under ``strategy`` and runs one
    ``strategy.run`` per global batch inside a tf.function.

    Returns the layer and, per step, the per-replica ``counts`` outputs."""
    kwargs.setdefault("kmeans_init", False)
    kwargs.setdefault("restart_unused_after", None)
    with strategy.scope():
        layer = VectorQuantizerEMA(K_M, D_M, decay=0.8, epsilon=1e-3, add_losses=False, **kwargs)
        layer.build((None, 2, 2, D_M))
        if codebook is not None:
            layer.codebook.assign(codebook)
            layer.ema_embedding_sum.assign(codebook)
    dataset = tf.data.Dataset.from_tensor_slices(np.concatenate(batches)).batch(GLOBAL_BATCH)
    dist = strategy.experimental_distribute_dataset(dataset)

    @tf.function
    def step(x):
        def replica_fn(z):
            return layer.quantize_with_losses(z, training=True).counts

        return strategy.run(replica_fn, args=(x,))

    counts = []
    for x in dist:
        counts.append([c.numpy() for c in strategy.experimental_local_results(step(x))])
    return layer, counts


def assert_replicas_identical(layer, names):
    for name in names:
        copies = replica_values(getattr(layer, name))
        assert len(copies) == 2
        np.testing.assert_array_equal(copies[0], copies[1], err_msg=name)


EMA_STATE = ("codebook", "ema_cluster_size", "ema_embedding_sum", "training_steps")


def test_mirrored_ema_matches_single_device_and_numpy(mirrored_strategy):
    batches = mirrored_batches()
    codebook = np.random.default_rng(1).normal(size=(K_M, D_M)).astype(np.float32)
    mirrored, mirrored_counts = run_steps(mirrored_strategy, batches, codebook)
    single, single_counts = run_steps(tf.distribute.get_strategy(), batches, codebook)

    assert_replicas_identical(mirrored, EMA_STATE)
    for name in EMA_STATE:
        np.testing.assert_allclose(
            getattr(mirrored, name).numpy(),
            getattr(single, name).numpy(),
            rtol=1e-6,
            atol=1e-6,
            err_msg=name,
        )
    assert float(mirrored.training_steps.numpy()) == 3.0

    # Independent reference: the NumPy EMA loop on the global batches.
    big_n, m, e = np.ones(K_M), codebook.astype(np.float64), codebook.astype(np.float64)
    for z, per_replica, single_step in zip(batches, mirrored_counts, single_counts):
        big_n, m, e, _, n = ref.ema_step(big_n, m, e, z, 0.8, 1e-3)
        # counts are global (all-reduced) on every replica
        for c in per_replica:
            np.testing.assert_array_equal(c, n)
        np.testing.assert_array_equal(single_step[0], n)
    np.testing.assert_allclose(mirrored.ema_cluster_size.numpy(), big_n, rtol=1e-6)
    np.testing.assert_allclose(mirrored.ema_embedding_sum.numpy(), m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mirrored.codebook.numpy(), e, rtol=1e-5, atol=1e-6)


def test_mirrored_ema_in_row_blocks_matches_single_device_and_numpy(
    mirrored_strategy, monkeypatch
):
    # Blocks of 3 rows (K_M = 6): each replica's 32 rows run as 11 blocks, the
    # last one padded, inside the replica context.
    monkeypatch.setattr(VectorQuantizerEMA, "_block_elements", 3 * K_M)
    batches = mirrored_batches(seed=4)
    codebook = np.random.default_rng(2).normal(size=(K_M, D_M)).astype(np.float32)
    mirrored, mirrored_counts = run_steps(mirrored_strategy, batches, codebook)
    single, _ = run_steps(tf.distribute.get_strategy(), batches, codebook)

    assert_replicas_identical(mirrored, EMA_STATE)
    for name in EMA_STATE:
        np.testing.assert_allclose(
            getattr(mirrored, name).numpy(),
            getattr(single, name).numpy(),
            rtol=1e-6,
            atol=1e-6,
            err_msg=name,
        )
    big_n, m, e = np.ones(K_M), codebook.astype(np.float64), codebook.astype(np.float64)
    for z, per_replica in zip(batches, mirrored_counts):
        big_n, m, e, _, n = ref.ema_step(big_n, m, e, z, 0.8, 1e-3)
        for c in per_replica:
            np.testing.assert_array_equal(c, n)
    np.testing.assert_allclose(mirrored.codebook.numpy(), e, rtol=1e-5, atol=1e-6)


def _kmeans_fixed_point(centroids, z, atol):
    """Every non-empty cluster's centroid is the mean of its assigned vectors."""
    flat = z.reshape(-1, z.shape[-1]).astype(np.float64)
    idx = ref.nearest(flat, centroids)
    n, s = ref.counts_and_sums(flat, idx, len(centroids))
    used = n > 0
    np.testing.assert_allclose(
        centroids[used], s[used] / n[used, None], rtol=1e-5, atol=atol
    )
    return n


def test_mirrored_kmeans_init_replicas_agree_and_centroids_are_fixed_point(mirrored_strategy):
    batches = mirrored_batches(seed=3)
    layer, _ = run_steps(mirrored_strategy, batches[:1], kmeans_init=True)
    assert_replicas_identical(layer, EMA_STATE)
    big_n, m, _ = state(layer)
    # After the k-means reset (N = 1, m = c) and one EMA step, m / N = c.
    _kmeans_fixed_point(m / big_n[:, None], batches[0], atol=1e-5)
    layer, _ = run_steps(mirrored_strategy, batches, kmeans_init=True)
    assert_replicas_identical(layer, EMA_STATE)
    assert float(layer.training_steps.numpy()) == 3.0


def test_mirrored_kmeans_init_matches_single_device(mirrored_strategy):
    # k-means runs on the gathered global batch with the same stateless seed,
    # so the 2-replica run reproduces the single-device one.
    batches = mirrored_batches(seed=3)
    mirrored, _ = run_steps(mirrored_strategy, batches, kmeans_init=True)
    single, _ = run_steps(tf.distribute.get_strategy(), batches, kmeans_init=True)
    for name in EMA_STATE:
        np.testing.assert_allclose(
            getattr(mirrored, name).numpy(), getattr(single, name).numpy(),
            rtol=1e-6, atol=1e-6, err_msg=name,
        )


def test_mirrored_restart_replicas_agree(mirrored_strategy):
    batches = mirrored_batches(seed=5)
    codebook = np.random.default_rng(2).normal(size=(K_M, D_M)).astype(np.float32)
    codebook[4] = 100.0  # never chosen
    layer, counts = run_steps(
        mirrored_strategy, batches[:1], codebook, restart_unused_after=1
    )
    assert_replicas_identical(layer, EMA_STATE + ("steps_unused",))

    # Which codes died is decided by the global counts (NumPy), not per replica.
    big_n, m, e, _, n = ref.ema_step(np.ones(K_M), codebook, codebook, batches[0], 0.8, 1e-3)
    np.testing.assert_array_equal(counts[0][0], n)
    dead = n == 0
    assert dead[4]
    got_n, got_m, got_e = state(layer)
    vectors = batches[0].reshape(-1, D_M)
    for i in np.flatnonzero(dead):
        assert np.any(np.all(vectors == got_e[i].astype(np.float32), axis=1)), i
        assert got_n[i] == 1.0
        np.testing.assert_array_equal(got_m[i], got_e[i])
    # Live codes follow the plain EMA update.
    np.testing.assert_allclose(got_n[~dead], big_n[~dead], rtol=1e-6)
    np.testing.assert_allclose(got_m[~dead], m[~dead], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_e[~dead], e[~dead], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(layer.steps_unused.numpy(), 0.0)

    layer, _ = run_steps(mirrored_strategy, batches, codebook, restart_unused_after=1)
    assert_replicas_identical(layer, EMA_STATE + ("steps_unused",))
    assert float(layer.training_steps.numpy()) == 3.0


def test_mirrored_restart_matches_single_device(mirrored_strategy):
    # Restart rows are drawn by global row number from a stateless seed, so
    # the 2-replica run re-seeds dead codes with the same vectors as one device.
    batches = mirrored_batches(seed=5)
    codebook = np.random.default_rng(2).normal(size=(K_M, D_M)).astype(np.float32)
    codebook[4] = 100.0
    mirrored, _ = run_steps(mirrored_strategy, batches, codebook, restart_unused_after=1)
    single, _ = run_steps(tf.distribute.get_strategy(), batches, codebook, restart_unused_after=1)
    for name in EMA_STATE + ("steps_unused",):
        np.testing.assert_allclose(
            getattr(mirrored, name).numpy(), getattr(single, name).numpy(),
            rtol=1e-6, atol=1e-6, err_msg=name,
        )


# --------------------------------------------------------- 8. k-means init
BLOB_MEANS = np.array(
    [[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0], [-10.0, -10.0, -10.0]]
)


def blobs(seed, per_blob=32, shift=0.0):
    rng = np.random.default_rng(seed)
    z = np.concatenate(
        [mu + shift + 0.1 * rng.normal(size=(per_blob, 3)) for mu in BLOB_MEANS]
    )
    return z[rng.permutation(len(z))].astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_init_then_one_ema_step(seed):
    decay, eps = 0.9, 1e-5
    z1 = blobs(seed=10 + seed)
    layer = VectorQuantizerEMA(4, 3, decay=decay, epsilon=eps, kmeans_init=True, seed=seed)
    layer.build((None, 3))
    assert float(layer.training_steps.numpy()) == 0.0
    out = layer.quantize_with_losses(z1, training=True)
    assert float(layer.training_steps.numpy()) == 1.0
    big_n, m, e = state(layer)

    # State was reset to N = 1, m = c (centroids) and then updated once:
    # N = γ + (1 − γ) n, m = γ c + (1 − γ) s, hence m / N = c whenever c is the
    # mean of its cluster; the step's output is quantised with c itself.
    centroids = m / big_n[:, None]
    n = _kmeans_fixed_point(centroids, z1, atol=1e-5)
    np.testing.assert_array_equal(out.counts.numpy(), n)
    np.testing.assert_allclose(big_n, decay + (1 - decay) * n, rtol=1e-6)
    flat = z1.astype(np.float64)
    idx = ref.nearest(flat, centroids)
    np.testing.assert_array_equal(out.indices.numpy(), idx)
    np.testing.assert_allclose(out.quantized.numpy(), centroids[idx], atol=1e-4)
    _, s = ref.counts_and_sums(flat, idx, 4)
    np.testing.assert_allclose(m, decay * centroids + (1 - decay) * s, rtol=1e-5, atol=1e-4)
    total = big_n.sum()
    smoothed = (big_n + eps) / (total + 4 * eps) * total
    np.testing.assert_allclose(e, m / smoothed[:, None], rtol=1e-5, atol=1e-6)
    # Each centroid is a mean of batch vectors, so it lies within the batch's hull.
    assert np.all(centroids.min(0) >= flat.min(0) - 1e-4)
    assert np.all(centroids.max(0) <= flat.max(0) + 1e-4)

    # Step 2 is a plain EMA step from that state: no second k-means.
    z2 = blobs(seed=20 + seed, shift=0.5)
    big_n2, m2, e2, _, _ = ref.ema_step(big_n, m, e, z2, decay, eps)
    layer.quantize_with_losses(z2, training=True)
    assert float(layer.training_steps.numpy()) == 2.0
    got_n, got_m, got_e = state(layer)
    np.testing.assert_allclose(got_n, big_n2, rtol=1e-6)
    np.testing.assert_allclose(got_m, m2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_e, e2, rtol=1e-5, atol=1e-5)


def test_kmeans_init_gradient_layer_sets_codebook_to_centroids():
    z1 = blobs(seed=4)
    vq = VectorQuantizer(4, 3, kmeans_init=True, seed=5)
    out = vq.quantize_with_losses(z1, training=True)
    codebook = vq.codebook.numpy().astype(np.float64)
    n = _kmeans_fixed_point(codebook, z1, atol=1e-5)
    np.testing.assert_array_equal(out.counts.numpy(), n)
    expected = codebook[ref.nearest(z1, codebook)]
    np.testing.assert_allclose(out.quantized.numpy(), expected, atol=1e-5)
    # A second training step leaves the codebook to the optimizer.
    vq.quantize_with_losses(blobs(seed=6, shift=3.0), training=True)
    np.testing.assert_array_equal(vq.codebook.numpy(), codebook.astype(np.float32))
    assert float(vq.training_steps.numpy()) == 2.0


def test_kmeans_init_recovers_well_separated_blobs():
    z1 = blobs(seed=1)
    failures = []
    for seed in range(6):
        layer = VectorQuantizerEMA(4, 3, decay=0.9, kmeans_init=True, seed=seed)
        out = layer.quantize_with_losses(z1, training=True)
        counts = out.counts.numpy()
        codebook = np.sort(layer.codebook.numpy(), axis=0)
        if not (
            np.array_equal(counts, np.full(4, 32.0))
            and np.allclose(codebook, np.sort(BLOB_MEANS, axis=0), atol=0.1)
        ):
            failures.append((seed, counts.tolist()))
    assert not failures, f"blobs not recovered for (seed, counts): {failures}"


# ------------------------------------------------------------- 9. restart
def test_restart_unused_code_after_two_steps_ema():
    decay, eps = 0.9, 1e-3
    layer = make_ema(restart_unused_after=2)  # code 2 at (0, 40) is never chosen
    big_n, m, e = N0.astype(np.float64), M0.astype(np.float64), E0.astype(np.float64)
    rng = np.random.default_rng(8)
    batches = [Z, (Z + 0.1 * rng.normal(size=Z.shape)).astype(np.float32)]

    # Step 1: code 2 unused once, not yet restarted.
    big_n, m, e, _, n = ref.ema_step(big_n, m, e, batches[0], decay, eps)
    layer.quantize_with_losses(batches[0], training=True)
    np.testing.assert_array_equal(layer.steps_unused.numpy(), [0.0, 0.0, 1.0])
    np.testing.assert_allclose(layer.codebook.numpy(), e, rtol=1e-5, atol=1e-6)

    # Step 2: code 2 reaches 2 unused steps and is re-seeded.
    big_n, m, e, _, n = ref.ema_step(big_n, m, e, batches[1], decay, eps)
    assert n[2] == 0
    layer.quantize_with_losses(batches[1], training=True)
    got_n, got_m, got_e = state(layer)
    np.testing.assert_array_equal(layer.steps_unused.numpy(), [0.0, 0.0, 0.0])
    row = got_e[2].astype(np.float32)
    assert np.any(np.all(batches[1] == row, axis=1)), row
    assert got_n[2] == 1.0
    np.testing.assert_array_equal(got_m[2], got_e[2])
    # Used codes are untouched by the restart: plain EMA update.
    np.testing.assert_allclose(got_n[:2], big_n[:2], rtol=1e-6)
    np.testing.assert_allclose(got_m[:2], m[:2], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got_e[:2], e[:2], rtol=1e-5, atol=1e-6)


def test_restart_unused_code_gradient_layer():
    codebook = np.array([[0.0, 0.0], [4.0, 0.0], [-100.0, 100.0]], np.float32)
    vq = VectorQuantizer(3, 2, restart_unused_after=2, seed=3, kmeans_init=False)
    vq.build((None, 2))
    vq.codebook.assign(codebook)
    vq.quantize_with_losses(Z, training=True)
    np.testing.assert_array_equal(vq.codebook.numpy(), codebook)
    np.testing.assert_array_equal(vq.steps_unused.numpy(), [0.0, 0.0, 1.0])
    z2 = Z + np.float32(0.25)
    vq.quantize_with_losses(z2, training=True)
    got = vq.codebook.numpy()
    np.testing.assert_array_equal(got[:2], codebook[:2])  # used codes untouched
    assert np.any(np.all(z2 == got[2], axis=1)), got[2]
    np.testing.assert_array_equal(vq.steps_unused.numpy(), 0.0)


def test_restart_counter_resets_when_code_is_used_again():
    vq = VectorQuantizer(3, 2, restart_unused_after=3, kmeans_init=False)
    vq.build((None, 2))
    vq.codebook.assign(np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 40.0]], np.float32))
    vq.quantize_with_losses(Z, training=True)
    vq.quantize_with_losses(Z, training=True)
    np.testing.assert_array_equal(vq.steps_unused.numpy(), [0.0, 0.0, 2.0])
    vq.quantize_with_losses(np.array([[0.0, 39.0]], np.float32), training=True)
    np.testing.assert_array_equal(vq.steps_unused.numpy(), [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(vq.codebook.numpy()[2], [0.0, 40.0])
