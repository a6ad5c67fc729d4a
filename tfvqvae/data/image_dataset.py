"""The in-memory image container and its ``tf.data`` input pipeline.

Every loader in :mod:`tfvqvae.data` returns an :class:`ImageDataset`. It holds
the images as either ``uint8`` in [0, 255] (what the file formats store; four
times smaller) or ``float32`` in [0, 1]. Whatever the storage, the pipeline
built by :meth:`ImageDataset.to_tf_dataset` always yields ``float32`` images in
[0, 1]; the conversion happens inside the ``tf.data`` map, batch by batch.
"""

from __future__ import annotations

import dataclasses
import numpy as np
import tensorflow as tf

from tfvqvae.data import image_ops
from tfvqvae.data.epochs import epoch_batches
from tfvqvae.data.source import ImageSource
from tfvqvae.data.transform import normalize_size
from tfvqvae.validation import positive_int

__all__ = ["ImageDataset", "from_numpy"]


def _plain_int(value):
    """NumPy integers become Python ints (``positive_int`` accepts only ``int``)."""
    return int(value) if isinstance(value, np.integer) else value


def _readonly(array: np.ndarray) -> np.ndarray:
    """Returns a read-only view of ``array`` (the caller's array keeps its flags)."""
    view = array.view()
    view.flags.writeable = False
    return view


@dataclasses.dataclass(frozen=True, eq=False)
class ImageDataset(ImageSource):
    """A set of same-shaped images, optionally labelled, held in memory.

    The arrays are stored as read-only views; ``float`` inputs are cast to
    ``float32`` and ``labels`` to ``int64``. Equality is identity (comparing
    arrays element-wise is rarely what is meant and would be ambiguous).

    Attributes:
        images: ``(N, H, W, C)`` array, either ``uint8`` in [0, 255] or
            ``float32`` in [0, 1].
        labels: ``(N,)`` ``int64`` class indices, or ``None``.
        name: A short name used in messages and logs.
        num_classes: Number of classes when known; labels then lie in
            ``[0, num_classes)``.

    Raises:
        ValueError: On a wrong rank, an empty dataset, float values outside
            [0, 1], a label count that differs from the image count, or labels
            outside ``[0, num_classes)``.
        TypeError: On an image dtype that is neither ``uint8`` nor floating, or
            non-integer labels.
    """

    images: np.ndarray
    labels: np.ndarray | None
    name: str
    num_classes: int | None = None

    def __post_init__(self):
        images = np.asarray(self.images)
        if images.ndim != 4:
            raise ValueError(f"images must have rank 4 (N, H, W, C); received shape {images.shape}")
        if images.dtype == np.uint8:
            pass
        elif np.issubdtype(images.dtype, np.floating):
            images = images.astype(np.float32, copy=False)
        else:
            raise TypeError(
                "images must be uint8 in [0, 255] or floating in [0, 1]; "
                f"received dtype {images.dtype}"
            )
        if images.shape[0] == 0:
            raise ValueError(f"dataset {self.name!r} is empty (images shape {images.shape})")
        if images.dtype == np.float32:
            lo, hi = float(images.min()), float(images.max())
            # Written so that NaN also fails.
            if not (lo >= 0.0 and hi <= 1.0):
                raise ValueError(
                    f"float images of dataset {self.name!r} must lie in [0, 1]; "
                    f"received min {lo} and max {hi}"
                )
        if self.num_classes is not None:
            positive_int("num_classes", _plain_int(self.num_classes))
        labels = self.labels
        if labels is not None:
            labels = np.asarray(labels)
            if not (np.issubdtype(labels.dtype, np.integer) and labels.dtype != np.bool_):
                raise TypeError(f"labels must be integers; received dtype {labels.dtype}")
            if labels.ndim != 1:
                raise ValueError(f"labels must have rank 1 (N,); received shape {labels.shape}")
            if labels.shape[0] != images.shape[0]:
                raise ValueError(
                    f"labels length must equal the number of images ({images.shape[0]}); "
                    f"received {labels.shape[0]} labels"
                )
            labels = labels.astype(np.int64, copy=False)
            if self.num_classes is not None:
                lo, hi = int(labels.min()), int(labels.max())
                if lo < 0 or hi >= self.num_classes:
                    raise ValueError(
                        f"labels must lie in [0, {self.num_classes}); received min {lo} "
                        f"and max {hi}"
                    )
            labels = _readonly(labels)
        object.__setattr__(self, "images", _readonly(images))
        object.__setattr__(self, "labels", labels)
        if self.num_classes is not None:
            object.__setattr__(self, "num_classes", int(self.num_classes))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, num_examples={len(self)}, "
            f"image_shape={self.image_shape}, dtype={self.images.dtype}, "
            f"labelled={self.labels is not None}, num_classes={self.num_classes})"
        )

    @property
    def labelled(self) -> bool:
        """Whether the examples carry class labels."""
        return self.labels is not None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The ``(H, W, C)`` shape of one image."""
        return tuple(int(d) for d in self.images.shape[1:])

    def as_float(self, max_examples: int | None = None) -> np.ndarray:
        """Returns all images (or the first ``max_examples``) as ``float32`` in [0, 1].

        Returns:
            ``uint8`` storage divided by 255 (a new array), or the stored
            ``float32`` array itself (read-only) when already floating.
        """
        images = self.images if max_examples is None else self.images[:max_examples]
        if images.dtype == np.uint8:
            return images.astype(np.float32) / np.float32(255.0)
        return images

    def images_at(self, indices, image_size=None) -> np.ndarray:
        """The images at ``indices`` as ``float32`` in [0, 1] (see `ImageSource.images_at`)."""
        indices = self._checked_indices(indices)
        if not len(indices):
            return super().images_at(indices, image_size)
        subset = from_numpy(self.images[indices], name=self.name)
        batches = subset.to_tf_dataset(len(indices), image_size=image_size)
        return np.concatenate([batch.numpy() for batch in batches])

    def pixel_variance(self, chunk: int = 4096) -> float:
        """Variance of all pixel values in [0, 1] units, computed in float64 chunks.

        Equals ``np.var(self.as_float())`` without a float copy of the whole
        dataset (what VQ-VAE's normalised MSE divides by).
        """
        total = total_sq = 0.0
        scale = 255.0 if self.images.dtype == np.uint8 else 1.0
        for start in range(0, len(self), chunk):
            block = self.images[start : start + chunk].astype(np.float64) / scale
            total += block.sum()
            total_sq += np.square(block).sum()
        count = self.images.size
        mean = total / count
        return float(max(total_sq / count - mean * mean, 0.0))

    def take(self, n: int) -> ImageDataset:
        """Returns the first ``n`` examples as a new dataset (no copy).

        Args:
            n: Positive int, the number of examples; values above
                ``len(self)`` keep all. (The training option
                ``max_train_examples`` / ``--max-train-examples`` ends here.)

        Returns:
            An :class:`ImageDataset` with the same name and ``num_classes``.

        Raises:
            ValueError: If ``n`` is not a positive int:
                "`n` must be a positive integer. Received: n=0".
        """
        n = positive_int("n", _plain_int(n))
        return ImageDataset(
            images=self.images[:n],
            labels=None if self.labels is None else self.labels[:n],
            name=self.name,
            num_classes=self.num_classes,
        )

    def to_tf_dataset(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int | None = None,
        with_labels: bool = False,
        image_size: int | tuple[int, int] | None = None,
        drop_remainder: bool = False,
        repeat: bool = False,
    ) -> tf.data.Dataset:
        """Builds a batched ``tf.data`` pipeline over the images.

        The images stay in their storage dtype in memory; each batch is
        gathered by index, converted to ``float32`` in [0, 1] (``uint8`` / 255)
        and optionally resized, inside the pipeline.

        Args:
            batch_size: Positive number of images per batch.
            shuffle: Whether to shuffle the whole dataset, anew each epoch
                (``reshuffle_each_iteration=True``).
            seed: Shuffle seed; the same seed gives the same order.
            with_labels: Yield ``(images, labels)`` pairs instead of images.
            image_size: ``(height, width)`` or an int for square images;
                each batch is resized with bilinear ``tf.image.resize``
                (antialiased when shrinking; the whole image, aspect ratio
                not kept) and clipped to [0, 1]. To resize or centre-crop
                once at load time instead, use ``load_dataset(...,
                image_size=..., crop=...)``.
            drop_remainder: Drop the last, smaller batch.
            repeat: Repeat forever (each repetition reshuffled when
                ``shuffle``).

        Returns:
            A ``tf.data.Dataset`` of ``float32`` images in [0, 1] with shape
            ``(B, H, W, C)`` (or ``(images, int64 labels of shape (B,))``),
            prefetched with ``tf.data.AUTOTUNE``.

        Raises:
            ValueError: On a ``batch_size`` that is not a positive int, a bad
                ``image_size``, or ``with_labels=True`` for an unlabelled
                dataset.
        """
        batch_size = positive_int("batch_size", _plain_int(batch_size))
        gather = self._batch_gatherer(with_labels, image_size)
        n = len(self)
        ds = tf.data.Dataset.range(n)
        if shuffle:
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.prefetch(tf.data.AUTOTUNE)

    def epochs_dataset(
        self,
        batch_size: int,
        *,
        seed: int,
        first_epoch: int,
        epochs: int,
        skip_batches: int = 0,
        with_labels: bool = False,
        image_size: int | tuple[int, int] | None = None,
        random_flip: bool = False,
        input_context: tf.distribute.InputContext | None = None,
    ) -> tf.data.Dataset:
        """The training batches of epochs ``first_epoch .. epochs - 1``, in a resumable order.

        Epoch e visits the images in the order of a permutation that depends
        only on ``(seed, e)`` (`tfvqvae.data.epochs.epoch_order`: a
        ``tf.random.experimental.stateless_shuffle``), not on how many times
        the pipeline was iterated before, so a restarted process sees exactly
        the batches an uninterrupted one would. Every epoch has
        ``len(self) // batch_size`` full batches (the remainder is dropped,
        which also gives static shapes); ``skip_batches`` drops that many
        batches from the start of ``first_epoch`` (the steps a resumed run
        already took). The order is `tfvqvae.data.epochs.epoch_batches`'s.

        ``random_flip`` flips each image left-right with probability 1/2,
        decided by (seed, epoch, index) alone (`image_ops.element_seed`), so
        a resumed run flips the same images. With ``input_context`` (from
        ``strategy.distribute_datasets_from_function``) the result is this
        input pipeline's per-replica batches: its slice of every global
        batch.

        Returns:
            A ``tf.data.Dataset`` like `to_tf_dataset`'s, of
            ``(epochs - first_epoch) * (len(self) // batch_size) - skip_batches``
            batches.

        Raises:
            ValueError: when the dataset holds fewer than ``batch_size``
                images, or on a negative ``skip_batches`` or ``first_epoch``,
                or a ``skip_batches`` of a whole epoch or more.
        """
        batch_size = positive_int("batch_size", _plain_int(batch_size))
        n = len(self)
        if n < batch_size:
            raise ValueError(
                f"Dataset {self.name!r} has {n} images, fewer than one batch of {batch_size}."
            )
        gather = self._batch_gatherer(with_labels, image_size)
        ds = epoch_batches(
            n,
            batch_size,
            seed=seed,
            first_epoch=first_epoch,
            epochs=epochs,
            skip_batches=skip_batches,
            input_context=input_context,
            with_epoch=random_flip,
        )
        if random_flip:
            run_seed = tf.constant(seed, tf.int64)

            def gather_flipped(epochs, indices):
                batch = gather(indices)
                images = batch[0] if with_labels else batch

                def flip(element):
                    image, epoch, index = element
                    seed = image_ops.element_seed(run_seed, epoch, index, stream=1)
                    return image_ops.random_flip(image, seed)

                images = tf.map_fn(flip, (images, epochs, indices),
                                   fn_output_signature=images.dtype)
                return (images, batch[1]) if with_labels else images

            ds = ds.map(gather_flipped, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        else:
            ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.prefetch(tf.data.AUTOTUNE)

    def _batch_gatherer(self, with_labels, image_size):
        """A function from a batch of int64 indices to float32 images (and labels)."""
        if with_labels and self.labels is None:
            raise ValueError(f"with_labels=True but dataset {self.name!r} has no labels")
        height, width, _ = self.image_shape
        target = None if image_size is None else normalize_size(image_size)
        if target == (height, width):
            target = None
        antialias = target is not None and (target[0] < height or target[1] < width)

        images = tf.convert_to_tensor(self.images)
        labels = tf.convert_to_tensor(self.labels) if with_labels else None
        is_uint8 = self.images.dtype == np.uint8

        def _batch(indices):
            x = tf.gather(images, indices)
            x = tf.cast(x, tf.float32)
            if is_uint8:
                x = x / 255.0
            if target is not None:
                x = tf.image.resize(x, target, method="bilinear", antialias=antialias)
                x = tf.clip_by_value(x, 0.0, 1.0)
            if labels is None:
                return x
            return x, tf.gather(labels, indices)

        return _batch


def from_numpy(
    images: np.ndarray,
    labels: np.ndarray | None = None,
    name: str = "numpy",
    num_classes: int | None = None,
) -> ImageDataset:
    """Wraps NumPy arrays in an :class:`ImageDataset`.

    Args:
        images: ``(N, H, W)`` (a channel axis is added) or ``(N, H, W, C)``
            array, ``uint8`` in [0, 255] or floating in [0, 1].
        labels: Optional ``(N,)`` integer class indices.
        name: Dataset name.
        num_classes: Optional number of classes.

    Returns:
        The dataset (``float`` images become ``float32``).

    Raises:
        TypeError: On an integer dtype other than ``uint8`` (convert or scale
            explicitly), or any other non-float dtype.
        ValueError: On a rank other than 3 or 4, or values outside [0, 1].
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
        raise TypeError(
            f"images must be uint8 in [0, 255] or floating in [0, 1]; received dtype {images.dtype}"
        )
    if images.ndim == 3:
        images = images[..., np.newaxis]
    elif images.ndim != 4:
        raise ValueError(
            f"images must have shape (N, H, W) or (N, H, W, C); received shape {images.shape}"
        )
    return ImageDataset(images=images, labels=labels, name=name, num_classes=num_classes)
