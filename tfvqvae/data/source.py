"""The one interface of every dataset, held in memory or streamed from files.

Every loader of :func:`tfvqvae.data.load_dataset` returns an
:class:`ImageSource`:

* :class:`~tfvqvae.data.ImageDataset`: a small dataset held in memory (IDX,
  CIFAR-10 binary, ``.npz``, digits);
* :class:`~tfvqvae.data.ImageFolder`: an image folder of any size, decoded
  file by file inside ``tf.data`` maps;
* :class:`~tfvqvae.data.ImageShards`: TFRecord shards of encoded images (what
  ``tfvqvae prepare`` writes);
* :class:`~tfvqvae.data.TFDSImages`: a TFDS split streamed as ``tf.data``.

All of them yield ``float32`` images in [0, 1] of shape ``(B, H, W, C)`` (and
``int64`` labels ``(B,)`` when asked) and share the resumable epoch order of
:mod:`tfvqvae.data.epochs`: epoch e's batches depend only on (seed, e).

Distribution: :meth:`ImageSource.epochs_dataset` takes the
``tf.distribute.InputContext`` that
``strategy.distribute_datasets_from_function`` passes and returns this input
pipeline's share, batched per replica (`per_replica_batch`). The global-batch
rule stays: ``batch_size`` is always the global batch.
"""

from __future__ import annotations

import abc

import numpy as np
import tensorflow as tf

from tfvqvae.data import image_ops
from tfvqvae.data.transform import normalize_size
from tfvqvae.validation import positive_int

__all__ = ["DEFAULT_VARIANCE_SAMPLE", "VARIANCE_BATCH", "ImageSource", "per_replica_batch"]

#: Examples a streamed source reads to estimate the pixel variance.
DEFAULT_VARIANCE_SAMPLE = 10_000
#: Images per step of that pass: small, so that the float64 copy of a batch of large
#: images stays small (32 images of 256x256x3 are 50 MB in float64).
VARIANCE_BATCH = 32


def per_replica_batch(batch_size, input_context=None):
    """``(pipelines, pipeline_id, per_pipeline, per_replica)`` batch sizes for a global batch.

    Args:
        batch_size: positive int, the global batch (all replicas of all
            workers together).
        input_context: a ``tf.distribute.InputContext`` or None (one pipeline,
            one replica).

    Returns:
        ``(num_input_pipelines, input_pipeline_id, batch_size /
        num_input_pipelines, batch_size / num_replicas_in_sync)``.

    Raises:
        ValueError: when ``batch_size`` does not divide evenly among the
            replicas.
    """
    batch_size = positive_int("batch_size", int(batch_size) if isinstance(
        batch_size, np.integer) else batch_size)
    if input_context is None:
        return 1, 0, batch_size, batch_size
    pipelines = int(input_context.num_input_pipelines)
    replicas = int(input_context.num_replicas_in_sync)
    if batch_size % replicas or replicas % pipelines:
        raise ValueError(
            f"The global batch of {batch_size} images does not divide evenly among "
            f"{replicas} replicas: pass a --batch-size that is a multiple of {replicas}."
        )
    return pipelines, int(input_context.input_pipeline_id), batch_size // pipelines, (
        batch_size // replicas)


def finish_batches(images, size, image_size=None, with_labels=False):
    """uint8 ``(images, labels)`` batches -> float32 in [0, 1], resized, prefetched.

    Args:
        images: a dataset of ``(uint8 (B, h, w, C), int64 (B,))`` pairs.
        size: ``(h, w)`` of those images.
        image_size: None or an int / ``(height, width)`` to resize to
            (bilinear, antialiased when shrinking, clipped to [0, 1]).
        with_labels: keep the labels (else yield the images alone).
    """
    height, width = size
    target = None if image_size is None else normalize_size(image_size)

    def finish(x, y):
        x = image_ops.to_float(x)
        if target is not None and target != (height, width):
            shrink = target[0] < height or target[1] < width
            x = tf.clip_by_value(
                tf.image.resize(x, target, method="bilinear", antialias=shrink), 0.0, 1.0)
        return (x, y) if with_labels else x

    images = images.map(finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return images.prefetch(tf.data.AUTOTUNE)


class ImageSource(abc.ABC):
    """What every dataset offers, whether it lives in memory or in files.

    Attributes:
        name: a short name used in messages.
        num_classes: the number of classes when known, else None.
    """

    name: str
    num_classes: int | None

    @property
    @abc.abstractmethod
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of the images the pipelines yield."""

    @property
    @abc.abstractmethod
    def labelled(self) -> bool:
        """Whether examples carry class labels."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """The number of examples."""

    @abc.abstractmethod
    def to_tf_dataset(self, batch_size, *, shuffle=False, seed=None, with_labels=False,
                      image_size=None, drop_remainder=False, repeat=False) -> tf.data.Dataset:
        """Batched ``float32`` images in [0, 1], ``(B, H, W, C)``, in file order unless
        ``shuffle``; ``(images, int64 labels (B,))`` with ``with_labels``."""

    @abc.abstractmethod
    def epochs_dataset(self, batch_size, *, seed, first_epoch, epochs, skip_batches=0,
                       with_labels=False, image_size=None, random_flip=False,
                       input_context=None) -> tf.data.Dataset:
        """The training batches of epochs ``first_epoch .. epochs - 1`` in the resumable
        order, minus the first ``skip_batches`` global batches; this input pipeline's
        per-replica batches when ``input_context`` is given."""

    @abc.abstractmethod
    def take(self, n: int) -> ImageSource:
        """The first ``n`` examples (in file order) as a source of the same kind."""

    @abc.abstractmethod
    def pixel_variance(self) -> float:
        """Variance of the pixel values in [0, 1] units (what VQ-VAE's normalised MSE
        divides by)."""

    def steps_per_epoch(self, batch_size, num_input_pipelines=1) -> int:
        """Global batches in one epoch: ``len(self) // batch_size`` unless a source
        shards its files per worker (then every worker takes the same number)."""
        del num_input_pipelines
        return len(self) // batch_size

    def images_at(self, indices, image_size=None) -> np.ndarray:
        """The images at ``indices`` (positions in file order) as ``float32`` in [0, 1].

        Args:
            indices: int array (n,), increasing, each in ``[0, len(self))``.
            image_size: None or ``(height, width)`` to resize to (bilinear,
                as `to_tf_dataset`).

        Returns:
            ``(n, H, W, C)`` float32. Streams the source up to the largest
            index (sources with random access override this).

        Raises:
            ValueError: on indices that are not increasing or out of range.
        """
        indices = self._checked_indices(indices)
        if not len(indices):
            height, width = self.image_shape[:2] if image_size is None else image_size
            return np.zeros((0, height, width, self.image_shape[2]), np.float32)
        found, start = [], 0
        wanted = iter(indices.tolist())
        target = next(wanted, None)
        for batch in self.take(int(indices[-1]) + 1).to_tf_dataset(
                256, image_size=image_size):
            batch = batch.numpy()
            while target is not None and target < start + len(batch):
                found.append(batch[target - start])
                target = next(wanted, None)
            start += len(batch)
        return np.stack(found)

    def _checked_indices(self, indices):
        indices = np.asarray(indices, np.int64).reshape(-1)
        if len(indices) and (np.any(np.diff(indices) <= 0) or indices[0] < 0
                             or indices[-1] >= len(self)):
            raise ValueError(
                f"`indices` must increase and lie in [0, {len(self)}). Received: "
                f"indices from {indices.min()} to {indices.max()}")
        return indices

    def as_float(self, max_examples=None) -> np.ndarray:
        """The images (the first ``max_examples``) as one ``float32`` array in [0, 1].

        Materialises them: meant for test sets and samples, not for training
        data at scale.
        """
        source = self if max_examples is None else self.take(max_examples)
        batches = [b.numpy() for b in source.to_tf_dataset(256)]
        return np.concatenate(batches) if batches else np.zeros((0, *self.image_shape),
                                                                  np.float32)
