"""Training configurations: `TrainConfig`, `PriorConfig` and the presets.

They live in the TensorFlow-free ``tfvqvae_cli.config`` (source:
training/launcher/config.py), which the ``tfvqvae`` command builds its options
from before importing TensorFlow; this module is their library name.
"""

from tfvqvae_cli.config import PRESETS
from tfvqvae_cli.config import PRIOR_PRESETS
from tfvqvae_cli.config import PriorConfig
from tfvqvae_cli.config import TrainConfig
from tfvqvae_cli.config import check_compute_options

__all__ = ["PRESETS", "PRIOR_PRESETS", "PriorConfig", "TrainConfig", "check_compute_options"]
