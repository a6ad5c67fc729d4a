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
import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from tfvqvae import atomic
from tfvqvae.distribute import build_strategy
from tfvqvae.distribute import check_jit_compile
from tfvqvae.distribute import in_multi_worker_mode
from tfvqvae.distribute import is_chief
from tfvqvae.distribute import per_replica_batch_size
from tfvqvae.distribute import precision_policy
from tfvqvae.run_folder import load_keras_file
from tfvqvae.training.checkpoints import EpochCheckpoint
from tfvqvae.training.checkpoints import StepBackup
from tfvqvae.training.checkpoints import StopOnNonFinite
from tfvqvae.training.checkpoints import LATEST
from tfvqvae.training.checkpoints import latest_state

logger = logging.getLogger(__name__)

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


def prepare_output(out, resume, overwrite, config=None):
    """Checks a request's output folder, writing nothing; returns whether it resumes.

    A non-empty ``out`` needs ``resume`` or ``overwrite``, except that the
    same command run again (an identical saved ``config.json``, a checkpoint,
    no ``metrics.json`` yet) continues the interrupted run: that is what
    makes a killed job restartable unchanged. ``resume`` needs a
    ``config.json`` and a checkpoint in ``out``. `create_output` then makes
    the folder.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"Output path exists and is not a folder: {out}")
    if resume and overwrite:
        raise ValueError(f"Pass --resume or --overwrite, not both (output folder {out}).")
    if resume:
        check_resumable(out)
    elif out.is_dir() and any(out.iterdir()) and not overwrite:
        if not interrupted_run(out, config):
            raise FileExistsError(
                f"Output folder {out} is not empty: pass --resume to continue the "
                "run in it or --overwrite to start again."
            )
        logger.info("Resuming the interrupted run in %s", out)
        resume = True
    return resume


def create_output(out, overwrite):
    """Makes the output folder (emptied first with ``overwrite``); returns its Path."""
    out = Path(out)
    if overwrite and out.is_dir() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic.remove_stale_temporaries(out)
    return out


def check_resumable(out):
    """Refuses ``--resume`` on a folder without a saved config.json and checkpoint."""
    out = Path(out)
    missing = None
    if not out.is_dir():
        missing = "the folder does not exist"
    elif not (out / "config.json").is_file():
        missing = "no config.json"
    elif latest_state(out / "checkpoints") is None:
        missing = f"no checkpoint ({out / 'checkpoints' / LATEST})"
    if missing:
        raise FileNotFoundError(
            f"--resume: nothing to resume in {out}: {missing}; drop --resume to start a new run."
        )


def interrupted_run(out, config):
    """Whether ``out`` holds an unfinished run of exactly ``config`` (a dataclass with ``load``)."""
    saved = Path(out) / "config.json"
    if config is None or not saved.is_file() or (Path(out) / "metrics.json").exists():
        return False
    if latest_state(Path(out) / "checkpoints") is None:
        return False
    try:
        return type(config).load(saved) == config
    except (ValueError, TypeError):
        return False


def start_run(folder, config, resume, overwrite, strategy, check=None):
    """Checks a request and opens its run folder: the preamble of `train` and `train_prior`.

    Refuses, before writing anything, a global batch that does not split over
    the replicas, ``jit_compile`` where Keras cannot compile the step,
    ``overwrite`` with several workers (they would race to delete), an output
    folder that is in the way (`prepare_output`), and whatever ``check``
    refuses. On resume the saved ``config.json`` wins except for ``epochs``.

    Args:
        check: None or ``check(config) -> result``, called with the resolved
            config before the folder is created (the caller's data and shape
            checks); its result is returned.

    Returns:
        ``(strategy, out, config, resume, checked)``: ``checked`` is
        ``check``'s result (None without one).
    """
    strategy = resolve_strategy(strategy)
    per_replica_batch_size(config.batch_size, strategy)
    check_jit_compile(config.jit_compile, strategy)
    if in_multi_worker_mode(strategy) and overwrite:
        raise ValueError(
            "overwrite is not supported with multi-worker training (the workers "
            "would race to delete the folder): delete it before starting them."
        )
    out = Path(folder)
    if is_chief(strategy):
        resume = prepare_output(out, resume, overwrite, config)
    else:  # reads the chief's folder, writes nowhere in it
        if resume:
            check_resumable(out)
        resume = resume or interrupted_run(out, config)
    if resume:
        updates = {"epochs": config.epochs}
        if hasattr(config, "out"):
            updates["out"] = str(out)
        config = dataclasses.replace(type(config).load(out / "config.json"), **updates)
    checked = check(config) if check is not None else None
    if is_chief(strategy):
        create_output(out, overwrite)
    return strategy, out, config, resume, checked


def restore_or_build(out, resume, steps_per_epoch, strategy, config, build):
    """The model to train and the global step it is at.

    Loads the newest checkpoint of ``out/checkpoints`` when resuming, else
    calls ``build()`` under ``config.mixed_precision``'s policy and compiles
    it with Adam(``config.learning_rate``) and ``config.jit_compile``; both
    under ``strategy.scope()``.
    """
    found = latest_state(Path(out) / "checkpoints") if resume else None
    with strategy.scope():
        if found is not None:
            step = found["step"]
            if step is None:  # a checkpoint from before step counting
                step = found["epoch"] * steps_per_epoch
            logger.info("Resuming from %s (step %d)", found["path"], step)
            return load_keras_file(found["path"], "checkpoint"), step
        with precision_policy(config.mixed_precision):
            model = build()
            model.compile(
                optimizer=keras.optimizers.Adam(config.learning_rate),
                jit_compile=config.jit_compile,
            )
        return model, 0


def steps_per_epoch_of(count, batch_size, what):
    """Full global batches in ``count`` examples; refuses fewer than one."""
    steps = count // batch_size
    if steps == 0:
        raise ValueError(
            f"The training set holds {count} {what}, fewer than one global batch "
            f"of {batch_size}: lower --batch-size."
        )
    return steps


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
        callbacks: extra Keras callbacks (run after the checkpoint ones).
        **fit_kwargs: passed to ``fit`` (``validation_data``, ``verbose``).

    Returns:
        The last ``History`` (None when there was nothing left to run).

    Raises:
        FloatingPointError: a training step had a NaN / Inf loss or gradient
            (`StopOnNonFinite`); the step was skipped and nothing was saved
            after it.
    """
    first_epoch, skip = divmod(initial_step, steps_per_epoch)
    history = None
    while first_epoch < epochs:
        last_epoch = first_epoch + 1 if skip else epochs
        start = first_epoch * steps_per_epoch + skip
        # StopOnNonFinite first: after a skipped (NaN / Inf) step it raises
        # before any checkpoint callback could save.
        fit_callbacks = [
            StopOnNonFinite(checkpoint_dir, steps_per_epoch, initial_step=start),
            EpochCheckpoint(checkpoint_dir, steps_per_epoch=steps_per_epoch),
        ]
        if backup_every is not None:
            fit_callbacks.append(StepBackup(
                checkpoint_dir, backup_every, steps_per_epoch,
                initial_step=start,
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
