"""Non-finite input: skipped training steps, refused images and temperatures.

Expected values are independent of the library: the state before the bad
batch (saved as NumPy arrays, compared with exact equality, NaN == NaN), the
number of steps counted by hand, NumPy's isfinite, and hand-picked limits.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvqvae
from tfvqvae.models import sampling

BATCH = 8
STEPS = 4
BAD = 2  # 0-based index of the poisoned batch


def _images(seed=0):
    return np.random.default_rng(seed).random((BATCH * STEPS, 16, 16, 1), dtype=np.float32)


def _poisoned(value, pixel_only=True):
    """STEPS batches of BATCH images; batch BAD holds ``value`` (in one pixel of its first image)."""
    x = _images()
    if pixel_only:
        x[BAD * BATCH, 3, 5, 0] = value
    else:
        x[BAD * BATCH : (BAD + 1) * BATCH] = value
    return x


def _vqvae():
    return tfvqvae.VQVAE(
        image_channels=1, hidden_channels=16, residual_channels=8, num_residual_layers=1,
        quantizer=tfvqvae.VectorQuantizerEMA(16, 4, decay=0.9, kmeans_init=False, restart_unused_after=None),
    )


def _vqvae2():
    return tfvqvae.VQVAE2(
        image_channels=1, hidden_channels=16, residual_channels=8, num_residual_layers=1,
        top_quantizer=tfvqvae.VectorQuantizerEMA(16, 4, decay=0.9, kmeans_init=False, restart_unused_after=None),
        bottom_quantizer=tfvqvae.VectorQuantizer(16, 4, seed=1, kmeans_init=False, restart_unused_after=None),
    )


def _state(model):
    """{name: array} of everything a bad step must not touch (not ``training_steps``,
    a count of steps seen)."""
    state = {f"trainable/{v.path}": v.numpy() for v in model.trainable_weights}
    for v in model.non_trainable_weights:
        if not v.path.endswith("training_steps"):
            state[f"state/{v.path}"] = v.numpy()
    for v in model.optimizer.variables:
        state[f"optimizer/{v.path}"] = np.asarray(v.numpy())
    return state


class _Recorder(keras.callbacks.Callback):
    """Saves the state before batch BAD and after it, and every step's ``nonfinite`` flag."""

    def __init__(self):
        super().__init__()
        self.flags, self.before, self.after = [], None, None

    def on_train_batch_begin(self, batch, logs=None):
        if batch == BAD:
            self.before = _state(self.model)

    def on_train_batch_end(self, batch, logs=None):
        self.flags.append(float(logs["nonfinite"]))
        if batch == BAD:
            self.after = _state(self.model)


def _assert_same_state(before, after):
    assert before.keys() == after.keys()
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)


def _check_skipped_run(model, recorder):
    assert recorder.flags == [0.0, 0.0, 1.0, 0.0]
    _assert_same_state(recorder.before, recorder.after)
    # EMA codebooks, counts and sums are among the compared non-trainable weights.
    assert any("ema_cluster_size" in name for name in recorder.before)
    assert any("ema_embedding_sum" in name for name in recorder.before)
    assert int(model.optimizer.iterations.numpy()) == STEPS - 1  # one step of four skipped
    for v in model.weights:
        assert np.isfinite(v.numpy()).all(), v.path
    clean = _images(seed=1)[:4]
    assert np.isfinite(model(clean).numpy()).all()


@pytest.mark.parametrize("build,jit_compile,value", [
    (_vqvae, False, np.nan),
    pytest.param(_vqvae, True, np.inf, marks=pytest.mark.slow),  # about 6-8 s each
    pytest.param(_vqvae2, False, -np.inf, marks=pytest.mark.slow),
], ids=["vqvae-graph-nan", "vqvae-xla-inf", "vqvae2-graph-neginf"])
def test_a_non_finite_batch_leaves_every_state_untouched(build, jit_compile, value):
    keras.utils.set_random_seed(0)
    model = build()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
    recorder = _Recorder()
    history = model.fit(_poisoned(value), batch_size=BATCH, epochs=1, shuffle=False,
                        verbose=0, callbacks=[recorder]).history
    _check_skipped_run(model, recorder)
    # The skipped step adds nothing to the epoch's metrics.
    assert all(np.isfinite(v[-1]) for v in history.values())


@pytest.mark.slow  # a VQVAE2 fit under MirroredStrategy (about 9 s)
def test_replicas_agree_to_skip_when_only_one_sees_nan(mirrored_strategy):
    """The NaN pixel lies in replica 0's half of the global batch only."""
    keras.utils.set_random_seed(0)
    with mirrored_strategy.scope():
        model = _vqvae2()
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
    recorder = _Recorder()
    model.fit(_poisoned(np.nan), batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[recorder])
    _check_skipped_run(model, recorder)


def test_a_whole_nan_batch_is_skipped_with_a_clean_epoch_mean():
    """The epoch's mse equals the batch-size-weighted mean of the 3 good steps' mse."""
    keras.utils.set_random_seed(0)
    model = _vqvae()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    per_step = []

    class StepMSE(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            per_step.append(float(logs["mse"]))

    history = model.fit(_poisoned(np.nan, pixel_only=False), batch_size=BATCH, epochs=1,
                        shuffle=False, verbose=0, callbacks=[StepMSE()]).history
    # logs["mse"] is the running mean; a skipped step leaves it unchanged.
    assert per_step[BAD] == per_step[BAD - 1]
    assert int(model.optimizer.iterations.numpy()) == STEPS - 1
    assert np.isfinite(history["mse"][-1])


def test_ema_quantizer_ignores_a_non_finite_batch():
    vq = tfvqvae.VectorQuantizerEMA(8, 4, decay=0.9, kmeans_init=False, restart_unused_after=None)
    z = np.random.default_rng(0).normal(size=(2, 3, 3, 4)).astype("float32")
    vq(z, training=True)
    before = [v.numpy() for v in (vq.codebook, vq.ema_cluster_size, vq.ema_embedding_sum)]
    for bad in (np.nan, np.inf, -np.inf):
        poisoned = z.copy()
        poisoned[1, 2, 0, 3] = bad
        vq(poisoned, training=True)
        after = [v.numpy() for v in (vq.codebook, vq.ema_cluster_size, vq.ema_embedding_sum)]
        for a, b in zip(after, before):
            np.testing.assert_array_equal(a, b)
    # A finite batch still moves the statistics: N ← γN + (1 − γ)n, summing to
    # γ ΣN + (1 − γ) · 18 vectors.
    vq(z, training=True)
    expected_total = 0.9 * before[1].sum() + 0.1 * 18
    np.testing.assert_allclose(vq.ema_cluster_size.numpy().sum(), expected_total, rtol=1e-6)


def _prior_with_a_nan_code(num_embeddings=6):
    """A prior whose embedding row K-1 is NaN: a batch holding code K-1 has a NaN loss."""
    prior = tfvqvae.PixelCNNPrior(num_embeddings, (4, 4), hidden_channels=8, num_blocks=2,
                                  kernel_size=3)
    prior({"codes": np.zeros((1, 4, 4), np.int32)})  # creates the weights
    table = prior.embedding.embeddings.numpy()
    table[-1] = np.nan
    prior.embedding.embeddings.assign(table)
    codes = np.random.default_rng(0).integers(0, num_embeddings - 1, (BATCH * STEPS, 4, 4))
    codes[BAD * BATCH, 0, 0] = num_embeddings - 1
    return prior, codes.astype(np.int32)


@pytest.mark.parametrize("jit_compile", [
    False, pytest.param(True, marks=pytest.mark.slow),  # xla: about 10 s
], ids=["graph", "xla"])
def test_prior_skips_a_step_with_a_nan_loss(jit_compile):
    keras.utils.set_random_seed(0)
    prior, codes = _prior_with_a_nan_code()
    prior.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
    recorder = _Recorder()
    history = prior.fit({"codes": codes}, batch_size=BATCH, epochs=1, shuffle=False,
                        verbose=0, callbacks=[recorder]).history
    assert recorder.flags == [0.0, 0.0, 1.0, 0.0]
    _assert_same_state(recorder.before, recorder.after)  # NaN row compared NaN == NaN
    assert int(prior.optimizer.iterations.numpy()) == STEPS - 1
    assert np.isfinite(history["nll"][-1])


# ------------------------------------------------------- Python API checks
@pytest.mark.parametrize("build", [_vqvae, _vqvae2], ids=["vqvae", "vqvae2"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_python_api_refuses_non_finite_images(build, value):
    model = build()
    x = _images()[:2]
    x[1, 0, 0, 0] = value
    for method in (model.encode, model.encode_levels, model, model.quantize_with_losses):
        with pytest.raises(ValueError, match=r"NaN or Inf\. Received: images with 1 non-finite"):
            method(x)


@pytest.mark.parametrize("build", [_vqvae, _vqvae2], ids=["vqvae", "vqvae2"])
def test_python_api_refuses_images_far_outside_unit_range(build):
    model = build()
    x = _images()[:2]
    with pytest.raises(ValueError, match=r"\[0, 255\].*divide them by 255"):
        model.encode(np.round(x * 255.0))
    signed = x * 2.0 - 1.0
    signed[0, 0, 0, 0] = -1.0
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2.*values in \[-1, "):
        model(signed)
    # The margin: reconstructions slightly outside [0, 1] are accepted.
    edge = x.copy()
    edge[0, 0, 0, 0], edge[1, 0, 0, 0] = -0.5, 1.5
    assert np.isfinite(model.encode_levels(edge)["top"].numpy()).all()
    # An empty batch is no value error.
    assert model.encode_levels(np.zeros((0, 16, 16, 1), np.float32))["top"].shape[0] == 0


# ------------------------------------------------------------ temperature
@pytest.mark.parametrize("temperature", [math.inf, -math.inf, math.nan, 0.0, -2.0])
def test_sample_refuses_non_finite_or_non_positive_temperatures(temperature):
    prior = tfvqvae.PixelCNNPrior(4, (2, 2), hidden_channels=8, num_blocks=1, kernel_size=3)
    with pytest.raises(ValueError, match="`temperature` must be a finite number > 0"):
        prior.sample(2, temperature=temperature)
    with pytest.raises(ValueError, match="`temperature` must be a finite number > 0"):
        sampling.sample(prior, "cached", 2, None, None, temperature, 0)
    with pytest.raises(ValueError, match="`temperature` must be a finite number > 0"):
        prior.sample(2, temperature=np.float32(temperature))


@pytest.mark.parametrize("temperature", ["1.0", None, [1.0]])
def test_sample_refuses_a_temperature_that_is_not_a_number(temperature):
    prior = tfvqvae.PixelCNNPrior(4, (2, 2), hidden_channels=8, num_blocks=1, kernel_size=3)
    with pytest.raises(TypeError, match="`temperature` must be a finite number > 0. Received: temperature="):
        prior.sample(2, temperature=temperature)


def test_a_finite_temperature_tensor_is_accepted():
    prior = tfvqvae.PixelCNNPrior(4, (2, 2), hidden_channels=8, num_blocks=1, kernel_size=3)
    codes = prior.sample(3, temperature=tf.constant(0.5)).numpy()
    assert codes.shape == (3, 2, 2) and ((0 <= codes) & (codes < 4)).all()
