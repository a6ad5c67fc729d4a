"""tfvqvae: VQ-VAE and VQ-VAE-2 for TensorFlow / Keras 3.

Public names: the quantiser layers `VectorQuantizer` and `VectorQuantizerEMA`,
the `VQVAE`, `VQVAE2` and `HierarchicalVQVAE` (any number of levels) models, strategy and precision set-up in
`tfvqvae.distribute`, the `PixelCNNPrior` and its layers
`MaskedConv2D` and `GatedBlock`, the metrics in `tfvqvae.metrics` and the
datasets in `tfvqvae.data`. The command-line programs live in
`tfvqvae.training` and the exporters in `tfvqvae.export`; the library never
imports them.
"""

from pathlib import Path as _Path

# setup.py installs the top-level folders training/ and export/ as the
# subpackages tfvqvae.training and tfvqvae.export. Run from a source checkout
# (tests, `pip install -e .`), the same names must resolve to those folders,
# so the checkout's root joins this package's search path. An installed copy
# has no setup.py beside it and is left alone.
_root = _Path(__file__).resolve().parent.parent
if (_root / "setup.py").is_file() and (_root / "training" / "__init__.py").is_file():
    __path__.append(str(_root))
del _Path, _root

from tfvqvae import distribute
from tfvqvae.layers import GatedBlock
from tfvqvae.layers import MaskedConv2D
from tfvqvae.layers import QuantizerOutput
from tfvqvae.layers import ResidualStack
from tfvqvae.layers import VectorQuantizer
from tfvqvae.layers import VectorQuantizerEMA
from tfvqvae.metrics import CodebookUsage
from tfvqvae.models import VQVAE
from tfvqvae.models import HierarchicalVQVAE
from tfvqvae.models import PixelCNNPrior
from tfvqvae.models import VQVAE2

__version__ = "0.1.0"

__all__ = [
    "CodebookUsage",
    "GatedBlock",
    "HierarchicalVQVAE",
    "MaskedConv2D",
    "PixelCNNPrior",
    "QuantizerOutput",
    "ResidualStack",
    "VQVAE",
    "VQVAE2",
    "VectorQuantizer",
    "VectorQuantizerEMA",
    "distribute",
]
