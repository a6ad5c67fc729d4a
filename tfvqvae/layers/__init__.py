"""Keras layers of tfvqvae: quantisers and the convolutional building blocks."""

from tfvqvae.layers.causal_attention import CausalSelfAttention
from tfvqvae.layers.gated_block import GatedBlock
from tfvqvae.layers.masked_conv import MaskedConv2D
from tfvqvae.layers.residual_stack import ResidualStack
from tfvqvae.layers.vector_quantizer import QuantizerOutput
from tfvqvae.layers.vector_quantizer import VectorQuantizer
from tfvqvae.layers.vector_quantizer_ema import VectorQuantizerEMA

__all__ = ["CausalSelfAttention", "GatedBlock", "MaskedConv2D", "QuantizerOutput", "ResidualStack", "VectorQuantizer", "VectorQuantizerEMA"]
