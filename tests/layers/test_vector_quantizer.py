"""VectorQuantizer (and the parts VectorQuantizerEMA shares with it).

Every expected value comes from NumPy (``numpy_reference``) or is written out
by hand; the layer is only ever the thing under test.
"""

import re

import numpy as np
import pytest
import tensorflow as tf

import tfvqvae
from tfvqvae import QuantizerOutput
from tfvqvae import VectorQuantizer
from tfvqvae import VectorQuantizerEMA
from tests.layers import numpy_reference as ref

BOTH = [VectorQuantizer, VectorQuantizerEMA]


def make_layer(cls, codebook, **kwargs):
    """A built layer whose codebook (and EMA state, N = 1, m = e) is ``codebook``."""
    codebook = np.asarray(codebook, np.float32)
    k, d = codebook.shape
    kwargs.setdefault("kmeans_init", False)  # the paper's layer, the codebook given
    kwargs.setdefault("restart_unused_after", None)
    layer = cls(k, d, **kwargs)
    layer.build((None, d))
    layer.codebook.assign(codebook)
    if isinstance(layer, VectorQuantizerEMA):
        layer.ema_cluster_size.assign(np.ones(k, np.float32))
        layer.ema_embedding_sum.assign(codebook)
    return layer


def dense_grad(grad):
    if grad is None:
        return None
    return tf.convert_to_tensor(grad).numpy()


def assert_no_grad(grad):
    """The gradient is None (disconnected) or identically zero."""
    if grad is not None:
        np.testing.assert_array_equal(dense_grad(grad), 0.0)


# ------------------------------------------------------------- 1. indices
@pytest.mark.parametrize("cls", BOTH)
@pytest.mark.parametrize("num_embeddings", [3, 64, 512])
@pytest.mark.parametrize("shape", [(50, 8), (2, 5, 3, 8)], ids=["rank2", "rank4"])
def test_indices_and_distances_match_numpy(cls, num_embeddings, shape):
    rng = np.random.default_rng(num_embeddings + len(shape))
    d = shape[-1]
    z = rng.normal(size=shape).astype(np.float32)
    codebook = rng.normal(size=(num_embeddings, d)).astype(np.float32)
    layer = make_layer(cls, codebook)

    np_dist = ref.distances(z, codebook)  # float64
    np_idx = np.argmin(np_dist, axis=-1)

    indices = layer.indices(z)
    assert indices.dtype == tf.int32
    assert tuple(indices.shape) == shape[:-1]
    np.testing.assert_array_equal(indices.numpy(), np_idx)

    dist = layer.distances(z)
    assert dist.dtype == tf.float32
    assert tuple(dist.shape) == shape[:-1] + (num_embeddings,)
    np.testing.assert_allclose(dist.numpy(), np_dist, rtol=1e-5, atol=1e-5)

    out = layer.quantize_with_losses(z)
    assert isinstance(out, QuantizerOutput)
    assert out.indices.dtype == tf.int32
    np.testing.assert_array_equal(out.indices.numpy(), np_idx)


def test_indices_hand_computed():
    # Codes on the axes; each z is obviously closest to one of them.
    codebook = [[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]
    z = np.array([[[3.9, 0.2], [0.1, -0.3]], [[-0.5, 3.0], [2.1, 0.0]]], np.float32)
    layer = make_layer(VectorQuantizer, codebook)
    np.testing.assert_array_equal(layer.indices(z).numpy(), [[1, 0], [2, 1]])
    # ‖(3.9, 0.2) − (4, 0)‖² = 0.01 + 0.04
    np.testing.assert_allclose(layer.distances(z).numpy()[0, 0, 1], 0.05, atol=1e-5)


def test_float16_and_float64_inputs_give_the_same_codes():
    rng = np.random.default_rng(7)
    codebook = rng.normal(size=(16, 4)).astype(np.float32)
    z = rng.normal(size=(30, 4))
    layer = make_layer(VectorQuantizer, codebook)
    np_idx = ref.nearest(z.astype(np.float32), codebook)
    np.testing.assert_array_equal(layer.indices(z.astype(np.float64)).numpy(), np_idx)
    z16 = z.astype(np.float16)
    np.testing.assert_array_equal(
        layer.indices(z16).numpy(), ref.nearest(z16.astype(np.float64), codebook)
    )


# -------------------------------------------------------------- 2. lookup
@pytest.mark.parametrize("cls", BOTH)
def test_lookup_of_indices_returns_codebook_rows(cls):
    rng = np.random.default_rng(3)
    codebook = rng.normal(size=(10, 3)).astype(np.float32)
    z = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    layer = make_layer(cls, codebook)
    np_idx = ref.nearest(z, codebook)
    rows = layer.lookup(layer.indices(z))
    assert tuple(rows.shape) == (2, 4, 4, 3)
    np.testing.assert_array_equal(rows.numpy(), codebook[np_idx])
    # int64 indices (NumPy default) work as well
    np.testing.assert_array_equal(layer.lookup(np_idx).numpy(), codebook[np_idx])


def test_lookup_builds_an_unbuilt_layer():
    layer = VectorQuantizer(5, 2, kmeans_init=False, restart_unused_after=None)
    rows = layer.lookup([[0, 4]])
    assert layer.built
    assert tuple(rows.shape) == (1, 2, 2)
    np.testing.assert_array_equal(rows.numpy()[0], layer.codebook.numpy()[[0, 4]])


@pytest.mark.parametrize(
    "bad, received",
    [([-1], "[-1, -1]"), ([3], "[3, 3]"), ([0, -1, 3, 1], "[-1, 3]"), ([[7]], "[7, 7]")],
)
def test_lookup_out_of_range_raises_value_error_naming_values(bad, received):
    layer = make_layer(VectorQuantizer, np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[0, 3\).*Received: values in " + re.escape(received)):
        layer.lookup(np.array(bad, np.int32))


def test_lookup_out_of_range_in_graph_mode_raises():
    layer = make_layer(VectorQuantizer, np.eye(3, dtype=np.float32))

    @tf.function
    def f(idx):
        return layer.lookup(idx)

    np.testing.assert_array_equal(f(tf.constant([2, 0])).numpy(), np.eye(3)[[2, 0]])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[0, 3\)"):
        f(tf.constant([0, 3]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.bool_])
def test_lookup_non_integer_indices_raise_type_error(dtype):
    layer = make_layer(VectorQuantizer, np.eye(3, dtype=np.float32))
    name = np.dtype(dtype).name if dtype is not np.bool_ else "bool"
    with pytest.raises(TypeError, match=f"dtype={name}"):
        layer.lookup(np.array([0, 1]).astype(dtype))


def test_lookup_int64_index_beyond_int32_is_rejected():
    layer = make_layer(VectorQuantizer, np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="Received: values in"):
        layer.lookup(np.array([2**32 + 1], np.int64))


# ------------------------------------------------------ 3. straight-through
@pytest.mark.parametrize("cls", BOTH)
@pytest.mark.parametrize("training", [False, True])
def test_straight_through_gradient_is_identity(cls, training):
    rng = np.random.default_rng(11)
    codebook = rng.normal(size=(8, 4)).astype(np.float32)
    z = rng.normal(size=(3, 5, 5, 4)).astype(np.float32)
    kwargs = {"decay": 0.5} if cls is VectorQuantizerEMA else {}
    layer = make_layer(cls, codebook, **kwargs)
    expected = codebook[ref.nearest(z, codebook)]  # pre-update codebook rows
    zt = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(zt)
        out = layer(zt, training=training)
        total = tf.reduce_sum(out)
    grad = tape.gradient(total, zt)
    np.testing.assert_array_equal(grad.numpy(), 1.0)
    assert out.dtype == tf.float32
    assert tuple(out.shape) == z.shape
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-6)


# ----------------------------------------------------------- 4. loss terms
def test_losses_hand_computed():
    # Both z go to code 0 = (0, 0): mean((z − e)²) = (1 + 0 + 0 + 4) / 4 = 1.25.
    layer = make_layer(VectorQuantizer, [[0.0, 0.0], [3.0, 3.0]], commitment_cost=0.25)
    out = layer.quantize_with_losses(np.array([[1.0, 0.0], [0.0, 2.0]], np.float32))
    np.testing.assert_array_equal(out.indices.numpy(), [0, 0])
    np.testing.assert_allclose(out.codebook_loss.numpy(), 1.25, rtol=1e-7)
    np.testing.assert_allclose(out.commitment_loss.numpy(), 0.3125, rtol=1e-7)
    np.testing.assert_allclose(out.loss.numpy(), 1.5625, rtol=1e-7)
    np.testing.assert_array_equal(out.counts.numpy(), [2.0, 0.0])


def _loss_case():
    rng = np.random.default_rng(5)
    codebook = rng.normal(size=(5, 3)).astype(np.float32)
    z = rng.normal(size=(2, 3, 4, 3)).astype(np.float32)
    idx = ref.nearest(z, codebook)
    e_k = codebook[idx].astype(np.float64)
    return codebook, z, idx, e_k


def test_codebook_and_commitment_losses_and_gradients_match_numpy():
    beta = 0.4
    codebook, z, idx, e_k = _loss_case()
    numel = z.size
    layer = make_layer(VectorQuantizer, codebook, commitment_cost=beta)

    zt = tf.constant(z)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(zt)
        out = layer.quantize_with_losses(zt)
    mse = np.mean((z.astype(np.float64) - e_k) ** 2)
    assert out.codebook_loss.dtype == tf.float32
    assert out.commitment_loss.dtype == tf.float32
    np.testing.assert_allclose(out.codebook_loss.numpy(), mse, rtol=1e-6)
    np.testing.assert_allclose(out.commitment_loss.numpy(), beta * mse, rtol=1e-6)

    cb_var = layer.codebook.value
    # Codebook term: gradient only to the codebook, 2 (e_k − z) / numel per code.
    assert_no_grad(tape.gradient(out.codebook_loss, zt))
    expected_cb = np.zeros(codebook.shape, np.float64)
    np.add.at(expected_cb, idx.reshape(-1), (2.0 * (e_k - z) / numel).reshape(-1, 3))
    np.testing.assert_allclose(
        dense_grad(tape.gradient(out.codebook_loss, cb_var)), expected_cb, rtol=1e-5, atol=1e-8
    )
    # Commitment term: gradient only to z, 2 β (z − e_k) / numel.
    assert_no_grad(tape.gradient(out.commitment_loss, cb_var))
    np.testing.assert_allclose(
        tape.gradient(out.commitment_loss, zt).numpy(),
        2.0 * beta * (z - e_k) / numel,
        rtol=1e-5,
        atol=1e-9,
    )


@pytest.mark.parametrize(
    "beta, alpha", [(0.25, 1.0), (0.4, 0.3), (0.0, 2.0), (1.5, 0.0)]
)
def test_separate_codebook_and_commitment_costs_match_numpy_reference(beta, alpha):
    codebook, z, idx, _ = _loss_case()
    layer = make_layer(VectorQuantizer, codebook, commitment_cost=beta, codebook_cost=alpha)
    cb_loss, commit_loss, cb_grad, z_grad = ref.vq_losses(z, codebook, beta, alpha)

    zt = tf.constant(z)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(zt)
        out = layer.quantize_with_losses(zt)
        loss = out.loss  # inside the tape: the sum is differentiated too
    np.testing.assert_array_equal(out.indices.numpy(), idx)
    np.testing.assert_allclose(out.codebook_loss.numpy(), cb_loss, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(out.commitment_loss.numpy(), commit_loss, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(loss.numpy(), cb_loss + commit_loss, rtol=1e-6, atol=1e-12)
    cb_var = layer.codebook.value
    # α reaches only the codebook, β only the encoder output.
    np.testing.assert_allclose(
        dense_grad(tape.gradient(loss, cb_var)), cb_grad, rtol=1e-5, atol=1e-9
    )
    np.testing.assert_allclose(tape.gradient(loss, zt).numpy(), z_grad, rtol=1e-5, atol=1e-9)
    assert_no_grad(tape.gradient(out.codebook_loss, zt))
    assert_no_grad(tape.gradient(out.commitment_loss, cb_var))


def test_codebook_cost_hand_computed():
    # As test_losses_hand_computed: mean((z − e)²) = 1.25; α = 0.5, β = 2.
    layer = make_layer(
        VectorQuantizer, [[0.0, 0.0], [3.0, 3.0]], commitment_cost=2.0, codebook_cost=0.5
    )
    out = layer.quantize_with_losses(np.array([[1.0, 0.0], [0.0, 2.0]], np.float32))
    np.testing.assert_allclose(out.codebook_loss.numpy(), 0.625, rtol=1e-7)
    np.testing.assert_allclose(out.commitment_loss.numpy(), 2.5, rtol=1e-7)


def test_codebook_cost_defaults_to_the_papers_weight_of_one():
    assert VectorQuantizer(4, 2, kmeans_init=False, restart_unused_after=None).codebook_cost == 1.0
    assert VectorQuantizer(4, 2, kmeans_init=False, restart_unused_after=None).get_config()["codebook_cost"] == 1.0


@pytest.mark.parametrize("value", [1.0, 0.5, 0.0])
def test_ema_refuses_codebook_cost(value):
    with pytest.raises(
        ValueError,
        match=r"`codebook_cost` does not apply to VectorQuantizerEMA.*"
        + re.escape(f"Received: codebook_cost={value!r}"),
    ):
        VectorQuantizerEMA(4, 2, codebook_cost=value, kmeans_init=False, restart_unused_after=None)
    assert "codebook_cost" not in VectorQuantizerEMA(4, 2, kmeans_init=False, restart_unused_after=None).get_config()


def test_ema_has_no_codebook_loss_and_untrainable_codebook():
    beta = 0.3
    codebook, z, idx, e_k = _loss_case()
    layer = make_layer(VectorQuantizerEMA, codebook, commitment_cost=beta)
    assert not layer.codebook.trainable
    assert layer.trainable_weights == []
    zt = tf.constant(z)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(zt)
        out = layer.quantize_with_losses(zt, training=True)
    assert out.codebook_loss.dtype == tf.float32
    assert float(out.codebook_loss) == 0.0
    mse = np.mean((z.astype(np.float64) - e_k) ** 2)
    np.testing.assert_allclose(out.commitment_loss.numpy(), beta * mse, rtol=1e-6)
    np.testing.assert_allclose(
        tape.gradient(out.commitment_loss, zt).numpy(),
        2.0 * beta * (z - e_k) / z.size,
        rtol=1e-5,
        atol=1e-9,
    )
    assert_no_grad(tape.gradient(out.commitment_loss, layer.codebook.value))


# -------------------------------------------------------------- 5. add_loss
@pytest.mark.parametrize("cls", BOTH)
def test_call_registers_exactly_one_loss(cls):
    beta = 0.25
    codebook, z, idx, e_k = _loss_case()
    layer = make_layer(cls, codebook, commitment_cost=beta)
    layer(z)
    layer(z)  # a second call replaces, not accumulates
    assert len(layer.losses) == 1
    mse = np.mean((z.astype(np.float64) - e_k) ** 2)
    expected = beta * mse + (mse if cls is VectorQuantizer else 0.0)
    np.testing.assert_allclose(float(layer.losses[0]), expected, rtol=1e-6)


@pytest.mark.parametrize("cls", BOTH)
def test_add_losses_false_registers_none(cls):
    codebook, z, _, _ = _loss_case()
    layer = make_layer(cls, codebook, add_losses=False)
    layer(z)
    assert layer.losses == []
    other = make_layer(cls, codebook)
    other.quantize_with_losses(z)  # never calls add_loss
    assert other.losses == []


# ---------------------------------------------------------- 14. perplexity
def test_counts_and_perplexity_match_numpy():
    rng = np.random.default_rng(21)
    codebook = rng.normal(size=(12, 3)).astype(np.float32)
    z = rng.normal(size=(4, 6, 3)).astype(np.float32)
    layer = make_layer(VectorQuantizer, codebook)
    out = layer.quantize_with_losses(z)
    np_counts = np.bincount(ref.nearest(z, codebook).reshape(-1), minlength=12)
    assert (np_counts == 0).any()  # the 0 log 0 = 0 case is exercised
    assert out.counts.dtype == tf.float32
    np.testing.assert_array_equal(out.counts.numpy(), np_counts)
    np.testing.assert_allclose(out.perplexity.numpy(), ref.perplexity(np_counts), rtol=1e-6)


@pytest.mark.parametrize("k", [1, 4, 9])
def test_uniform_usage_gives_perplexity_k(k):
    codebook = 10.0 * np.arange(k * 2, dtype=np.float32).reshape(k, 2)
    z = np.repeat(codebook, 3, axis=0) + 0.1  # three vectors next to every code
    layer = make_layer(VectorQuantizer, codebook)
    out = layer.quantize_with_losses(z)
    np.testing.assert_array_equal(out.counts.numpy(), np.full(k, 3.0))
    np.testing.assert_allclose(out.perplexity.numpy(), float(k), rtol=1e-6)


def test_single_code_used_gives_perplexity_one():
    layer = make_layer(VectorQuantizer, [[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    out = layer.quantize_with_losses(np.zeros((7, 2), np.float32))
    np.testing.assert_array_equal(out.counts.numpy(), [7.0, 0.0, 0.0])
    np.testing.assert_allclose(out.perplexity.numpy(), 1.0, rtol=1e-7)


# ---------------------------------------------------------- 12. bad input
@pytest.mark.parametrize("cls", BOTH)
def test_rank1_input_is_rejected(cls):
    layer = cls(4, 3, kmeans_init=False, restart_unused_after=None)
    z = np.zeros((3,), np.float32)
    with pytest.raises(ValueError, match=r"ndim=1|shape=\(3,\)"):
        layer(z)
    for method in (layer.indices, layer.distances, layer.quantize_with_losses):
        with pytest.raises(ValueError, match=r"rank >= 2.*Received: inputs with shape=\(3,\)"):
            method(z)


@pytest.mark.parametrize("cls", BOTH)
def test_wrong_last_dim_names_embedding_dim_and_shape(cls):
    z = np.zeros((2, 5), np.float32)
    # Unbuilt: build() rejects it.
    with pytest.raises(ValueError, match=r"embedding_dim=4.*Received: input_shape=\(2, 5\)"):
        cls(8, 4)(z)
    # Built: the public methods name both.
    layer = cls(8, 4, kmeans_init=False, restart_unused_after=None)
    layer.build((None, 4))
    for method in (layer.indices, layer.distances, layer.quantize_with_losses):
        match = r"embedding_dim=4.*Received: inputs with shape=\(2, 5\)"
        with pytest.raises(ValueError, match=match):
            method(z)
    # Built, through __call__: Keras' input spec check names the shape.
    with pytest.raises(ValueError, match=r"\(2, 5\)"):
        layer(z)


@pytest.mark.parametrize("cls", BOTH)
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integer_input_raises_type_error_naming_dtype(cls, dtype):
    layer = cls(4, 2, kmeans_init=False, restart_unused_after=None)
    z = np.zeros((3, 2), dtype)
    name = np.dtype(dtype).name
    with pytest.raises(TypeError, match=f"floating-point.*dtype={name}"):
        layer(z)
    for method in (layer.indices, layer.distances, layer.quantize_with_losses):
        with pytest.raises(TypeError, match=f"dtype={name}"):
            method(z)


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (VectorQuantizer, {"num_embeddings": 0}, "num_embeddings=0"),
        (VectorQuantizer, {"num_embeddings": 2.0}, r"num_embeddings=2\.0"),
        (VectorQuantizer, {"num_embeddings": True}, "num_embeddings=True"),
        (VectorQuantizer, {"embedding_dim": -1}, "embedding_dim=-1"),
        (VectorQuantizer, {"commitment_cost": -1}, "commitment_cost=-1"),
        (VectorQuantizer, {"commitment_cost": float("nan")}, "commitment_cost=nan"),
        (VectorQuantizer, {"restart_unused_after": 0}, "restart_unused_after=0"),
        (VectorQuantizer, {"kmeans_iterations": 0}, "kmeans_iterations=0"),
        (VectorQuantizer, {"seed": 1.5}, r"seed=1\.5"),
        (VectorQuantizerEMA, {"num_embeddings": 0}, "num_embeddings=0"),
        (VectorQuantizerEMA, {"decay": 1.0}, r"decay=1\.0"),
        (VectorQuantizerEMA, {"decay": 0.0}, r"decay=0\.0"),
        (VectorQuantizerEMA, {"decay": -0.5}, r"decay=-0\.5"),
        (VectorQuantizerEMA, {"epsilon": 0}, "epsilon=0"),
        (VectorQuantizerEMA, {"epsilon": -1e-5}, "epsilon=-1e-05"),
        (VectorQuantizerEMA, {"commitment_cost": -1}, "commitment_cost=-1"),
        (VectorQuantizerEMA, {"restart_unused_after": 0}, "restart_unused_after=0"),
    ],
)
def test_invalid_constructor_arguments_name_the_value(cls, kwargs, match):
    args = {"num_embeddings": 4, "embedding_dim": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        cls(**args)


def test_public_exports():
    assert tfvqvae.VectorQuantizer is VectorQuantizer
    assert issubclass(VectorQuantizerEMA, VectorQuantizer)
    assert QuantizerOutput._fields == (
        "quantized",
        "indices",
        "codebook_loss",
        "commitment_loss",
        "counts",
        "perplexity",
    )
