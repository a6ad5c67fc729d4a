"""A small VQ-VAE-2 with random priors, and real images, for the codec tests."""

import keras
import numpy as np

import tfvqvae
from tests.models.prior_helpers import randomise
from tfvqvae import PixelCNNPrior
from tfvqvae.codec import ImageCodec
from tfvqvae.data import load_dataset

TOP_K, BOTTOM_K = 16, 24
NUM_CLASSES = 10
IMAGE_SIZE = 32  # MNIST's 28x28 images are resized to it, as a run with image_size 32 does


def tiny_model(seed=0, channels=1):
    keras.utils.set_random_seed(seed)
    model = tfvqvae.VQVAE2(
        image_channels=channels, hidden_channels=16, residual_channels=8, num_residual_layers=1,
        top_quantizer=tfvqvae.VectorQuantizerEMA(TOP_K, 4, kmeans_init=False,
                                                 restart_unused_after=None),
        bottom_quantizer=tfvqvae.VectorQuantizerEMA(BOTTOM_K, 4, kmeans_init=False,
                                                    restart_unused_after=None),
    )
    model(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, channels), np.float32))
    return model


def tiny_priors(seed=0, num_classes=NUM_CLASSES, attention_every=None):
    options = dict(hidden_channels=8, num_blocks=2, kernel_size=3, num_classes=num_classes,
                   attention_every=attention_every)
    top = randomise(PixelCNNPrior(TOP_K, (4, 4), **options), seed=seed)
    bottom = randomise(PixelCNNPrior(BOTTOM_K, (8, 8), condition_num_embeddings=TOP_K,
                                     condition_shape=(4, 4), condition_channels=4, **options),
                       seed=seed + 1)
    return {"top": top, "bottom": bottom}


def tiny_codec(seed=0, **prior_options):
    return ImageCodec(tiny_model(seed), tiny_priors(seed, **prior_options))


def mnist(shared_data, count):
    """uint8 (count, 28, 28, 1) MNIST test images and their labels."""
    source = load_dataset("mnist", "test", data_dir=shared_data)
    images = source.images_at(np.arange(count))
    return np.round(images * 255).astype(np.uint8), np.asarray(source.labels[:count], np.int64)
