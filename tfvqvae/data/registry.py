"""One entry point, :func:`load_dataset`, that picks a loader by name."""

from __future__ import annotations

import logging
from pathlib import Path

from tfvqvae.data.digits import load_digits
from tfvqvae.data.files import (
    SPLITS,
    load_cifar10_folder,
    load_idx_folder,
    load_npz,
)
from tfvqvae.data.image_folder import open_image_folder
from tfvqvae.data.source import ImageSource
from tfvqvae.data.tfds_loader import open_tfds
from tfvqvae.data.transform import check_options, transform_dataset

__all__ = ["DEFAULT_DATASET", "load_dataset"]

logger = logging.getLogger(__name__)

#: Loads offline from the scikit-learn wheel; used when no dataset is named.
DEFAULT_DATASET = "digits"

_IDX_NAMES = ("mnist", "fashion_mnist")
_IDX_FILES = (
    "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz"
)
_CIFAR_FILES = "data_batch_1.bin ... data_batch_5.bin and test_batch.bin (the binary version)"
_FOLDER_PREFIX = "folder:"
_NPZ_PREFIX = "npz:"
_TFRECORD_PREFIX = "tfrecord:"


def _check_split(split) -> str:
    """Local files come in the splits `SPLITS` only (TFDS names more)."""
    if isinstance(split, str) and split in SPLITS:
        return split
    raise ValueError(
        f"`split` must be one of {SPLITS} for local files. Received: split={split!r}"
    )


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


def _load_folder(path: str, split: str, **options) -> ImageSource:
    root = Path(path)
    if (root / split).is_dir():
        return open_image_folder(root / split, **options)
    if split == "train":
        return open_image_folder(root, **options)
    if not root.is_dir():
        raise FileNotFoundError(f"directory not found: {root}")
    raise ValueError(
        f"image folder {root} has no {split!r} sub-folder; split {split!r} needs "
        f"{root / split} (the folder itself counts as the 'train' split)"
    )


def _tfds_fallback(key, kind, files, subfolders, split, data_dir, download, options):
    """``open_tfds`` for a dataset also readable from local files, with a hint on failure."""
    try:
        return open_tfds(key, split=split, data_dir=data_dir, download=download, **options)
    except FileNotFoundError as err:
        where = f"in data_dir={data_dir}" if data_dir else "(no data_dir given; CLI: --data-dir)"
        allow = (
            "connect to the network so that TFDS can download it"
            if download
            else "pass download=True, with a network, to let TFDS download it"
        )
        raise FileNotFoundError(
            f"{key}: no {kind} found {where}; put {files} in DIR (or "
            f"{' or '.join(f'DIR/{sub}' for sub in subfolders)}) and pass data_dir=DIR "
            f"(CLI: --data-dir DIR), or {allow}. TFDS said: {err}"
        ) from err


def load_dataset(
    name: str,
    split: str = "train",
    data_dir=None,
    *,
    image_size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    crop: str = "none",
    download: bool = True,
    skip_corrupt: bool = False,
) -> ImageSource:
    """Opens an image dataset by name: small ones in memory, the others streamed.

    Names:
        * ``"digits"`` (:data:`DEFAULT_DATASET`): scikit-learn's 8 x 8 digits,
          offline, ``float32`` in [0, 1].
        * ``"mnist"``, ``"fashion_mnist"``: IDX files from ``data_dir`` (or
          ``data_dir/<name>``) when present, else TFDS.
        * ``"cifar10"``: ``*.bin`` batches from ``data_dir`` (or
          ``data_dir/cifar10``, ``data_dir/cifar-10-batches-bin``) when
          present, else TFDS.
        * ``"folder:PATH"``: an image folder of any size, streamed
          (:func:`~tfvqvae.data.open_image_folder`); ``PATH/<split>`` is
          used when it exists, otherwise ``PATH`` itself is the train split.
        * ``"tfrecord:PATH"``: TFRecord shards of encoded images written by
          ``tfvqvae prepare`` (PATH the folder holding ``dataset.json``) or
          a glob pattern of shards in that layout, streamed
          (:func:`~tfvqvae.data.open_image_shards`).
        * ``"npz:PATH"``: :func:`load_npz` with ``split``.
        * any other name: a TFDS dataset streamed as ``tf.data``
          (:func:`~tfvqvae.data.open_tfds`; e.g. ``"imagenet2012"``).

    Args:
        name: Dataset name as above (case-insensitive except paths).
        split: ``"train"`` or ``"test"`` for local data; TFDS accepts its own
            split strings (e.g. ``"train[:10%]"``).
        data_dir: Folder with local files, or the TFDS data directory.
        image_size: ``None`` (keep), an int (square) or ``(height, width)``
            in pixels: every image is resized to it once, at load time
            (bilinear ``tf.image.resize``, antialiased when shrinking).
            Needed for an image folder whose files differ in size.
        channels: ``None`` (keep; an image folder mixing modes becomes RGB
            when any file has colour, else grey), ``1`` (grey: ITU-R 601-2
            luminance, as PIL's ``convert("L")``) or ``3`` (RGB; grey
            replicated). Alpha is always dropped, never composited.
        crop: ``"none"`` resizes the whole image (aspect ratio not kept);
            ``"center"`` cuts the largest centred window of the
            ``image_size`` aspect ratio, then resizes; ``"random"`` (streamed
            sources only) cuts a window of that size at a random place in
            training batches (seeded by (seed, epoch, example)) and the
            centre elsewhere. ``"center"`` and ``"random"`` need
            ``image_size``.
        download: Whether TFDS may download a dataset that is neither in
            local files nor prepared under ``data_dir``. Even when ``True``
            it downloads only if the download host answers within a few
            seconds (:mod:`tfvqvae.data.tfds_loader`); otherwise, and when
            ``False``, a ``FileNotFoundError`` says which files to put where.
        skip_corrupt: for image folders: skip unreadable files (a warning
            names each) instead of failing.

    Returns:
        An :class:`~tfvqvae.data.ImageSource`: an :class:`ImageDataset` in
        memory for digits, IDX, CIFAR-10 binary and ``.npz``; a streamed
        :class:`~tfvqvae.data.ImageFolder`, :class:`~tfvqvae.data.ImageShards`
        or :class:`~tfvqvae.data.TFDSImages` otherwise. Its
        ``to_tf_dataset`` yields ``float32`` batches in [0, 1] of shape
        ``(B, H, W, C)``.

    Raises:
        ValueError: On an empty name, a bad split for local data, an unknown
            TFDS name, a bad ``image_size`` / ``channels`` / ``crop``, an
            image folder whose files differ in size without ``image_size``
            (the message lists the sizes and example files), an unreadable
            image file or ``.npz`` (naming the file).
        FileNotFoundError: If a named local path or file is missing, or a
            dataset is neither local nor prepared for TFDS and cannot be
            downloaded (offline, or ``download=False``).
    """
    if name is None or not isinstance(name, str) or not name.strip():
        raise ValueError(
            f"dataset name must be a non-empty string (e.g. {DEFAULT_DATASET!r}); received {name!r}"
        )
    name = name.strip()
    key = name.lower()

    random_crop = crop == "random"
    size, channels, crop = check_options(image_size, channels, crop, streamed=True)
    options = {"image_size": size, "channels": channels,
               "crop": "random" if random_crop else crop}

    if key.startswith(_FOLDER_PREFIX):
        return _load_folder(_strip_path(name, _FOLDER_PREFIX), _check_split(split),
                            skip_corrupt=skip_corrupt, **options)
    if key.startswith(_TFRECORD_PREFIX):
        from tfvqvae.data.image_shards import open_image_shards

        return open_image_shards(_strip_path(name, _TFRECORD_PREFIX), split=split, **options)
    if key.startswith(_NPZ_PREFIX):
        dataset = load_npz(_strip_path(name, _NPZ_PREFIX), split=_check_split(split))
    elif key == DEFAULT_DATASET:
        dataset = load_digits(_check_split(split))
    elif key in _IDX_NAMES:
        folder = _local_folder(data_dir, (key,), "*idx[13]-ubyte*")
        if folder is None:
            return _tfds_fallback(
                key, "IDX files", _IDX_FILES, (key,), split, data_dir, download, options
            )
        logger.info("loading %s %s from IDX files in %s", key, split, folder)
        dataset = load_idx_folder(folder, _check_split(split), name=key)
    elif key == "cifar10":
        subfolders = ("cifar10", "cifar-10-batches-bin")
        folder = _local_folder(data_dir, subfolders, "*.bin")
        if folder is None:
            return _tfds_fallback(
                key, "CIFAR-10 .bin batches", _CIFAR_FILES, subfolders, split, data_dir,
                download, options,
            )
        logger.info("loading cifar10 %s from binary batches in %s", split, folder)
        dataset = load_cifar10_folder(folder, _check_split(split))
    else:
        return open_tfds(name, split=split, data_dir=data_dir, download=download, **options)
    if random_crop:
        raise ValueError(
            f"crop='random' (CLI: --crop random) needs a streamed dataset (an image folder, "
            f"TFRecord shards or TFDS): {name!r} is read from local files into memory and "
            "converted once. Use crop='center'. Received: crop='random'"
        )
    return transform_dataset(dataset, **options)
