"""PixelCNNPrior: causality of the whole prior, conditioning, NLL metrics, training,
bad input, save/load and MirroredStrategy.

Causality is checked without gradients: inputs are perturbed and logits are
compared bit for bit (CPU float32 is deterministic, so logits whose inputs did
not change are identical). The expected receptive field comes from a boolean
NumPy propagation through the architecture of the module docstrings
(hand-written masks, shift down, residuals), and is pinned by hand for one block.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.models.prior_helpers import conditioning_inputs
from tests.models.prior_helpers import randomise
from tfvqvae import PixelCNNPrior

K = 7


# ----------------------------------------------------------------- helpers
def make_prior(cond=None, k=3, blocks=3, shape=(5, 6), num_embeddings=K, hidden=8, **kwargs):
    """cond: None, "class" (3 classes), "spatial" (condition map (H, W/2), 5 codes) or "both"."""
    options = dict(hidden_channels=hidden, num_blocks=blocks, kernel_size=k)
    if cond in ("class", "both"):
        options["num_classes"] = 3
    if cond in ("spatial", "both"):
        options.update(
            condition_num_embeddings=5, condition_shape=(shape[0], shape[1] // 2),
            condition_channels=4,
        )
    options.update(kwargs)
    return PixelCNNPrior(num_embeddings, shape, **options)


def logits(model, codes, extra):
    return model({"codes": np.asarray(codes, np.int32), **extra}).numpy()


def np_log_softmax(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def hand_mask(k, kind):
    c = k // 2
    m = np.zeros((k, k), bool)
    if kind == "vertical":
        m[: c + 1] = True
    else:
        m[c, : c + (kind == "horizontal_B")] = True
    return m


def receptive_field(height, width, k, num_blocks, attention_after=()):
    """rf[i, j, n]: the logits at (i, j) depend on the code at raster position n.

    Boolean propagation of dependency sets through the architecture:
    v = VConv(v_in), h = HConv(h_in) | shift_down(v), skip |= h,
    h_out = h (| h_in after the first block); the head is pointwise. After
    the blocks in ``attention_after``, causal attention: h_out at raster t
    depends on the union of h_out at every s <= t.
    """
    n = height * width

    def conv(dep, mask):
        c = k // 2
        out = np.zeros_like(dep)
        for u in range(k):
            for v in range(k):
                if not mask[u, v]:
                    continue
                du, dv = u - c, v - c
                for i in range(height):
                    for j in range(width):
                        ii, jj = i + du, j + dv
                        if 0 <= ii < height and 0 <= jj < width:
                            out[i, j] |= dep[ii, jj]
        return out

    def shift_down(dep):
        out = np.zeros_like(dep)
        out[1:] = dep[:-1]
        return out

    x = np.eye(n, dtype=bool).reshape(height, width, n)
    v, h, skip = x, x, np.zeros_like(x)
    for block in range(num_blocks):
        v = conv(v, hand_mask(k, "vertical"))
        g = conv(h, hand_mask(k, "horizontal_A" if block == 0 else "horizontal_B")) | shift_down(v)
        skip = skip | g
        h = g if block == 0 else g | h
        if block in attention_after:
            h = np.logical_or.accumulate(h.reshape(n, n), axis=0).reshape(h.shape)
    return skip


def test_receptive_field_reference_hand_written():
    # One block, kernel 3, at (3, 3): the previous column of the row (mask A)
    # and, through the shifted vertical stack, rows 1-2 at columns 2-4.
    rf = receptive_field(6, 6, 3, 1)[3, 3].reshape(6, 6)
    expected = np.zeros((6, 6), bool)
    expected[3, 2] = True
    expected[1:3, 2:5] = True
    np.testing.assert_array_equal(rf, expected)
    # Kernel 5, one block, at (2, 2): row 2 columns 0-1, rows 0-1 columns 0-4.
    rf = receptive_field(5, 6, 5, 1)[2, 2].reshape(5, 6)
    expected = np.zeros((5, 6), bool)
    expected[2, 0:2] = True
    expected[0:2, 0:5] = True
    np.testing.assert_array_equal(rf, expected)
    # Nothing before (0, 0).
    assert not receptive_field(5, 6, 3, 3)[0, 0].any()


# -------------------------------------------------------------- causality
CAUSAL_CASES = [(cond, k, None) for cond in (None, "class", "spatial") for k in (3, 5)]
# With causal self-attention after every gated block but the last (1), or after the second (2).
CAUSAL_CASES += [(None, 3, 1), ("class", 3, 2), ("spatial", 5, 1)]


@pytest.mark.parametrize("cond,k,every", CAUSAL_CASES)
def test_prior_is_causal_with_the_expected_receptive_field(cond, k, every):
    """Changing codes changes exactly the logits whose receptive field holds them.

    1. One code at a time (3 random code maps per position): the logits at
       (i, j) never move with a code at (i', j') ≥ (i, j) (causality), and do
       move with every code of the reference receptive field in at least one
       of the 3 trials; that field holds (i, j−1), (i−1, j) and, for (3, 3),
       the up-right (2, 5) (no blind spot). 3 blocks: mask B layers included.
    2. All later codes at once: for each (i, j), 3 random refillings of every
       position ≥ (i, j) leave the logits at every position ≤ (i, j) bit-identical.
    Labels / condition are random but fixed. With ``every``, attention blocks
    (all weights random, so they are open) widen the field: `receptive_field`.
    """
    height, width, blocks, trials = 5, 6, 3, 3
    model = randomise(make_prior(cond, k, blocks, (height, width), attention_every=every),
                      seed=k)
    n = height * width
    rng = np.random.default_rng(1)
    rf = receptive_field(height, width, k, blocks, model.attention_positions())
    # The reference itself: strictly earlier positions only, and the neighbours.
    for i in range(height):
        for j in range(width):
            assert not rf[i, j, i * width + j:].any()
            if j > 0:
                assert rf[i, j, i * width + j - 1]
            if i > 0:
                assert rf[i, j, (i - 1) * width + j]
    assert rf[3, 3, 2 * width + 5]

    # 1. One position at a time; row r of the batch perturbs position r % n.
    base = rng.integers(0, K, (trials * n, n))
    position = np.tile(np.arange(n), trials)
    rows = np.arange(trials * n)
    perturbed = base.copy()
    perturbed[rows, position] = (base[rows, position] + rng.integers(1, K, trials * n)) % K
    extra = conditioning_inputs(model, trials * n)
    a = logits(model, base.reshape(-1, height, width), extra)
    b = logits(model, perturbed.reshape(-1, height, width), extra)
    changed = np.any(a != b, axis=-1).reshape(trials, n, height, width)
    expected = np.moveaxis(rf, -1, 0)  # expected[m, i, j] = rf[i, j, m]
    violations = sorted({
        (divmod(m, width), (i, j))
        for _, m, i, j in zip(*np.nonzero(changed & ~expected[None]))
    })
    assert not violations, f"logits moved with a later code (position -> logits): {violations}"
    missing = [
        (divmod(m, width), (i, j)) for m, i, j in zip(*np.nonzero(expected & ~changed.any(0)))
    ]
    assert not missing, f"logits did not depend on codes in their receptive field: {missing}"

    # 2. Refill every position from m on (m itself surely changes).
    refilled = base.copy()
    for row, m in enumerate(position):
        refilled[row, m + 1:] = rng.integers(0, K, n - m - 1)
    refilled[rows, position] = perturbed[rows, position]
    c = logits(model, refilled.reshape(-1, height, width), extra)
    a, c = a.reshape(-1, n, K), c.reshape(-1, n, K)
    for row, m in enumerate(position):
        np.testing.assert_array_equal(a[row, : m + 1], c[row, : m + 1],
                                      err_msg=f"refilled from raster position {m}")
    assert not np.array_equal(a, c)


def test_no_blind_spot_up_right():
    """Kernel 3, 3 blocks, 6x6: the logits at (3, 3) depend on (2, 5) (up-right),
    which the blind spot of the original PixelCNN misses; with one block the
    receptive field is the hand-written one, without (2, 5)."""
    rng = np.random.default_rng(0)
    for blocks, depends in [(3, True), (1, False)]:
        model = randomise(make_prior(None, 3, blocks, (6, 6)), seed=blocks)
        codes = rng.integers(0, K, (4, 6, 6))
        moved = codes.copy()
        moved[:, 2, 5] = (moved[:, 2, 5] + rng.integers(1, K, 4)) % K
        a, b = logits(model, codes, {}), logits(model, moved, {})
        assert (not np.array_equal(a[:, 3, 3], b[:, 3, 3])) == depends, blocks
        if depends:
            assert np.all(np.any(a[:, 3, 3] != b[:, 3, 3], axis=-1))
    # One block, every single position: exactly the hand-written receptive field.
    expected = np.zeros((6, 6), bool)
    expected[3, 2] = True
    expected[1:3, 2:5] = True
    base = rng.integers(0, K, (36, 6, 6))
    perturbed = base.copy().reshape(36, 36)
    perturbed[np.arange(36), np.arange(36)] = (perturbed[np.arange(36), np.arange(36)] + 1) % K
    changed = np.any(logits(model, base, {})[:, 3, 3]
                     != logits(model, perturbed.reshape(36, 6, 6), {})[:, 3, 3], axis=-1)
    np.testing.assert_array_equal(changed.reshape(6, 6), expected)


def test_conditioning_matters():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, K, (4, 5, 6))
    # Class conditioning: another label moves the logits at (0, 0) of every example.
    model = randomise(make_prior("class"), seed=1)
    labels = np.array([0, 1, 2, 0])
    a = logits(model, codes, {"labels": labels})
    b = logits(model, codes, {"labels": (labels + 1) % 3})
    assert np.all(np.any(a[:, 0, 0] != b[:, 0, 0], axis=-1))
    # Without any earlier code the logits at (0, 0) depend on the label only.
    c = logits(model, rng.integers(0, K, (4, 5, 6)), {"labels": labels})
    np.testing.assert_array_equal(a[:, 0, 0], c[:, 0, 0])
    assert not np.array_equal(a[0, 0, 0], a[1, 0, 0])
    # Spatial conditioning: a new condition map moves logits; changing the
    # condition at (0, 0) moves the logits at (0, 0).
    model = randomise(make_prior("spatial"), seed=2)
    condition = rng.integers(0, 5, (4, 5, 3))
    a = logits(model, codes, {"condition": condition})
    b = logits(model, codes, {"condition": (condition + 1) % 5})
    assert np.all(np.any(a != b, axis=(1, 2, 3)))
    moved = condition.copy()
    moved[:, 0, 0] = (moved[:, 0, 0] + 2) % 5
    b = logits(model, codes, {"condition": moved})
    assert np.all(np.any(a[:, 0, 0] != b[:, 0, 0], axis=-1))


def test_output_shape_and_dtype():
    model = make_prior("both", k=5, blocks=2)
    out = model({"codes": np.zeros((3, 5, 6), np.int32), **conditioning_inputs(model, 3)})
    assert out.shape == (3, 5, 6, K) and out.dtype == tf.float32
    # A bare tensor is the codes of an unconditioned prior.
    plain = make_prior(None)
    assert plain(np.zeros((2, 5, 6), np.int64)).shape == (2, 5, 6, K)


# ---------------------------------------------------- NLL / bits_per_dim
@pytest.mark.parametrize("cond", [None, "class", "spatial"])
def test_evaluate_nll_matches_numpy(cond):
    """10 examples in batches of 4 (last batch partial): per-example mean of −log p."""
    model = randomise(make_prior(cond, k=3, blocks=2), seed=4)
    # Sharper, example-dependent distributions so that a batch-weighting slip shows.
    model.head_logits.kernel.assign(model.head_logits.kernel * 4.0)
    model.compile(optimizer="adam")
    n = 10
    rng = np.random.default_rng(5)
    codes = rng.integers(0, K, (n, 5, 6)).astype(np.int32)
    extra = conditioning_inputs(model, n, seed=6)
    inputs = {"codes": codes, **extra}
    log_p = np_log_softmax(logits(model, codes, extra))
    per_code = -np.take_along_axis(log_p, codes[..., None].astype(np.int64), -1)[..., 0]
    expected = per_code.mean()
    dataset = tf.data.Dataset.from_tensor_slices(inputs).batch(4)
    result = model.evaluate(dataset, verbose=0, return_dict=True)
    assert set(result) >= {"loss", "nll", "bits_per_dim"}
    np.testing.assert_allclose(result["nll"], expected, rtol=1e-5)
    np.testing.assert_allclose(result["bits_per_dim"], expected / math.log(2.0), rtol=1e-5)
    np.testing.assert_allclose(result["bits_per_dim"], result["nll"] / math.log(2.0), rtol=1e-6)
    assert result["loss"] == result["nll"]
    # The unweighted mean of the batch means differs from the right answer by
    # more than the tolerance, so the check above does test the weighting.
    batch_means = [per_code[s : s + 4].mean() for s in range(0, n, 4)]
    assert abs(np.mean(batch_means) - expected) > 1e-4 * expected
    # One full batch: the same number.
    full = model.evaluate(tf.data.Dataset.from_tensor_slices(inputs).batch(n),
                          verbose=0, return_dict=True)
    np.testing.assert_allclose(full["nll"], expected, rtol=1e-5)


# ---------------------------------------------------------------- training
def fit_history(model, inputs, epochs, lr=1e-2, batch=32):
    """Per-epoch training metrics (means over each epoch, so later epochs are upper bounds)."""
    model.compile(optimizer=keras.optimizers.Adam(lr))
    dataset = tf.data.Dataset.from_tensor_slices(inputs).batch(batch)
    history = model.fit(dataset, epochs=epochs, verbose=0).history
    np.testing.assert_allclose(history["loss"], history["nll"], rtol=1e-6)
    np.testing.assert_allclose(
        history["bits_per_dim"], np.array(history["nll"]) / math.log(2.0), rtol=1e-5
    )
    return history


def test_fit_learns_raster_increments():
    """z at raster position n is (z_0 + n) mod K: only the first code is random."""
    keras.utils.set_random_seed(0)
    k_codes, h, w, n = 8, 5, 5, 192
    start = np.random.default_rng(0).integers(0, k_codes, n)
    codes = ((start[:, None] + np.arange(h * w)[None]) % k_codes).reshape(n, h, w)
    model = make_prior(None, k=3, blocks=3, shape=(h, w), num_embeddings=k_codes, hidden=16)
    bits = fit_history(model, {"codes": codes.astype(np.int32)}, epochs=5)["bits_per_dim"]
    # Untrained: about log2 8 = 3 bits; best possible: 3 bits for the first
    # code only, 3 / 25 = 0.12 bits per code.
    assert bits[0] < 3.2
    assert bits[-1] < 0.4, bits
    assert bits[-1] < 0.2 * bits[0]


def test_fit_class_conditional_constant_maps():
    """Maps are constant, the constant (3·label + 1) mod K: known from the label alone."""
    keras.utils.set_random_seed(1)
    k_codes, h, w, n = 8, 4, 4, 192
    labels = np.random.default_rng(1).integers(0, 4, n).astype(np.int32)
    codes = np.broadcast_to(((3 * labels + 1) % k_codes)[:, None, None], (n, h, w))
    model = make_prior("class", k=3, blocks=2, shape=(h, w), num_embeddings=k_codes,
                       hidden=16, num_classes=4)
    nll = fit_history(model, {"codes": codes.astype(np.int32), "labels": labels},
                      epochs=6)["nll"]
    # Ignoring the label, the first code alone costs log 4 / 16 ≈ 0.087 nats per code.
    assert nll[-1] < 0.02 * math.log(k_codes), nll
    # The learnt prior puts the first code on the label's constant.
    first = model({"codes": np.zeros((4, h, w), np.int32), "labels": np.arange(4)})[:, 0, 0]
    np.testing.assert_array_equal(np.argmax(first, -1), (3 * np.arange(4) + 1) % k_codes)


@pytest.mark.slow  # about 5 s; the raster and class-conditional fits stay
def test_fit_spatial_condition_is_copied():
    """Codes are the condition map upsampled by (2, 2): nothing else to learn from."""
    keras.utils.set_random_seed(2)
    k_codes, h, w, n = 8, 4, 4, 256
    condition = np.random.default_rng(2).integers(0, 5, (n, 2, 2)).astype(np.int32)
    codes = np.repeat(np.repeat(condition, 2, axis=1), 2, axis=2)
    model = PixelCNNPrior(k_codes, (h, w), hidden_channels=16, num_blocks=2, kernel_size=3,
                          condition_num_embeddings=5, condition_shape=(2, 2),
                          condition_channels=8)
    nll = fit_history(model, {"codes": codes, "condition": condition}, epochs=6, lr=2e-2)["nll"]
    # Ignoring the condition, a quarter of the codes cost log 5: ≈ 0.4 nats per code.
    assert nll[-1] < 0.05 * math.log(k_codes), nll
    # The learnt prior puts the first code on the condition's top-left code.
    first = model({"codes": np.zeros((n, h, w), np.int32), "condition": condition})[:, 0, 0]
    assert np.mean(np.argmax(first, -1) == condition[:, 0, 0]) > 0.95


# -------------------------------------------------------------- bad input
def test_bad_codes():
    model = make_prior(None)
    with pytest.raises(ValueError, match=r"shape=\(2, 4, 6\)"):
        model(np.zeros((2, 4, 6), np.int32))
    with pytest.raises(ValueError, match=r"shape=\(5, 6\)"):
        model(np.zeros((5, 6), np.int32))
    with pytest.raises(TypeError, match="float32"):
        model(np.zeros((2, 5, 6), np.float32))
    too_big = np.zeros((2, 5, 6), np.int32)
    too_big[1, 4, 5] = K
    with pytest.raises(ValueError, match=rf"\[0, {K}\).*\[0, {K}\]"):
        model(too_big)
    negative = np.zeros((2, 5, 6), np.int32)
    negative[0, 0, 3] = -1
    with pytest.raises(ValueError, match=r"\[-1, 0\]"):
        model(negative)


def test_bad_labels():
    conditional = make_prior("class")
    codes = np.zeros((2, 5, 6), np.int32)
    with pytest.raises(ValueError, match="num_classes=3"):
        conditional({"codes": codes})
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*\[1, 3\]"):
        conditional({"codes": codes, "labels": np.array([1, 3])})
    with pytest.raises(ValueError, match=r"\[-2, 0\]"):
        conditional({"codes": codes, "labels": np.array([0, -2])})
    with pytest.raises(ValueError, match=r"shape=\(2, 1\)"):
        conditional({"codes": codes, "labels": np.array([[0], [1]])})
    with pytest.raises(TypeError, match="float"):
        conditional({"codes": codes, "labels": np.array([0.0, 1.0])})
    with pytest.raises(ValueError, match="labels"):
        make_prior(None)({"codes": codes, "labels": np.array([0, 1])})
    with pytest.raises(ValueError, match="condition"):
        make_prior(None)({"codes": codes, "condition": np.zeros((2, 5, 3), np.int32)})


def test_bad_condition():
    model = make_prior("spatial")
    codes = np.zeros((2, 5, 6), np.int32)
    with pytest.raises(ValueError, match=r"\(5, 3\)"):
        model({"codes": codes})
    with pytest.raises(ValueError, match=r"shape=\(2, 5, 6\)"):
        model({"codes": codes, "condition": np.zeros((2, 5, 6), np.int32)})
    with pytest.raises(ValueError, match=r"condition must lie in \[0, 5\).*\[5, 5\]"):
        model({"codes": codes, "condition": np.full((2, 5, 3), 5, np.int32)})
    with pytest.raises(TypeError, match="float"):
        model({"codes": codes, "condition": np.zeros((2, 5, 3), np.float32)})


def test_inconsistent_batch_sizes_in_call():
    """Codes of batch 4 with labels / condition of batch 1 or 3 should raise a
    ValueError naming both sizes."""
    outcomes = {}
    for cond in ("class", "spatial"):
        model = make_prior(cond)
        for size in (1, 3):
            try:
                model({"codes": np.zeros((4, 5, 6), np.int32), **conditioning_inputs(model, size)})
                outcomes[cond, size] = "no error"
            except Exception as error:  # noqa: BLE001 - recorded and checked below
                message = str(error)
                named = "4" in message and str(size) in message
                outcomes[cond, size] = type(error).__name__ + (" naming the sizes" if named else "")
    assert all(o == "ValueError naming the sizes" for o in outcomes.values()), outcomes


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="kernel_size=4"):
        PixelCNNPrior(K, (5, 6), kernel_size=4)
    with pytest.raises(ValueError, match="kernel_size=0"):
        PixelCNNPrior(K, (5, 6), kernel_size=0)
    with pytest.raises(ValueError, match=r"\(5, 6\).*\(2, 3\)"):
        PixelCNNPrior(K, (5, 6), condition_num_embeddings=4, condition_shape=(2, 3))
    with pytest.raises(ValueError, match=r"condition_num_embeddings=4.*condition_shape=None"):
        PixelCNNPrior(K, (5, 6), condition_num_embeddings=4)
    with pytest.raises(ValueError, match=r"condition_num_embeddings=None.*condition_shape=\(5, 3\)"):
        PixelCNNPrior(K, (5, 6), condition_shape=(5, 3))
    with pytest.raises(ValueError, match="num_embeddings=0"):
        PixelCNNPrior(0, (5, 6))
    with pytest.raises(ValueError, match="code_shape="):
        PixelCNNPrior(K, (5,))
    with pytest.raises(ValueError, match="num_classes=0"):
        PixelCNNPrior(K, (5, 6), num_classes=0)
    with pytest.raises(ValueError, match="hidden_channels=True"):
        PixelCNNPrior(K, (5, 6), hidden_channels=True)


# -------------------------------------------------------- save / config
def test_save_load_round_trip(tmp_path):
    model = randomise(make_prior("both", k=3, blocks=2, shape=(4, 4)), seed=8)
    path = tmp_path / "prior.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, PixelCNNPrior)
    assert loaded.get_config() == model.get_config()
    extra = conditioning_inputs(model, 3, seed=9)
    codes = np.random.default_rng(9).integers(0, K, (3, 4, 4))
    np.testing.assert_array_equal(logits(loaded, codes, extra), logits(model, codes, extra))
    a = model.sample(labels=extra["labels"], condition=extra["condition"], seed=4)
    b = loaded.sample(labels=extra["labels"], condition=extra["condition"], seed=4)
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_config_round_trip():
    model = make_prior("both", k=5, blocks=2, shape=(4, 6), hidden=12)
    config = model.get_config()
    assert config["num_embeddings"] == K
    assert tuple(config["code_shape"]) == (4, 6)
    assert config["hidden_channels"] == 12
    assert config["num_blocks"] == 2
    assert config["kernel_size"] == 5
    assert config["num_classes"] == 3
    assert config["condition_num_embeddings"] == 5
    assert tuple(config["condition_shape"]) == (4, 3)
    assert config["condition_channels"] == 4
    clone = PixelCNNPrior.from_config(config)
    assert clone.get_config() == config
    assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]
    assert clone.code_shape == (4, 6) and clone.condition_shape == (4, 3)


# ------------------------------------------------------ distribution
@pytest.mark.slow  # about 10 s; test_vqvae.py's mirrored EMA case stays in the default suite
def test_mirrored_strategy_matches_single_device(mirrored_strategy, one_device_strategy):
    """Two fit steps on the same global batches give the same weights on 2 replicas."""
    rng = np.random.default_rng(3)
    n = 16
    inputs = {
        "codes": rng.integers(0, K, (n, 4, 4)).astype(np.int32),
        "labels": rng.integers(0, 3, n).astype(np.int32),
    }

    def run(strategy):
        keras.utils.set_random_seed(5)
        with strategy.scope():
            model = make_prior("class", k=3, blocks=2, shape=(4, 4))
            model.compile(optimizer=keras.optimizers.Adam(1e-2))
        initial = [w.numpy().copy() for w in model.weights]
        history = model.fit(tf.data.Dataset.from_tensor_slices(inputs).batch(8),
                            epochs=1, verbose=0).history
        return model, initial, history

    single, single_init, single_hist = run(one_device_strategy)
    mirrored, mirrored_init, mirrored_hist = run(mirrored_strategy)
    assert mirrored.distribute_strategy.num_replicas_in_sync == 2
    for a, b in zip(single_init, mirrored_init):
        np.testing.assert_array_equal(a, b)
    moved = 0
    for a, b, a0 in zip(single.weights, mirrored.weights, single_init):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)
        moved += not np.allclose(a.numpy(), a0)
    assert moved > len(single_init) // 2  # the steps did train
    np.testing.assert_allclose(single_hist["nll"], mirrored_hist["nll"], rtol=1e-5)
