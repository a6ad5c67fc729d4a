"""The offline default dataset: scikit-learn's 8 x 8 handwritten digits.

The 1797 UCI optical-recognition digits ship inside the scikit-learn wheel, so
they load without a network. Pixel values 0..16 are scaled to ``float32`` in
[0, 1].
"""

from __future__ import annotations

import numpy as np

from tfvqvae.data.image_dataset import ImageDataset
from tfvqvae.validation import one_of

__all__ = ["load_digits", "DIGITS_NUM_TRAIN", "DIGITS_SPLIT_SEED"]

#: Examples in the "train" split; the remaining 297 of 1797 are "test".
DIGITS_NUM_TRAIN = 1500
#: Seed of the fixed permutation that defines the split.
DIGITS_SPLIT_SEED = 0


def load_digits(split: str = "train") -> ImageDataset:
    """Loads scikit-learn's 8 x 8 digits with a fixed train/test split.

    The split is deterministic: ``np.random.default_rng(0).permutation(1797)``;
    its first 1500 indices are ``"train"``, the last 297 ``"test"``.

    Args:
        split: ``"train"`` or ``"test"``.

    Returns:
        ``float32`` images in [0, 1] (value / 16) of shape ``(N, 8, 8, 1)``,
        ``int64`` labels 0..9, ``num_classes=10``, name ``"digits"``.

    Raises:
        ValueError: If ``split`` is not ``"train"`` or ``"test"``.
    """
    one_of("split", split, ("train", "test"))
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[..., np.newaxis]
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(images))
    index = order[:DIGITS_NUM_TRAIN] if split == "train" else order[DIGITS_NUM_TRAIN:]
    return ImageDataset(images=images[index], labels=labels[index], name="digits", num_classes=10)
