"""Sampling a chain of priors (any number of levels): shapes, seeds, conditioning, graph twin."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.models.prior_helpers import randomise
from tfvqvae import PixelCNNPrior
from tfvqvae.models import HierarchicalVQVAE
from tfvqvae.models import sampling
from tfvqvae.models.sampling import LEVEL_SEED_STRIDE

# Level k (top = 0): code shape, K. Each lower prior reads the level directly above.
SHAPES = {"top": ((2, 2), 5), "middle": ((4, 4), 6), "bottom": ((8, 8), 7)}


def chain(num_classes=3):
    priors, above = {}, None
    for k, (level, (shape, num_embeddings)) in enumerate(SHAPES.items()):
        options = dict(hidden_channels=8, num_blocks=1, kernel_size=3, num_classes=num_classes)
        if above is not None:
            options.update(condition_num_embeddings=SHAPES[above][1],
                           condition_shape=SHAPES[above][0], condition_channels=4)
        priors[level] = randomise(PixelCNNPrior(num_embeddings, shape, **options), seed=k)
        above = level
    return priors


@pytest.fixture(scope="module")
def priors():
    return chain()


def test_three_levels_shapes_ranges_and_seeds(priors):
    labels = np.array([0, 2], np.int32)
    codes = sampling.sample_levels(priors, labels=labels, seed=7)
    assert tuple(codes) == ("top", "middle", "bottom")
    for level, (shape, num_embeddings) in SHAPES.items():
        c = codes[level].numpy()
        assert codes[level].dtype == tf.int32 and c.shape == (2, *shape)
        assert c.min() >= 0 and c.max() < num_embeddings
    again = sampling.sample_levels(priors, labels=labels, seed=7)
    other = sampling.sample_levels(priors, labels=labels, seed=8)
    for level in SHAPES:
        np.testing.assert_array_equal(again[level].numpy(), codes[level].numpy())
    assert any(not np.array_equal(other[level].numpy(), codes[level].numpy()) for level in SHAPES)


def test_each_lower_prior_is_given_the_level_directly_above(priors):
    labels = np.array([1, 0], np.int32)
    codes = sampling.sample_levels(priors, labels=labels, seed=3)
    above = None
    for k, level in enumerate(SHAPES):
        expected = priors[level].sample(labels=labels, condition=above,
                                        seed=3 + LEVEL_SEED_STRIDE * k)
        np.testing.assert_array_equal(codes[level].numpy(), expected.numpy())
        above = codes[level]
    # The bottom codes do depend on the middle map they are given.
    other_middle = (codes["middle"] + 1) % SHAPES["middle"][1]
    moved = priors["bottom"].sample(labels=labels, condition=other_middle,
                                    seed=3 + 2 * LEVEL_SEED_STRIDE)
    assert not np.array_equal(moved.numpy(), codes["bottom"].numpy())


def test_graph_sampler_gives_the_same_codes(priors):
    labels = np.array([2, 1], np.int32)
    eager = sampling.sample_levels(priors, labels=labels, seed=11, temperature=0.7)
    run = tf.function(sampling.levels_sampler(priors, 2))
    graph = run(tf.constant(labels), tf.constant(0.7), tf.constant(11, tf.int64))
    for level in SHAPES:
        np.testing.assert_array_equal(graph[level].numpy(), eager[level].numpy())


def test_one_and_two_levels_match_the_per_level_sampler():
    """One chain function for any depth: 1 and 2 levels are what sampling each prior gives."""
    top, bottom = (chain(num_classes=None)[level] for level in ("top", "middle"))
    one = sampling.sample_levels({"top": top}, num_samples=3, seed=5)
    np.testing.assert_array_equal(one["top"].numpy(), top.sample(3, seed=5).numpy())
    two = sampling.sample_levels({"top": top, "bottom": bottom}, num_samples=3, seed=5)
    np.testing.assert_array_equal(two["top"].numpy(), one["top"].numpy())
    expected = bottom.sample(condition=one["top"], seed=5 + LEVEL_SEED_STRIDE)
    np.testing.assert_array_equal(two["bottom"].numpy(), expected.numpy())
    # The CLI's sampler (training/sample.py) draws the same two levels.
    from tfvqvae.training.sample import sample_codes

    cli = sample_codes({"top": top, "bottom": bottom}, 3, seed=5)
    for level in ("top", "bottom"):
        np.testing.assert_array_equal(cli[level].numpy(), two[level].numpy())


def test_sampled_codes_decode_with_a_three_level_model(priors):
    import tfvqvae

    model = HierarchicalVQVAE(
        num_levels=3, image_channels=1, hidden_channels=8, residual_channels=4,
        num_residual_layers=1,
        quantizers=[tfvqvae.VectorQuantizerEMA(k, 3, kmeans_init=False, restart_unused_after=None) for _, k in SHAPES.values()])
    assert model.code_shapes((32, 32)) == {level: s for level, (s, _) in SHAPES.items()}
    codes = sampling.sample_levels(priors, labels=np.array([0], np.int32), seed=0)
    images = model.decode_levels(codes)
    assert images.shape == (1, 32, 32, 1)
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(images)))


def test_broken_chains_are_refused(priors):
    with pytest.raises(ValueError, match="at least one prior"):
        sampling.sample_levels({}, num_samples=1)
    with pytest.raises(ValueError, match="top prior .*'middle'.* must not be conditioned"):
        sampling.sample_levels({"middle": priors["middle"], "bottom": priors["bottom"]},
                               labels=np.array([0], np.int32))
    # The bottom prior reads the middle level: right after the top it is refused.
    with pytest.raises(ValueError, match=r"'bottom' prior must be conditioned on the level "
                                         r"directly above \('top'"):
        sampling.levels_sampler({"top": priors["top"], "bottom": priors["bottom"]}, 1)
    unlabelled = chain(num_classes=None)["top"]
    with pytest.raises(ValueError, match="different numbers of classes"):
        sampling.check_chain([chain(num_classes=2)["top"], PixelCNNPrior(
            6, (4, 4), hidden_channels=8, num_blocks=1, kernel_size=3, num_classes=3,
            condition_num_embeddings=5, condition_shape=(2, 2))])
    assert sampling.check_chain([unlabelled])[0] == (0, unlabelled)


def test_given_top_levels_are_kept_and_the_rest_completed(priors):
    """`given`: the top levels are an image's own codes; the levels below are drawn
    from their priors given them, with the seeds they would have in a full draw."""
    labels = np.array([2, 1], np.int32)
    rng = np.random.default_rng(0)
    top = rng.integers(0, SHAPES["top"][1], (2, *SHAPES["top"][0])).astype(np.int32)
    codes = sampling.sample_levels(priors, labels=labels, seed=4, given={"top": top})
    np.testing.assert_array_equal(codes["top"].numpy(), top)
    middle = priors["middle"].sample(labels=labels, condition=top, seed=4 + LEVEL_SEED_STRIDE)
    np.testing.assert_array_equal(codes["middle"].numpy(), middle.numpy())
    bottom = priors["bottom"].sample(labels=labels, condition=middle,
                                     seed=4 + 2 * LEVEL_SEED_STRIDE)
    np.testing.assert_array_equal(codes["bottom"].numpy(), bottom.numpy())
    # Every level given: nothing is drawn.
    every = sampling.sample_levels(priors, labels=labels, given=dict(codes))
    for level in SHAPES:
        np.testing.assert_array_equal(every[level].numpy(), codes[level].numpy())
    with pytest.raises(ValueError, match=r"top levels of the chain .* Received: given levels "
                                         r"\['middle'\]"):
        sampling.sample_levels(priors, labels=labels, given={"middle": middle})
