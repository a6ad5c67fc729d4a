"""ResidualVectorQuantizer: SoundStream's Algorithm 1, its stages' training
state, quantizer dropout, the shared codebook, and the Keras/distribution
contracts (harness, .keras round trip, mixed precision, MirroredStrategy).

Expected values come from the NumPy reference below (Algorithm 1 written out:
nearest code by float64 argmin, residual chain in float32 as the layer's
inputs are), from ``numpy_reference`` (the EMA step, the VQ losses and their
gradients), from a plain `VectorQuantizer` run (Q = 1), or are properties.
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvqvae import ResidualVectorQuantizer
from tfvqvae import VectorQuantizer
from tfvqvae import VectorQuantizerEMA
from tests.layers import numpy_reference as ref

pytestmark = [
    pytest.mark.filterwarnings("ignore:`shuffle=True` was passed:UserWarning"),
    pytest.mark.filterwarnings("ignore:The model does not have any trainable weights:UserWarning"),
]

Q, K, D = 3, 6, 3
DECAY, EPS = 0.8, 1e-3


# ---------------------------------------------------------- NumPy reference
def rvq_reference(z, codebooks):
    """Algorithm 1: r_0 = z, k_i = argmin ‖r_{i−1} − e‖², r_i = r_{i−1} − e_{k_i}.

    Returns (codes (N, Q), partial sums (Q, N, D) float64 with entry i the sum
    of the first i + 1 codes, residuals [r_0, ..., r_{Q−1}] as float32 (N, D)).
    """
    r = np.asarray(z, np.float32).reshape(-1, np.shape(codebooks[0])[1])
    codes, partial, residuals = [], [], []
    total = np.zeros(r.shape, np.float64)
    for e in codebooks:
        e = np.asarray(e, np.float32)
        k = ref.nearest(r, e)
        residuals.append(r)
        codes.append(k)
        total = total + e[k]
        partial.append(total)
        r = r - e[k]  # float32, as the layer's chain
    return np.stack(codes, axis=1), np.stack(partial), residuals


def random_codebooks(seed, q=Q, k=K, d=D, scale=0.5):
    """Stage i's codes drawn with scale scale**i: the usual shrinking residual."""
    rng = np.random.default_rng(seed)
    return [(scale**i * rng.normal(size=(k, d))).astype(np.float32) for i in range(q)]


def make(codebooks=None, q=Q, k=K, d=D, **kwargs):
    """A built layer with ``codebooks`` (and, with EMA, N = 1, m = e) set."""
    kwargs.setdefault("kmeans_init", False)
    kwargs.setdefault("restart_unused_after", None)
    if kwargs.get("ema", True):
        kwargs.setdefault("decay", DECAY)
        kwargs.setdefault("epsilon", EPS)
    layer = ResidualVectorQuantizer(q, k, d, **kwargs)
    layer.build((None, d))
    if codebooks is not None:
        for stage, e in zip(layer.quantizer_layers, codebooks):
            stage.codebook.assign(e)
            if layer.ema:
                stage.ema_embedding_sum.assign(e)
    return layer


def snapshot(layer):
    return {w.path: np.array(w.numpy()) for w in layer.weights}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def ema_state(stage):
    return (
        stage.ema_cluster_size.numpy().astype(np.float64),
        stage.ema_embedding_sum.numpy().astype(np.float64),
        stage.codebook.numpy().astype(np.float64),
    )


# ------------------------------------------------------------ Algorithm 1
@pytest.mark.parametrize("ema", [True, False])
@pytest.mark.parametrize("shape", [(40, D), (2, 5, 4, D)])
def test_algorithm_1_matches_numpy(ema, shape):
    codebooks = random_codebooks(0)
    beta, alpha = 0.7, 0.4
    kwargs = {} if ema else {"codebook_cost": alpha}
    layer = make(codebooks, ema=ema, commitment_cost=beta, **kwargs)
    z = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    codes, partial, residuals = rvq_reference(z, codebooks)

    out = layer.quantize_with_losses(z)
    assert out.indices.dtype == tf.int32
    assert tuple(out.indices.shape) == shape[:-1] + (Q,)
    np.testing.assert_array_equal(out.indices.numpy().reshape(-1, Q), codes)
    np.testing.assert_array_equal(layer.indices(z).numpy().reshape(-1, Q), codes)
    np.testing.assert_allclose(out.quantized.numpy().reshape(-1, D), partial[-1], atol=1e-5)
    np.testing.assert_allclose(
        layer.lookup(out.indices).numpy().reshape(-1, D), partial[-1], atol=1e-6
    )
    np.testing.assert_allclose(layer(z).numpy(), out.quantized.numpy(), rtol=0, atol=0)

    counts = np.stack([np.bincount(codes[:, i], minlength=K) for i in range(Q)])
    np.testing.assert_array_equal(out.counts.numpy(), counts)
    np.testing.assert_allclose(
        out.perplexity.numpy(), np.mean([ref.perplexity(c) for c in counts]), rtol=1e-5
    )
    # Σ over stages of each stage's mean squared error (the stage's r_{i−1} vs its code).
    mse = [np.mean((r.astype(np.float64) - e[k]) ** 2)
           for r, e, k in zip(residuals, codebooks, codes.T)]
    np.testing.assert_allclose(out.commitment_loss.numpy(), beta * np.sum(mse), rtol=1e-5)
    np.testing.assert_allclose(
        out.codebook_loss.numpy(), 0.0 if ema else alpha * np.sum(mse), rtol=1e-5
    )


def test_hand_computed_two_stages():
    # D = 1: stage 1 codes {0, 10}, stage 2 codes {−1, 1}.
    codebooks = [np.array([[0.0], [10.0]], np.float32), np.array([[-1.0], [1.0]], np.float32)]
    layer = make(codebooks, q=2, k=2, d=1)
    z = np.array([[9.2], [0.9], [-3.0]], np.float32)
    out = layer.quantize_with_losses(z)
    # 9.2 -> 10, residual −0.8 -> −1; 0.9 -> 0, 0.9 -> 1; −3 -> 0, −3 -> −1.
    np.testing.assert_array_equal(out.indices.numpy(), [[1, 0], [0, 1], [0, 0]])
    np.testing.assert_allclose(out.quantized.numpy(), [[9.0], [1.0], [-1.0]], atol=1e-6)
    np.testing.assert_array_equal(out.counts.numpy(), [[2, 1], [2, 1]])
    np.testing.assert_allclose(layer.lookup([[1, 1], [0, 0]]).numpy(), [[11.0], [-1.0]])


def test_residual_norm_never_increases_with_a_zero_code():
    # Property: when each codebook holds 0, min_j ‖r − e_j‖ ≤ ‖r − 0‖, so
    # ‖r_i‖ ≤ ‖r_{i−1}‖ for every vector, whatever the data.
    codebooks = random_codebooks(2, q=4, k=8)
    for e in codebooks:
        e[0] = 0.0
    layer = make(codebooks, q=4, k=8)
    rng = np.random.default_rng(3)
    z = np.concatenate([s * rng.normal(size=(100, D)) for s in (0.01, 1.0, 30.0)]).astype(np.float32)
    codes = layer.indices(z).numpy()
    r = z.astype(np.float64)
    norms = [np.linalg.norm(r, axis=1)]
    for i, e in enumerate(codebooks):
        r = r - e[codes[:, i]]
        norms.append(np.linalg.norm(r, axis=1))
    norms = np.stack(norms)
    assert np.all(np.diff(norms, axis=0) <= 1e-6 * (1 + norms[:-1]))


def test_data_near_the_codebooks_is_recovered_and_residuals_shrink():
    # z = Σ_i e^{(i)}_{c_i} + noise, with stage i's codes of norm in
    # [1, 1.5] · 0.05^i: what follows stage i (≤ 0.08 · 0.05^i) is small
    # next to its code, so ‖r_i‖ < ‖r_{i−1}‖ strictly, and the layer finds c_i.
    rng = np.random.default_rng(4)
    codebooks = []
    for i in range(3):
        e = rng.normal(size=(8, D))
        e *= rng.uniform(1.0, 1.5, size=(8, 1)) / np.linalg.norm(e, axis=1, keepdims=True)
        codebooks.append((0.05**i * e).astype(np.float32))
    true = rng.integers(0, 8, size=(200, 3))
    z = sum(e[true[:, i]] for i, e in enumerate(codebooks)) + 1e-6 * rng.normal(size=(200, D))
    z = z.astype(np.float32)
    layer = make(codebooks, q=3, k=8)
    codes = layer.indices(z).numpy()
    np.testing.assert_array_equal(codes, true)
    r = z.astype(np.float64)
    norms = [np.linalg.norm(r, axis=1)]
    for i, e in enumerate(codebooks):
        r = r - e[codes[:, i]]
        norms.append(np.linalg.norm(r, axis=1))
    assert np.all(np.diff(np.stack(norms), axis=0) < 0)


# ------------------------------------------------------- Q = 1 is a plain VQ
@pytest.mark.parametrize("ema", [True, False])
def test_one_stage_equals_vector_quantizer(ema):
    # Same seed, same k-means, restarts and EMA: bit-for-bit the same layer.
    kwargs = dict(kmeans_init=True, restart_unused_after=1, commitment_cost=0.6, seed=7)
    if ema:
        kwargs.update(decay=0.7, epsilon=1e-4)
        plain = VectorQuantizerEMA(5, D, add_losses=False, **kwargs)
    else:
        kwargs.update(codebook_cost=0.3)
        plain = VectorQuantizer(5, D, add_losses=False, **kwargs)
    rvq = ResidualVectorQuantizer(1, 5, D, ema=ema, add_losses=False, **kwargs)
    plain.build((None, D))
    rvq.build((None, D))
    np.testing.assert_array_equal(rvq.quantizers[0].codebook.numpy(), plain.codebook.numpy())
    rng = np.random.default_rng(6)
    for step in range(3):
        z = rng.normal(size=(4, 5, D)).astype(np.float32)
        a = plain.quantize_with_losses(z, training=True)
        b = rvq.quantize_with_losses(z, training=True)
        np.testing.assert_array_equal(b.quantized.numpy(), a.quantized.numpy())
        np.testing.assert_array_equal(b.indices.numpy()[..., 0], a.indices.numpy())
        np.testing.assert_array_equal(b.counts.numpy()[0], a.counts.numpy())
        for name in ("codebook_loss", "commitment_loss", "perplexity"):
            assert getattr(b, name).numpy() == getattr(a, name).numpy(), name
        stage = rvq.quantizers[0]
        for w, v in zip(stage.weights, plain.weights):
            np.testing.assert_array_equal(w.numpy(), v.numpy(), err_msg=f"{w.name}, step {step}")
    assert float(stage.training_steps.numpy()) == 3.0


# ------------------------------------------------------- training state
def test_ema_stages_follow_numpy_on_their_residuals():
    codebooks = random_codebooks(8)
    layer = make(codebooks)
    state = [(np.ones(K), e.astype(np.float64), e.astype(np.float64)) for e in codebooks]
    rng = np.random.default_rng(9)
    for step in range(2):
        z = rng.normal(size=(2, 4, 4, D)).astype(np.float32)
        # The step quantises with the codebooks from before its update.
        codes, partial, residuals = rvq_reference(z, [s[2].astype(np.float32) for s in state])
        out = layer.quantize_with_losses(z, training=True)
        np.testing.assert_array_equal(out.indices.numpy().reshape(-1, Q), codes)
        np.testing.assert_allclose(out.quantized.numpy().reshape(-1, D), partial[-1], atol=1e-5)
        for i, stage in enumerate(layer.quantizers):
            big_n, m, e, idx, n = ref.ema_step(*state[i], residuals[i], DECAY, EPS)
            state[i] = (big_n, m, e)
            np.testing.assert_array_equal(out.counts.numpy()[i], n)
            got_n, got_m, got_e = ema_state(stage)
            np.testing.assert_allclose(got_n, big_n, rtol=1e-6, err_msg=f"N{i}")
            np.testing.assert_allclose(got_m, m, rtol=1e-5, atol=1e-6, err_msg=f"m{i}")
            np.testing.assert_allclose(got_e, e, rtol=1e-5, atol=1e-6, err_msg=f"e{i}")
            assert float(stage.training_steps.numpy()) == step + 1


def test_no_state_changes_outside_training():
    layer = make(random_codebooks(10), quantizer_dropout=1.0, restart_unused_after=1,
                 kmeans_init=True)
    before = snapshot(layer)
    z = np.random.default_rng(11).normal(size=(4, 3, D)).astype(np.float32)
    layer(z)
    layer(z, training=False)
    layer.quantize_with_losses(z)
    layer.indices(z)
    layer.lookup(np.zeros((2, Q), np.int32))
    assert_same_weights(snapshot(layer), before)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("how", ["nan", "inf", "batch_finite"])
def test_non_finite_batch_changes_no_state(shared, how):
    layer = make(random_codebooks(12), shared_codebook=shared, quantizer_dropout=0.5,
                 kmeans_init=True, restart_unused_after=1)
    z = np.random.default_rng(13).normal(size=(8, 2, D)).astype(np.float32)
    before = snapshot(layer)
    if how == "batch_finite":
        layer.quantize_with_losses(z, training=True, batch_finite=tf.constant(False))
    else:
        bad = z.copy()
        bad[5, 1, 2] = np.nan if how == "nan" else np.inf
        layer.quantize_with_losses(bad, training=True)
    assert_same_weights(snapshot(layer), before)
    layer.quantize_with_losses(z, training=True)  # the next finite batch trains
    assert all(float(s.training_steps.numpy()) == 1.0 for s in layer.quantizer_layers)


# ------------------------------------------------------- shared codebook
def test_shared_codebook_is_one_variable_and_one_pooled_ema_update():
    e0 = random_codebooks(14, q=1, k=8)[0]
    layer = make([e0], k=8, shared_codebook=True)
    assert len(layer.quantizer_layers) == 1
    assert all(s is layer.quantizer_layers[0] for s in layer.quantizers)
    assert len({id(s.codebook) for s in layer.quantizers}) == 1
    codebooks_in_weights = [w for w in layer.weights if w.name == "codebook"]
    assert len(codebooks_in_weights) == 1 and len(layer.weights) == 4  # e, N, m, steps

    z = np.random.default_rng(15).normal(size=(30, D)).astype(np.float32)
    codes, partial, residuals = rvq_reference(z, [e0] * Q)
    out = layer.quantize_with_losses(z, training=True)
    np.testing.assert_array_equal(out.indices.numpy(), codes)
    np.testing.assert_allclose(out.quantized.numpy(), partial[-1], atol=1e-5)
    # One EMA step on the (row, stage) pairs of all stages pooled together.
    pooled = np.concatenate(residuals)
    big_n, m, e, idx, n = ref.ema_step(np.ones(8), e0, e0, pooled, DECAY, EPS)
    np.testing.assert_array_equal(idx, codes.T.reshape(-1))
    np.testing.assert_array_equal(out.counts.numpy().sum(axis=0), n)
    got_n, got_m, got_e = ema_state(layer.quantizer_layers[0])
    np.testing.assert_allclose(got_n, big_n, rtol=1e-6)
    np.testing.assert_allclose(got_m, m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_e, e, rtol=1e-5, atol=1e-6)
    assert float(layer.quantizer_layers[0].training_steps.numpy()) == 1.0


def test_shared_gradient_codebook_gets_the_sum_of_the_stage_gradients():
    alpha, beta = 0.5, 0.25
    e0 = random_codebooks(16, q=1)[0]
    layer = make([e0], ema=False, shared_codebook=True, codebook_cost=alpha,
                 commitment_cost=beta)
    assert len(layer.trainable_weights) == 1
    z = tf.constant(np.random.default_rng(17).normal(size=(2, 7, D)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        out = layer.quantize_with_losses(z, training=True)
    grad_e = tf.convert_to_tensor(tape.gradient(out.codebook_loss, layer.trainable_weights[0])).numpy()
    grad_z = tape.gradient(out.commitment_loss, z).numpy()
    _, _, residuals = rvq_reference(z.numpy(), [e0] * Q)
    want_e, want_z, want_loss = 0.0, 0.0, 0.0
    for r in residuals:  # d r_{i−1} / d z is the identity
        cb, _, g_e, g_z = ref.vq_losses(r, e0, beta, alpha)
        want_e, want_z, want_loss = want_e + g_e, want_z + g_z, want_loss + cb
    np.testing.assert_allclose(out.codebook_loss.numpy(), want_loss, rtol=1e-5)
    np.testing.assert_allclose(grad_e, want_e, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad_z.reshape(-1, D), want_z, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("ema", [True, False])
def test_unshared_stages_have_their_own_codebooks(ema):
    layer = ResidualVectorQuantizer(Q, K, D, ema=ema)
    layer.build((None, D))
    variables = [s.codebook for s in layer.quantizers]
    assert len({id(v) for v in variables}) == Q
    # Different seeds per stage: different initial codebooks.
    assert not np.array_equal(variables[0].numpy(), variables[1].numpy())
    assert len(layer.trainable_weights) == (0 if ema else Q)


# ------------------------------------------------------- straight-through
@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(ema=False), dict(shared_codebook=True), dict(quantizer_dropout=1.0)],
    ids=["ema", "gradient", "shared", "dropout"],
)
def test_straight_through_gradient_is_identity(kwargs):
    layer = make(random_codebooks(18), **kwargs)
    rng = np.random.default_rng(19)
    z = tf.constant(rng.normal(size=(3, 4, D)).astype(np.float32))
    upstream = rng.normal(size=(3, 4, D)).astype(np.float32)
    with tf.GradientTape() as tape:
        tape.watch(z)
        out = layer.quantize_with_losses(z, training=True)
        objective = tf.reduce_sum(out.quantized * upstream)
    np.testing.assert_array_equal(tape.gradient(objective, z).numpy(), upstream)


# ------------------------------------------------------- quantizer dropout
def depth_per_example(out, partial, examples):
    """The n_q each example used, read off the output: the partial sum it equals."""
    got = out.quantized.numpy().reshape(examples, -1, D).astype(np.float64)
    sums = partial.reshape(partial.shape[0], examples, -1, D)  # (Q, B, rows, D)
    error = np.max(np.abs(got[None] - sums), axis=(2, 3))  # (Q, B)
    depth = np.argmin(error, axis=0) + 1
    assert np.all(error[depth - 1, np.arange(examples)] < 1e-5), "output is no partial sum"
    return depth


@pytest.mark.parametrize("ema", [True, False])
def test_dropout_uses_only_the_first_n_q_stages_per_example(ema):
    codebooks = random_codebooks(20, scale=0.8)
    beta = 0.5
    layer = make(codebooks, ema=ema, quantizer_dropout=1.0, commitment_cost=beta,
                 **({} if ema else {"codebook_cost": 1.0}))
    examples, rows = 240, 2
    z = np.random.default_rng(21).normal(size=(examples, rows, D)).astype(np.float32)
    codes, partial, residuals = rvq_reference(z, codebooks)
    out = layer.quantize_with_losses(z, training=True)

    depth = depth_per_example(out, partial, examples)
    # SoundStream's rule: n_q uniform in {1..Q}, drawn per example.
    assert set(np.unique(depth)) == {1, 2, 3}
    assert all(50 <= np.sum(depth == n) <= 110 for n in (1, 2, 3)), np.bincount(depth)
    # The codes are those of the full stack; only their use is cut.
    np.testing.assert_array_equal(out.indices.numpy().reshape(-1, Q), codes)

    active = np.repeat(depth, rows)[:, None] > np.arange(Q)  # (N, Q): stage i counts
    counts = np.stack([np.bincount(codes[active[:, i], i], minlength=K) for i in range(Q)])
    np.testing.assert_array_equal(out.counts.numpy(), counts)
    sq = [np.sum(((r.astype(np.float64) - e[k]) ** 2)[active[:, i]])
          for i, (r, e, k) in enumerate(zip(residuals, codebooks, codes.T))]
    np.testing.assert_allclose(out.commitment_loss.numpy(), beta * np.sum(sq) / z.size, rtol=1e-5)
    if not ema:
        np.testing.assert_allclose(out.codebook_loss.numpy(), np.sum(sq) / z.size, rtol=1e-5)
        return
    # Each stage's EMA statistics see only the rows it was used for.
    for i, stage in enumerate(layer.quantizers):
        e = codebooks[i].astype(np.float64)
        big_n, m, e_new, _, _ = ref.ema_step(np.ones(K), e, e, residuals[i][active[:, i]], DECAY, EPS)
        got_n, got_m, got_e = ema_state(stage)
        np.testing.assert_allclose(got_n, big_n, rtol=1e-6, err_msg=f"N{i}")
        np.testing.assert_allclose(got_m, m, rtol=1e-5, atol=1e-6, err_msg=f"m{i}")
        np.testing.assert_allclose(got_e, e_new, rtol=1e-5, atol=1e-6, err_msg=f"e{i}")


def test_dropout_probability_leaves_the_rest_at_full_depth():
    layer = make(random_codebooks(22, scale=0.8), quantizer_dropout=0.5)
    z = np.random.default_rng(23).normal(size=(600, D)).astype(np.float32)
    _, partial, _ = rvq_reference(z, [s.codebook.numpy() for s in layer.quantizers])
    depth = depth_per_example(layer.quantize_with_losses(z, training=True), partial, 600)
    # P(n_q = Q) = 1/2 + 1/2 · 1/Q = 2/3, P(n_q = 1) = P(n_q = 2) = 1/6.
    share = np.bincount(depth, minlength=Q + 1)[1:] / 600
    np.testing.assert_allclose(share, [1 / 6, 1 / 6, 2 / 3], atol=0.06)


def test_dropout_stages_past_n_q_change_no_state():
    # One example per step: the stages past its n_q see no rows at all and
    # keep every weight, step count and restart counters included; the
    # others train. (No k-means: a stage would run it on its first *used*
    # step, which the partial sums below do not model.)
    codebooks = random_codebooks(24, scale=0.8)
    layer = make(codebooks, quantizer_dropout=1.0, restart_unused_after=1)
    rng = np.random.default_rng(25)
    depths = []
    for _ in range(6):
        before = [snapshot(s) for s in layer.quantizers]
        current = [s.codebook.numpy() for s in layer.quantizers]
        z = rng.normal(size=(1, 8, D)).astype(np.float32)
        out = layer.quantize_with_losses(z, training=True)
        _, partial, _ = rvq_reference(z, current)
        n = depth_per_example(out, partial, 1)[0]
        depths.append(n)
        for i, stage in enumerate(layer.quantizers):
            after = snapshot(stage)
            if i >= n:
                assert_same_weights(after, before[i])
            else:
                key = stage.training_steps.path
                assert after[key] == before[i][key] + 1
    assert min(depths) < Q < max(depths) + 1  # some steps dropped stages, some did not


def test_dropout_is_off_at_inference():
    codebooks = random_codebooks(26)
    layer = make(codebooks, quantizer_dropout=1.0)
    z = np.random.default_rng(27).normal(size=(50, D)).astype(np.float32)
    _, partial, _ = rvq_reference(z, codebooks)
    for out in (layer.quantize_with_losses(z), layer(z, training=False)):
        out = out if isinstance(out, tf.Tensor) else out.quantized
        np.testing.assert_allclose(out.numpy(), partial[-1], atol=1e-5)


def test_dropout_in_a_graph_with_unknown_shapes():
    layer = make(random_codebooks(28), quantizer_dropout=1.0)

    @tf.function(input_signature=[tf.TensorSpec((None, None, None, D), tf.float32)])
    def step(z):
        out = layer.quantize_with_losses(z, training=True)
        return out.quantized, out.indices

    for shape in ((3, 2, 2, D), (5, 1, 3, D)):
        z = np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32)
        quantized, indices = step(z)
        assert tuple(quantized.shape) == shape and tuple(indices.shape) == shape[:-1] + (Q,)


# ------------------------------------------------------- Keras contracts
@pytest.mark.parametrize(
    "kwargs, trainable, non_trainable",
    [
        # per stage: e, N, m, steps (+ steps_unused)
        (dict(restart_unused_after=2, kmeans_init=True, kmeans_iterations=2,
              quantizer_dropout=0.5), 0, 3 * 5),
        (dict(shared_codebook=True, restart_unused_after=None, kmeans_init=False), 0, 4),
        # per stage: e | steps (+ steps_unused)
        (dict(ema=False, restart_unused_after=2, kmeans_init=False, quantizer_dropout=1.0),
         3, 3 * 2),
        (dict(ema=False, shared_codebook=True, kmeans_iterations=2, restart_unused_after=None),
         1, 1),
    ],
    ids=["ema", "ema-shared", "gradient", "gradient-shared"],
)
def test_keras_run_layer_test(harness, kwargs, trainable, non_trainable):
    harness.run_quantizer_test(
        ResidualVectorQuantizer,
        {"num_quantizers": 3, "num_embeddings": 8, "embedding_dim": D, **kwargs},
        D, trainable, non_trainable)


def test_attributes():
    layer = ResidualVectorQuantizer(4, 16, 5)
    assert (layer.num_quantizers, layer.code_depth) == (4, 4)
    assert (layer.num_embeddings, layer.embedding_dim) == (16, 5)
    assert len(layer.quantizers) == 4
    assert all(type(s) is VectorQuantizerEMA for s in layer.quantizers)
    assert all(type(s) is VectorQuantizer
               for s in ResidualVectorQuantizer(2, 4, 2, ema=False).quantizers)


CONFIGS = [
    dict(num_quantizers=4, num_embeddings=7, embedding_dim=3, ema=True, shared_codebook=False,
         quantizer_dropout=0.25, commitment_cost=0.5, decay=0.6, epsilon=1e-3,
         embeddings_initializer="he_normal", kmeans_init=False, kmeans_iterations=3,
         restart_unused_after=4, add_losses=False, seed=9, name="my_rvq"),
    dict(num_quantizers=2, num_embeddings=5, embedding_dim=2, ema=False, shared_codebook=True,
         quantizer_dropout=1.0, commitment_cost=0.1, codebook_cost=0.75, kmeans_init=True,
         restart_unused_after=None, seed=3),
]


@pytest.mark.parametrize("kwargs", CONFIGS, ids=["ema", "gradient-shared"])
def test_config_round_trip(kwargs):
    layer = ResidualVectorQuantizer(**kwargs)
    config = layer.get_config()
    for key, value in kwargs.items():
        if key != "embeddings_initializer":
            assert config[key] == value, key
    assert ("decay" in config) == kwargs["ema"] and ("codebook_cost" in config) != kwargs["ema"]
    clone = ResidualVectorQuantizer.from_config(config)
    assert clone.get_config() == config
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is ResidualVectorQuantizer
    assert restored.get_config() == config


def test_config_defaults():
    config = ResidualVectorQuantizer(2, 4, 2).get_config()
    assert config["ema"] is True and config["shared_codebook"] is False
    assert config["quantizer_dropout"] == 0.0 and config["commitment_cost"] == 1.0
    # The stages' own defaults (VectorQuantizerEMA's, VectorQuantizer's).
    ema = VectorQuantizerEMA(4, 2)
    assert (config["decay"], config["epsilon"]) == (ema.decay, ema.epsilon)
    assert config["kmeans_init"] is True and config["restart_unused_after"] == 20
    assert config["embeddings_initializer"] is None
    assert ResidualVectorQuantizer(2, 4, 2, ema=False).get_config()["codebook_cost"] == 1.0


@pytest.mark.parametrize("shared", [False, True])
def test_keras_save_load_round_trip(tmp_path, shared):
    rng = np.random.default_rng(29)
    x = rng.normal(size=(8, 4, 4, D)).astype(np.float32)
    y = rng.normal(size=(8, 4, 4, 1)).astype(np.float32)
    inputs = keras.Input((4, 4, D))
    h = keras.layers.Dense(D, name="encoder")(inputs)
    q = ResidualVectorQuantizer(3, 6, D, shared_codebook=shared, quantizer_dropout=0.5,
                                decay=0.7, kmeans_iterations=2, restart_unused_after=2, seed=4,
                                name="rvq")(h)
    model = keras.Model(inputs, keras.layers.Dense(1, name="decoder")(q))
    model.compile(optimizer="adam", loss="mse", jit_compile=False)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # two steps: k-means, EMA, restarts
    rvq = model.get_layer("rvq")
    assert float(rvq.quantizer_layers[0].training_steps.numpy()) == 2.0

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    lrvq = loaded.get_layer("rvq")
    assert type(lrvq) is ResidualVectorQuantizer
    assert lrvq.get_config() == rvq.get_config()
    saved = snapshot(rvq)
    assert len(saved) == (5 if shared else 15)
    assert_same_weights(snapshot(lrvq), saved)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    # Training continues identically (same step counts: same dropout draws, no second k-means).
    model(x[:4], training=True)
    loaded(x[:4], training=True)
    assert_same_weights(snapshot(lrvq), snapshot(rvq))


@pytest.mark.parametrize("ema", [True, False])
def test_mixed_precision(ema):
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    codebooks = random_codebooks(30)
    layer = make(codebooks, ema=ema, quantizer_dropout=0.5)
    assert layer.compute_dtype == "float16"
    z = np.random.default_rng(31).normal(size=(2, 3, 3, D)).astype(np.float32)
    result = layer.quantize_with_losses(tf.cast(z, tf.float16), training=True)
    assert result.quantized.dtype == tf.float16 and result.indices.dtype == tf.int32
    for name in ("codebook_loss", "commitment_loss", "counts", "perplexity"):
        assert getattr(result, name).dtype == tf.float32, name
    for w in layer.weights:
        assert w.dtype == "float32", w.path
    out = layer(z, training=True)
    assert out.dtype == tf.float16
    assert len(layer.losses) == 1 and layer.losses[0].dtype == tf.float32
    # Forward value: Algorithm 1 on the float16-rounded inputs, in float32.
    current = [s.codebook.numpy() for s in layer.quantizers]
    z16 = tf.cast(z, tf.float16).numpy().astype(np.float32)
    codes, partial, _ = rvq_reference(z16, current)
    np.testing.assert_array_equal(layer.indices(z).numpy().reshape(-1, Q), codes)
    np.testing.assert_allclose(
        layer(z).numpy().astype(np.float32).reshape(-1, D), partial[-1], rtol=2e-3, atol=2e-3
    )


# ------------------------------------------------------- MirroredStrategy
GLOBAL_BATCH = 16


def run_steps(strategy, batches, **kwargs):
    """One ``strategy.run`` per global batch; returns the layer and the counts per step."""
    with strategy.scope():
        layer = ResidualVectorQuantizer(Q, K, D, decay=DECAY, epsilon=EPS, add_losses=False,
                                        seed=5, **kwargs)
        layer.build((None, 2, 2, D))
    dataset = tf.data.Dataset.from_tensor_slices(np.concatenate(batches)).batch(GLOBAL_BATCH)

    @tf.function
    def step(x):
        return strategy.run(lambda z: layer.quantize_with_losses(z, training=True).counts,
                            args=(x,))

    counts = []
    for x in strategy.experimental_distribute_dataset(dataset):
        counts.append([c.numpy() for c in strategy.experimental_local_results(step(x))])
    return layer, counts


@pytest.mark.parametrize(
    "kwargs",
    [pytest.param(dict(quantizer_dropout=1.0), marks=pytest.mark.slow),
     dict(shared_codebook=True, quantizer_dropout=0.5)],
    ids=["per-stage", "shared"],
)
def test_mirrored_matches_single_device(mirrored_strategy, kwargs):
    # k-means on the first step, restarts, EMA and per-example dropout all on.
    rng = np.random.default_rng(32)
    batches = [rng.normal(size=(GLOBAL_BATCH, 2, 2, D)).astype(np.float32) for _ in range(3)]
    # One Lloyd iteration keeps the graph small (k-means itself is checked
    # across replicas in test_vector_quantizer_ema.py).
    kwargs = dict(kmeans_init=True, kmeans_iterations=1, restart_unused_after=1, **kwargs)
    mirrored, mirrored_counts = run_steps(mirrored_strategy, batches, **kwargs)
    single, single_counts = run_steps(tf.distribute.get_strategy(), batches, **kwargs)
    for step, (per_replica, one) in enumerate(zip(mirrored_counts, single_counts)):
        for c in per_replica:  # global counts on every replica, equal to one device's
            np.testing.assert_array_equal(c, one[0], err_msg=f"step {step}")
    for w, v in zip(mirrored.weights, single.weights):
        copies = [c.numpy() for c in w.value.values]
        assert len(copies) == 2
        np.testing.assert_array_equal(copies[0], copies[1], err_msg=w.path)
        np.testing.assert_allclose(w.numpy(), v.numpy(), rtol=1e-6, atol=1e-6, err_msg=w.path)
    assert float(mirrored.quantizer_layers[0].training_steps.numpy()) == 3.0


# ------------------------------------------------------- bad arguments
def _received(name, value):
    return re.escape(f"Received: {name}={value!r}")


@pytest.mark.parametrize(
    "name, value, what",
    [
        ("num_quantizers", 0, "a positive integer"),
        ("num_quantizers", 2.0, "a positive integer"),
        ("num_quantizers", True, "a positive integer"),
        ("num_embeddings", 0, "a positive integer"),
        ("embedding_dim", -1, "a positive integer"),
        ("quantizer_dropout", -0.1, "a finite number in [0, 1]"),
        ("quantizer_dropout", 1.5, "a finite number in [0, 1]"),
        ("quantizer_dropout", float("nan"), "a finite number in [0, 1]"),
        ("ema", "yes", "True or False"),
        ("shared_codebook", 1, "True or False"),
        ("commitment_cost", -1.0, "a finite number >= 0"),
        ("decay", 1.0, "a finite number in (0, 1)"),
        ("seed", 1.5, "an integer"),
    ],
)
def test_bad_arguments_name_the_value(name, value, what):
    args = {"num_quantizers": 2, "num_embeddings": 4, "embedding_dim": 2, name: value}
    with pytest.raises(ValueError, match=re.escape(f"`{name}` must be {what}. ")
                       + _received(name, value)):
        ResidualVectorQuantizer(**args)


@pytest.mark.parametrize(
    "kwargs, name",
    [(dict(codebook_cost=0.5), "codebook_cost"), (dict(ema=False, decay=0.9), "decay"),
     (dict(ema=False, epsilon=1e-5), "epsilon")],
)
def test_arguments_of_the_other_stage_kind_are_refused(kwargs, name):
    with pytest.raises(ValueError, match=re.escape(f"`{name}` applies only with ema=")
                       + ".*" + _received(name, kwargs[name])):
        ResidualVectorQuantizer(2, 4, 2, **kwargs)


def test_bad_indices_and_inputs():
    layer = make(random_codebooks(33))
    with pytest.raises(ValueError, match=re.escape(
            "last axis is num_quantizers=3. Received: indices with shape=(4, 2)")):
        layer.lookup(np.zeros((4, 2), np.int32))
    with pytest.raises(ValueError, match=re.escape("Received: indices with shape=()")):
        layer.lookup(np.int32(0))
    with pytest.raises(ValueError, match=re.escape(f"Code indices must lie in [0, {K})")):
        layer.lookup(np.array([[0, K, 1]], np.int32))
    with pytest.raises(TypeError, match="must be integers"):
        layer.lookup(np.zeros((1, Q), np.float32))
    with pytest.raises(ValueError, match=re.escape(
            f"embedding_dim={D}. Received: inputs with shape=(2, 5)")):
        layer.quantize_with_losses(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="rank >= 2"):
        layer.indices(np.zeros((D,), np.float32))
    with pytest.raises(TypeError, match="floating-point inputs"):
        layer.indices(np.zeros((2, D), np.int32))
