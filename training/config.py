"""Training configurations: one dataclass and named presets (plain dicts)."""

import dataclasses
import json
from pathlib import Path

from tfvqvae.data import DEFAULT_DATASET
from tfvqvae.distribute import policy_name


def check_compute_options(mixed_precision, jit_compile):
    """Raises ValueError unless ``mixed_precision`` is None/"float16"/"bfloat16"
    and ``jit_compile`` a bool (the options `TrainConfig` and `PriorConfig` share)."""
    policy_name(mixed_precision)
    if not isinstance(jit_compile, bool):
        raise ValueError(
            f"jit_compile must be True or False. Received: jit_compile={jit_compile!r}"
        )


@dataclasses.dataclass
class TrainConfig:
    """Everything ``tfvqvae train`` needs; saved as ``OUT/config.json``.

    Model sizes follow the VQ-VAE paper's CIFAR-10 setting (Sonnet's
    notebook) unless a preset says otherwise. ``batch_size`` is the global
    batch: with R replicas each computes on ``batch_size / R`` images per step
    and the step equals one on the whole batch. ``mixed_precision``
    ("float16", "bfloat16" or None) picks Keras' ``mixed_*`` policy; the
    quantisers keep float32. ``jit_compile`` compiles the train step with XLA. ``model`` is "vqvae" (one code
    level at 1 / 2**num_downsamples) or "vqvae2" (top codes at 1/8, bottom
    codes at 1/4, both quantisers built from the same quantiser settings).
    """

    out: str = "runs/vqvae"
    dataset: str = DEFAULT_DATASET
    data_dir: str | None = None
    image_size: int | None = None
    max_train_examples: int | None = None
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 3e-4
    model: str = "vqvae"
    quantizer: str = "ema"
    num_embeddings: int = 512
    embedding_dim: int = 64
    commitment_cost: float = 0.25
    decay: float = 0.99
    kmeans_init: bool = False
    restart_unused_after: int | None = None
    hidden_channels: int = 128
    residual_channels: int = 32
    num_residual_layers: int = 2
    num_downsamples: int = 2
    normalize_mse: bool = True
    seed: int = 0
    grid_pairs: int = 16
    mixed_precision: str | None = None
    jit_compile: bool = False

    def __post_init__(self):
        check_compute_options(self.mixed_precision, self.jit_compile)
        if self.model not in ("vqvae", "vqvae2"):
            raise ValueError(
                f"model must be 'vqvae' or 'vqvae2'. Received: model={self.model!r}"
            )
        if self.quantizer not in ("ema", "vq"):
            raise ValueError(
                f"quantizer must be 'ema' or 'vq'. Received: quantizer={self.quantizer!r}"
            )
        for name in ("epochs", "batch_size", "num_embeddings", "embedding_dim",
                     "hidden_channels", "residual_channels", "num_residual_layers",
                     "num_downsamples", "grid_pairs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"{name} must be a positive integer. Received: {name}={value!r}"
                )
        if self.model == "vqvae2" and self.num_downsamples != 2:
            raise ValueError(
                "model='vqvae2' fixes num_downsamples at 2 (bottom codes at 1/4 of "
                "the image, top codes at 1/8). "
                f"Received: num_downsamples={self.num_downsamples!r}"
            )
        if not self.learning_rate > 0:
            raise ValueError(
                f"learning_rate must be positive. Received: learning_rate={self.learning_rate!r}"
            )

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown configuration keys: {unknown}")
        return cls(**values)

    @classmethod
    def load(cls, path):
        return cls.from_dict(json.loads(Path(path).read_text()))


# The README's quick start: a VQ-VAE-2 small enough to train in about a minute
# on two CPU cores, on a dataset that ships inside scikit-learn (no network).
PRESETS = {
    "quickstart": {
        "model": "vqvae2",
        "dataset": "digits",
        "image_size": 16,
        "epochs": 25,
        "batch_size": 32,
        "learning_rate": 2e-3,
        "num_embeddings": 64,
        "embedding_dim": 16,
        "hidden_channels": 64,
        "residual_channels": 32,
        "num_downsamples": 2,
        "kmeans_init": True,
        "restart_unused_after": 20,
    },
    "mnist": {
        "dataset": "mnist",
        "epochs": 5,
        "batch_size": 128,
        "learning_rate": 1e-3,
        "num_embeddings": 128,
        "embedding_dim": 32,
        "hidden_channels": 64,
        "residual_channels": 32,
        "num_downsamples": 2,
        "kmeans_init": True,
        "restart_unused_after": 20,
    },
    "cifar10": {
        "dataset": "cifar10",
        "epochs": 20,
        "batch_size": 32,
        "learning_rate": 3e-4,
    },
}
