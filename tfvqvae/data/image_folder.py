"""An image folder of any size, streamed: files are decoded inside ``tf.data`` maps.

Only the file list (and the labels) is held in memory: about 100 bytes per
file, so ImageNet's 1.28 M files take some 130 MB while its pixels stay on
disk. Each batch of file indices is read, decoded, converted
(:mod:`tfvqvae.data.image_ops`: the same numbers as the in-memory conversion
of :mod:`tfvqvae.data.transform`), flipped when asked, and batched, in
parallel ``tf.data`` maps with autotuning and prefetch.

Order: the files are listed in sorted order (class folder, then file name),
and epoch e visits them in `tfvqvae.data.epochs.epoch_order`'s permutation of
(seed, e), exactly like an :class:`~tfvqvae.data.ImageDataset` of the same
images in memory, so the two give the same batches for a seed. Random crops
and flips are seeded by (seed, epoch, file index) alone, so a resumed run gets
the same ones.

Unreadable files: by default the first one met stops the pipeline with
``tf.errors.InvalidArgumentError`` "Cannot read image file PATH ..."
(:func:`unreadable_file_error` turns it into a ``ValueError``; training,
``pixel_variance`` and ``images_at`` raise that ``ValueError`` themselves).
With ``skip_corrupt=True`` it is skipped with a warning naming it: training
batches (`ImageFolder.epochs_dataset`) are filled up with other images of the
same batch, so every epoch keeps its number of steps (and the order stays
resumable); `ImageFolder.to_tf_dataset` (evaluation, code extraction) leaves
it out. A decodable file of another size than the folder's stops the pipeline
the same way, naming the file and ``--image-size``, whatever
``skip_corrupt`` says.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfvqvae.data import image_ops
from tfvqvae.data.epochs import epoch_batches
from tfvqvae.data.epochs import permutation
from tfvqvae.data.epochs import seed_pair
from tfvqvae.data.source import DEFAULT_VARIANCE_SAMPLE
from tfvqvae.data.source import VARIANCE_BATCH
from tfvqvae.data.source import finish_batches
from tfvqvae.data.source import ImageSource
from tfvqvae.data.transform import check_options
from tfvqvae.validation import positive_int

__all__ = ["ImageFolder", "list_image_files", "open_image_folder", "unreadable_file_error"]

logger = logging.getLogger(__name__)

#: Files decoded when a folder is opened, to learn its image size and colour mode.
PROBE_FILES = 16
UNREADABLE = "Cannot read image file "
_UNREADABLE_RE = re.compile(r"(Cannot read image file .*?|Image file .*?--image-size\))\]?(?:\n|$)",
                            re.S)


def unreadable_file_error(error):
    """The ``ValueError`` a pipeline error about one image file stands for, or None.

    Args:
        error: an exception raised while iterating an :class:`ImageFolder`
            pipeline (typically ``tf.errors.InvalidArgumentError``).

    Returns:
        ``ValueError("Cannot read image file PATH: ...")`` (or the
        mixed-size message naming ``--image-size``) when ``error`` came from
        a file of the folder, else None.
    """
    found = _UNREADABLE_RE.search(str(getattr(error, "message", None) or error))
    return ValueError(found.group(1).strip()) if found else None


def list_image_files(directory: Path):
    """``(paths, labels or None, class names)`` in sorted order (class folder, then name)."""
    def images_in(folder):
        with os.scandir(folder) as entries:
            return sorted(
                e.path for e in entries
                if e.is_file() and not e.name.startswith(".")
                and os.path.splitext(e.name)[1].lower() in image_ops.IMAGE_SUFFIXES
            )

    with os.scandir(directory) as entries:
        classes = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    paths, labels = [], []
    for index, name in enumerate(classes):
        found = images_in(directory / name)
        paths.extend(found)
        labels.extend([index] * len(found))
    if paths:
        stray = images_in(directory)
        if stray:
            logger.warning("%s: %d image files beside the class folders are ignored",
                           directory, len(stray))
        return paths, np.asarray(labels, np.int64), classes
    return images_in(directory), None, []


def _probe(paths, skip_corrupt):
    """Decodes up to `PROBE_FILES` files spread over the list: ``{(h, w): [paths]}``, max C."""
    picks = sorted(set(np.linspace(0, len(paths) - 1, min(PROBE_FILES, len(paths))).astype(int)))
    sizes, widest = {}, 1
    for i in picks:
        try:
            image = image_ops.decode_image(tf.io.read_file(paths[i]))
        except (tf.errors.OpError, OSError) as err:
            if skip_corrupt:
                continue
            reason = re.sub(r"\{\{function_node [^}]*\}\}|\[Op:.*$", "",
                            str(getattr(err, "message", None) or err), flags=re.S)
            reason = " ".join(reason.split()) or type(err).__name__
            raise ValueError(f"{UNREADABLE}{paths[i]}: {reason}") from err
        height, width, channels = (int(d) for d in image.shape)
        sizes.setdefault((height, width), []).append(paths[i])
        widest = max(widest, 3 if channels >= 3 else 1)
    return sizes, widest


def open_image_folder(directory, image_size=None, channels=None, crop="none",
                      skip_corrupt=False) -> ImageFolder:
    """Lists an image folder and decodes a few files; returns the streamed :class:`ImageFolder`.

    Two layouts: one sub-folder per class (``root/<class>/*.png``; labels are
    the index of the class folder in sorted order, hidden folders ignored), or
    a flat folder of images (no labels). Formats: PNG, JPEG, BMP, GIF (first
    frame) and WebP; 16-bit PNGs are scaled to 8 bits.

    Args:
        directory: the root folder.
        image_size: ``None`` (keep: all images must share one size), an int
            (square) or ``(height, width)`` in pixels.
        channels: ``1``, ``3`` or ``None``: RGB when any of the files decoded
            at opening (`PROBE_FILES`, spread over the list) has colour, else
            grey. Alpha is dropped.
        crop: ``"none"``, ``"center"`` or ``"random"`` (training batches cut a
            window of the ``center`` size at a random place; every other
            pipeline cuts the centre). ``center``/``random`` need
            ``image_size``.
        skip_corrupt: skip unreadable files (with a warning naming each)
            instead of failing.

    Raises:
        FileNotFoundError: the folder does not exist.
        NotADirectoryError: it is a file.
        ValueError: no image file in it; a bad option; an unreadable file
            among those decoded at opening ("Cannot read image file PATH:
            ..."); images of different sizes without ``image_size`` (the
            message lists the sizes with example files and names
            ``--image-size``).
    """
    directory = Path(directory)
    if not directory.exists():
        raise FileNotFoundError(f"directory not found: {directory}")
    if not directory.is_dir():
        raise NotADirectoryError(f"not a directory: {directory}")
    random_crop = crop == "random"
    size, channels, crop = check_options(image_size, channels, crop, streamed=True)
    paths, labels, classes = list_image_files(directory)
    if not paths:
        raise ValueError(
            f"no image files ({', '.join(image_ops.IMAGE_SUFFIXES)}) found in {directory} "
            "or its class sub-folders"
        )
    sizes, widest = _probe(paths, skip_corrupt)
    if not sizes:
        raise ValueError(f"none of the files of {directory} probed at opening can be read")
    if size is None and len(sizes) > 1:
        listed = ", ".join(
            f"{h}x{w} ({', '.join(os.path.relpath(p, directory) for p in found[:2])})"
            for (h, w), found in list(sizes.items())[:4])
        raise ValueError(
            f"images in {directory} differ in size (height x width): {listed}; pass "
            "image_size=(height, width) (CLI: --image-size) to resize them when loading "
            "(crop='center' keeps their aspect ratio)"
        )
    return ImageFolder(
        paths=np.asarray(paths, dtype=object),
        labels=labels,
        name=directory.resolve().name,
        num_classes=len(classes) or None,
        size=size or next(iter(sizes)),
        resize=size is not None,
        channels=channels or widest,
        crop="random" if random_crop else crop,
        skip_corrupt=bool(skip_corrupt),
    )


@dataclasses.dataclass(frozen=True, eq=False)
class ImageFolder(ImageSource):
    """A streamed image folder (see the module notes); made by `open_image_folder`.

    Attributes:
        paths: ``(N,)`` file paths (str), in order.
        labels: ``(N,)`` int64 class indices, or None (a flat folder).
        name: the folder's name.
        num_classes: the number of class folders, or None.
        size: ``(height, width)`` of the yielded images.
        resize: whether images are converted to ``size`` (else each must
            already have it).
        channels: 1 or 3.
        crop: ``"none"``, ``"center"`` or ``"random"``.
        skip_corrupt: skip unreadable files instead of failing.
    """

    paths: np.ndarray
    labels: np.ndarray | None
    name: str
    num_classes: int | None
    size: tuple[int, int]
    resize: bool
    channels: int
    crop: str
    skip_corrupt: bool = False

    def __len__(self):
        return int(self.paths.shape[0])

    def __repr__(self):
        return (f"ImageFolder(name={self.name!r}, num_examples={len(self)}, "
                f"image_shape={self.image_shape}, num_classes={self.num_classes})")

    @property
    def image_shape(self):
        return (*self.size, self.channels)

    @property
    def labelled(self):
        return self.labels is not None

    def take(self, n):
        n = positive_int("n", int(n) if isinstance(n, np.integer) else n)
        return dataclasses.replace(
            self, paths=self.paths[:n], labels=None if self.labels is None else self.labels[:n])

    def images_at(self, indices, image_size=None):
        """The images of the files at ``indices``; reads only those files."""
        indices = self._checked_indices(indices)
        subset = dataclasses.replace(
            self, paths=self.paths[indices],
            labels=None if self.labels is None else self.labels[indices])
        if not len(indices):
            return super().images_at(indices, image_size)
        batches = [b.numpy() for b in subset.to_tf_dataset(256, image_size=image_size)]
        return np.concatenate(batches)

    # ------------------------------------------------------------- pipelines
    def to_tf_dataset(self, batch_size, *, shuffle=False, seed=None, with_labels=False,
                      image_size=None, drop_remainder=False, repeat=False):
        """Batches of the folder's images in file order (or shuffled each pass).

        See `ImageSource.to_tf_dataset`; ``crop="random"`` cuts the centre
        here. ``seed=None`` with ``shuffle`` draws a seed.
        """
        batch_size = positive_int("batch_size", int(batch_size))
        self._check_labels(with_labels)
        n = len(self)
        if shuffle and seed is None:
            seed = int(np.random.default_rng().integers(2**31))
        if shuffle:
            passes = tf.data.Dataset.range(2**62 if repeat else 1)
            keys = passes.flat_map(
                lambda e: tf.data.Dataset.from_tensor_slices(_order(n, seed, e)))
        else:
            keys = tf.data.Dataset.range(n)
            if repeat:
                keys = keys.repeat()
        keys = keys.batch(batch_size, drop_remainder=drop_remainder)
        keys = keys.map(lambda k: (tf.zeros_like(k), k))
        images = self._decoded(keys, batch_size, seed=0, train=False, random_flip=False,
                               with_labels=with_labels, image_size=image_size)
        if repeat or self.skip_corrupt:  # skipped files make the count smaller
            return images
        # The interleave hides the count from tf.data; Keras wants it to know the epoch's end.
        batches = n // batch_size if drop_remainder else -(-n // batch_size)
        return images.apply(tf.data.experimental.assert_cardinality(batches))

    def epochs_dataset(self, batch_size, *, seed, first_epoch, epochs, skip_batches=0,
                       with_labels=False, image_size=None, random_flip=False,
                       input_context=None):
        """The resumable training batches; see `ImageSource.epochs_dataset`.

        Per-replica batches of ``batch_size / num_replicas_in_sync`` images
        when ``input_context`` is given, pipeline k taking the k-th slice of
        every global batch (`tfvqvae.data.epochs.epoch_batches`): each worker
        reads only its own files, and the workers' files of one epoch are
        disjoint with the epoch as their union.
        """
        self._check_labels(with_labels)
        if len(self) < batch_size:
            raise ValueError(
                f"Dataset {self.name!r} has {len(self)} images, fewer than one batch of "
                f"{batch_size}.")
        keys = epoch_batches(len(self), batch_size, seed=seed, first_epoch=first_epoch,
                             epochs=epochs, skip_batches=skip_batches,
                             input_context=input_context, with_epoch=True)
        replicas = 1 if input_context is None else input_context.num_replicas_in_sync
        pipelines = 1 if input_context is None else input_context.num_input_pipelines
        images = self._decoded(keys, batch_size // replicas, seed=seed, train=True,
                               random_flip=random_flip, with_labels=with_labels,
                               image_size=image_size)
        steps = max(epochs - first_epoch, 0) * (len(self) // batch_size) - skip_batches
        return images.apply(tf.data.experimental.assert_cardinality(
            max(steps, 0) * (replicas // pipelines)))

    def pixel_variance(self, max_examples=DEFAULT_VARIANCE_SAMPLE):
        """Variance of the pixel values in [0, 1] units over a bounded sample.

        Streams ``min(N, max_examples)`` images drawn without replacement (the
        first of `epoch_order`'s permutation for seed 0, epoch 0), summing in
        float64; equals ``np.var`` of those images. Never materialises them.
        """
        count = min(len(self), positive_int("max_examples", max_examples))
        keys = tf.data.Dataset.from_tensor_slices(_order(len(self), 0, 0)[:count])
        keys = keys.batch(VARIANCE_BATCH).map(lambda k: (tf.zeros_like(k), k))
        images = self._decoded(keys, VARIANCE_BATCH, seed=0, train=False, random_flip=False,
                               with_labels=False, image_size=None)

        def add(total, batch):
            x = tf.cast(batch, tf.float64)
            return total[0] + tf.reduce_sum(x), total[1] + tf.reduce_sum(x * x), total[2] + tf.cast(
                tf.size(x), tf.float64)

        zero = tf.constant(0.0, tf.float64)
        try:
            sums = images.reduce((zero, zero, zero), add)
        except tf.errors.InvalidArgumentError as err:
            raise (unreadable_file_error(err) or err) from err
        total, total_sq, size = (float(v) for v in sums)
        mean = total / size
        return float(max(total_sq / size - mean * mean, 0.0))

    # ------------------------------------------------------------- internals
    def _check_labels(self, with_labels):
        if with_labels and self.labels is None:
            raise ValueError(f"with_labels=True but dataset {self.name!r} has no labels "
                             "(a flat folder; put images in one sub-folder per class)")

    def _decoded(self, keys, batch, *, seed, train, random_flip, with_labels, image_size):
        """``(epochs, indices)`` key batches -> batches of float32 images (and labels)."""
        paths = tf.constant(self.paths.astype(str))
        labels = tf.constant(self.labels if self.labels is not None
                             else np.zeros(len(self), np.int64))
        height, width = self.size
        shape = (height, width, self.channels)
        crop = self.crop if train else ("center" if self.crop == "random" else self.crop)
        seed = tf.cast(seed, tf.int64)
        skip = self.skip_corrupt

        def load(position, epoch, index):
            element_seed = image_ops.element_seed(seed, epoch, index)
            image = image_ops.decode_image(tf.io.read_file(paths[index]))
            got = tf.shape(image)[:2]
            if self.resize:
                image = image_ops.convert(image, self.size, self.channels, crop, element_seed)
                fits = tf.constant(True)
            else:
                image = image_ops.to_channels(image, self.channels)
                fits = tf.reduce_all(got == [height, width])
                image = tf.cond(fits, lambda: image, lambda: tf.zeros(shape, tf.uint8))
            image = tf.ensure_shape(image, shape)
            if train and random_flip:
                image = image_ops.random_flip(
                    image, image_ops.element_seed(seed, epoch, index, stream=1))
            return position, index, image, fits, got

        def check_size(position, index, image, fits, got):
            """A decodable file of another size than the folder's stops the pipeline."""
            note = tf.strings.join([
                "Image file ", tf.gather(paths, index), " is ", tf.strings.as_string(got[0]),
                "x", tf.strings.as_string(got[1]), f", not the {height}x{width} of the other "
                "images in its folder: pass image_size=(height, width) (CLI: --image-size)"])
            with tf.control_dependencies([tf.debugging.Assert(fits, [note], summarize=1)]):
                return tf.identity(position), index, image, fits, got

        def one_batch(epochs, indices):
            count = tf.shape(indices, out_type=tf.int64)[0]
            elements = tf.data.Dataset.from_tensor_slices(
                (tf.range(count), epochs, indices)).map(load).ignore_errors().map(check_size)
            end = tf.data.Dataset.from_tensors(
                (count, tf.constant(-1, tf.int64), tf.zeros(shape, tf.uint8),
                 tf.constant(True), tf.zeros([2], tf.int32)))

            def check(expected, element):
                position, index, image, fits, got = element
                missing = tf.gather(paths, tf.gather(indices, tf.minimum(expected, count - 1)))
                if skip:
                    report = tf.cond(
                        position > expected,
                        lambda: tf.print("tfvqvae: skipped", position - expected,
                                         "unreadable image file(s) (--skip-corrupt), the first:",
                                         missing, output_stream=sys.stderr),
                        lambda: tf.no_op())
                    deps = [report]
                else:
                    deps = [tf.debugging.Assert(position == expected, [tf.strings.join([
                        UNREADABLE, missing, ": not a decodable image (JPEG, PNG, BMP, GIF, "
                        "WebP) or unreadable; pass skip_corrupt=True (CLI: --skip-corrupt) to "
                        "skip such files"])], summarize=1)]
                with tf.control_dependencies(deps):
                    return position + 1, (image, tf.gather(labels, tf.maximum(index, 0)),
                                          index >= 0)

            checked = elements.concatenate(end).scan(tf.constant(0, tf.int64), check)
            checked = checked.filter(lambda image, label, real: real)
            checked = checked.map(lambda image, label, real: (image, label))
            if skip and train:  # fill the batch up with its own readable images
                checked = checked.repeat().take(count)
            return checked

        images = keys.interleave(
            one_batch, cycle_length=tf.data.AUTOTUNE, block_length=batch,
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return finish_batches(images.batch(batch), self.size, image_size, with_labels)


def _order(n, seed, epoch):
    """`tfvqvae.data.epoch_order`, for a seed and an epoch that may be tensors."""
    return permutation(n, seed_pair(seed, epoch))
