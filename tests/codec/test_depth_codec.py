"""ImageCodec on code maps with a depth axis: a VQ-VAE-2 with a residual top and a grouped bottom.

Right values: the encoder's own codes (the round trip), and the NumPy
log-softmax of the priors' full forward pass over every code of every
position (the rate the payload must match).
"""

import math

import keras
import numpy as np
import pytest

import tfvqvae
from tests.codec.codec_helpers import mnist
from tests.models.prior_helpers import randomise
from tfvqvae import PixelCNNPrior
from tfvqvae.codec import ImageCodec
from tfvqvae.codec.file_format import HEADER_BYTES

TOP_K, BOTTOM_K, Q = 8, 6, 2


@pytest.fixture(scope="module")
def codec():
    keras.utils.set_random_seed(0)
    model = tfvqvae.VQVAE2(
        image_channels=1, hidden_channels=16, residual_channels=8, num_residual_layers=1,
        top_quantizer=tfvqvae.ResidualVectorQuantizer(Q, TOP_K, 4, kmeans_init=False,
                                                      restart_unused_after=None),
        bottom_quantizer=tfvqvae.GroupedVectorQuantizer(Q, BOTTOM_K, 4, kmeans_init=False,
                                                        restart_unused_after=None),
    )
    model(np.zeros((1, 32, 32, 1), np.float32))
    options = dict(hidden_channels=8, num_blocks=2, kernel_size=3)
    priors = {
        "top": randomise(PixelCNNPrior(TOP_K, (4, 4, Q), **options), seed=1),
        "bottom": randomise(PixelCNNPrior(BOTTOM_K, (8, 8, Q), condition_num_embeddings=TOP_K,
                                          condition_shape=(4, 4, Q), condition_channels=4,
                                          **options), seed=2),
    }
    return ImageCodec(model, priors)


def test_depth_codes_round_trip_and_cost_their_rate(codec, shared_data):
    images, _ = mnist(shared_data, 6)
    codes = codec.encode_codes(images)
    assert codes["top"].shape == (6, 4, 4, Q) and codes["bottom"].shape == (6, 8, 8, Q)
    assert len(np.unique(codes["bottom"])) >= 3  # the codes are not all one
    files = codec.compress(images)
    decoded, labels = codec.decode_codes(files)
    assert labels is None
    for level in ("top", "bottom"):
        np.testing.assert_array_equal(decoded[level], codes[level])

    expected = np.zeros(6)
    for level, condition in (("top", None), ("bottom", codes["top"])):
        inputs = {"codes": codes[level]}
        if condition is not None:
            inputs["condition"] = condition
        logits = codec.priors[level](inputs).numpy().astype(np.float64)  # (6, h, w, Q, K)
        log_p = logits - logits.max(-1, keepdims=True)
        log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
        picked = np.take_along_axis(log_p, codes[level][..., None], -1)[..., 0]
        expected += -picked.sum((1, 2, 3)) / math.log(2)
    rate = codec.rate_bits(images)
    np.testing.assert_allclose(rate, expected, rtol=1e-5)
    payload = np.array([len(f) - HEADER_BYTES for f in files])
    assert np.all(payload <= rate / 8 * 1.01 + 4) and payload.sum() >= rate.sum() / 8 * 0.99
    # Alone or in a batch: the same file.
    assert codec.compress(images[3:4])[0] == files[3]
