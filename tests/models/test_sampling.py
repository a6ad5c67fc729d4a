"""Sampling from PixelCNNPrior: cached == naive, seeds, distributions, temperature, errors.

Distribution checks compare sample frequencies with NumPy softmaxes of the
prior's logits (chi-square), or with hand-set logits (one-hot bias, all equal).
"""

import gc
import weakref

import keras
import numpy as np
import pytest
from scipy import stats

from tests.models.prior_helpers import conditioning_inputs
from tests.models.prior_helpers import randomise
from tfvqvae import PixelCNNPrior
from tfvqvae.models import sampling

K = 9


def make_prior(cond=None, shape=(3, 3), k=3, blocks=2, num_embeddings=K, seed=0, sharpen=3.0,
               **extra):
    """A prior with random weights; ``sharpen`` scales the head so logits are not near-uniform.

    ``extra``: more `PixelCNNPrior` arguments (e.g. ``attention_every``).
    """
    options = dict(hidden_channels=8, num_blocks=blocks, kernel_size=k, **extra)
    if cond in ("class", "both"):
        options["num_classes"] = 4
    if cond in ("spatial", "both"):
        options.update(condition_num_embeddings=5, condition_shape=(shape[0], 1),
                       condition_channels=4)
    model = randomise(PixelCNNPrior(num_embeddings, shape, **options), seed)
    model.head_logits.kernel.assign(model.head_logits.kernel * sharpen)
    return model


def teacher_forced_logits(model, codes, extra):
    """Logits of the prior at every position given the sampled codes (float64)."""
    return np.asarray(model({"codes": np.asarray(codes, np.int32), **extra}), np.float64)


def np_softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


SAMPLER_CASES = [
    # (cond, shape, kernel, blocks, batch sizes); each batch size is one more trace.
    ("class", (3, 3), 3, 3, (1, 3)),
    ("spatial", (4, 6), 5, 2, (3,)),
    ("class", (5, 2), 5, 2, (1,)),
    ("both", (4, 6), 3, 2, (3,)),
    (None, (3, 3), 5, 2, (1,)),
]


@pytest.mark.parametrize("cond,shape,k,blocks,batches", SAMPLER_CASES)
def test_cached_equals_naive(cond, shape, k, blocks, batches):
    """Same seed, same maps, for both temperatures and two seeds."""
    model = make_prior(cond, shape, k, blocks, seed=k + blocks)
    for batch in batches:
        extra = conditioning_inputs(model, batch, seed=batch)
        size = {} if extra else {"num_samples": batch}
        for temperature in (1.0, 0.5):
            for seed in (0, 7):
                cached = model.sample(**size, **extra, temperature=temperature, seed=seed)
                naive = model.sample(**size, **extra, temperature=temperature, seed=seed,
                                     method="naive")
                assert cached.dtype == "int32" and cached.shape == (batch,) + shape
                np.testing.assert_array_equal(
                    cached.numpy(), naive.numpy(), err_msg=f"{batch} {temperature} {seed}"
                )
                codes = cached.numpy()
                assert codes.min() >= 0 and codes.max() < K
        # Non-degenerate: the samples use several codes.
        assert len(np.unique(codes)) >= 3


def test_seeds():
    model = make_prior("class", (4, 4), 3, seed=1)
    labels = np.array([0, 1, 2, 3])
    first = model.sample(labels=labels, seed=3).numpy()
    np.testing.assert_array_equal(model.sample(labels=labels, seed=3).numpy(), first)
    others = [model.sample(labels=labels, seed=s).numpy() for s in (4, 5, 6)]
    for other in others:
        assert not np.array_equal(other, first)
        # Different draws, not a permutation of a fixed map.
        assert np.mean(other != first) > 0.3
    # The naive sampler agrees for another seed too (numpy int seed accepted).
    np.testing.assert_array_equal(
        model.sample(labels=labels, seed=np.int64(4), method="naive").numpy(), others[0]
    )


def test_samples_follow_gumbel_max_of_teacher_forced_logits():
    """Every sampled code is argmax(logits / T + g) for the prior's logits at that
    position given the sampled codes before it, g the seed's Gumbel noise."""
    model = make_prior("both", (4, 5), 5, seed=2)
    extra = conditioning_inputs(model, 3, seed=2)
    temperature, seed = 0.7, 11
    codes = model.sample(**extra, temperature=temperature, seed=seed).numpy()
    noise = np.asarray(sampling.gumbel_noise(3, 4, 5, K, seed), np.float64)  # (H, W, B, K)
    scores = teacher_forced_logits(model, codes, extra) / temperature + noise.transpose(2, 0, 1, 3)
    top2 = np.sort(scores, -1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > 1e-4  # leave out float near-ties
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(codes[clear], np.argmax(scores, -1)[clear])


def test_one_code_overwhelmingly_likely():
    model = make_prior("spatial", (3, 4), 3, seed=3)
    model.head_logits.kernel.assign(np.zeros(model.head_logits.kernel.shape, np.float32))
    model.head_logits.bias.assign(50.0 * np.eye(K, dtype=np.float32)[4])
    extra = conditioning_inputs(model, 3, seed=3)
    for method in ("cached", "naive"):
        for temperature in (1.0, 0.5):
            codes = model.sample(**extra, temperature=temperature, seed=1, method=method).numpy()
            np.testing.assert_array_equal(codes, np.full((3, 3, 4), 4))


def test_equal_logits_give_uniform_codes():
    model = make_prior(None, (4, 4), 3, num_embeddings=8, seed=4)
    model.head_logits.kernel.assign(np.zeros(model.head_logits.kernel.shape, np.float32))
    model.head_logits.bias.assign(np.zeros(8, np.float32))
    codes = model.sample(256, seed=5).numpy()
    counts = np.bincount(codes.ravel(), minlength=8)
    assert counts.sum() == 256 * 16
    # Expected 512 per code; chi-square with 7 degrees of freedom.
    assert stats.chisquare(counts).pvalue > 1e-3, counts
    assert np.all(np.abs(counts - 512) < 100), counts
    # Every position on its own is spread over the codes too.
    per_position = np.stack([np.bincount(codes[:, i, j], minlength=8)
                             for i in range(4) for j in range(4)])
    assert per_position.min() >= 10


def test_joint_distribution_of_a_tiny_map():
    """A 1x2 map with K = 4: the empirical joint of 4000 samples matches
    p(z0) · p(z1 | z0) from the prior's logits (NumPy softmax of logits / T)."""
    k_codes = 4
    model = make_prior("class", (1, 2), 3, num_embeddings=k_codes, seed=5, sharpen=1.5)
    n = 4000
    for temperature in (1.0, 0.6):
        labels = np.full(n, 2, np.int32)
        codes = model.sample(labels=labels, temperature=temperature, seed=9).numpy()
        observed = np.zeros((k_codes, k_codes))
        np.add.at(observed, (codes[:, 0, 0], codes[:, 0, 1]), 1)
        # logits at (0, 0) and at (0, 1) given z0 = 0..K−1.
        given = np.stack([np.arange(k_codes), np.zeros(k_codes, int)], -1)[:, None, :]
        lg = teacher_forced_logits(model, given, {"labels": labels[:k_codes]}) / temperature
        joint = np_softmax(lg[0, 0, 0])[:, None] * np_softmax(lg[:, 0, 1])
        expected = n * joint
        assert expected.min() > 5  # chi-square is valid
        assert stats.chisquare(observed.ravel(), expected.ravel()).pvalue > 1e-3, (
            observed, expected
        )


def test_low_temperature_samples_argmax():
    model = make_prior("class", (4, 4), 3, seed=6)
    labels = np.array([0, 1, 2, 3, 0, 1])
    greedy = [model.sample(labels=labels, temperature=1e-3, seed=s).numpy() for s in (0, 1)]
    # The noise no longer matters ...
    np.testing.assert_array_equal(greedy[0], greedy[1])
    # ... and each code is the argmax of the logits given the codes before it.
    lg = teacher_forced_logits(model, greedy[0], {"labels": labels})
    top2 = np.sort(lg, -1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > 0.03  # 0.03 / 1e-3 beats any Gumbel gap (< 20)
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(greedy[0][clear], np.argmax(lg, -1)[clear])
    # At temperature 1 the same seeds do differ.
    assert not np.array_equal(model.sample(labels=labels, seed=0).numpy(),
                              model.sample(labels=labels, seed=1).numpy())


def test_sample_argument_errors():
    plain = make_prior(None, (3, 3))
    with pytest.raises(ValueError, match="temperature=0"):
        plain.sample(2, temperature=0)
    with pytest.raises(ValueError, match=r"temperature=-1\.0"):
        plain.sample(2, temperature=-1.0)
    with pytest.raises(ValueError, match="method='beam'"):
        plain.sample(2, method="beam")
    with pytest.raises(ValueError, match=r"batch sizes: \[\]"):
        plain.sample()
    with pytest.raises(ValueError, match="num_samples=0"):
        plain.sample(0)
    with pytest.raises(ValueError, match="labels"):
        plain.sample(2, labels=[0, 1])
    with pytest.raises(ValueError, match="condition"):
        plain.sample(2, condition=np.zeros((2, 3, 1), np.int32))

    conditional = make_prior("both", (3, 3))
    labels = np.array([0, 1])
    condition = np.zeros((2, 3, 1), np.int32)
    with pytest.raises(ValueError, match=r"num_classes=4"):
        conditional.sample(condition=condition)
    with pytest.raises(ValueError, match=r"\(3, 1\).*condition"):
        conditional.sample(labels=labels)
    with pytest.raises(ValueError, match=r"shape=\(2, 3, 3\)"):
        conditional.sample(labels=labels, condition=np.zeros((2, 3, 3), np.int32))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\).*\[0, 4\]"):
        conditional.sample(labels=[0, 4], condition=condition)
    with pytest.raises(ValueError, match=r"condition must lie in \[0, 5\).*\[0, 7\]"):
        conditional.sample(labels=labels, condition=condition + np.array([[[0], [7], [0]]]))
    with pytest.raises(ValueError, match=r"batch size.*'labels': 3, 'condition': 2"):
        conditional.sample(labels=[0, 1, 2], condition=condition)
    with pytest.raises(ValueError, match=r"batch sizes: \[2, 5\]"):
        conditional.sample(5, labels=labels, condition=condition)
    # num_samples that agrees is fine.
    assert conditional.sample(2, labels=labels, condition=condition).shape == (2, 3, 3)


def test_sampler_cache_dies_with_the_prior():
    # Control: a prior that never sampled is collected.
    model = make_prior(None, (2, 2), blocks=1)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
    model = make_prior(None, (2, 2), blocks=1)
    model.sample(1, seed=0)
    ref = weakref.ref(model)
    del model
    keras.utils.clear_session()
    gc.collect()
    assert ref() is None


def test_cached_sampling_under_mixed_float16():
    keras.config.set_dtype_policy("mixed_float16")  # reset by the conftest fixture
    model = PixelCNNPrior(7, (3, 3), hidden_channels=8, num_blocks=2, kernel_size=3)
    naive = model.sample(2, seed=0, method="naive").numpy()
    assert naive.shape == (2, 3, 3) and naive.min() >= 0 and naive.max() < 7
    cached = model.sample(2, seed=0, method="cached").numpy()
    assert cached.shape == (2, 3, 3) and cached.min() >= 0 and cached.max() < 7
