"""The options of VectorQuantizer / VectorQuantizerEMA: cosine-similarity codes,
a low-dimensional (factorized) codebook, and the rotation trick.

Expected values come from NumPy written here (float64): the cosine choice is
the argmax of the normalised dot products (Yu et al. 2021, ViT-VQGAN §3.2),
the factorized codes go through the layer's own projection weights read
back as arrays, and the rotation trick's gradient is λ Rᵀ g with the
matrix R = I − 2 r rᵀ + 2 q uᵀ built explicitly (Fifty et al. 2024,
https://arxiv.org/abs/2410.06424); the EMA step comes from
``numpy_reference``. The rest are properties (R orthogonal, R u = q; the
default options equal no options bit for bit) and the Keras / saving /
precision / export contracts.
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvqvae
from tfvqvae import VectorQuantizer
from tfvqvae import VectorQuantizerEMA
from tests.layers import numpy_reference as ref

pytestmark = [
    pytest.mark.filterwarnings("ignore:`shuffle=True` was passed:UserWarning"),
    pytest.mark.filterwarnings("ignore:The model does not have any trainable weights:UserWarning"),
]

BOTH = [VectorQuantizer, VectorQuantizerEMA]
K, D, C = 6, 4, 3
DECAY, EPS = 0.8, 1e-3
ALL_OPTIONS = dict(use_cosine_similarity=True, codebook_dim=C, gradient="rotation")


# ---------------------------------------------------------- NumPy reference
def normalise(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def cosine_choice(x, codebook):
    """argmax_j x̂·ê_j and the gap to the runner-up (float64)."""
    cos = normalise(x).reshape(-1, np.shape(codebook)[1]) @ normalise(codebook).T
    top2 = np.sort(cos, axis=1)[:, -2:]
    return np.argmax(cos, axis=1), top2[:, 1] - top2[:, 0]


def rotation_reference(e, q):
    """Fifty et al. 2024: u, q̂, R = I − 2 r rᵀ + 2 q̂ uᵀ (one per row) and λ = ‖q‖ / ‖e‖."""
    e = np.asarray(e, np.float64)
    q = np.asarray(q, np.float64)
    u, qh = normalise(e), normalise(q)
    r = normalise(u + qh)
    eye = np.eye(e.shape[-1])
    rot = eye - 2.0 * r[:, :, None] * r[:, None, :] + 2.0 * qh[:, :, None] * u[:, None, :]
    scale = np.linalg.norm(q, axis=-1) / np.linalg.norm(e, axis=-1)
    return u, qh, rot, scale


def make(cls, codebook, d=D, **kwargs):
    """A built layer with ``codebook`` (and, for EMA, N = 1, m = e) set."""
    kwargs.setdefault("kmeans_init", False)
    kwargs.setdefault("restart_unused_after", None)
    if cls is VectorQuantizerEMA:
        kwargs.setdefault("decay", DECAY)
        kwargs.setdefault("epsilon", EPS)
    layer = cls(len(codebook), d, **kwargs)
    layer.build((None, d))
    layer.codebook.assign(codebook)
    if cls is VectorQuantizerEMA:
        layer.ema_embedding_sum.assign(codebook)
    return layer


def spread_codebook(seed, k=K, d=D):
    """Codes of very different norms: the cosine and Euclidean choices differ."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(k, d)) * rng.uniform(0.1, 4.0, size=(k, 1))).astype(np.float32)


def projections(layer):
    return (layer.project_in.kernel.numpy().astype(np.float64),
            layer.project_in.bias.numpy().astype(np.float64),
            layer.project_out.kernel.numpy().astype(np.float64),
            layer.project_out.bias.numpy().astype(np.float64))


def gradient_of(layer, z, g, training=False):
    """(output, d Σ output·g / d z) of ``layer.quantize_with_losses(z)``."""
    z = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(z)
        out = layer.quantize_with_losses(z, training=training)
        objective = tf.reduce_sum(out.quantized * g)
    return out, tape.gradient(objective, z).numpy()


def snapshot(layer):
    return {w.path: np.array(w.numpy()) for w in layer.weights}


# ---------------------------------------------------- 1. cosine similarity
@pytest.mark.parametrize("cls", BOTH)
@pytest.mark.parametrize("shape", [(60, D), (2, 5, 3, D)], ids=["rank2", "rank4"])
def test_cosine_codes_are_the_argmax_of_normalised_dot_products(cls, shape):
    codebook = spread_codebook(0)
    z = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    beta, alpha = 0.7, 0.4
    extra = {"codebook_cost": alpha} if cls is VectorQuantizer else {}
    layer = make(cls, codebook, use_cosine_similarity=True, commitment_cost=beta, **extra)
    expected, gap = cosine_choice(z, codebook)
    assert gap.min() > 1e-5  # no near-ties in this data
    # The test tells cosine from Euclidean: the plain nearest code differs on some rows.
    assert np.any(expected != ref.nearest(z, codebook).reshape(-1))

    np.testing.assert_array_equal(layer.indices(z).numpy().reshape(-1), expected)
    out = layer.quantize_with_losses(z)
    np.testing.assert_array_equal(out.indices.numpy().reshape(-1), expected)
    assert out.indices.shape == shape[:-1]
    unit = normalise(codebook)
    # Forward value: the normalised code (straight-through rounding only).
    np.testing.assert_allclose(out.quantized.numpy().reshape(-1, D), unit[expected],
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(layer.lookup(out.indices).numpy().reshape(-1, D),
                               unit[expected], rtol=0, atol=1e-6)
    mse = np.mean((normalise(z).reshape(-1, D) - unit[expected]) ** 2)
    np.testing.assert_allclose(out.commitment_loss.numpy(), beta * mse, rtol=1e-5)
    np.testing.assert_allclose(out.codebook_loss.numpy(),
                               alpha * mse if cls is VectorQuantizer else 0.0, rtol=1e-5)
    cos = normalise(z).reshape(-1, D) @ unit.T
    np.testing.assert_allclose(layer.distances(z).numpy().reshape(-1, K), 2.0 - 2.0 * cos,
                               rtol=0, atol=1e-5)


def test_cosine_gradients_go_through_the_normalisation():
    # out = ν(z) + sg[ν(e_k) − ν(z)]: d out / d z = (I − ẑẑᵀ) / ‖z‖;
    # codebook = α mean ‖sg[ẑ] − ν(e_k)‖²: d / d e_j = (I − ê_jê_jᵀ) / ‖e_j‖ · α 2 Σ (ê_j − ẑ) / numel.
    codebook = spread_codebook(2)
    rng = np.random.default_rng(3)
    z = rng.normal(size=(40, D)).astype(np.float32)
    g = rng.normal(size=(40, D)).astype(np.float32)
    alpha = 0.6
    layer = make(VectorQuantizer, codebook, use_cosine_similarity=True, codebook_cost=alpha,
                 commitment_cost=0.0)
    _, grad_z = gradient_of(layer, z, g)
    zh = normalise(z)
    expected = (g - zh * np.sum(zh * g, axis=1, keepdims=True)) / np.linalg.norm(
        z.astype(np.float64), axis=1, keepdims=True)
    np.testing.assert_allclose(grad_z, expected, rtol=1e-5, atol=1e-6)

    with tf.GradientTape() as tape:
        loss = layer.quantize_with_losses(z).codebook_loss
    grad_e = tape.gradient(loss, layer.codebook).numpy()
    idx, _ = cosine_choice(z, codebook)
    unit = normalise(codebook)
    d_unit = np.zeros_like(unit)
    np.add.at(d_unit, idx, alpha * 2.0 * (unit[idx] - zh) / z.size)
    norms = np.linalg.norm(codebook.astype(np.float64), axis=1, keepdims=True)
    expected_e = (d_unit - unit * np.sum(unit * d_unit, axis=1, keepdims=True)) / norms
    np.testing.assert_allclose(grad_e, expected_e, rtol=1e-4, atol=1e-7)


def test_cosine_ema_averages_normalised_vectors_and_searches_the_direction():
    codebook = spread_codebook(4)
    z = np.random.default_rng(5).normal(size=(3, 7, D)).astype(np.float32)
    layer = make(VectorQuantizerEMA, codebook, use_cosine_similarity=True)
    # The EMA step of appendix A.1 on ẑ, assigning by the normalised old codes.
    n, m, e, idx, _ = ref.ema_step(np.ones(K), codebook, normalise(codebook), normalise(z),
                                   DECAY, EPS)
    assert np.array_equal(idx, cosine_choice(z, codebook)[0])
    out = layer.quantize_with_losses(z, training=True)
    np.testing.assert_array_equal(out.indices.numpy().reshape(-1), idx)
    np.testing.assert_allclose(layer.ema_cluster_size.numpy(), n, rtol=1e-6)
    np.testing.assert_allclose(layer.ema_embedding_sum.numpy(), m, rtol=1e-5, atol=1e-6)
    # Stored unnormalised (e = m / Ñ) ...
    np.testing.assert_allclose(layer.codebook.numpy(), e, rtol=1e-5, atol=1e-6)
    assert np.abs(np.linalg.norm(e, axis=1) - 1.0).max() > 0.1
    # ... and searched / looked up by their direction.
    np.testing.assert_allclose(layer.lookup(np.arange(K)).numpy(), normalise(e), atol=1e-6)
    z2 = np.random.default_rng(6).normal(size=(50, D)).astype(np.float32)
    expected, gap = cosine_choice(z2, e)
    clear = gap > 1e-5
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(layer.indices(z2).numpy()[clear], expected[clear])


# --------------------------------------------------- 2. factorized codes
@pytest.mark.parametrize("cls", BOTH)
def test_codebook_dim_projects_in_searches_and_projects_out(cls):
    codebook = np.random.default_rng(7).normal(size=(K, C)).astype(np.float32)
    layer = make(cls, codebook, codebook_dim=C, commitment_cost=0.5)
    assert layer.codebook_dim == C and tuple(layer.codebook.shape) == (K, C)
    assert tuple(layer.project_in.kernel.shape) == (D, C)
    assert tuple(layer.project_out.kernel.shape) == (C, D)
    if cls is VectorQuantizerEMA:
        assert tuple(layer.ema_embedding_sum.shape) == (K, C)
    w_in, b_in, w_out, b_out = projections(layer)
    assert np.any(w_in != 0) and np.any(w_out != 0)  # Glorot-initialised

    rng = np.random.default_rng(8)
    z = rng.normal(size=(2, 4, 5, D)).astype(np.float32)
    g = rng.normal(size=z.shape).astype(np.float32)
    x = z.reshape(-1, D) @ w_in + b_in  # (N, C)
    expected = ref.nearest(x, codebook)
    np.testing.assert_array_equal(layer.indices(z).numpy().reshape(-1), expected)
    out, grad_z = gradient_of(layer, z, g)
    assert out.quantized.shape == z.shape and out.indices.shape == z.shape[:-1]
    decoded = codebook[expected] @ w_out + b_out  # (N, D)
    np.testing.assert_allclose(out.quantized.numpy().reshape(-1, D), decoded, atol=1e-5)
    np.testing.assert_allclose(layer.lookup(out.indices).numpy().reshape(-1, D), decoded,
                               atol=1e-5)
    assert layer.lookup(np.zeros((3,), np.int32)).shape == (3, D)
    np.testing.assert_allclose(out.commitment_loss.numpy(),
                               0.5 * np.mean((x - codebook[expected]) ** 2), rtol=1e-5)
    np.testing.assert_allclose(layer.distances(z).numpy().reshape(-1, K),
                               ref.direct_distances(x, codebook), rtol=1e-4, atol=1e-5)
    # Straight-through in C dimensions: d out / d z = W_in W_out (row vectors: g W_outᵀ W_inᵀ).
    np.testing.assert_allclose(grad_z, (g.reshape(-1, D) @ w_out.T @ w_in.T).reshape(z.shape),
                               rtol=1e-5, atol=1e-5)


def test_codebook_dim_projections_learn_by_gradient():
    # out = W_out ẑ + b_out with ẑ = x + sg[e_k − x], x = W_in z + b_in:
    # d Σ out·g / d W_out = Σ_n e_kᵀ g_n,  d / d W_in = Σ_n zᵀ (g_n W_outᵀ).
    codebook = np.random.default_rng(9).normal(size=(K, C)).astype(np.float32)
    layer = make(VectorQuantizerEMA, codebook, codebook_dim=C)
    rng = np.random.default_rng(10)
    z = rng.normal(size=(30, D)).astype(np.float32)
    g = rng.normal(size=(30, D)).astype(np.float32)
    w_in, b_in, w_out, _ = projections(layer)
    with tf.GradientTape() as tape:
        objective = tf.reduce_sum(layer.quantize_with_losses(z).quantized * g)
    grads = tape.gradient(objective, [layer.project_in.kernel, layer.project_out.kernel])
    idx = ref.nearest(z @ w_in + b_in, codebook)
    np.testing.assert_allclose(grads[1].numpy(), codebook[idx].astype(np.float64).T @ g,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grads[0].numpy(), z.astype(np.float64).T @ (g @ w_out.T),
                               rtol=1e-5, atol=1e-5)
    assert {id(w) for w in layer.trainable_weights} == {
        id(w) for w in layer.project_in.weights + layer.project_out.weights}


def test_codebook_dim_ema_tracks_the_projected_vectors():
    codebook = np.random.default_rng(11).normal(size=(K, C)).astype(np.float32)
    layer = make(VectorQuantizerEMA, codebook, codebook_dim=C)
    w_in, b_in, _, _ = projections(layer)
    z = np.random.default_rng(12).normal(size=(4, 6, D)).astype(np.float32)
    x = z.reshape(-1, D) @ w_in + b_in
    n, m, e, idx, _ = ref.ema_step(np.ones(K), codebook, codebook, x, DECAY, EPS)
    out = layer.quantize_with_losses(z, training=True)
    np.testing.assert_array_equal(out.indices.numpy().reshape(-1), idx)
    np.testing.assert_allclose(layer.ema_cluster_size.numpy(), n, rtol=1e-6)
    np.testing.assert_allclose(layer.ema_embedding_sum.numpy(), m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.codebook.numpy(), e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", BOTH)
def test_cosine_and_codebook_dim_together(cls):
    codebook = spread_codebook(13, d=C)
    layer = make(cls, codebook, codebook_dim=C, use_cosine_similarity=True)
    w_in, b_in, w_out, b_out = projections(layer)
    z = np.random.default_rng(14).normal(size=(70, D)).astype(np.float32)
    x = z @ w_in + b_in
    expected, gap = cosine_choice(x, codebook)
    clear = gap > 1e-5
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(layer.indices(z).numpy()[clear], expected[clear])
    out = layer.quantize_with_losses(z)
    idx = out.indices.numpy()
    np.testing.assert_array_equal(idx[clear], expected[clear])
    np.testing.assert_allclose(out.quantized.numpy(), normalise(codebook)[idx] @ w_out + b_out,
                               atol=1e-5)
    np.testing.assert_allclose(out.commitment_loss.numpy(),
                               np.mean((normalise(x) - normalise(codebook)[idx]) ** 2), rtol=1e-5)


@pytest.mark.parametrize("cls", BOTH)
def test_default_options_written_out_change_nothing(cls):
    # codebook_dim = D adds no projection: bit for bit the plain layer over training steps.
    rng = np.random.default_rng(15)
    batches = [rng.normal(size=(6, 3, D)).astype(np.float32) for _ in range(3)]
    plain = cls(K, D, restart_unused_after=1, seed=4, name="vq")
    explicit = cls(K, D, restart_unused_after=1, seed=4, name="vq", use_cosine_similarity=False,
                   codebook_dim=D, gradient="straight_through")
    assert explicit.project_in is None and explicit.get_config() == plain.get_config()
    for z in batches:
        a = plain.quantize_with_losses(z, training=True)
        b = explicit.quantize_with_losses(z, training=True)
        for name in ("quantized", "indices", "commitment_loss", "codebook_loss", "counts"):
            np.testing.assert_array_equal(getattr(a, name).numpy(), getattr(b, name).numpy())
    for w, v in zip(plain.weights, explicit.weights):
        np.testing.assert_array_equal(w.numpy(), v.numpy(), err_msg=w.path)


# --------------------------------------------------- 3. the rotation trick
def test_rotation_reference_is_orthogonal_and_maps_u_to_q():
    # The reference itself (Fifty et al. 2024's closed form) before it judges the layer.
    rng = np.random.default_rng(16)
    e, q = rng.normal(size=(20, 5)), rng.normal(size=(20, 5))
    u, qh, rot, _ = rotation_reference(e, q)
    np.testing.assert_allclose(rot @ np.swapaxes(rot, 1, 2), np.broadcast_to(np.eye(5), rot.shape),
                               atol=1e-12)
    np.testing.assert_allclose(np.einsum("nij,nj->ni", rot, u), qh, atol=1e-12)


@pytest.mark.parametrize("cls", BOTH)
def test_rotation_forward_is_the_code_and_gradient_is_scaled_rotation(cls):
    codebook = spread_codebook(17)
    rng = np.random.default_rng(18)
    z = rng.normal(size=(3, 8, D)).astype(np.float32)
    g = rng.normal(size=z.shape).astype(np.float32)
    layer = make(cls, codebook, gradient="rotation")
    out, grad_z = gradient_of(layer, z, g)
    idx = ref.nearest(z, codebook).reshape(-1)
    np.testing.assert_array_equal(out.indices.numpy().reshape(-1), idx)
    # Forward: z_q bit for bit (z_q + (t − sg[t]) with t finite).
    np.testing.assert_array_equal(out.quantized.numpy().reshape(-1, D), codebook[idx])
    _, _, rot, scale = rotation_reference(z.reshape(-1, D), codebook[idx])
    expected = scale[:, None] * np.einsum("nji,nj->ni", rot, g.reshape(-1, D))  # λ Rᵀ g
    np.testing.assert_allclose(grad_z.reshape(-1, D), expected, rtol=1e-5, atol=1e-5)
    # Not the straight-through gradient (which would be g itself).
    assert not np.allclose(grad_z, g, atol=1e-2)


def test_rotation_jacobian_is_scale_times_an_orthogonal_map_taking_u_to_q():
    codebook = spread_codebook(19)
    z = np.random.default_rng(20).normal(size=(25, D)).astype(np.float32)
    layer = make(VectorQuantizer, codebook, gradient="rotation")
    zt = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(zt)
        out = layer.quantize_with_losses(zt).quantized
    jac = tape.batch_jacobian(out, zt).numpy().astype(np.float64)  # (N, D, D) = λ R
    q = codebook[ref.nearest(z, codebook)].astype(np.float64)
    scale = np.linalg.norm(q, axis=1) / np.linalg.norm(z.astype(np.float64), axis=1)
    rot = jac / scale[:, None, None]
    np.testing.assert_allclose(rot @ np.swapaxes(rot, 1, 2), np.broadcast_to(np.eye(D), rot.shape),
                               atol=2e-5)
    np.testing.assert_allclose(np.einsum("nij,nj->ni", rot, normalise(z)), normalise(q),
                               atol=2e-5)


def test_rotation_guards_zero_rows_and_opposite_directions():
    g = np.random.default_rng(21).normal(size=(3, D)).astype(np.float32)
    # Code 0 = (1, 0, 0, 0), code 1 far away.
    layer = make(VectorQuantizer, np.array([[1, 0, 0, 0], [9, 9, 9, 9]], np.float32),
                 gradient="rotation")
    z = np.array([[-0.1, 0, 0, 0],      # exactly opposite its code: u = −q
                  [0, 0, 0, 0],         # ‖z_e‖ = 0
                  [0.9, 0.3, 0.1, 0]],  # a regular row
                 np.float32)
    out, grad_z = gradient_of(layer, z, g)
    np.testing.assert_array_equal(out.indices.numpy(), [0, 0, 0])
    np.testing.assert_array_equal(out.quantized.numpy(), np.tile([[1, 0, 0, 0]], (3, 1)))
    assert np.all(np.isfinite(grad_z))
    # u = −q: R = I − 2 u uᵀ (the reflection taking u to q), λ = 1 / 0.1.
    u = np.array([-1.0, 0, 0, 0])
    np.testing.assert_allclose(grad_z[0], 10.0 * (g[0] - 2.0 * u * (u @ g[0])), rtol=1e-5)
    np.testing.assert_array_equal(grad_z[1], g[1])  # straight through
    _, _, rot, scale = rotation_reference(z[2:], [[1, 0, 0, 0]])
    np.testing.assert_allclose(grad_z[2], scale[0] * rot[0].T @ g[2], rtol=1e-5)
    # A zero code (‖z_q‖ = 0) passes the gradient straight through as well.
    layer = make(VectorQuantizer, np.array([[0, 0, 0, 0], [9, 9, 9, 9]], np.float32),
                 gradient="rotation")
    z = np.array([[0.05, 0.1, 0, 0], [0.2, -0.3, 0.1, 0.4], [0, 0, 0, 0]], np.float32)
    out, grad_z = gradient_of(layer, z, g)
    np.testing.assert_array_equal(out.indices.numpy(), [0, 0, 0])
    np.testing.assert_array_equal(out.quantized.numpy(), np.zeros((3, D)))
    np.testing.assert_array_equal(grad_z, g)


def test_all_options_gradient_matches_numpy_chain():
    # x = ν(p), p = z W_in + b_in; out = W_out (sg[R] x) + b_out with λ = 1 (unit vectors):
    # d Σ out·g / d z = W_in (I − x̂x̂ᵀ)/‖p‖ Rᵀ W_out g (row-vector form below).
    codebook = spread_codebook(22, d=C)
    rng = np.random.default_rng(23)
    z = rng.normal(size=(30, D)).astype(np.float32)
    g = rng.normal(size=(30, D)).astype(np.float32)
    layer = make(VectorQuantizerEMA, codebook, **ALL_OPTIONS)
    w_in, b_in, w_out, b_out = projections(layer)
    p = z @ w_in + b_in
    expected_idx, gap = cosine_choice(p, codebook)
    assert gap.min() > 1e-6
    out, grad_z = gradient_of(layer, z, g)
    np.testing.assert_array_equal(out.indices.numpy(), expected_idx)
    q = normalise(codebook)[expected_idx]
    np.testing.assert_allclose(out.quantized.numpy(), q @ w_out + b_out, atol=1e-5)
    x = normalise(p)
    _, _, rot, scale = rotation_reference(x, q)
    np.testing.assert_allclose(scale, 1.0, atol=1e-12)
    g_x = np.einsum("nji,nj->ni", rot, g @ w_out.T)  # Rᵀ (d / d out projected back)
    g_p = (g_x - x * np.sum(x * g_x, axis=1, keepdims=True)) / np.linalg.norm(p, axis=1,
                                                                              keepdims=True)
    np.testing.assert_allclose(grad_z, g_p @ w_in.T, rtol=1e-4, atol=1e-5)


# ------------------------------------------------- state, precision, export
@pytest.mark.parametrize("cls", BOTH)
@pytest.mark.parametrize("how", ["nan", "batch_finite"])
def test_non_finite_batch_changes_no_state_with_options(cls, how):
    layer = cls(K, D, kmeans_init=True, restart_unused_after=1, **ALL_OPTIONS)
    z = np.random.default_rng(24).normal(size=(8, 3, D)).astype(np.float32)
    layer.build((None, D))
    before = snapshot(layer)
    if how == "nan":
        bad = z.copy()
        bad[2, 1, 3] = np.nan
        layer.quantize_with_losses(bad, training=True)
    else:
        layer.quantize_with_losses(z, training=True, batch_finite=tf.constant(False))
    after = snapshot(layer)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    layer.quantize_with_losses(z, training=True)
    assert float(layer.training_steps.numpy()) == 1.0


@pytest.mark.parametrize("cls", BOTH)
def test_mixed_precision_with_options(cls):
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    codebook = spread_codebook(25, d=C)
    layer = make(cls, codebook, **ALL_OPTIONS)
    assert layer.compute_dtype == "float16"
    for w in layer.weights:
        assert w.dtype == "float32", w.path
    z = np.random.default_rng(26).normal(size=(2, 3, 3, D)).astype(np.float32)
    result = layer.quantize_with_losses(tf.cast(z, tf.float16), training=False)
    assert result.quantized.dtype == tf.float16 and result.indices.dtype == tf.int32
    for name in ("codebook_loss", "commitment_loss", "counts", "perplexity"):
        assert getattr(result, name).dtype == tf.float32, name
    w_in, b_in, w_out, b_out = projections(layer)
    z16 = tf.cast(z, tf.float16).numpy().astype(np.float64).reshape(-1, D)
    expected, gap = cosine_choice(z16 @ w_in + b_in, codebook)
    clear = gap > 1e-4
    np.testing.assert_array_equal(result.indices.numpy().reshape(-1)[clear], expected[clear])
    idx = result.indices.numpy().reshape(-1)
    np.testing.assert_allclose(result.quantized.numpy().astype(np.float32).reshape(-1, D),
                               normalise(codebook)[idx] @ w_out + b_out, rtol=2e-3, atol=2e-3)
    out = layer(z, training=True)
    assert out.dtype == tf.float16
    assert len(layer.losses) == 1 and layer.losses[0].dtype == tf.float32


def test_indices_graph_exports_to_savedmodel_and_tflite(tmp_path):
    codebook = spread_codebook(27, d=C)
    layer = make(VectorQuantizerEMA, codebook, **ALL_OPTIONS)
    w_in, b_in, _, _ = projections(layer)
    z = np.random.default_rng(28).normal(size=(200, D)).astype(np.float32)
    expected, gap = cosine_choice(z @ w_in + b_in, codebook)
    clear = gap > 1e-5
    assert clear.mean() > 0.9
    # As `tfvqvae.export` builds its SavedModel: a Keras ExportArchive tracking the layer.
    archive = keras.export.ExportArchive()
    archive.track(layer)
    archive.add_endpoint("encode", lambda z: {"codes": layer.indices(z)},
                         input_signature=[tf.TensorSpec([None, D], tf.float32, name="z")])
    path = str(tmp_path / "saved_model")
    archive.write_out(path, verbose=False)
    encode = tf.saved_model.load(path).signatures["encode"]
    codes = encode(z=tf.constant(z))["codes"].numpy()
    np.testing.assert_array_equal(codes[clear], expected[clear])
    np.testing.assert_array_equal(codes, layer.indices(z).numpy())

    interpreter_module = pytest.importorskip("ai_edge_litert.interpreter")
    converter = tf.lite.TFLiteConverter.from_saved_model(path, signature_keys=["encode"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = interpreter_module.Interpreter(model_content=converter.convert())
    runner = interpreter.get_signature_runner("encode")
    np.testing.assert_array_equal(runner(z=z)["codes"][clear], expected[clear])


# ------------------------------------------------------ Keras contracts
@pytest.mark.parametrize(
    "cls, kwargs, trainable, non_trainable",
    [
        # codebook + 2 kernels + 2 biases | training_steps
        (VectorQuantizer, dict(restart_unused_after=None, kmeans_init=False), 5, 1),
        # kernels and biases | codebook, N, m, training_steps, steps_unused
        (VectorQuantizerEMA, dict(restart_unused_after=2, kmeans_init=True), 4, 5),
        # cosine alone adds no weight
        (VectorQuantizerEMA, dict(restart_unused_after=None, kmeans_init=False,
                                  codebook_dim=None), 0, 4),
    ],
    ids=["VectorQuantizer", "VectorQuantizerEMA", "EMA-cosine-rotation"],
)
def test_keras_run_layer_test_with_options(harness, cls, kwargs, trainable, non_trainable):
    harness.run_quantizer_test(
        cls, {"num_embeddings": 8, "embedding_dim": D, **ALL_OPTIONS, **kwargs},
        D, trainable, non_trainable)


@pytest.mark.parametrize("cls", BOTH)
def test_config_round_trip_with_options(cls):
    layer = cls(7, 5, seed=2, name="opt", **ALL_OPTIONS)
    config = layer.get_config()
    assert (config["use_cosine_similarity"], config["codebook_dim"], config["gradient"]) == (
        True, C, "rotation")
    clone = cls.from_config(config)
    assert clone.get_config() == config and clone.codebook_dim == C
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is cls and restored.get_config() == config
    defaults = cls(7, 5).get_config()
    assert (defaults["use_cosine_similarity"], defaults["codebook_dim"], defaults["gradient"]) == (
        False, None, "straight_through")
    # A config written before the options existed loads with them off.
    old = {k: v for k, v in defaults.items()
           if k not in ("use_cosine_similarity", "codebook_dim", "gradient")}
    assert cls.from_config(old).get_config() == defaults


def test_keras_save_load_round_trip_with_options(tmp_path):
    rng = np.random.default_rng(29)
    x = rng.normal(size=(8, 4, 4, D)).astype(np.float32)
    y = rng.normal(size=(8, 4, 4, 1)).astype(np.float32)
    inputs = keras.Input((4, 4, D))
    h = keras.layers.Dense(D, name="encoder")(inputs)
    q = VectorQuantizerEMA(6, D, decay=0.7, kmeans_iterations=2, restart_unused_after=2, seed=4,
                           name="vq", **ALL_OPTIONS)(h)
    model = keras.Model(inputs, keras.layers.Dense(1, name="decoder")(q))
    model.compile(optimizer="adam", loss="mse")
    vq = model.get_layer("vq")
    kernel_before = vq.project_in.kernel.numpy().copy()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert float(vq.training_steps.numpy()) == 2.0
    assert not np.array_equal(vq.project_in.kernel.numpy(), kernel_before)  # learned

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    lvq = loaded.get_layer("vq")
    assert type(lvq) is VectorQuantizerEMA and lvq.get_config() == vq.get_config()
    saved, restored = snapshot(vq), snapshot(lvq)
    assert len(saved) == 9 and saved.keys() == restored.keys()
    for key in saved:
        np.testing.assert_array_equal(restored[key], saved[key], err_msg=key)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    np.testing.assert_array_equal(lvq.indices(x).numpy(), vq.indices(x).numpy())


@pytest.mark.slow  # default-suite time: the slow run keeps it
def test_vqvae_with_all_options_fits_and_reloads(tmp_path):
    quantizer = VectorQuantizerEMA(16, 8, decay=0.9, restart_unused_after=2, **{
        **ALL_OPTIONS, "codebook_dim": 4})
    model = tfvqvae.VQVAE(image_channels=1, hidden_channels=16, residual_channels=8,
                          num_residual_layers=1, quantizer=quantizer)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = np.random.default_rng(30).random((16, 16, 16, 1), dtype=np.float32)
    history = model.fit(x, batch_size=8, epochs=2, verbose=0)
    assert all(np.isfinite(v) for v in history.history["loss"])
    assert float(model.quantizer.training_steps.numpy()) == 4.0
    codes = model.encode(x).numpy()
    assert codes.shape == (16, 4, 4) and codes.min() >= 0 and codes.max() < 16
    # The codes are the cosine choice in the projected space of the encoder's output.
    w_in, b_in, _, _ = projections(model.quantizer)
    z_e = model.encoder(x).numpy().reshape(-1, 8).astype(np.float64)
    expected, gap = cosine_choice(z_e @ w_in + b_in, model.quantizer.codebook.numpy())
    clear = gap > 1e-5
    np.testing.assert_array_equal(codes.reshape(-1)[clear], expected[clear])
    assert model.decode(codes).shape == x.shape

    path = tmp_path / "vqvae.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.encode(x).numpy(), codes)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


# --------------------------------------------------------- bad arguments
@pytest.mark.parametrize("cls", BOTH)
@pytest.mark.parametrize(
    "name, value, what",
    [
        ("use_cosine_similarity", "yes", "True or False"),
        ("use_cosine_similarity", 1, "True or False"),
        ("codebook_dim", 0, "a positive integer"),
        ("codebook_dim", 2.0, "a positive integer"),
        ("codebook_dim", True, "a positive integer"),
        ("gradient", "ste", "one of ('straight_through', 'rotation')"),
        ("gradient", None, "one of ('straight_through', 'rotation')"),
    ],
)
def test_bad_option_arguments_name_the_value(cls, name, value, what):
    with pytest.raises(ValueError, match=re.escape(f"`{name}` must be {what}. Received: "
                                                   f"{name}={value!r}")):
        cls(4, 2, **{name: value})
