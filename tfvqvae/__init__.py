"""tfvqvae: VQ-VAE and VQ-VAE-2 for TensorFlow / Keras 3.

Public names: the quantiser layers `VectorQuantizer`, `VectorQuantizerEMA`,
`FiniteScalarQuantizer` (FSQ, Mentzer et al. 2023) and `LookupFreeQuantizer`
(LFQ, MAGVIT-v2), the `ResidualVectorQuantizer` (RVQ, SoundStream: codes of
depth Q, one per stage) and the `GroupedVectorQuantizer` (multi-head VQ: codes
of depth H, one per head), any of which a model takes as its quantiser (priors
over codes with a depth axis: not yet),
the `VQVAE`, `VQVAE2` and `HierarchicalVQVAE` (any number of levels) models, strategy and precision set-up in
`tfvqvae.distribute`, the `PixelCNNPrior` and its layers
`MaskedConv2D`, `GatedBlock` and `CausalSelfAttention`, the metrics in `tfvqvae.metrics` and the
datasets in `tfvqvae.data`, the image codec in `tfvqvae.codec`
(`ImageCodec`: files whose size is the priors' rate). The command-line programs live in
`tfvqvae.training` and the exporters in `tfvqvae.export`; the library never
imports them.
"""

from tfvqvae import distribute
from tfvqvae.layers import CausalSelfAttention
from tfvqvae.layers import FiniteScalarQuantizer
from tfvqvae.layers import GatedBlock
from tfvqvae.layers import GroupedVectorQuantizer
from tfvqvae.layers import LookupFreeQuantizer
from tfvqvae.layers import MaskedConv2D
from tfvqvae.layers import QuantizerOutput
from tfvqvae.layers import ResidualStack
from tfvqvae.layers import ResidualVectorQuantizer
from tfvqvae.layers import VectorQuantizer
from tfvqvae.layers import VectorQuantizerEMA
from tfvqvae.metrics import CodebookUsage
from tfvqvae.models import VQVAE
from tfvqvae.models import HierarchicalVQVAE
from tfvqvae.models import PixelCNNPrior
from tfvqvae.models import VQVAE2

__version__ = "0.1.0"

__all__ = [
    "CausalSelfAttention",
    "CodebookUsage",
    "FiniteScalarQuantizer",
    "GatedBlock",
    "GroupedVectorQuantizer",
    "HierarchicalVQVAE",
    "LookupFreeQuantizer",
    "MaskedConv2D",
    "PixelCNNPrior",
    "QuantizerOutput",
    "ResidualStack",
    "ResidualVectorQuantizer",
    "VQVAE",
    "VQVAE2",
    "VectorQuantizer",
    "VectorQuantizerEMA",
    "distribute",
]
