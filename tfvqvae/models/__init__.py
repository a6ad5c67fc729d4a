"""Keras models of tfvqvae."""

from tfvqvae.models.networks import build_decoder
from tfvqvae.models.networks import build_encoder
from tfvqvae.models.pixelcnn_prior import PixelCNNPrior
from tfvqvae.models.vqvae import VQVAE
from tfvqvae.models.vqvae2 import VQVAE2

__all__ = ["PixelCNNPrior", "VQVAE", "VQVAE2", "build_decoder", "build_encoder"]
