"""What ``train`` and ``train-prior`` share: strategy choice, the folder a worker
writes to, and a ``fit`` that resumes mid-epoch.

A run's position is its global step G (completed global batches). Epoch e's
batches are a fixed function of (seed, e), so a restarted process can rebuild
the exact stream from step G: `resumable_fit` finishes the partial epoch
G // steps_per_epoch from batch G % steps_per_epoch with one ``fit`` call, then
runs the remaining epochs with another. Checkpoints at epoch ends and every
``backup_every`` steps (`tfvqvae.training.checkpoints`) record G.
"""

import contextlib
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from tfvqvae.distribute import build_strategy
from tfvqvae.distribute import is_chief
from tfvqvae.training.checkpoints import EpochCheckpoint
from tfvqvae.training.checkpoints import StepBackup

DEFAULT_BACKUP_EVERY = 100


def resolve_strategy(strategy):
    """A ``tf.distribute.Strategy`` from None (the current one), a name or a strategy."""
    if strategy is None:
        return tf.distribute.get_strategy()
    if isinstance(strategy, str):
        return build_strategy(strategy)
    if not isinstance(strategy, tf.distribute.Strategy):
        raise TypeError(
            "strategy must be None, a name (default, mirrored, multiworker, tpu) "
            f"or a tf.distribute.Strategy. Received: {strategy!r}"
        )
    return strategy


def in_multi_worker_mode(strategy):
    check = getattr(strategy.extended, "_in_multi_worker_mode", None)
    return bool(check and check())


@contextlib.contextmanager
def write_folder(out, strategy):
    """Where this process writes: ``out`` on the chief, a scratch folder elsewhere.

    Non-chief workers run every save (see `checkpoints`) into a temporary
    folder that is deleted afterwards; they read checkpoints from ``out``,
    which must be storage every worker sees (a shared file system or GCS).
    """
    if is_chief(strategy):
        yield Path(out)
        return
    scratch = Path(tempfile.mkdtemp(prefix="tfvqvae-worker-"))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def batch_distribution_options(dataset):
    """Shards by element (each worker takes its slice of every global batch)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return dataset.with_options(options)


def resumable_fit(
    model,
    make_dataset,
    *,
    steps_per_epoch,
    epochs,
    initial_step,
    checkpoint_dir,
    backup_every=DEFAULT_BACKUP_EVERY,
    history_csv=None,
    callbacks=(),
    **fit_kwargs,
):
    """Runs ``model.fit`` from global step ``initial_step`` to ``epochs * steps_per_epoch``.

    Args:
        model: a compiled model (loaded from the checkpoint at
            ``initial_step`` when resuming).
        make_dataset: ``(first_epoch, skip_batches) -> tf.data.Dataset`` of
            the batches of epochs ``first_epoch ..`` with the first
            ``skip_batches`` removed; the same batches on every call.
        steps_per_epoch: global batches per epoch.
        epochs: total epochs of the run.
        initial_step: completed steps (0 for a new run).
        checkpoint_dir: where `EpochCheckpoint` and `StepBackup` write.
        backup_every: steps between mid-epoch backups (None: epochs only).
        history_csv: path of the CSV log (appended to when resuming).
        callbacks: extra Keras callbacks.
        **fit_kwargs: passed to ``fit`` (``validation_data``, ``verbose``).

    Returns:
        The last ``History`` (None when there was nothing left to run).
    """
    first_epoch, skip = divmod(initial_step, steps_per_epoch)
    history = None
    while first_epoch < epochs:
        last_epoch = first_epoch + 1 if skip else epochs
        fit_callbacks = [EpochCheckpoint(checkpoint_dir, steps_per_epoch=steps_per_epoch)]
        if backup_every is not None:
            fit_callbacks.append(StepBackup(
                checkpoint_dir, backup_every, steps_per_epoch,
                initial_step=first_epoch * steps_per_epoch + skip,
            ))
        if history_csv is not None:
            fit_callbacks.append(keras.callbacks.CSVLogger(
                str(history_csv), append=first_epoch > 0 or skip > 0
            ))
        history = model.fit(
            batch_distribution_options(make_dataset(first_epoch, skip)),
            epochs=last_epoch,
            initial_epoch=first_epoch,
            steps_per_epoch=steps_per_epoch - skip,
            callbacks=[*fit_callbacks, *callbacks],
            shuffle=False,  # the dataset's order is fixed by (seed, epoch)
            **fit_kwargs,
        )
        first_epoch, skip = last_epoch, 0
    return history
