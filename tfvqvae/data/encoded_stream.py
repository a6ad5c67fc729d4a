"""What the streamed sources of encoded records share: shuffle encoded, decode after.

`tfvqvae.data.ImageShards` (TFRecord shards of ``tfvqvae prepare``) and
`tfvqvae.data.TFDSImages` (a TFDS split) both deliver records holding an
encoded image (or, for some TFDS features, its pixels) and a label. This base
class turns them into the `ImageSource` pipelines: the records are ordered,
block-shuffled and skipped while still encoded
(`tfvqvae.data.epochs.epoch_batches`), so a shuffle block holds compressed
bytes only and a resumed run skips without decoding; then each image is
decoded, converted (`tfvqvae.data.image_ops`), flipped when asked, batched and
prefetched, in parallel deterministic maps. Subclasses say where the records
come from (`_ordered_records`, `_epoch_records`, `_pipeline_counts`) and how
to parse one (`_parse`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfvqvae.data import image_ops
from tfvqvae.data.epochs import epoch_batches
from tfvqvae.data.source import DEFAULT_VARIANCE_SAMPLE
from tfvqvae.data.source import VARIANCE_BATCH
from tfvqvae.data.source import finish_batches
from tfvqvae.data.source import ImageSource
from tfvqvae.data.source import per_replica_batch
from tfvqvae.validation import positive_int

__all__ = ["DEFAULT_SHUFFLE_BLOCK", "EncodedImageStream"]

#: Encoded records shuffled together (held in memory at once: compressed bytes).
DEFAULT_SHUFFLE_BLOCK = 2048


class EncodedImageStream(ImageSource):
    """The pipelines shared by streamed sources of encoded image records.

    A subclass names its records and how to read them; this class shuffles,
    skips and batches the records while they are still encoded, then decodes,
    converts (:mod:`tfvqvae.data.image_ops`), flips and batches them in
    parallel, order-keeping ``tf.data`` maps. Subclasses are dataclasses with
    the fields ``name``, ``num_classes``, ``size`` ((height, width)),
    ``resize`` (convert every image to ``size``; else each must have it),
    ``channels`` (1 or 3), ``crop`` ("none", "center", "random") and
    ``shuffle_block`` (records permuted together), and implement:

    * ``_ordered_records()``: every record in file order (a dataset);
    * ``_epoch_records(pipeline_id, pipelines, seed)``: a function from the
      epoch (int64 scalar tensor) to that epoch's records of one input
      pipeline (the order of the pipeline's files may depend on the epoch);
    * ``_pipeline_counts(pipelines)``: the records of each pipeline;
    * ``_parse(record)``: ``(contents, label, key, what)``: the encoded bytes
      (or a ``uint8`` ``(H, W, C)`` image when ``_encoded`` is False), the
      int64 label (-1: none), an int64 key seeding the record's random crop
      and flip, and a string naming the record in messages.
    """

    _encoded = True

    # ---------------------------------------------------------------- interface
    @property
    def image_shape(self):
        return (*self.size, self.channels)

    def steps_per_epoch(self, batch_size, num_input_pipelines=1):
        """Global steps of one epoch, the same for every input pipeline.

        ``min over pipelines k of (records of pipeline k) // (batch_size / P)``:
        a pipeline with more records drops its extra ones, so that all
        workers stop the epoch at the same step.

        Raises:
            ValueError: ``batch_size`` does not divide among the pipelines,
                or fewer files than pipelines (a source sharded per file).
        """
        batch_size = positive_int("batch_size", int(batch_size) if isinstance(
            batch_size, np.integer) else batch_size)
        pipelines = positive_int("num_input_pipelines", int(num_input_pipelines))
        if batch_size % pipelines:
            raise ValueError(f"The global batch of {batch_size} images does not divide "
                             f"evenly among {pipelines} input pipelines.")
        return min(self._pipeline_counts(pipelines)) // (batch_size // pipelines)

    def to_tf_dataset(self, batch_size, *, shuffle=False, seed=None, with_labels=False,
                      image_size=None, drop_remainder=False, repeat=False):
        """Batches in file order (or, with ``shuffle``, each pass in a new block-shuffled order).

        See `ImageSource.to_tf_dataset`. ``crop="random"`` cuts the centre
        here and nothing is flipped. ``seed=None`` with ``shuffle`` draws a
        seed; pass k of a repeated shuffled stream is the order of epoch k of
        `epochs_dataset` (one pipeline).
        """
        batch_size = positive_int("batch_size", int(batch_size) if isinstance(
            batch_size, np.integer) else batch_size)
        self._check_labels(with_labels)
        if shuffle:
            if seed is None:
                seed = int(np.random.default_rng().integers(2**31))
            records = epoch_batches(
                self._epoch_records(0, 1, seed), 1, seed=seed, first_epoch=0,
                epochs=2**62 if repeat else 1, shuffle_block=self.shuffle_block,
                drop_remainder=False, with_epoch=True).unbatch()
        else:
            records = self._ordered_records()
            if repeat:
                records = records.repeat()
            records = records.map(lambda r: (tf.constant(0, tf.int64), r))
        images = self._decode(records, seed=0, train=False, random_flip=False)
        images = images.batch(batch_size, drop_remainder=drop_remainder)
        images = self._finish(images, with_labels, image_size)
        if repeat:
            return images
        # Known counts let Keras see an epoch's end (no "ran out of data").
        n = len(self)
        return images.apply(tf.data.experimental.assert_cardinality(
            n // batch_size if drop_remainder else -(-n // batch_size)))

    def epochs_dataset(self, batch_size, *, seed, first_epoch, epochs, skip_batches=0,
                       with_labels=False, image_size=None, random_flip=False,
                       input_context=None):
        """The resumable training batches; see `ImageSource.epochs_dataset`.

        Records are shuffled and the first ``skip_batches`` global batches
        dropped while still encoded (:func:`tfvqvae.data.epochs.epoch_batches`
        over this pipeline's records, every epoch cut to `steps_per_epoch`),
        then decoded. With ``input_context``: per-replica batches of
        ``batch_size / num_replicas_in_sync`` images of this pipeline's own
        records only.

        Raises:
            ValueError: ``with_labels`` on unlabelled data; fewer records
                than one batch per pipeline; fewer files than pipelines; a
                batch that does not divide among the replicas.
        """
        self._check_labels(with_labels)
        pipelines, pipeline_id, _, per_replica = per_replica_batch(batch_size, input_context)
        steps = self.steps_per_epoch(batch_size, pipelines)
        if steps < 1:
            shares = ", ".join(str(c) for c in self._pipeline_counts(pipelines))
            where = f" in each of {pipelines} input pipelines ({shares} images)" if (
                pipelines > 1) else ""
            raise ValueError(
                f"Dataset {self.name!r} has {len(self)} images, fewer than one batch of "
                f"{batch_size}{where}.")
        batches = epoch_batches(
            self._epoch_records(pipeline_id, pipelines, seed), batch_size, seed=seed,
            first_epoch=first_epoch, epochs=epochs, skip_batches=skip_batches,
            shuffle_block=self.shuffle_block, input_context=input_context,
            steps_per_epoch=steps, with_epoch=True)
        images = self._decode(batches.unbatch(), seed=seed, train=True,
                              random_flip=random_flip)
        images = images.batch(per_replica, drop_remainder=True)
        total = max(max(epochs - first_epoch, 0) * steps - skip_batches, 0)
        replica_batches = batch_size // per_replica // pipelines
        return self._finish(images, with_labels, image_size).apply(
            tf.data.experimental.assert_cardinality(total * replica_batches))

    def pixel_variance(self, max_examples=DEFAULT_VARIANCE_SAMPLE):
        """Variance of the pixel values in [0, 1] units over the first ``max_examples`` records.

        Streams them in file order, summing in float64 (equals ``np.var`` of
        those images); never holds more than a batch.
        """
        count = min(len(self), positive_int("max_examples", max_examples))
        images = self.take(count).to_tf_dataset(VARIANCE_BATCH)

        def add(total, batch):
            x = tf.cast(batch, tf.float64)
            return (total[0] + tf.reduce_sum(x), total[1] + tf.reduce_sum(x * x),
                    total[2] + tf.cast(tf.size(x), tf.float64))

        zero = tf.constant(0.0, tf.float64)
        total, total_sq, size = (float(v) for v in images.reduce((zero, zero, zero), add))
        mean = total / size
        return float(max(total_sq / size - mean * mean, 0.0))

    # ---------------------------------------------------------------- internals
    def _check_labels(self, with_labels):
        if with_labels and not self.labelled:
            raise ValueError(f"with_labels=True but dataset {self.name!r} has no labels")

    def _decode(self, records, *, seed, train, random_flip):
        """``(epoch, record)`` elements -> ``(uint8 image, int64 label)`` elements."""
        height, width = self.size
        shape = (height, width, self.channels)
        crop = self.crop if train else ("center" if self.crop == "random" else self.crop)
        seed = tf.cast(seed, tf.int64)

        def load(epoch, record):
            contents, label, key, what = self._parse(record)
            image = image_ops.decode_image(contents) if self._encoded else contents
            if self.resize:
                image = image_ops.convert(image, self.size, self.channels, crop,
                                          image_ops.element_seed(seed, epoch, key, 0))
            else:
                image = image_ops.to_channels(image, self.channels)
                got = tf.shape(image)[:2]
                note = tf.strings.join([
                    "Image file ", what, " is ", tf.strings.as_string(got[0]), "x",
                    tf.strings.as_string(got[1]), f", not the {height}x{width} of the "
                    f"dataset's other images: pass image_size=(height, width) (CLI: "
                    "--image-size)"])
                check = tf.debugging.Assert(tf.reduce_all(got == [height, width]), [note],
                                            summarize=1)
                with tf.control_dependencies([check]):
                    image = tf.ensure_shape(tf.identity(image), shape)
            if train and random_flip:
                image = image_ops.random_flip(image, image_ops.element_seed(seed, epoch, key, 1))
            return image, label

        return records.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def _finish(self, images, with_labels, image_size):
        """uint8 batches -> float32 in [0, 1] (resized to ``image_size``), prefetched."""
        return finish_batches(images, self.size, image_size, with_labels)
