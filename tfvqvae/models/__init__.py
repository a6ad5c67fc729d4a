"""Keras models of tfvqvae."""

from tfvqvae.models.networks import build_decoder
from tfvqvae.models.networks import build_encoder
from tfvqvae.models.vqvae import VQVAE

__all__ = ["VQVAE", "build_decoder", "build_encoder"]
