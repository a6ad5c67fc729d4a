"""Keras models of tfvqvae."""

from tfvqvae.models.hierarchical import HierarchicalVQVAE
from tfvqvae.models.hierarchical import level_names
from tfvqvae.models.networks import build_decoder
from tfvqvae.models.networks import build_encoder
from tfvqvae.models.pixelcnn_prior import PixelCNNPrior
from tfvqvae.models.sampling import sample_levels
from tfvqvae.models.vqvae import VQVAE
from tfvqvae.models.vqvae2 import VQVAE2

__all__ = [
    "HierarchicalVQVAE",
    "PixelCNNPrior",
    "VQVAE",
    "VQVAE2",
    "build_decoder",
    "build_encoder",
    "level_names",
    "sample_levels",
]
