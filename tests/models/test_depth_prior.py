"""PixelCNNPrior over codes with a depth axis (residual / grouped quantizers).

References are independent of the prior's own code paths: causality (a
logit must not move when a later code changes, and must move for an earlier
one), the three samplers against each other and against the Gumbel-max of
the teacher-forced logits, an exact NumPy enumeration of a tiny joint, and a
NumPy cross-entropy for the training loss.
"""

import math

import keras
import numpy as np
import pytest
from scipy import stats

from tests.models.prior_helpers import conditioning_inputs
from tests.models.prior_helpers import randomise
from tfvqvae import PixelCNNPrior
from tfvqvae.models import sampling
from tfvqvae.models.incremental import IncrementalPrior

K = 6


def depth_prior(shape=(3, 4, 2), seed=0, sharpen=2.0, **options):
    options = {"hidden_channels": 8, "num_blocks": 2, "kernel_size": 3, **options}
    prior = randomise(PixelCNNPrior(K, shape, **options), seed)
    prior.head_logits.kernel.assign(prior.head_logits.kernel * sharpen)
    return prior


def random_codes(prior, batch, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, prior.num_embeddings, (batch, *prior.code_shape)).astype(np.int32)


def np_softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_shapes_config_and_round_trip(tmp_path):
    prior = depth_prior((3, 4, 3), num_classes=2, condition_num_embeddings=5,
                        condition_shape=(3, 2, 2), condition_channels=4)
    assert prior.code_depth == 3 and prior.map_shape == (3, 4) and prior.condition_depth == 2
    extra = conditioning_inputs(prior, 2)
    codes = random_codes(prior, 2)
    logits = prior({"codes": codes, **extra})
    assert logits.shape == (2, 3, 4, 3, K) and logits.dtype == "float32"
    path = tmp_path / "prior.keras"
    prior.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.code_shape == (3, 4, 3) and loaded.condition_shape == (3, 2, 2)
    np.testing.assert_allclose(loaded({"codes": codes, **extra}), logits, atol=1e-6)
    # A prior without depth keeps its weights (no depth layers): old files load as before.
    plain = PixelCNNPrior(K, (3, 4), hidden_channels=8, num_blocks=2)
    assert not any("depth" in w.path for w in plain.weights)


def test_logits_are_causal_in_raster_then_depth_order():
    """Logit (i, j, q) moves with a code before (i, j, q) and never with one at or after it."""
    prior = depth_prior((3, 3, 3), seed=1, attention_every=1)
    for layer in prior.attention.values():  # zero-initialised output would hide attention
        layer.output_projection.kernel.assign(
            np.random.default_rng(2).normal(size=layer.output_projection.kernel.shape))
    codes = random_codes(prior, 1, seed=3)
    base = prior({"codes": codes}).numpy()[0]
    order = [(i, j, q) for i in range(3) for j in range(3) for q in range(3)]
    for rank, spot in enumerate(order):
        changed = codes.copy()
        changed[(0, *spot)] = (changed[(0, *spot)] + 1) % K
        moved = np.abs(prior({"codes": changed}).numpy()[0] - base).max(-1) > 1e-6
        for other_rank, other in enumerate(order):
            if other_rank <= rank:
                assert not moved[other], (spot, other)
        # The very next code (same position's next depth, or the next position) sees it.
        if rank + 1 < len(order):
            assert moved[order[rank + 1]], spot


def test_training_loss_is_the_numpy_cross_entropy():
    prior = depth_prior(seed=2)
    codes = random_codes(prior, 4, seed=5)
    logits = prior({"codes": codes}).numpy().astype(np.float64)
    log_p = np.log(np_softmax(logits))
    expected = -np.mean(np.take_along_axis(log_p, codes[..., None], -1))
    prior.compile(optimizer="adam")
    logs = prior.evaluate({"codes": codes}, batch_size=4, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["nll"], expected, rtol=1e-5)
    np.testing.assert_allclose(logs["bits_per_dim"], expected / math.log(2), rtol=1e-5)


@pytest.mark.parametrize("options", [
    dict(),
    dict(num_classes=3, condition_num_embeddings=4, condition_shape=(3, 2, 2),
         condition_channels=4, attention_every=1, kernel_size=5),
], ids=["plain", "class-condition-attention"])
def test_incremental_logits_equal_the_forward_pass(options):
    prior = depth_prior((3, 4, 3), seed=4, **options)
    batch = 3
    codes = random_codes(prior, batch, seed=6)
    extra = conditioning_inputs(prior, batch, seed=1)
    expected = prior({"codes": codes, **extra}).numpy()
    steps = IncrementalPrior(prior)
    context = steps.context(batch, extra.get("labels"), extra.get("condition"))
    state = steps.start(batch)
    found = np.zeros_like(expected)
    for i in range(3):
        for j in range(4):
            chosen, logits, state = steps.choose(
                context, state, i, j, lambda _, q, i=i, j=j: codes[:, i, j, q])
            np.testing.assert_array_equal(chosen, codes[:, i, j])
            found[:, i, j] = logits.numpy()
            state = steps.write(state, j, chosen)
        state = steps.end_row(context, state, i)
    np.testing.assert_allclose(found, expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="features` and `choose"):
        steps.logits(context, steps.start(batch), 0, 0)


@pytest.mark.parametrize("options", [dict(), dict(num_classes=2)], ids=["plain", "class"])
def test_samplers_agree_and_follow_the_gumbel_max_of_teacher_forced_logits(options):
    prior = depth_prior((3, 3, 2), seed=5, **options)
    batch = 4
    extra = conditioning_inputs(prior, batch, seed=2)
    size = {} if extra else {"num_samples": batch}
    temperature, seed = 0.8, 13
    cached = prior.sample(**size, **extra, temperature=temperature, seed=seed).numpy()
    assert cached.shape == (batch, 3, 3, 2) and cached.dtype == np.int32
    for method in ("naive", "compiled"):
        np.testing.assert_array_equal(
            prior.sample(**size, **extra, temperature=temperature, seed=seed,
                         method=method).numpy(), cached, err_msg=method)
    noise = np.asarray(sampling.gumbel_noise(batch, 3, 3, K, seed, depth=2), np.float64)
    scores = (prior({"codes": cached, **extra}).numpy().astype(np.float64) / temperature
              + noise.transpose(2, 0, 1, 3, 4))
    top2 = np.sort(scores, -1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > 1e-4
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(cached[clear], np.argmax(scores, -1)[clear])
    assert len(np.unique(cached)) >= 3


def test_joint_of_one_position_matches_the_chain_rule():
    """A 1x1 map with Q = 2: 4000 samples against p(z0) · p(z1 | z0) from NumPy softmaxes."""
    prior = depth_prior((1, 1, 2), seed=6, sharpen=1.0)
    given = np.stack([np.arange(K), np.zeros(K, int)], -1).reshape(K, 1, 1, 2).astype(np.int32)
    logits = prior({"codes": given}).numpy()[:, 0, 0]  # (K given z0, Q, K)
    joint = np_softmax(logits[0, 0])[:, None] * np_softmax(logits[:, 1])
    n = 4000
    codes = prior.sample(n, seed=3).numpy().reshape(n, 2)
    observed = np.zeros((K, K))
    np.add.at(observed, (codes[:, 0], codes[:, 1]), 1)
    expected = n * joint
    keep = expected > 5  # chi-square on the cells it is valid for, the rest pooled
    obs, exp = observed[keep], expected[keep]
    if not keep.all():
        obs, exp = np.append(obs, observed[~keep].sum()), np.append(exp, expected[~keep].sum())
    assert stats.chisquare(obs, exp).pvalue > 1e-3, (observed, expected)


def test_bad_depth_inputs_are_refused():
    prior = depth_prior((3, 4, 2))
    with pytest.raises(ValueError, match=r"must have shape \(batch, 3, 4, 2\).*\(2, 3, 4\)"):
        prior({"codes": np.zeros((2, 3, 4), np.int32)})
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 6\)"):
        prior({"codes": np.full((1, 3, 4, 2), 6, np.int32)})
    with pytest.raises(ValueError, match="height, width, depth"):
        PixelCNNPrior(K, (3, 4, 0))
    with pytest.raises(ValueError, match="height, width, depth"):
        PixelCNNPrior(K, (3, 4, 2, 1))


def test_fit_refuses_out_of_range_codes_inside_the_graph():
    """K at depth 0 would be a valid row of the offset embedding (depth 1's code 0): refused."""
    import tensorflow as tf

    prior = depth_prior((3, 4, 2))
    prior.compile(optimizer="adam")
    codes = random_codes(prior, 4)
    codes[1, 2, 3, 0] = K
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"codes must lie in \[0, 6\)"):
        prior.fit({"codes": codes}, batch_size=4, epochs=1, verbose=0)
