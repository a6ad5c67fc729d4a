"""One entry point, :func:`load_dataset`, that picks a loader by name."""

from __future__ import annotations

import logging
from pathlib import Path

from tfvqvae.data.digits import load_digits
from tfvqvae.data.files import (
    SPLITS,
    load_cifar10_folder,
    load_idx_folder,
    load_image_folder,
    load_npz,
)
from tfvqvae.data.image_dataset import ImageDataset
from tfvqvae.data.tfds_loader import load_tfds

__all__ = ["DEFAULT_DATASET", "load_dataset"]

logger = logging.getLogger(__name__)

#: Loads offline from the scikit-learn wheel; used when no dataset is named.
DEFAULT_DATASET = "digits"

_IDX_NAMES = ("mnist", "fashion_mnist")
_FOLDER_PREFIX = "folder:"
_NPZ_PREFIX = "npz:"


def _check_split(split) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} for local files; received {split!r}")
    return split


def _local_folder(data_dir, subfolders, pattern: str) -> Path | None:
    """Returns ``data_dir`` or ``data_dir/<sub>`` if it holds files matching ``pattern``."""
    if data_dir is None:
        return None
    root = Path(data_dir)
    for folder in (root, *(root / sub for sub in subfolders)):
        if folder.is_dir() and any(folder.glob(pattern)):
            return folder
    return None


def _strip_path(name: str, prefix: str) -> str:
    path = name[len(prefix) :].strip()
    if not path:
        raise ValueError(f"dataset name {name!r} needs a path after {prefix!r}")
    return path


def _load_folder(path: str, split: str) -> ImageDataset:
    root = Path(path)
    if (root / split).is_dir():
        return load_image_folder(root / split)
    if split == "train":
        return load_image_folder(root)
    if not root.is_dir():
        raise FileNotFoundError(f"directory not found: {root}")
    raise ValueError(
        f"image folder {root} has no {split!r} sub-folder; split {split!r} needs "
        f"{root / split} (the folder itself counts as the 'train' split)"
    )


def load_dataset(
    name: str, split: str = "train", data_dir=None, *, download: bool = True
) -> ImageDataset:
    """Loads an image dataset by name.

    Names:
        * ``"digits"`` (:data:`DEFAULT_DATASET`): scikit-learn's 8 x 8 digits,
          offline, ``float32`` in [0, 1].
        * ``"mnist"``, ``"fashion_mnist"``: IDX files from ``data_dir`` (or
          ``data_dir/<name>``) when present, else TFDS.
        * ``"cifar10"``: ``*.bin`` batches from ``data_dir`` (or
          ``data_dir/cifar10``, ``data_dir/cifar-10-batches-bin``) when
          present, else TFDS.
        * ``"folder:PATH"``: :func:`load_image_folder`; ``PATH/<split>`` is
          used when it exists, otherwise ``PATH`` itself is the train split.
        * ``"npz:PATH"``: :func:`load_npz` with ``split``.
        * any other name: :func:`load_tfds` (TFDS names, e.g. ``"svhn_cropped"``).

    Args:
        name: Dataset name as above (case-insensitive except paths).
        split: ``"train"`` or ``"test"`` for local data; TFDS accepts its own
            split strings (e.g. ``"train[:10%]"``).
        data_dir: Folder with local files, or the TFDS data directory.
        download: Passed to :func:`load_tfds` (``False`` fails at once offline
            instead of retrying the download).

    Returns:
        An :class:`ImageDataset`; images ``uint8`` in [0, 255] or ``float32``
        in [0, 1], both yielded as ``float32`` in [0, 1] by
        :meth:`ImageDataset.to_tf_dataset`.

    Raises:
        ValueError: On an empty name, a bad split for local data, or an
            unknown TFDS name.
        FileNotFoundError: If a named local path or file is missing.
    """
    if name is None or not isinstance(name, str) or not name.strip():
        raise ValueError(
            f"dataset name must be a non-empty string (e.g. {DEFAULT_DATASET!r}); received {name!r}"
        )
    name = name.strip()
    key = name.lower()

    if key.startswith(_FOLDER_PREFIX):
        return _load_folder(_strip_path(name, _FOLDER_PREFIX), _check_split(split))
    if key.startswith(_NPZ_PREFIX):
        return load_npz(_strip_path(name, _NPZ_PREFIX), split=_check_split(split))
    if key == DEFAULT_DATASET:
        return load_digits(_check_split(split))
    if key in _IDX_NAMES:
        folder = _local_folder(data_dir, (key,), "*idx[13]-ubyte*")
        if folder is not None:
            logger.info("loading %s %s from IDX files in %s", key, split, folder)
            return load_idx_folder(folder, _check_split(split), name=key)
        return load_tfds(key, split=split, data_dir=data_dir, download=download)
    if key == "cifar10":
        folder = _local_folder(data_dir, ("cifar10", "cifar-10-batches-bin"), "*.bin")
        if folder is not None:
            logger.info("loading cifar10 %s from binary batches in %s", split, folder)
            return load_cifar10_folder(folder, _check_split(split))
        return load_tfds(key, split=split, data_dir=data_dir, download=download)
    return load_tfds(name, split=split, data_dir=data_dir, download=download)
