"""The resumable training order: epoch e's batches as a function of (seed, e) only.

A run's position is its global step; a restarted process rebuilds the batch
stream from that step and must see exactly the batches an uninterrupted one
would. So epoch e never depends on how often a pipeline was iterated, on TF's
global seed or on the process: its order is a stateless permutation

    order(n, seed, e) = tf.random.experimental.stateless_shuffle(
        tf.range(n, dtype=tf.int64), seed=[seed, e])

and `epoch_batches` cuts it into batches, epoch after epoch, then drops the
first ``skip_batches`` (the steps a resumed run already took)::

    epochs first_epoch .. epochs - 1, each n // batch_size batches
    [e0: b0 b1 b2 | e1: b0 b1 b2 | ...]  --skip k-->  the same stream minus k batches

Two kinds of data:

* In memory (``data`` is the number of examples N): batches of int64 indices
  into the N examples, in the order above; `ImageDataset.epochs_dataset`
  gathers its images with them.
* A ``tf.data.Dataset`` of records, possibly bigger than memory (the code
  files of ``train-prior``): the records are read in file order in
  consecutive blocks of ``shuffle_block`` records (the memory bound) and each
  block is permuted with the same stateless shuffle, block 0 with
  ``[seed, e]`` and block k > 0 with ``stateless_fold_in([seed, e], k)``. A
  file of at most ``shuffle_block`` records is thus permuted exactly like N
  examples in memory; a bigger one is shuffled only within blocks, like a
  ``tf.data`` shuffle buffer shuffles only nearby records.

Batches never span two epochs; with ``drop_remainder`` (the default) each
epoch has N // batch_size batches of static shape.
"""

import numpy as np
import tensorflow as tf

from tfvqvae.data.source import per_replica_batch
from tfvqvae.validation import integer
from tfvqvae.validation import non_negative_int
from tfvqvae.validation import positive_int

__all__ = ["DEFAULT_SHUFFLE_BLOCK", "epoch_batches", "epoch_order"]

DEFAULT_SHUFFLE_BLOCK = 10_000


def _plain_int(value):
    """NumPy integers become Python ints (the checks accept only ``int``)."""
    return int(value) if isinstance(value, np.integer) else value


def permutation(size, seeds):
    """A stateless permutation of ``range(size)``, int64 (size,), drawn from ``seeds`` (2,)."""
    return tf.random.experimental.stateless_shuffle(
        tf.range(size, dtype=tf.int64), seed=seeds
    )


def seed_pair(seed, epoch):
    """The stateless seed ``[seed, epoch]``, int64 (2,)."""
    return tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])


def epoch_order(num_examples, *, seed, epoch):
    """The order in which epoch ``epoch`` visits ``num_examples`` examples.

    Args:
        num_examples: positive int N.
        seed: int, the run's seed.
        epoch: non-negative int.

    Returns:
        An int64 tensor (N,): a permutation of ``range(N)`` that depends only
        on ``(seed, epoch)``.

    Raises:
        ValueError: on a ``num_examples`` that is not a positive int, a
            ``seed`` that is not an int or a negative ``epoch``.
    """
    num_examples = positive_int("num_examples", _plain_int(num_examples))
    seed = integer("seed", _plain_int(seed))
    epoch = non_negative_int("epoch", _plain_int(epoch))
    return permutation(num_examples, seed_pair(seed, epoch))


def epoch_batches(
    data,
    batch_size,
    *,
    seed,
    first_epoch,
    epochs,
    skip_batches=0,
    shuffle_block=None,
    drop_remainder=True,
    input_context=None,
    steps_per_epoch=None,
    with_epoch=False,
):
    """The batches of epochs ``first_epoch .. epochs - 1`` in the resumable order.

    Args:
        data: the number of examples N held in memory (an int: the result
            holds int64 index batches (B,) to gather with), a
            ``tf.data.Dataset`` of records (the result holds batched
            records), or a function from the epoch (an int64 scalar tensor)
            to the dataset of that epoch's records (e.g. the shards in an
            order drawn from (seed, epoch)).
        batch_size: positive int.
        seed: int, the run's seed.
        first_epoch: non-negative int, the first epoch of the stream.
        epochs: int, one past the last epoch (none when ``<= first_epoch``).
        skip_batches: non-negative int, batches dropped from the start of
            ``first_epoch``. For in-memory data it must be smaller than the
            number of batches per epoch. Defaults to 0.
        shuffle_block: positive int, records permuted together (held in
            memory at once), for a dataset of records only. Defaults to
            `DEFAULT_SHUFFLE_BLOCK` (10 000).
        drop_remainder: drop each epoch's last, smaller batch. Defaults to
            True.
        input_context: a ``tf.distribute.InputContext`` (from
            ``strategy.distribute_datasets_from_function``) or None. With it
            the result is this input pipeline's share, in per-replica batches
            of ``batch_size / num_replicas_in_sync``: for in-memory data,
            pipeline k of P takes the k-th of P equal slices of every global
            batch, so the replicas of one step together see exactly the
            global batch a single device would (``drop_remainder`` must be
            True); for records, which already are this pipeline's files,
            consecutive records are cut into per-replica batches.
            ``skip_batches`` and ``steps_per_epoch`` still count global steps.
        steps_per_epoch: for records only, the global steps each epoch is cut
            to (every worker must take the same number); None keeps every
            full batch.
        with_epoch: yield ``(epochs, batch)`` pairs, ``epochs`` an int64
            ``(B,)`` tensor holding each element's epoch (for per-example
            random augmentation seeded by (seed, epoch, example)).

    Returns:
        An unprefetched ``tf.data.Dataset`` of
        ``(epochs - first_epoch) * batches_per_epoch - skip_batches`` batches
        (times the replicas per pipeline with ``input_context``).

    Raises:
        ValueError: on an argument outside its range, in-memory data with
            fewer than ``batch_size`` examples (and ``drop_remainder``), or
            ``shuffle_block`` with in-memory data.
        TypeError: on ``data`` that is neither an int nor a
            ``tf.data.Dataset``.
    """
    batch_size = positive_int("batch_size", _plain_int(batch_size))
    seed = integer("seed", _plain_int(seed))
    first_epoch = non_negative_int("first_epoch", _plain_int(first_epoch))
    epochs = integer("epochs", _plain_int(epochs))
    skip_batches = non_negative_int("skip_batches", _plain_int(skip_batches))
    steps_per_epoch = positive_int("steps_per_epoch", _plain_int(steps_per_epoch),
                                   allow_none=True)
    slicing = _pipeline_slices(batch_size, input_context, drop_remainder)
    replica_batches = slicing[3]  # per-replica batches of one global step, this pipeline
    if isinstance(data, tf.data.Dataset) or callable(data):
        block = positive_int("shuffle_block", _plain_int(shuffle_block), allow_none=True)
        per_epoch = _record_epochs(data, block or DEFAULT_SHUFFLE_BLOCK, slicing[2],
                                   seed, drop_remainder,
                                   None if steps_per_epoch is None
                                   else steps_per_epoch * replica_batches)
        if steps_per_epoch is not None and skip_batches >= steps_per_epoch:
            raise ValueError(
                f"`skip_batches` must satisfy 0 <= skip_batches < {steps_per_epoch} (the "
                f"steps of an epoch). Received: skip_batches={skip_batches}"
            )
    elif isinstance(_plain_int(data), int) and not isinstance(data, bool):
        num_examples = positive_int("data", _plain_int(data))
        if shuffle_block is not None:
            raise ValueError(
                "`shuffle_block` applies to a tf.data.Dataset of records only; in-memory "
                f"data is permuted whole. Received: shuffle_block={shuffle_block!r}"
            )
        per_epoch = _index_epochs(num_examples, batch_size, seed, skip_batches,
                                  drop_remainder, slicing)
    else:
        raise TypeError(
            "`data` must be the number of examples (an int) or a tf.data.Dataset of "
            f"records. Received: data of type {type(data).__name__}"
        )
    if with_epoch:
        untagged = per_epoch

        def per_epoch(epoch):
            return untagged(epoch).map(lambda batch: (
                tf.fill(tf.shape(tf.nest.flatten(batch)[0])[:1], epoch), batch))

    batches = tf.data.Dataset.range(first_epoch, max(epochs, first_epoch)).flat_map(per_epoch)
    return batches.skip(skip_batches * replica_batches)


def _pipeline_slices(batch_size, input_context, drop_remainder):
    """``(pipelines, pipeline_id, per_replica, replica_batches_per_step)`` of a global batch."""
    if input_context is None:
        return 1, 0, batch_size, 1
    if not drop_remainder:
        raise ValueError("`input_context` needs drop_remainder=True (static, equal batches).")
    pipelines, pipeline_id, per_pipeline, per_replica = per_replica_batch(
        batch_size, input_context)
    return pipelines, pipeline_id, per_replica, per_pipeline // per_replica


def _index_epochs(num_examples, batch_size, seed, skip_batches, drop_remainder, slicing):
    """``epoch -> dataset of int64 index batches`` for N examples in memory."""
    if num_examples < batch_size and drop_remainder:
        raise ValueError(
            f"`data` must hold at least one batch of batch_size={batch_size} examples. "
            f"Received: data={num_examples}"
        )
    per_epoch = -(-num_examples // batch_size) if not drop_remainder else (
        num_examples // batch_size)
    if skip_batches >= per_epoch:
        raise ValueError(
            f"`skip_batches` must satisfy 0 <= skip_batches < {per_epoch} (the batches "
            f"of an epoch). Received: skip_batches={skip_batches}"
        )
    used = per_epoch * batch_size if drop_remainder else num_examples
    pipelines, pipeline_id, per_replica, _ = slicing
    share = batch_size // pipelines

    def one_epoch(epoch):
        order = permutation(num_examples, seed_pair(seed, epoch))
        if drop_remainder:  # (used,) -> (per_epoch, B) -> this pipeline's (per_epoch, B / P)
            batches = tf.reshape(order[:used], [-1, batch_size])
            mine = batches[:, pipeline_id * share:(pipeline_id + 1) * share]
            return tf.data.Dataset.from_tensor_slices(tf.reshape(mine, [-1, per_replica]))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    return one_epoch


def _record_epochs(records, block, batch_size, seed, drop_remainder, max_batches=None):
    """``epoch -> dataset of record batches``, each block of records permuted."""

    def one_epoch(epoch):
        base = seed_pair(seed, epoch)

        def permute(index, chunk):  # chunk: records stacked, (b, ...) each
            # NB: block 0 keeps [seed, e], so a file of at most one block is
            # permuted exactly like the same number of examples in memory.
            block_seed = tf.where(
                index == 0, base, tf.random.experimental.stateless_fold_in(base, index)
            )
            size = tf.shape(tf.nest.flatten(chunk)[0], out_type=tf.int64)[0]
            order = permutation(size, block_seed)
            return tf.nest.map_structure(lambda t: tf.gather(t, order), chunk)

        source = records(epoch) if callable(records) else records
        shuffled = source.batch(block).enumerate().map(permute)
        batches = shuffled.unbatch().batch(batch_size, drop_remainder=drop_remainder)
        return batches if max_batches is None else batches.take(max_batches)

    return one_epoch
