"""Load an image dataset from TensorFlow Datasets (TFDS) by name.

``tensorflow_datasets`` is imported inside :func:`load_tfds` only: importing it
is slow and most uses of the package never need it.

Offline behaviour: a prepared copy under ``data_dir`` is always used first
(``tfds.load(download=False)``, no network). Only when there is none and
``download=True`` does :func:`load_tfds` let TFDS download, and only after a
quick reachability check: a TCP connection to ``storage.googleapis.com:443``
(or to the HTTPS proxy named by ``https_proxy``) must open within
``PROBE_TIMEOUT_S`` seconds. Otherwise it raises ``FileNotFoundError`` at once,
instead of TFDS retrying the download for minutes.
"""

from __future__ import annotations

import logging
import socket
import threading
import urllib.parse
import urllib.request

import numpy as np

from tfvqvae.data.image_dataset import ImageDataset, from_numpy
from tfvqvae.data.transform import check_options, convert_image, convert_images

__all__ = ["load_tfds"]

logger = logging.getLogger(__name__)

_READ_BATCH = 1024

#: Where TFDS downloads from (its GCS bucket); probed before any download.
PROBE_ADDRESS = ("storage.googleapis.com", 443)
#: Seconds the reachability probe waits for DNS and the TCP connection.
PROBE_TIMEOUT_S = 3.0


def _probe_address() -> tuple[str, int]:
    """The HTTPS proxy from the environment when one is set, else :data:`PROBE_ADDRESS`."""
    proxy = urllib.request.getproxies().get("https")
    if proxy:
        parsed = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if parsed.hostname:
            return parsed.hostname, parsed.port or 3128
    return PROBE_ADDRESS


def download_unreachable_reason() -> str | None:
    """Checks whether a TFDS download could start: ``None`` if so, else why not.

    Opens (and closes) one TCP connection to :func:`_probe_address`, in a
    daemon thread so that a hanging DNS lookup cannot block for longer than
    ``PROBE_TIMEOUT_S`` (seconds) plus half a second.

    Returns:
        ``None`` when the connection opened, else a one-line reason such as
        ``"storage.googleapis.com:443 is unreachable ([Errno -2] Name or
        service not known)"``.
    """
    host, port = _probe_address()
    outcome = {}

    def attempt():
        try:
            socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
            outcome["error"] = None
        except OSError as err:
            outcome["error"] = err

    thread = threading.Thread(target=attempt, name="tfds-probe", daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT_S + 0.5)
    if "error" not in outcome:
        return f"{host}:{port} did not answer within {PROBE_TIMEOUT_S:g} s"
    if outcome["error"] is None:
        return None
    return f"{host}:{port} is unreachable ({outcome['error'] or type(outcome['error']).__name__})"


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
    *,
    image_size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    crop: str = "none",
) -> ImageDataset:
    """Loads a whole TFDS split into memory.

    Calls ``tfds.load(name, split=split, data_dir=data_dir, download=False)``
    and, when the data is not prepared there, ``download=True`` once the
    reachability check passed (see the module notes); then reads every
    example (batched) with ``tfds.as_numpy``.

    Args:
        name: TFDS dataset name, e.g. ``"mnist"``, ``"cifar10"`` or
            ``"fashion_mnist"`` (optionally with a version, ``"mnist:3.*.*"``).
        split: Any TFDS split string, e.g. ``"train"``, ``"test[:10%]"``.
        data_dir: Where TFDS keeps prepared datasets (TFDS default if ``None``).
        download: Whether TFDS may download and prepare the data when it is
            not prepared under ``data_dir`` (only if the download host is
            reachable).
        image_key: Feature holding the images.
        label_key: Feature holding integer labels; ignored when absent.
        image_size, channels, crop: Load-time conversion, as in
            :func:`tfvqvae.data.load_dataset`; applied image by image when the
            dataset's images differ in size.

    Returns:
        ``uint8`` images in [0, 255] with a channel axis ``(N, H, W, C)``
        (a float image feature must lie in [0, 1]), ``int64`` labels when
        ``label_key`` exists, and ``num_classes`` from the label feature
        when it is a ``ClassLabel``.

    Raises:
        ValueError: If ``name`` is not a registered TFDS dataset (the message
            says how to list them), ``image_key`` is missing, on a bad
            ``image_size`` / ``channels`` / ``crop``, or when the images
            differ in size and no ``image_size`` is given.
        FileNotFoundError: If the data is not prepared under ``data_dir`` and
            ``download=False`` or the download host is unreachable (raised
            within about ``PROBE_TIMEOUT_S`` seconds).
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"dataset name must be a non-empty string; received {name!r}")
    target, channels, crop = check_options(image_size, channels, crop)
    import tensorflow_datasets as tfds

    where = f"data_dir={data_dir}" if data_dir else "the default TFDS data_dir"

    def tfds_load(allow_download):
        try:
            return tfds.load(
                name, split=split, data_dir=data_dir, download=allow_download, with_info=True
            )
        except tfds.core.DatasetNotFoundError as err:
            raise ValueError(
                f"unknown TFDS dataset {name!r}; list the available names with "
                "`tensorflow_datasets.list_builders()` (or see "
                "https://www.tensorflow.org/datasets/catalog/overview)"
            ) from err

    try:
        ds, info = tfds_load(False)
    except AssertionError as err:  # TFDS's "could not find data in ..."
        if not download:
            raise FileNotFoundError(
                f"TFDS dataset {name!r} is not prepared under {where} and download=False: "
                f"{' '.join(str(err).split())}"
            ) from err
        reason = download_unreachable_reason()
        if reason is not None:
            raise FileNotFoundError(
                f"TFDS dataset {name!r} is not prepared under {where} and cannot be "
                f"downloaded: {reason}"
            ) from err
        logger.info("downloading TFDS %s into %s", name, where)
        ds, info = tfds_load(True)

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
        if fixed_shape:
            image = convert_images(image, target, channels, crop)
        else:
            image = convert_image(image, target, channels, crop)[np.newaxis]
        images.append(image)
        if has_labels:
            label = example[label_key]
            labels.append(label if fixed_shape else np.reshape(label, (1,)))
    if not images:
        raise ValueError(f"TFDS dataset {name!r} split {split!r} is empty")
    try:
        images = np.concatenate(images)
    except ValueError as err:
        found = sorted({tuple(int(d) for d in image.shape[1:]) for image in images})
        raise ValueError(
            f"images of TFDS dataset {name!r} split {split!r} differ in shape "
            f"(H, W, C), e.g. {found[:3]}; pass image_size=(height, width) "
            "(CLI: --image-size) to resize them when loading"
        ) from err
    logger.info("loaded %d examples of TFDS %s[%s]", images.shape[0], name, split)
    return from_numpy(
        images,
        np.concatenate(labels) if has_labels else None,
        name=name,
        num_classes=_num_classes(info, label_key) if has_labels else None,
    )
