"""An export checks each prior against its level and the prior chain: the top prior
takes no condition map, every lower prior the level directly above it."""

import pytest

import tfvqvae
from tfvqvae.export.run_folder import _check_prior

IMAGE_SHAPE = (32, 32, 1)  # three levels: top 2x2, middle 4x4, bottom 8x8


@pytest.fixture(scope="module")
def model():
    quantizers = [tfvqvae.VectorQuantizerEMA(8 + k, 4, seed=k, kmeans_init=False, restart_unused_after=None) for k in range(3)]
    return tfvqvae.HierarchicalVQVAE(num_levels=3, image_channels=1, hidden_channels=8,
                                     residual_channels=4, num_residual_layers=1,
                                     quantizers=quantizers)


def prior(num_embeddings, shape, condition=None):
    options = {} if condition is None else dict(condition_num_embeddings=condition[0],
                                                condition_shape=condition[1])
    return tfvqvae.PixelCNNPrior(num_embeddings, shape, hidden_channels=4, num_blocks=1,
                                 kernel_size=3, **options)


def test_the_chain_is_accepted(model):
    _check_prior(prior(8, (2, 2)), "top", model, IMAGE_SHAPE, "p")
    _check_prior(prior(9, (4, 4), condition=(8, (2, 2))), "middle", model, IMAGE_SHAPE, "p")
    _check_prior(prior(10, (8, 8), condition=(9, (4, 4))), "bottom", model, IMAGE_SHAPE, "p")
    _check_prior(prior(10, (8, 8)), "bottom", model, IMAGE_SHAPE, "p")  # unconditioned: allowed


def test_a_bottom_prior_given_the_top_is_refused(model):
    with pytest.raises(ValueError, match=r"bottom prior at p is conditioned on 8 codes on a "
                       r"\(2, 2\) map, but the level above, middle, has 9 codes on a "
                       r"\(4, 4\) map"):
        _check_prior(prior(10, (8, 8), condition=(8, (2, 2))), "bottom", model, IMAGE_SHAPE, "p")


def test_a_conditioned_top_prior_is_refused(model):
    with pytest.raises(ValueError, match="the top level takes no condition map"):
        _check_prior(prior(8, (2, 2), condition=(9, (1, 1))), "top", model, IMAGE_SHAPE, "p")


def test_a_prior_of_the_wrong_size_is_refused(model):
    with pytest.raises(ValueError, match=r"middle prior at p models 8 codes on a \(4, 4\) map"):
        _check_prior(prior(8, (4, 4), condition=(8, (2, 2))), "middle", model, IMAGE_SHAPE, "p")
