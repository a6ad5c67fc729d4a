"""Keras layers of tfvqvae: quantisers and the convolutional building blocks.

Quantisers (every one usable as a model's ``quantizer``): `VectorQuantizer`,
`VectorQuantizerEMA`, `FiniteScalarQuantizer` (FSQ) and `LookupFreeQuantizer`
(LFQ); each returns a `QuantizerOutput` from ``quantize_with_losses``.
`ResidualVectorQuantizer` (RVQ, SoundStream) returns one too, with codes of
depth Q, and `GroupedVectorQuantizer` (multi-head VQ) one with codes of depth
H, one per head; the models take them too (codes (B, h, w, Q)).
"""

from tfvqvae.layers.causal_attention import CausalSelfAttention
from tfvqvae.layers.finite_scalar_quantizer import FiniteScalarQuantizer
from tfvqvae.layers.gated_block import GatedBlock
from tfvqvae.layers.grouped_vector_quantizer import GroupedVectorQuantizer
from tfvqvae.layers.lookup_free_quantizer import LookupFreeQuantizer
from tfvqvae.layers.masked_conv import MaskedConv2D
from tfvqvae.layers.residual_stack import ResidualStack
from tfvqvae.layers.residual_vector_quantizer import ResidualVectorQuantizer
from tfvqvae.layers.vector_quantizer import QuantizerOutput
from tfvqvae.layers.vector_quantizer import VectorQuantizer
from tfvqvae.layers.vector_quantizer_ema import VectorQuantizerEMA

__all__ = [
    "CausalSelfAttention",
    "FiniteScalarQuantizer",
    "GatedBlock",
    "GroupedVectorQuantizer",
    "LookupFreeQuantizer",
    "MaskedConv2D",
    "QuantizerOutput",
    "ResidualStack",
    "ResidualVectorQuantizer",
    "VectorQuantizer",
    "VectorQuantizerEMA",
]
