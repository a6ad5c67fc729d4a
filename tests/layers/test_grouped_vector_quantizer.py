"""GroupedVectorQuantizer: H heads, each quantising D / H channels, its heads'
training state, the shared codebook, and the Keras/distribution contracts
(harness, .keras round trip, mixed precision, MirroredStrategy).

Expected values come from the NumPy reference below (the channels split in
H groups, each coded by its float64 nearest code), from ``numpy_reference``
(the EMA step, perplexity), from a plain `VectorQuantizerEMA` run (H = 1),
or are properties.
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvqvae import GroupedVectorQuantizer
from tfvqvae import VectorQuantizer
from tfvqvae import VectorQuantizerEMA
from tfvqvae.layers import QuantizerOutput
from tests.layers import numpy_reference as ref

pytestmark = [
    pytest.mark.filterwarnings("ignore:`shuffle=True` was passed:UserWarning"),
    pytest.mark.filterwarnings("ignore:The model does not have any trainable weights:UserWarning"),
]

H, K, D = 3, 5, 6
G = D // H
DECAY, EPS = 0.8, 1e-3


# ---------------------------------------------------------- NumPy reference
def grouped_reference(z, codebooks):
    """Codes (N, H) and decoded vectors (N, D): head h codes channels [h G, (h + 1) G)."""
    flat = np.asarray(z, np.float32).reshape(-1, D)
    codes = np.stack([ref.nearest(flat[:, h * G:(h + 1) * G], e)
                      for h, e in enumerate(codebooks)], axis=1)
    decoded = np.concatenate([np.asarray(e, np.float64)[codes[:, h]]
                              for h, e in enumerate(codebooks)], axis=1)
    return codes, decoded


def random_codebooks(seed, heads=H, k=K):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(k, G)).astype(np.float32) for _ in range(heads)]


def make(codebooks=None, heads=H, **kwargs):
    """A built layer with ``codebooks`` (and, with EMA, N = 1, m = e) set."""
    kwargs.setdefault("kmeans_init", False)
    kwargs.setdefault("restart_unused_after", None)
    if kwargs.get("ema", True):
        kwargs.setdefault("decay", DECAY)
        kwargs.setdefault("epsilon", EPS)
    layer = GroupedVectorQuantizer(heads, K, G * heads, **kwargs)
    layer.build((None, G * heads))
    if codebooks is not None:
        for head, e in zip(layer.quantizer_layers, codebooks):
            head.codebook.assign(e)
            if layer.ema:
                head.ema_embedding_sum.assign(e)
    return layer


def snapshot(layer):
    return {w.path: np.array(w.numpy()) for w in layer.weights}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ------------------------------------------------------------ the formula
@pytest.mark.parametrize("ema", [True, False])
@pytest.mark.parametrize("shape", [(40, D), (2, 5, 4, D)], ids=["rank2", "rank4"])
def test_heads_match_numpy(ema, shape):
    codebooks = random_codebooks(0)
    beta, alpha = 0.7, 0.4
    extra = {} if ema else {"codebook_cost": alpha}
    layer = make(codebooks, ema=ema, commitment_cost=beta, **extra)
    z = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    codes, decoded = grouped_reference(z, codebooks)

    out = layer.quantize_with_losses(z)
    assert isinstance(out, QuantizerOutput)
    assert out.indices.shape == shape[:-1] + (H,) and out.indices.dtype == tf.int32
    np.testing.assert_array_equal(out.indices.numpy().reshape(-1, H), codes)
    np.testing.assert_array_equal(layer.indices(z).numpy().reshape(-1, H), codes)
    np.testing.assert_allclose(out.quantized.numpy().reshape(-1, D), decoded, atol=1e-6)
    np.testing.assert_array_equal(layer.lookup(out.indices).numpy().reshape(-1, D),
                                  decoded.astype(np.float32))
    # Losses: the mean over the heads = the mean over every element of the whole vector.
    mse = np.mean((z.reshape(-1, D).astype(np.float64) - decoded) ** 2)
    np.testing.assert_allclose(out.commitment_loss.numpy(), beta * mse, rtol=1e-5)
    np.testing.assert_allclose(out.codebook_loss.numpy(), 0.0 if ema else alpha * mse, rtol=1e-5)
    counts = np.stack([np.bincount(codes[:, h], minlength=K) for h in range(H)])
    np.testing.assert_array_equal(out.counts.numpy(), counts)
    np.testing.assert_allclose(out.perplexity.numpy(),
                               np.mean([ref.perplexity(c) for c in counts]), rtol=1e-5)


def test_hand_computed_two_heads():
    # D = 2, H = 2: each head is a scalar quantiser with codes {0, 1} and {-1, 2}.
    layer = GroupedVectorQuantizer(2, 2, 2, kmeans_init=False, restart_unused_after=None)
    layer.build((None, 2))
    layer.quantizer_layers[0].codebook.assign([[0.0], [1.0]])
    layer.quantizer_layers[1].codebook.assign([[-1.0], [2.0]])
    z = np.array([[0.2, 0.9], [0.8, -3.0]], np.float32)
    out = layer.quantize_with_losses(z)
    np.testing.assert_array_equal(out.indices.numpy(), [[0, 1], [1, 0]])
    np.testing.assert_allclose(out.quantized.numpy(), [[0.0, 2.0], [1.0, -1.0]], atol=1e-7)
    # β = 1: mean of (0.2², 1.1², 0.2², 2²) = 5.29 / 4.
    np.testing.assert_allclose(out.commitment_loss.numpy(), 5.29 / 4, rtol=1e-6)
    np.testing.assert_array_equal(out.counts.numpy(), [[1, 1], [1, 1]])
    np.testing.assert_allclose(out.perplexity.numpy(), 2.0, rtol=1e-6)


def test_one_group_equals_vector_quantizer_ema():
    rng = np.random.default_rng(2)
    batches = [rng.normal(size=(6, 3, D)).astype(np.float32) for _ in range(3)]
    kwargs = dict(kmeans_init=True, kmeans_iterations=2, restart_unused_after=1, seed=7)
    grouped = GroupedVectorQuantizer(1, K, D, **kwargs)
    plain = VectorQuantizerEMA(K, D, **kwargs)
    for z in batches:
        a = grouped.quantize_with_losses(z, training=True)
        b = plain.quantize_with_losses(z, training=True)
        np.testing.assert_array_equal(a.indices.numpy()[..., 0], b.indices.numpy())
        for name in ("quantized", "commitment_loss", "perplexity"):
            np.testing.assert_array_equal(getattr(a, name).numpy(), getattr(b, name).numpy())
        np.testing.assert_array_equal(a.counts.numpy(), b.counts.numpy()[None])
    for w, v in zip(grouped.quantizer_layers[0].weights, plain.weights):
        np.testing.assert_array_equal(w.numpy(), v.numpy(), err_msg=v.path)


def test_ema_heads_follow_numpy_on_their_channels():
    codebooks = random_codebooks(3)
    layer = make(codebooks)
    z = np.random.default_rng(4).normal(size=(4, 5, D)).astype(np.float32)
    out = layer.quantize_with_losses(z, training=True)
    flat = z.reshape(-1, D)
    for h, head in enumerate(layer.quantizers):
        n, m, e, idx, _ = ref.ema_step(np.ones(K), codebooks[h], codebooks[h],
                                       flat[:, h * G:(h + 1) * G], DECAY, EPS)
        np.testing.assert_array_equal(out.indices.numpy().reshape(-1, H)[:, h], idx)
        np.testing.assert_allclose(head.ema_cluster_size.numpy(), n, rtol=1e-6)
        np.testing.assert_allclose(head.ema_embedding_sum.numpy(), m, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(head.codebook.numpy(), e, rtol=1e-5, atol=1e-6)
        assert float(head.training_steps.numpy()) == 1.0


def test_straight_through_gradient_is_identity():
    layer = make(random_codebooks(5), ema=False)
    rng = np.random.default_rng(6)
    z = tf.constant(rng.normal(size=(7, D)).astype(np.float32))
    g = rng.normal(size=(7, D)).astype(np.float32)
    with tf.GradientTape() as tape:
        tape.watch(z)
        objective = tf.reduce_sum(layer.quantize_with_losses(z).quantized * g)
    np.testing.assert_array_equal(tape.gradient(objective, z).numpy(), g)


def test_head_options_apply_per_head():
    # Cosine search per head: head h's code is the argmax of ẑ^{(h)} · ê^{(h)}.
    codebooks = [e * np.random.default_rng(8).uniform(0.1, 4, (K, 1)).astype(np.float32)
                 for e in random_codebooks(7)]
    layer = make(codebooks, use_cosine_similarity=True, gradient="rotation")
    z = np.random.default_rng(9).normal(size=(30, D)).astype(np.float32)

    def unit(v):
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    codes = np.stack([np.argmax(unit(z[:, h * G:(h + 1) * G]) @ unit(e).T, axis=1)
                      for h, e in enumerate(codebooks)], axis=1)
    out = layer.quantize_with_losses(z)
    np.testing.assert_array_equal(out.indices.numpy(), codes)
    decoded = np.concatenate([unit(e)[codes[:, h]] for h, e in enumerate(codebooks)], axis=1)
    np.testing.assert_allclose(out.quantized.numpy(), decoded, atol=1e-6)
    np.testing.assert_allclose(layer.lookup(out.indices).numpy(), decoded, atol=1e-6)


def test_codebook_dim_applies_per_head_and_lookup_returns_d():
    layer = GroupedVectorQuantizer(H, K, D, codebook_dim=1, kmeans_init=False,
                                   restart_unused_after=None)
    layer.build((None, D))
    for head in layer.quantizers:
        assert tuple(head.codebook.shape) == (K, 1)
        assert tuple(head.project_in.kernel.shape) == (G, 1)
    z = np.random.default_rng(10).normal(size=(2, 3, D)).astype(np.float32)
    out = layer(z)
    assert out.shape == z.shape
    codes = layer.indices(z)
    assert codes.shape == (2, 3, H)
    decoded = []
    for h, head in enumerate(layer.quantizers):
        w_out = head.project_out.kernel.numpy().astype(np.float64)
        b_out = head.project_out.bias.numpy().astype(np.float64)
        e = head.codebook.numpy().astype(np.float64)
        decoded.append(e[codes.numpy()[..., h]] @ w_out + b_out)
    np.testing.assert_allclose(layer.lookup(codes).numpy(), np.concatenate(decoded, axis=-1),
                               atol=1e-6)


# ------------------------------------------------------------- state
def test_no_state_changes_outside_training():
    layer = make(random_codebooks(11), restart_unused_after=1, kmeans_init=True)
    before = snapshot(layer)
    z = np.random.default_rng(12).normal(size=(4, 3, D)).astype(np.float32)
    layer(z)
    layer(z, training=False)
    layer.quantize_with_losses(z)
    layer.indices(z)
    layer.lookup(np.zeros((2, H), np.int32))
    assert_same_weights(snapshot(layer), before)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("how", ["nan", "inf", "batch_finite"])
def test_non_finite_batch_changes_no_state(shared, how):
    layer = make(random_codebooks(13), shared_codebook=shared, kmeans_init=True,
                 restart_unused_after=1)
    z = np.random.default_rng(14).normal(size=(8, 2, D)).astype(np.float32)
    before = snapshot(layer)
    if how == "batch_finite":
        layer.quantize_with_losses(z, training=True, batch_finite=tf.constant(False))
    else:
        bad = z.copy()
        bad[5, 1, D - 1] = np.nan if how == "nan" else np.inf  # only the last head's channels
        layer.quantize_with_losses(bad, training=True)
    assert_same_weights(snapshot(layer), before)
    layer.quantize_with_losses(z, training=True)  # the next finite batch trains
    assert all(float(s.training_steps.numpy()) == 1.0 for s in layer.quantizer_layers)


def test_shared_codebook_is_one_variable_and_one_pooled_ema_update():
    e0 = random_codebooks(15, heads=1)[0]
    layer = make([e0], shared_codebook=True)
    assert len(layer.quantizer_layers) == 1
    assert all(s is layer.quantizer_layers[0] for s in layer.quantizers)
    assert len([w for w in layer.weights if w.name == "codebook"]) == 1
    z = np.random.default_rng(16).normal(size=(3, 4, D)).astype(np.float32)
    out = layer.quantize_with_losses(z, training=True)
    codes, _ = grouped_reference(z, [e0] * H)
    np.testing.assert_array_equal(out.indices.numpy().reshape(-1, H), codes)
    # Per-head counts reported apart ...
    np.testing.assert_array_equal(out.counts.numpy(),
                                  np.stack([np.bincount(codes[:, h], minlength=K)
                                            for h in range(H)]))
    # ... one EMA step on the pooled (row, head) sub-vectors.
    n, m, e, _, _ = ref.ema_step(np.ones(K), e0, e0, z.reshape(-1, G), DECAY, EPS)
    shared = layer.quantizer_layers[0]
    np.testing.assert_allclose(shared.ema_cluster_size.numpy(), n, rtol=1e-6)
    np.testing.assert_allclose(shared.ema_embedding_sum.numpy(), m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(shared.codebook.numpy(), e, rtol=1e-5, atol=1e-6)
    assert float(shared.training_steps.numpy()) == 1.0
    np.testing.assert_allclose(out.commitment_loss.numpy(),
                               np.mean((z.reshape(-1, G) - e0[codes.reshape(-1)]) ** 2),
                               rtol=1e-5)


def test_unshared_heads_have_their_own_codebooks():
    layer = GroupedVectorQuantizer(H, K, D)
    layer.build((None, D))
    books = [s.codebook.numpy() for s in layer.quantizers]
    assert len({id(s.codebook) for s in layer.quantizers}) == H
    assert not np.array_equal(books[0], books[1])  # seeds seed + 8 h
    assert [s.seed for s in layer.quantizers] == [0, 8, 16]


# ------------------------------------------------------ Keras contracts
@pytest.mark.parametrize(
    "kwargs, trainable, non_trainable",
    [
        # per head: e, N, m, steps
        (dict(restart_unused_after=None, kmeans_init=False), 0, 3 * 4),
        (dict(shared_codebook=True, restart_unused_after=2, kmeans_init=True), 0, 5),
        # per head: e | steps (+ steps_unused)
        (dict(ema=False, restart_unused_after=2, kmeans_init=False), 3, 3 * 2),
        # per head: e + 2 kernels + 2 biases | steps
        (dict(ema=False, shared_codebook=True, restart_unused_after=None, codebook_dim=1,
              use_cosine_similarity=True, gradient="rotation"), 5, 1),
    ],
    ids=["ema", "ema-shared", "gradient", "gradient-shared-options"],
)
def test_keras_run_layer_test(harness, kwargs, trainable, non_trainable):
    harness.run_quantizer_test(
        GroupedVectorQuantizer,
        {"num_groups": 3, "num_embeddings": 8, "embedding_dim": D, **kwargs},
        D, trainable, non_trainable)


def test_attributes():
    layer = GroupedVectorQuantizer(4, 16, 8)
    assert (layer.num_groups, layer.code_depth, layer.group_dim) == (4, 4, 2)
    assert (layer.num_embeddings, layer.embedding_dim) == (16, 8)
    assert len(layer.quantizers) == 4
    assert all(type(s) is VectorQuantizerEMA and s.embedding_dim == 2 for s in layer.quantizers)
    assert all(type(s) is VectorQuantizer
               for s in GroupedVectorQuantizer(2, 4, 2, ema=False).quantizers)


CONFIGS = [
    dict(num_groups=2, num_embeddings=7, embedding_dim=6, shared_codebook=False, ema=True,
         commitment_cost=0.5, decay=0.6, epsilon=1e-3, embeddings_initializer="he_normal",
         kmeans_init=False, kmeans_iterations=3, restart_unused_after=4,
         use_cosine_similarity=True, codebook_dim=2, gradient="rotation", add_losses=False,
         seed=9, name="my_gvq"),
    dict(num_groups=3, num_embeddings=5, embedding_dim=3, shared_codebook=True, ema=False,
         commitment_cost=0.1, codebook_cost=0.75, kmeans_init=True, restart_unused_after=None,
         seed=3),
]


@pytest.mark.parametrize("kwargs", CONFIGS, ids=["ema-options", "gradient-shared"])
def test_config_round_trip(kwargs):
    layer = GroupedVectorQuantizer(**kwargs)
    config = layer.get_config()
    for key, value in kwargs.items():
        if key != "embeddings_initializer":
            assert config[key] == value, key
    assert ("decay" in config) == kwargs["ema"] and ("codebook_cost" in config) != kwargs["ema"]
    assert GroupedVectorQuantizer.from_config(config).get_config() == config
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is GroupedVectorQuantizer
    assert restored.get_config() == config


def test_config_defaults():
    config = GroupedVectorQuantizer(2, 4, 2).get_config()
    assert config["ema"] is True and config["shared_codebook"] is False
    assert config["commitment_cost"] == 1.0
    ema = VectorQuantizerEMA(4, 2)
    assert (config["decay"], config["epsilon"]) == (ema.decay, ema.epsilon)
    assert config["kmeans_init"] is True and config["restart_unused_after"] == 20
    assert (config["use_cosine_similarity"], config["codebook_dim"], config["gradient"]) == (
        False, None, "straight_through")
    assert GroupedVectorQuantizer(2, 4, 2, ema=False).get_config()["codebook_cost"] == 1.0


@pytest.mark.parametrize("shared", [False, True])
def test_keras_save_load_round_trip(tmp_path, shared):
    rng = np.random.default_rng(17)
    x = rng.normal(size=(8, 4, 4, D)).astype(np.float32)
    y = rng.normal(size=(8, 4, 4, 1)).astype(np.float32)
    inputs = keras.Input((4, 4, D))
    h = keras.layers.Dense(D, name="encoder")(inputs)
    q = GroupedVectorQuantizer(H, 6, D, shared_codebook=shared, decay=0.7, kmeans_iterations=2,
                               restart_unused_after=2, seed=4, name="gvq")(h)
    model = keras.Model(inputs, keras.layers.Dense(1, name="decoder")(q))
    model.compile(optimizer="adam", loss="mse", jit_compile=False)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # two steps: k-means, EMA, restarts
    gvq = model.get_layer("gvq")
    assert float(gvq.quantizer_layers[0].training_steps.numpy()) == 2.0

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    lgvq = loaded.get_layer("gvq")
    assert type(lgvq) is GroupedVectorQuantizer
    assert lgvq.get_config() == gvq.get_config()
    saved = snapshot(gvq)
    assert len(saved) == (5 if shared else 15)
    assert_same_weights(snapshot(lgvq), saved)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    np.testing.assert_array_equal(lgvq.indices(x).numpy(), gvq.indices(x).numpy())
    model(x[:4], training=True)
    loaded(x[:4], training=True)
    assert_same_weights(snapshot(lgvq), snapshot(gvq))


@pytest.mark.parametrize("ema", [True, False])
def test_mixed_precision(ema):
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    codebooks = random_codebooks(18)
    layer = make(codebooks, ema=ema)
    assert layer.compute_dtype == "float16"
    z = np.random.default_rng(19).normal(size=(2, 3, 3, D)).astype(np.float32)
    result = layer.quantize_with_losses(tf.cast(z, tf.float16), training=True)
    assert result.quantized.dtype == tf.float16 and result.indices.dtype == tf.int32
    for name in ("codebook_loss", "commitment_loss", "counts", "perplexity"):
        assert getattr(result, name).dtype == tf.float32, name
    for w in layer.weights:
        assert w.dtype == "float32", w.path
    out = layer(z, training=True)
    assert out.dtype == tf.float16
    assert len(layer.losses) == 1 and layer.losses[0].dtype == tf.float32
    current = [s.codebook.numpy() for s in layer.quantizers]
    z16 = tf.cast(z, tf.float16).numpy().astype(np.float32)
    codes, decoded = grouped_reference(z16, current)
    np.testing.assert_array_equal(layer.indices(z).numpy().reshape(-1, H), codes)
    np.testing.assert_allclose(layer(z).numpy().astype(np.float32).reshape(-1, D), decoded,
                               rtol=2e-3, atol=2e-3)


# ------------------------------------------------------- MirroredStrategy
GLOBAL_BATCH = 16


def run_steps(strategy, batches, **kwargs):
    """One ``strategy.run`` per global batch; returns the layer and the counts per step."""
    with strategy.scope():
        layer = GroupedVectorQuantizer(H, K, D, decay=DECAY, epsilon=EPS, add_losses=False,
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
    [pytest.param(dict(), marks=pytest.mark.slow), dict(shared_codebook=True),
     # The heads' options under the strategy (a third graph of ~8 s: slow).
     pytest.param(dict(use_cosine_similarity=True, codebook_dim=1, gradient="rotation"),
                  marks=pytest.mark.slow)],
    ids=["per-head", "shared", "per-head-options"],
)
def test_mirrored_matches_single_device(mirrored_strategy, kwargs):
    # k-means on the first step, restarts and EMA all on.
    rng = np.random.default_rng(20)
    batches = [rng.normal(size=(GLOBAL_BATCH, 2, 2, D)).astype(np.float32) for _ in range(3)]
    # One Lloyd iteration keeps the graph small (k-means itself is checked
    # across replicas in test_vector_quantizer_ema.py).
    kwargs = dict(kmeans_init=True, kmeans_iterations=1, restart_unused_after=1, **kwargs)
    mirrored, mirrored_counts = run_steps(mirrored_strategy, batches, **kwargs)
    single, single_counts = run_steps(tf.distribute.get_strategy(), batches, **kwargs)
    for step, (per_replica, one) in enumerate(zip(mirrored_counts, single_counts)):
        assert one[0].shape == (H, K) and one[0].sum() == GLOBAL_BATCH * 4 * H
        for c in per_replica:  # global counts on every replica, equal to one device's
            np.testing.assert_array_equal(c, one[0], err_msg=f"step {step}")
    assert len(mirrored.weights) == len(single.weights)
    for w, v in zip(mirrored.weights, single.weights):
        copies = [c.numpy() for c in w.value.values]
        assert len(copies) == 2
        np.testing.assert_array_equal(copies[0], copies[1], err_msg=w.path)
        np.testing.assert_allclose(w.numpy(), v.numpy(), rtol=1e-6, atol=1e-6, err_msg=w.path)
    assert all(float(s.training_steps.numpy()) == 3.0 for s in mirrored.quantizer_layers)


# ------------------------------------------------------- bad arguments
def _received(name, value):
    return re.escape(f"Received: {name}={value!r}")


@pytest.mark.parametrize(
    "name, value, what",
    [
        ("num_groups", 0, "a positive integer"),
        ("num_groups", 2.0, "a positive integer"),
        ("num_groups", True, "a positive integer"),
        ("num_embeddings", 0, "a positive integer"),
        ("embedding_dim", -1, "a positive integer"),
        ("embedding_dim", 5, "divisible by num_groups=2"),
        ("ema", "yes", "True or False"),
        ("shared_codebook", 1, "True or False"),
        ("commitment_cost", -1.0, "a finite number >= 0"),
        ("decay", 1.0, "a finite number in (0, 1)"),
        ("seed", 1.5, "an integer"),
        ("use_cosine_similarity", "no", "True or False"),
        ("codebook_dim", 0, "a positive integer"),
        ("gradient", "ste", "one of ('straight_through', 'rotation')"),
    ],
)
def test_bad_arguments_name_the_value(name, value, what):
    args = {"num_groups": 2, "num_embeddings": 4, "embedding_dim": 4, name: value}
    with pytest.raises(ValueError, match=re.escape(f"`{name}` must be {what}. ")
                       + _received(name, value)):
        GroupedVectorQuantizer(**args)


@pytest.mark.parametrize(
    "kwargs, name",
    [(dict(codebook_cost=0.5), "codebook_cost"), (dict(ema=False, decay=0.9), "decay"),
     (dict(ema=False, epsilon=1e-5), "epsilon")],
)
def test_arguments_of_the_other_head_kind_are_refused(kwargs, name):
    with pytest.raises(ValueError, match=re.escape(f"`{name}` applies only with ema=")
                       + ".*" + _received(name, kwargs[name])):
        GroupedVectorQuantizer(2, 4, 2, **kwargs)


def test_bad_indices_and_inputs():
    layer = make(random_codebooks(21))
    with pytest.raises(ValueError, match=re.escape(
            "last axis is num_groups=3. Received: indices with shape=(4, 2)")):
        layer.lookup(np.zeros((4, 2), np.int32))
    with pytest.raises(ValueError, match=re.escape("Received: indices with shape=()")):
        layer.lookup(np.int32(0))
    with pytest.raises(ValueError, match=re.escape(f"Code indices must lie in [0, {K})")):
        layer.lookup(np.array([[0, K, 1]], np.int32))
    with pytest.raises(TypeError, match="must be integers"):
        layer.lookup(np.zeros((1, H), np.float32))
    with pytest.raises(ValueError, match=re.escape(
            f"embedding_dim={D}. Received: inputs with shape=(2, 5)")):
        layer.quantize_with_losses(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="rank >= 2"):
        layer.indices(np.zeros((D,), np.float32))
    with pytest.raises(TypeError, match="floating-point inputs"):
        layer.indices(np.zeros((2, D), np.int32))
