"""PixelCNNPrior with causal self-attention: samplers, fit, save, errors.

Causality with attention is tested with the rest of the prior's causality in
test_pixelcnn_prior (its `receptive_field` reference propagates dependency
sets through attention too: h at raster t then depends on the union of h at
every s <= t); here that reference is pinned by hand. Sampler checks compare
with the naive sampler (a full forward pass per position).
"""

import keras
import numpy as np
import pytest

from tests.models.prior_helpers import conditioning_inputs
from tests.models.prior_helpers import randomise
from tests.models.test_pixelcnn_prior import receptive_field
from tests.models.test_sampling import K
from tests.models.test_sampling import make_prior as sampling_prior
from tfvqvae import PixelCNNPrior



def make_prior(cond=None, shape=(3, 4), k=3, blocks=3, every=1, heads=2, seed=0):
    """test_sampling's random prior (K = 9, sharpened head), with attention."""
    return sampling_prior(cond, shape, k, blocks, seed=seed, attention_every=every,
                          num_attention_heads=heads)


def logits(model, codes, extra):
    return np.asarray(model({"codes": np.asarray(codes, np.int32), **extra}))


def test_reference_field_with_attention():
    """Kernel 3, two blocks, attention after the first (hand-checked cases)."""
    rf = receptive_field(4, 5, 3, 2, attention_after=[0]).reshape(20, 20)
    earlier = np.arange(20)[None, :] < np.arange(20)[:, None]
    assert not (rf & ~earlier).any()  # only strictly earlier positions
    np.testing.assert_array_equal(rf[19], earlier[19])  # the last sees all before it
    # (1, 0): through the attention, positions 0-3 of row 0; not (0, 4), which
    # only h at (1, 0) and later could have seen (mask A) and the vertical
    # stack of two kernel-3 blocks reaches columns 0-2 only.
    np.testing.assert_array_equal(rf[5], np.arange(20) < 4)
    # Without attention (0, 0) is outside the field of (3, 4).
    assert not receptive_field(4, 5, 3, 2, attention_after=[])[3, 4, 0]


def test_fresh_attention_prior_equals_the_same_prior_without_attention():
    """Attention starts as the identity (zero output projection)."""
    plain = PixelCNNPrior(K, (3, 4), hidden_channels=8, num_blocks=3, kernel_size=3)
    with_attention = PixelCNNPrior(K, (3, 4), hidden_channels=8, num_blocks=3, kernel_size=3,
                                   attention_every=1)
    for w in plain.weights:
        match = [v for v in with_attention.weights if v.path == w.path]
        assert len(match) == 1, w.path
        match[0].assign(w)
    codes = np.random.default_rng(0).integers(0, K, (2, 3, 4))
    np.testing.assert_allclose(logits(with_attention, codes, {}), logits(plain, codes, {}),
                               rtol=1e-6, atol=1e-6)


SAMPLER_CASES = [
    # (cond, shape, kernel, blocks, attention_every, batch)
    (None, (3, 4), 3, 2, 1, 2),
    ("class", (4, 3), 5, 3, 1, 3),
    pytest.param("spatial", (4, 4), 3, 3, 2, 1, marks=pytest.mark.slow),  # about 6 s each
    pytest.param("both", (2, 5), 1, 3, 1, 2, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("cond,shape,k,blocks,every,batch", SAMPLER_CASES)
def test_cached_and_compiled_equal_naive_with_attention(cond, shape, k, blocks, every, batch):
    model = make_prior(cond, shape, k, blocks, every, seed=k + blocks)
    extra = conditioning_inputs(model, batch, seed=batch)
    size = {} if extra else {"num_samples": batch}
    for temperature, seed in ((1.0, 0), (0.5, 7)):
        maps = {
            method: model.sample(**size, **extra, temperature=temperature, seed=seed,
                                 method=method).numpy()
            for method in ("naive", "cached", "compiled")
        }
        assert maps["naive"].shape == (batch, *shape) and maps["naive"].dtype == np.int32
        np.testing.assert_array_equal(maps["cached"], maps["naive"])
        np.testing.assert_array_equal(maps["compiled"], maps["naive"])
    assert len(np.unique(maps["naive"])) >= 3


def test_compiled_equals_naive_without_attention():
    model = PixelCNNPrior(K, (4, 5), hidden_channels=8, num_blocks=3, kernel_size=5,
                          num_classes=3)
    randomise(model, seed=2)
    model.head_logits.kernel.assign(model.head_logits.kernel * 3.0)
    labels = np.array([0, 2, 1], np.int32)
    for seed in (0, 5):
        naive = model.sample(labels=labels, seed=seed, method="naive").numpy()
        np.testing.assert_array_equal(
            model.sample(labels=labels, seed=seed, method="compiled").numpy(), naive)


@pytest.mark.parametrize("policy", [
    pytest.param("mixed_float16", marks=pytest.mark.slow), "mixed_bfloat16",  # about 6 s each
])
def test_samplers_agree_with_attention_under_mixed_precision(policy):
    """Open (random) attention and a sharpened head, so a wrong low-precision step shows."""
    keras.config.set_dtype_policy(policy)  # reset by the conftest fixture
    model = make_prior("class", (3, 4), 3, 3, 1, seed=6)
    assert model.attention_blocks[0].compute_dtype == policy.split("_")[1]
    labels = np.array([0, 3, 1], np.int32)
    codes = model({"codes": np.zeros((1, 3, 4), np.int32), "labels": labels[:1]})
    assert codes.dtype == "float32"
    maps = {m: model.sample(labels=labels, seed=3, method=m).numpy()
            for m in ("naive", "cached", "compiled")}
    np.testing.assert_array_equal(maps["cached"], maps["naive"])
    np.testing.assert_array_equal(maps["compiled"], maps["naive"])
    assert len(np.unique(maps["naive"])) >= 3


@pytest.mark.slow  # about 22 s of training
def test_fit_with_attention_learns_a_long_range_copy():
    """The last code of each map copies the first, which a 2-block kernel-3 PixelCNN
    cannot see from there (outside its receptive field) but attention can: on
    held-out maps only the prior with attention predicts it."""
    keras.utils.set_random_seed(0)
    h, w = 3, 4
    assert not receptive_field(h, w, 3, 2, attention_after=[])[h - 1, w - 1, 0]
    rng = np.random.default_rng(0)

    def maps(n):
        codes = rng.integers(0, K, (n, h * w))
        codes[:, -1] = codes[:, 0]
        return codes.reshape(n, h, w).astype(np.int32)

    train, test = maps(512), maps(256)
    nll = {}
    for every in (None, 1):
        model = PixelCNNPrior(K, (h, w), hidden_channels=16, num_blocks=2, kernel_size=3,
                              attention_every=every)
        model.compile(optimizer=keras.optimizers.Adam(3e-3))
        model.fit({"codes": train}, batch_size=32, epochs=25, verbose=0)
        probs = keras.ops.softmax(model({"codes": test}))[:, -1, -1].numpy()
        nll[every] = -np.mean(np.log(probs[np.arange(len(test)), test[:, -1, -1]]))
    # Uniform is ln 9 = 2.20 nats (measured: about 2.4 without, 0.6 with attention).
    assert nll[None] > 1.8, nll
    assert nll[1] < 0.5 * nll[None], nll


def test_save_load_round_trip_with_attention(tmp_path):
    model = make_prior("both", (4, 4), 3, 3, 1, seed=4)
    path = tmp_path / "prior.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_config() == model.get_config()
    assert loaded.get_config()["attention_every"] == 1
    extra = conditioning_inputs(model, 3, seed=9)
    codes = np.random.default_rng(9).integers(0, K, (3, 4, 4))
    np.testing.assert_array_equal(logits(loaded, codes, extra), logits(model, codes, extra))


def test_attention_argument_errors():
    with pytest.raises(ValueError, match=r"attention_every=3, num_blocks=3"):
        PixelCNNPrior(K, (3, 3), num_blocks=3, attention_every=3)
    with pytest.raises(ValueError, match="attention_every=0"):
        PixelCNNPrior(K, (3, 3), attention_every=0)
    with pytest.raises(ValueError, match="num_attention_heads=0"):
        PixelCNNPrior(K, (3, 3), attention_every=1, num_attention_heads=0)
    assert PixelCNNPrior(K, (3, 3), num_blocks=6, attention_every=2).attention_positions() \
        == [1, 3]
    assert PixelCNNPrior(K, (3, 3)).attention_blocks == []
