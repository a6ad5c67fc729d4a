"""Load an image dataset from TensorFlow Datasets (TFDS) by name.

``tensorflow_datasets`` is imported inside :func:`load_tfds` only: importing it
is slow and most uses of the package never need it.

Offline note: with ``download=True`` and no prepared copy under ``data_dir``,
TFDS retries the download for minutes before failing; ``download=False`` fails
at once (raised here as ``FileNotFoundError``).
"""

from __future__ import annotations

import logging

import numpy as np

from tfvqvae.data.image_dataset import ImageDataset, from_numpy

__all__ = ["load_tfds"]

logger = logging.getLogger(__name__)

_READ_BATCH = 1024


def _num_classes(info, label_key: str) -> int | None:
    """Returns the label feature's class count when it is a ``ClassLabel``."""
    try:
        feature = info.features[label_key]
    except (KeyError, TypeError, AttributeError):
        return None
    num_classes = getattr(feature, "num_classes", None)
    return int(num_classes) if num_classes else None


def load_tfds(
    name: str,
    split: str = "train",
    data_dir: str | None = None,
    download: bool = True,
    image_key: str = "image",
    label_key: str = "label",
) -> ImageDataset:
    """Loads a whole TFDS split into memory.

    Calls ``tfds.load(name, split=split, data_dir=data_dir, download=download)``
    and reads every example (batched) with ``tfds.as_numpy``.

    Args:
        name: TFDS dataset name, e.g. ``"mnist"``, ``"cifar10"`` or
            ``"fashion_mnist"`` (optionally with a version, ``"mnist:3.*.*"``).
        split: Any TFDS split string, e.g. ``"train"``, ``"test[:10%]"``.
        data_dir: Where TFDS keeps prepared datasets (TFDS default if ``None``).
        download: Whether TFDS may download and prepare the data.
        image_key: Feature holding the images.
        label_key: Feature holding integer labels; ignored when absent.

    Returns:
        ``uint8`` images in [0, 255] with a channel axis ``(N, H, W, C)``
        (a float image feature must lie in [0, 1]), ``int64`` labels when
        ``label_key`` exists, and ``num_classes`` from the label feature
        when it is a ``ClassLabel``.

    Raises:
        ValueError: If ``name`` is not a registered TFDS dataset (the message
            says how to list them), ``image_key`` is missing, or the images
            differ in shape.
        FileNotFoundError: If ``download=False`` and the data is not prepared
            under ``data_dir``.
    """
    import tensorflow_datasets as tfds

    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"dataset name must be a non-empty string; received {name!r}")
    try:
        ds, info = tfds.load(
            name, split=split, data_dir=data_dir, download=download, with_info=True
        )
    except tfds.core.DatasetNotFoundError as err:
        raise ValueError(
            f"unknown TFDS dataset {name!r}; list the available names with "
            "`tensorflow_datasets.list_builders()` (or see "
            "https://www.tensorflow.org/datasets/catalog/overview)"
        ) from err
    except AssertionError as err:
        if download:
            raise
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared under data_dir={data_dir!r} and "
            f"download=False: {err}"
        ) from err

    element_spec = ds.element_spec
    if not isinstance(element_spec, dict) or image_key not in element_spec:
        keys = list(element_spec) if isinstance(element_spec, dict) else element_spec
        raise ValueError(
            f"TFDS dataset {name!r} has no image feature {image_key!r}; features: {keys}"
        )
    has_labels = label_key in element_spec
    wanted = [image_key] + ([label_key] if has_labels else [])
    ds = ds.map(lambda ex: {k: ex[k] for k in wanted})

    # Batching needs one static image shape; otherwise read one at a time.
    fixed_shape = element_spec[image_key].shape.is_fully_defined()
    if fixed_shape:
        ds = ds.batch(_READ_BATCH)
    images, labels = [], []
    for example in tfds.as_numpy(ds):
        image = example[image_key]
        images.append(image if fixed_shape else image[np.newaxis])
        if has_labels:
            label = example[label_key]
            labels.append(label if fixed_shape else np.reshape(label, (1,)))
    if not images:
        raise ValueError(f"TFDS dataset {name!r} split {split!r} is empty")
    try:
        images = np.concatenate(images)
    except ValueError as err:
        raise ValueError(
            f"images of TFDS dataset {name!r} split {split!r} differ in shape "
            f"(feature shape {element_spec[image_key].shape}); resize them first"
        ) from err
    logger.info("loaded %d examples of TFDS %s[%s]", images.shape[0], name, split)
    return from_numpy(
        images,
        np.concatenate(labels) if has_labels else None,
        name=name,
        num_classes=_num_classes(info, label_key) if has_labels else None,
    )
