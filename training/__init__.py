"""Training programs of tfvqvae (installed as ``tfvqvae.training``).

Library functions that tests and scripts call (`train`, `TrainConfig`,
`EpochCheckpoint`, image grids) under thin command-line ``main()``s.
"""

from tfvqvae.training.checkpoints import EpochCheckpoint
from tfvqvae.training.checkpoints import latest_checkpoint
from tfvqvae.training.config import PRESETS
from tfvqvae.training.config import TrainConfig
from tfvqvae.training.train import build_model
from tfvqvae.training.train import train

__all__ = ["EpochCheckpoint", "PRESETS", "TrainConfig", "build_model", "latest_checkpoint", "train"]
