"""Image datasets from TensorFlow Datasets (TFDS) by name: streamed, or loaded into memory.

Two ways in:

* :func:`open_tfds` streams a split as ``tf.data`` (a :class:`TFDSImages`):
  nothing is materialised; records are shuffled and skipped while their
  images are still encoded, and decoded afterwards in parallel maps (the
  pipelines of :class:`tfvqvae.data.image_shards.EncodedImageStream`). The
  source for datasets of any size (``imagenet2012``, ...).
* :func:`load_tfds` reads a whole split into an in-memory
  :class:`~tfvqvae.data.ImageDataset` (NumPy arrays), in the same file order.

``tensorflow_datasets`` is imported inside these functions only: importing it
is slow and most uses of the package never need it.

Offline behaviour: a prepared copy under ``data_dir`` is always used first
(``tfds.load(download=False)``, no network). Only when there is none and
``download=True`` does :func:`load_tfds` let TFDS download, and only after a
quick reachability check: a TCP connection to ``storage.googleapis.com:443``
(or to the HTTPS proxy named by ``https_proxy``) must open within
``PROBE_TIMEOUT_S`` seconds. Otherwise it raises ``FileNotFoundError`` at once,
instead of TFDS retrying the download for minutes. (The same for
:func:`open_tfds`.)

Order of a streamed split (:class:`TFDSImages`): file order (TFDS's shards one
after the other, ``shuffle_files=False``, interleave cycle 1) for
``to_tf_dataset``, ``take`` and ``pixel_variance``; training batches
(``epochs_dataset``) read ``cycle_length`` (16) files at a time, one record of
each in turn (deterministic), then permute blocks of ``shuffle_block`` (2048)
encoded records by (seed, epoch) (:func:`tfvqvae.data.epochs.epoch_batches`).
TFDS writes its files already shuffled, so this mixes well. Distribution:
input pipeline k of P reads ``tfds.even_splits(split, n=P)[k]``, a disjoint
range of examples (not ``ReadConfig(input_context=...)``, which shards whole
files and leaves each worker's count unknown); every worker takes the same
number of steps, the fewest its range allows. Random crops and flips are
seeded by (seed, epoch, a fingerprint of the record's ``tfds_id``).
"""

from __future__ import annotations

import logging
import socket
import threading
import urllib.parse
import urllib.request

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf

from tfvqvae.data import image_ops
from tfvqvae.data.image_dataset import ImageDataset, from_numpy
from tfvqvae.data.encoded_stream import DEFAULT_SHUFFLE_BLOCK
from tfvqvae.data.encoded_stream import EncodedImageStream
from tfvqvae.data.transform import check_options, convert_image, convert_images
from tfvqvae.validation import positive_int

__all__ = ["TFDSImages", "load_tfds", "open_tfds"]

logger = logging.getLogger(__name__)

_READ_BATCH = 1024
#: Files a streamed split's training order reads at once.
DEFAULT_CYCLE_LENGTH = 16
#: Examples decoded when a split with images of no fixed size is opened.
PROBE_EXAMPLES = 16
# A fingerprint of `tfds_id` keys each example's random crop and flip.
_HASH_BUCKETS = 2**62

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


def _read_config(cycle_length, add_tfds_id=False):
    """A ``tfds.ReadConfig`` reading ``cycle_length`` files at a time, one example of each
    in turn, in a deterministic order, without TFDS's in-memory cache."""
    import tensorflow_datasets as tfds

    return tfds.ReadConfig(interleave_cycle_length=cycle_length, interleave_block_length=1,
                           try_autocache=False, add_tfds_id=add_tfds_id)


def _in_file_order(name, split, data_dir):
    """The (prepared) split's examples in file order, decoded."""
    import tensorflow_datasets as tfds

    return tfds.builder(name, data_dir=data_dir).as_dataset(
        split=split, shuffle_files=False, read_config=_read_config(1))


def _num_classes(info, label_key: str) -> int | None:
    """Returns the label feature's class count when it is a ``ClassLabel``."""
    try:
        feature = info.features[label_key]
    except (KeyError, TypeError, AttributeError):
        return None
    num_classes = getattr(feature, "num_classes", None)
    return int(num_classes) if num_classes else None


def _check_name(name):
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"dataset name must be a non-empty string; received {name!r}")


def _load_split(name, split, data_dir, download):
    """``tfds.load(name, split=split, data_dir=data_dir, with_info=True)`` with the offline rules.

    The prepared copy under ``data_dir`` first (no network); else, when
    ``download`` and the download host answers, TFDS downloads and prepares
    it (see the module notes).

    Returns:
        ``(tf.data.Dataset, tfds.core.DatasetInfo)``.

    Raises:
        ValueError: an empty or unknown name.
        FileNotFoundError: not prepared, and ``download=False`` or the host is
            unreachable.
    """
    _check_name(name)
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
        return tfds_load(False)
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
        return tfds_load(True)


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

    The in-memory variant of :func:`open_tfds` (for small datasets): calls
    ``tfds.load(name, split=split, data_dir=data_dir, download=False)``
    and, when the data is not prepared there, ``download=True`` once the
    reachability check passed (see the module notes); then reads every
    example (batched) with ``tfds.as_numpy``, in file order (the order of
    ``open_tfds(...).to_tf_dataset``).

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
    target, channels, crop = check_options(image_size, channels, crop)
    _, info = _load_split(name, split, data_dir, download)
    ds = _in_file_order(name, split, data_dir)

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
    for example in ds.as_numpy_iterator():
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


def _decoders(feature, image_key):
    """Keep a ``tfds.features.Image`` encoded (decoded later, after shuffling)."""
    import tensorflow_datasets as tfds

    return {image_key: tfds.decode.SkipDecoding()} if isinstance(
        feature, tfds.features.Image) else None


def open_tfds(
    name: str,
    split: str = "train",
    data_dir: str | None = None,
    download: bool = True,
    image_size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    crop: str = "none",
    image_key: str = "image",
    label_key: str = "label",
    *,
    shuffle_block: int = DEFAULT_SHUFFLE_BLOCK,
    cycle_length: int = DEFAULT_CYCLE_LENGTH,
) -> TFDSImages:
    """Opens a TFDS split as a streamed :class:`TFDSImages` (``tf.data``, never materialised).

    Same offline rules as :func:`load_tfds` (the prepared copy under
    ``data_dir`` first; a download only when allowed and the host answers).
    The number of examples comes from ``info.splits[split]`` (else from the
    dataset's cardinality); the image shape from the image feature when it
    is static, else from decoding the first `PROBE_EXAMPLES` examples.

    Args:
        name: TFDS dataset name, e.g. ``"mnist"``, ``"imagenet2012"``
            (optionally with a version, ``"mnist:3.*.*"``).
        split: any TFDS split string, e.g. ``"train"``, ``"train[:10%]"``.
        data_dir: where TFDS keeps prepared datasets (TFDS default if None).
        download: whether TFDS may download and prepare the data (only if
            the download host is reachable).
        image_size: ``None`` (keep: all images must share one size), an int
            (square) or ``(height, width)`` in pixels.
        channels: ``1``, ``3`` or ``None`` (the feature's; RGB(A) -> 3,
            grey(+alpha) -> 1). Alpha is dropped.
        crop: ``"none"``, ``"center"`` or ``"random"`` (training batches cut
            the ``center`` window's size at a random place; every other
            pipeline cuts the centre). ``center``/``random`` need
            ``image_size``.
        image_key: the image feature: a ``uint8`` ``tfds.features.Image``
            (kept encoded until after shuffling) or a ``uint8``
            ``(H, W, C)`` ``tfds.features.Tensor``.
        label_key: the integer label feature; ignored when absent (the
            source is then unlabelled).
        shuffle_block: records permuted together in training order.
            Defaults to 2048.
        cycle_length: files read at once in training order. Defaults to 16.

    Raises:
        ValueError: an unknown name (saying how to list them); no feature
            ``image_key`` or one of another kind; a bad option; an empty
            split; images of different sizes without ``image_size`` (naming
            ``image_size`` and ``--image-size``).
        FileNotFoundError: not prepared under ``data_dir`` and
            ``download=False`` or the download host unreachable.
    """
    random_crop = crop == "random"
    size, channels, crop = check_options(image_size, channels, crop, streamed=True)
    shuffle_block = positive_int("shuffle_block", shuffle_block)
    cycle_length = positive_int("cycle_length", cycle_length)
    _, info = _load_split(name, split, data_dir, download)
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    features = info.features
    keys = list(features.keys())
    if image_key not in keys:
        raise ValueError(
            f"TFDS dataset {name!r} has no image feature {image_key!r}; features: {keys}")
    feature = features[image_key]
    encoded = isinstance(feature, tfds.features.Image)
    shape = tuple(feature.shape) if hasattr(feature, "shape") else ()
    if (not isinstance(feature, (tfds.features.Image, tfds.features.Tensor))
            or tf.as_dtype(feature.dtype) != tf.uint8 or len(shape) != 3):
        raise ValueError(
            f"TFDS feature {image_key!r} of {name!r} is {feature!r}; streaming needs uint8 "
            "images (H, W, C) (a tfds.features.Image or Tensor): use load_tfds for others")
    labelled = label_key in keys
    source = TFDSImages(
        name=name, split=split, builder=builder, image_key=image_key,
        label_key=label_key if labelled else None, num_examples=0, size=(1, 1),
        resize=True, channels=1, crop="none",
        num_classes=_num_classes(info, label_key) if labelled else None, encoded=encoded,
        shuffle_block=shuffle_block, cycle_length=cycle_length)
    num_examples = source._count(split)
    if num_examples < 1:
        raise ValueError(f"TFDS dataset {name!r} split {split!r} is empty")
    height, width, depth = shape
    sizes, widest = {}, None if depth is None else (1 if depth <= 2 else 3)
    if height is not None and width is not None:
        sizes[(height, width)] = []
    if (size is None and not sizes) or (channels is None and widest is None):
        probe = source._dataset(split, 1).take(PROBE_EXAMPLES)
        widest = 1
        for example in probe:
            image = (image_ops.decode_image(example[image_key]) if encoded
                     else example[image_key])
            sizes.setdefault(tuple(int(d) for d in image.shape[:2]), []).append(
                example["tfds_id"].numpy().decode())
            widest = max(widest, 1 if image.shape[2] <= 2 else 3)
    if size is None and len(sizes) > 1:
        listed = ", ".join(f"{h}x{w} ({', '.join(found[:1])})"
                           for (h, w), found in list(sizes.items())[:4])
        raise ValueError(
            f"images of TFDS dataset {name!r} split {split!r} differ in size (height x "
            f"width), e.g. {listed}; pass image_size=(height, width) (CLI: --image-size) "
            "to resize them when loading")
    return dataclasses.replace(
        source, num_examples=num_examples, size=size or next(iter(sizes)),
        resize=size is not None, channels=channels or widest,
        crop="random" if random_crop else crop)


@dataclasses.dataclass(frozen=True, eq=False)
class TFDSImages(EncodedImageStream):
    """A TFDS split streamed as ``tf.data`` (see the module notes); made by `open_tfds`.

    Attributes:
        name: the TFDS name.
        split: the TFDS split string.
        builder: the ``tfds.core.DatasetBuilder`` reading it.
        image_key: the image feature.
        label_key: the label feature, or None (unlabelled).
        num_examples: examples in the split.
        size: ``(height, width)`` of the yielded images.
        resize: whether images are converted to ``size`` (else each must
            already have it).
        channels: 1 or 3.
        crop: ``"none"``, ``"center"`` or ``"random"``.
        num_classes: classes of a ``ClassLabel`` label, else None.
        encoded: whether the image feature is encoded (a
            ``tfds.features.Image``), else a ``uint8`` tensor.
        limit: read only the first ``limit`` examples in file order
            (`take`), or None.
        shuffle_block: encoded records permuted together in training order.
        cycle_length: files read at once in training order.
    """

    name: str
    split: str
    builder: Any
    image_key: str
    label_key: str | None
    num_examples: int
    size: tuple[int, int]
    resize: bool
    channels: int
    crop: str
    num_classes: int | None
    encoded: bool = True
    limit: int | None = None
    shuffle_block: int = DEFAULT_SHUFFLE_BLOCK
    cycle_length: int = DEFAULT_CYCLE_LENGTH
    _counts: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def __len__(self):
        return int(self.num_examples if self.limit is None else self.limit)

    def __repr__(self):
        return (f"TFDSImages(name={self.name!r}, split={self.split!r}, num_examples={len(self)}, "
                f"image_shape={self.image_shape}, num_classes={self.num_classes})")

    @property
    def labelled(self):
        return self.label_key is not None

    @property
    def _encoded(self):
        return self.encoded

    def take(self, n):
        """The first ``n`` examples in file order."""
        n = positive_int("n", int(n) if isinstance(n, np.integer) else n)
        return dataclasses.replace(self, limit=min(n, len(self)), _counts={})

    # ---------------------------------------------------------------- hooks
    def _dataset(self, split, cycle_length):
        """``{image, label, tfds_id}`` records of ``split`` (images still encoded)."""
        features = self.builder.info.features
        ds = self.builder.as_dataset(
            split=split, shuffle_files=False,
            decoders=_decoders(features[self.image_key], self.image_key),
            read_config=_read_config(cycle_length, add_tfds_id=True))
        wanted = [self.image_key, "tfds_id"] + ([self.label_key] if self.labelled else [])
        return ds.map(lambda example: {k: example[k] for k in wanted})

    def _count(self, split):
        """Examples of ``split``: from ``info.splits``, else the dataset's cardinality."""
        try:
            return int(self.builder.info.splits[split].num_examples)
        except (KeyError, ValueError, TypeError, AttributeError, AssertionError):
            pass
        ds = self._dataset(split, 1)
        count = int(ds.cardinality())
        if count < 0:  # unknown: count them (records only, still encoded)
            count = int(ds.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))
        return count

    def _splits(self, pipelines):
        import tensorflow_datasets as tfds

        return tfds.even_splits(self.split, n=pipelines) if pipelines > 1 else [self.split]

    def _pipeline_counts(self, pipelines):
        if pipelines not in self._counts:
            if self.limit is not None:
                counts = [len(range(k, self.limit, pipelines)) for k in range(pipelines)]
            elif pipelines == 1:
                counts = [self.num_examples]
            else:
                counts = [self._count(sub) for sub in self._splits(pipelines)]
            self._counts[pipelines] = counts
        return self._counts[pipelines]

    def _ordered_records(self):
        ds = self._dataset(self.split, 1)
        return ds if self.limit is None else ds.take(self.limit)

    def _epoch_records(self, pipeline_id, pipelines, seed):
        del seed  # TFDS's files keep their order; epoch_batches shuffles by (seed, epoch)
        if self.limit is not None:
            records = self._ordered_records().shard(pipelines, pipeline_id)
        else:
            records = self._dataset(self._splits(pipelines)[pipeline_id], self.cycle_length)
        return lambda epoch: records

    def _parse(self, record):
        label = (tf.cast(record[self.label_key], tf.int64) if self.labelled
                 else tf.constant(-1, tf.int64))
        key = tf.strings.to_hash_bucket_fast(record["tfds_id"], _HASH_BUCKETS)
        return record[self.image_key], label, key, record["tfds_id"]
