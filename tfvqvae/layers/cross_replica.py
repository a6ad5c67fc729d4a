"""Sums and row bookkeeping across the replicas of a `tf.distribute` strategy.

They are no-ops outside a multi-replica replica context (plain eager calls, the
default strategy, cross-replica context), so the quantizers call them
unconditionally. They are what keeps codebook statistics identical on every
replica: each replica counts its own share of the global batch and the sums are
all-reduced before any state is assigned. (Without the all-reduce, under
``MirroredStrategy`` each replica's codebook follows its own share of the batch:
with the default variable aggregation the replicas drift apart, and with
``aggregation="mean"`` they stay equal but are not the codebook one device
would compute on the whole global batch. With it, a 2-replica run matches one
device to float32 rounding: ``tests/layers/test_vector_quantizer_ema.py``.)
"""

import tensorflow as tf


def _multi_replica_context():
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return None
    return ctx


def sum_across_replicas(value):
    """Returns ``value`` summed over all replicas (``value`` itself on one)."""
    ctx = _multi_replica_context()
    if ctx is None:
        return value
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)


def replica_row_range(local_rows):
    """(first global row of this replica, rows in the global batch).

    A strategy splits each global batch in replica order, so replica r holds
    rows [Σ_{q<r} n_q, Σ_{q≤r} n_q). Outside a multi-replica context this is
    (0, local_rows).
    """
    ctx = _multi_replica_context()
    if ctx is None:
        return tf.zeros([], local_rows.dtype), local_rows
    replicas = ctx.num_replicas_in_sync
    replica = ctx.replica_id_in_sync_group
    sizes = ctx.all_reduce(
        tf.distribute.ReduceOp.SUM,
        tf.one_hot(replica, replicas, dtype=local_rows.dtype) * local_rows,
    )  # (R,): every replica's row count
    offset = tf.reduce_sum(tf.where(tf.range(replicas) < replica, sizes, 0))
    return offset, tf.reduce_sum(sizes)


def gather_across_replicas(value):
    """Concatenates every replica's ``value`` along axis 0, in replica order."""
    ctx = _multi_replica_context()
    if ctx is None:
        return value
    return ctx.all_gather(value, axis=0)
