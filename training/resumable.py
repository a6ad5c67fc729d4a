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
import json
import logging
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from tfvqvae import atomic
from tfvqvae.data.image_folder import unreadable_file_error
from tfvqvae.distribute import build_strategy
from tfvqvae.distribute import check_jit_compile
from tfvqvae.distribute import in_multi_worker_mode
from tfvqvae.distribute import is_chief
from tfvqvae.distribute import per_replica_batch_size
from tfvqvae.distribute import precision_policy
from tfvqvae.run_folder import HISTORY_FILE
from tfvqvae.run_folder import LOGS_DIR
from tfvqvae.run_folder import checkpoints_dir
from tfvqvae.run_folder import config_file
from tfvqvae.run_folder import history_file
from tfvqvae.run_folder import load_keras_file
from tfvqvae.run_folder import metrics_file
from tfvqvae.training.checkpoints import EpochCheckpoint
from tfvqvae.training.checkpoints import StepBackup
from tfvqvae.training.checkpoints import check_finite_result
from tfvqvae.training.checkpoints import StopOnNonFinite
from tfvqvae.training.checkpoints import checkpoint_candidates
from tfvqvae.training.checkpoints import write_pointer
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


# Fields that may differ between a run's saved config.json and a request that
# continues it: where the run lives, and how many epochs it runs to.
MAY_CHANGE_ON_RESUME = ("epochs", "out", "run")


def _entries(out):
    """The folder's entries, without the temporary files of killed writers."""
    return [p for p in Path(out).iterdir() if not p.name.startswith(atomic.TEMP_MARKER)]


def config_differences(saved, config):
    """``[(field, requested, saved), ...]`` where ``config`` differs from ``saved``.

    Fields of `MAY_CHANGE_ON_RESUME` are not compared.
    """
    requested, before = config.to_dict(), saved.to_dict()
    return [
        (name, requested[name], before.get(name))
        for name in requested
        if name not in MAY_CHANGE_ON_RESUME and requested[name] != before.get(name)
    ]


def describe_differences(differences, prefix="--"):
    """``--num-embeddings 512 (saved: 256), --batch-size 8 (saved: 32)``."""

    def shown(value):
        return "none" if value is None else str(value).lower() if isinstance(value, bool) else value

    return ", ".join(
        f"{prefix}{name.replace('_', '-')} {shown(new)} (saved: {shown(old)})"
        for name, new, old in differences
    )


def run_status(out, config):
    """What ``out`` holds, compared with the request ``config``.

    Returns:
        ``(status, saved)``: ``status`` is "empty" (missing, or only
        temporary files), "foreign" (no readable ``config.json``),
        "different" (another configuration: ``saved`` is it), "unfinished"
        (this configuration, no ``metrics.json`` yet) or "finished" (this
        configuration and its ``metrics.json``). Configurations are compared
        without `MAY_CHANGE_ON_RESUME`.
    """
    out = Path(out)
    if not out.is_dir() or not _entries(out):
        return "empty", None
    if config is None or not config_file(out).is_file():
        return "foreign", None
    try:
        saved = type(config).load(config_file(out))
    except (ValueError, TypeError):
        return "foreign", None
    if config_differences(saved, config):
        return "different", saved
    if not metrics_file(out).is_file():
        return "unfinished", saved
    # A finished run being continued (--resume --epochs N) and killed has
    # checkpoints past its metrics.json: it is unfinished again.
    finished_epochs = _saved_epochs(out)
    trained = completed_epochs(checkpoints_dir(out))
    if finished_epochs is not None and trained is not None and trained > finished_epochs:
        return "unfinished", saved
    return "finished", saved


def _saved_epochs(out):
    try:
        return int(json.loads(metrics_file(out).read_text())["epochs"])
    except (ValueError, KeyError, TypeError, OSError):
        return None


def completed_epochs(folder):
    """Completed epochs of the newest readable checkpoint record in ``folder``, or None."""
    try:
        state = latest_state(folder)
    except (ValueError, FileNotFoundError):
        return None
    return None if state is None else state["epoch"]


def prepare_output(out, resume, overwrite, config=None):
    """Checks a request's output folder, writing nothing; returns whether it resumes.

    A non-empty ``out`` needs ``resume`` or ``overwrite``, except that the
    same command run again continues an interrupted run: an identical saved
    ``config.json`` and no ``metrics.json`` yet resume from the newest
    checkpoint, or start again from step 0 when the run was killed before
    its first one. That is what makes a killed job restartable unchanged,
    whatever moment it died at. ``resume`` needs a ``config.json`` in
    ``out`` and a request that differs from it only in ``epochs``.
    `create_output` then makes the folder.

    Raises:
        NotADirectoryError: ``out`` is a file.
        ValueError: ``resume`` and ``overwrite`` together; ``resume`` with
            settings that differ from the saved ones (each is named).
        FileNotFoundError: ``resume`` with nothing to resume.
        FileExistsError: a non-empty ``out`` that is not this run.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"Output path exists and is not a folder: {out}")
    if resume and overwrite:
        raise ValueError(f"Pass --resume or --overwrite, not both (output folder {out}).")
    if resume:
        check_resumable(out)
        check_same_config(out, config)
        return True
    if overwrite:
        return False
    status, saved = run_status(out, config)
    if status == "empty":
        return False
    if status == "unfinished":
        logger.warning("Continuing the interrupted run in %s.", out)
        return True
    if status == "finished":
        epochs = _saved_epochs(out)
        raise FileExistsError(
            f"Output folder {out} holds a finished run of this configuration "
            f"({'metrics.json' if epochs is None else f'{epochs} epochs, metrics.json'}): "
            "pass --resume with a larger --epochs to train further, or --overwrite to "
            "start again."
        )
    if status == "different":
        raise FileExistsError(
            f"Output folder {out} holds a run with other settings: "
            f"{describe_differences(config_differences(saved, config))}. Repeat the "
            "run's own settings to continue it, or pass --overwrite to start again."
        )
    raise FileExistsError(
        f"Output folder {out} is not empty: pass --resume to continue the "
        "run in it or --overwrite to start again."
    )


def check_same_config(out, config):
    """Refuses a ``--resume`` request whose settings differ from ``out/config.json``.

    Only `MAY_CHANGE_ON_RESUME` (``epochs``, the folder) may change: the
    others are fixed by the checkpoint (architecture, optimizer) or by the
    run's reproducible batch order (batch size, seed, dataset).
    """
    if config is None:
        return
    saved = type(config).load(config_file(out))
    differences = config_differences(saved, config)
    if differences:
        raise ValueError(
            f"--resume: {describe_differences(differences)} differ from the run in "
            f"{out}; only --epochs may change when resuming. Drop them, or pass "
            "--overwrite to start a new run."
        )


def create_output(out, overwrite, restart=False):
    """Makes the output folder (emptied first with ``overwrite``); returns its Path.

    ``restart``: the run resumes without a checkpoint (killed before its
    first one), so the logs of its lost steps are deleted.
    """
    out = Path(out)
    if overwrite and out.is_dir() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic.remove_stale_temporaries(out)
    atomic.remove_stale_temporaries(checkpoints_dir(out))
    if restart:
        for partial in (LOGS_DIR, HISTORY_FILE):
            if (out / partial).is_dir():
                shutil.rmtree(out / partial)
            elif (out / partial).exists():
                (out / partial).unlink()
    return out


def check_resumable(out):
    """Refuses ``--resume`` on a folder without a saved config.json.

    A folder with a ``config.json`` but no checkpoint yet (killed before its
    first one) resumes from step 0.
    """
    out = Path(out)
    missing = None
    if not out.is_dir():
        missing = "the folder does not exist"
    elif not config_file(out).is_file():
        missing = "no config.json"
    if missing:
        raise FileNotFoundError(
            f"--resume: nothing to resume in {out}: {missing}; drop --resume to start a new run."
        )


def interrupted_run(out, config):
    """Whether ``out`` holds an unfinished run of ``config`` (a dataclass with ``load``)."""
    return run_status(out, config)[0] == "unfinished"


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
    restart = False
    if resume:
        updates = {"epochs": config.epochs}
        if hasattr(config, "out"):
            updates["out"] = str(out)
        config = dataclasses.replace(type(config).load(config_file(out)), **updates)
        restart = not _has_checkpoint(checkpoints_dir(out))
        if restart:
            logger.warning("%s has no checkpoint yet: training starts again from step 0.", out)
        done = completed_epochs(checkpoints_dir(out))
        if done is not None and config.epochs < done:
            raise ValueError(
                f"--epochs {config.epochs} is fewer than the {done} epochs the run in {out} "
                f"has completed: pass --epochs {done} or more to continue it (its weights "
                "cannot go back), or --overwrite to start again."
            )
    checked = check(config) if check is not None else None
    if is_chief(strategy):
        create_output(out, overwrite, restart=restart)
    return strategy, out, config, resume, checked


def _has_checkpoint(folder):
    """Whether `load_newest_checkpoint` has a file to try (the pointer's, or any other)."""
    try:
        if latest_state(folder) is not None:
            return True
    except (ValueError, FileNotFoundError):  # a damaged pointer: the files may still load
        pass
    return bool(checkpoint_candidates(folder, 1))


def restore_or_build(out, resume, steps_per_epoch, strategy, config, build):
    """The model to train and the global step it is at.

    Loads the newest checkpoint of ``out/checkpoints`` when resuming, else
    calls ``build()`` under ``config.mixed_precision``'s policy and compiles
    it with Adam(``config.learning_rate``) and ``config.jit_compile``; both
    under ``strategy.scope()``.
    """
    with strategy.scope():
        if resume:
            loaded = load_newest_checkpoint(checkpoints_dir(out), steps_per_epoch,
                                            repair=is_chief(strategy))
            if loaded is not None:
                return loaded
        with precision_policy(config.mixed_precision):
            model = build()
            model.compile(
                optimizer=keras.optimizers.Adam(config.learning_rate),
                jit_compile=config.jit_compile,
            )
        return model, 0


def load_newest_checkpoint(folder, steps_per_epoch, repair=False):
    """``(model, step)`` of the newest checkpoint in ``folder`` that loads, or None.

    Tries the file ``latest.json`` names, then every other checkpoint newest
    first (`checkpoint_candidates`): a checkpoint damaged after it was
    written (a truncated copy, a bad disk block), a damaged pointer or one
    never written (killed between a checkpoint's rename and its pointer)
    costs the steps since the previous good one, and a warning names both
    files. With ``repair`` (the chief), ``latest.json`` is then pointed at
    the checkpoint used.

    Raises:
        ValueError: checkpoint files exist but none of them loads (each is
            named).
    """
    folder = Path(folder)
    tried, failures = [], []
    try:
        state = latest_state(folder)
    except (ValueError, FileNotFoundError) as error:
        failures.append(str(error))
        state = None
    if state is not None:
        step = state["step"]
        if step is None:  # a checkpoint from before step counting
            step = state["epoch"] * steps_per_epoch
        tried.append((step, state["path"]))
    tried += [c for c in checkpoint_candidates(folder, steps_per_epoch)
              if state is None or c[1] != state["path"]]
    for step, path in tried:
        try:
            model = load_keras_file(path, "checkpoint")
        except (ValueError, OSError) as error:
            failures.append(str(error))
            continue
        if failures:
            logger.warning(
                "Resuming from %s (step %d), an earlier checkpoint: %s", path, step,
                " ".join(failures))
        else:
            logger.warning("Resuming from %s (step %d).", path, step)
        if repair and (state is None or state["path"] != path):
            write_pointer(folder, path, step, steps_per_epoch)
        return model, step
    if failures:
        raise ValueError(f"No checkpoint in {folder} can be loaded: {' '.join(failures)}")
    return None


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
        make_dataset: ``(first_epoch, skip_batches, input_context) ->
            tf.data.Dataset`` of the batches of epochs ``first_epoch ..``
            with the first ``skip_batches`` global batches removed; the same
            batches on every call. It is called through
            ``strategy.distribute_datasets_from_function`` (the model's
            strategy), once per input pipeline (worker), and returns that
            pipeline's per-replica batches (``input_context`` says which:
            `tfvqvae.data.ImageSource.epochs_dataset` takes it as it is).
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
        ValueError: an image file the input pipeline could not read ("Cannot
            read image file PATH: ..."), or one whose size differs from the
            others without an image size.
    """
    first_epoch, skip = divmod(initial_step, steps_per_epoch)
    history = None
    if history_csv is not None and initial_step > 0:
        trim_history(history_csv, first_epoch)
    while first_epoch < epochs:
        last_epoch = first_epoch + 1 if skip else epochs
        start = first_epoch * steps_per_epoch + skip
        # StopOnNonFinite first: after a skipped (NaN / Inf) step it raises
        # before any checkpoint callback could save. The CSV log before the
        # checkpoints: an epoch's row is written before the checkpoint that
        # ends it, and a resumed run trims the rows past its checkpoint.
        fit_callbacks = [StopOnNonFinite(checkpoint_dir, steps_per_epoch, initial_step=start)]
        if history_csv is not None:
            fit_callbacks.append(keras.callbacks.CSVLogger(
                str(history_csv), append=first_epoch > 0 or skip > 0
            ))
        fit_callbacks.append(EpochCheckpoint(checkpoint_dir, steps_per_epoch=steps_per_epoch))
        if backup_every is not None:
            fit_callbacks.append(StepBackup(
                checkpoint_dir, backup_every, steps_per_epoch,
                initial_step=start,
            ))
        try:
            history = model.fit(
                _distributed(model, make_dataset, first_epoch, skip),
                epochs=last_epoch,
                initial_epoch=first_epoch,
                steps_per_epoch=steps_per_epoch - skip,
                callbacks=[*fit_callbacks, *callbacks],
                shuffle=False,  # the dataset's order is fixed by (seed, epoch)
                **fit_kwargs,
            )
        except tf.errors.InvalidArgumentError as error:
            # An image file the input pipeline could not read: name it.
            raise (unreadable_file_error(error) or error) from error
        first_epoch, skip = last_epoch, 0
    return history


def _distributed(model, make_dataset, first_epoch, skip):
    """``make_dataset``'s batches, each input pipeline building its own share."""
    def pipeline(input_context):
        return batch_distribution_options(make_dataset(first_epoch, skip, input_context))

    # The default strategy calls `pipeline` once with a one-pipeline, one-replica context.
    return model.distribute_strategy.distribute_datasets_from_function(pipeline)


def trim_history(path, completed_epochs):
    """Keeps the header and the rows of epochs below ``completed_epochs`` in a CSV log.

    A run killed after an epoch's row was logged but before its checkpoint
    resumes from an earlier checkpoint and logs that epoch again; without
    this its row would appear twice. Written atomically.
    """
    path = Path(path)
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[:1] + [
        line for line in lines[1:]
        if line.split(",", 1)[0].strip().isdigit() and int(line.split(",", 1)[0]) < completed_epochs
    ]
    if kept != lines:
        atomic.write_bytes(path, "".join(kept).encode())


def fit_and_test(model, make_dataset, write, test_data, *, steps_per_epoch, epochs,
                 initial_step, backup_every, callbacks=(), verbose="auto"):
    """`resumable_fit` into the folder ``write``, then the test metrics of the final model.

    Checkpoints go to ``write/checkpoints`` and the per-epoch log to
    ``write/history.csv`` (`tfvqvae.run_folder`); ``test_data`` is also the
    validation set of every epoch. What `train` and `train_prior` share.

    Returns:
        ``model.evaluate(test_data)`` as a dict.

    Raises:
        FloatingPointError: a non-finite step (`StopOnNonFinite`), or
            non-finite final weights or test metrics (`check_finite_result`):
            nothing non-finite was saved.
    """
    resumable_fit(
        model,
        make_dataset,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        initial_step=initial_step,
        checkpoint_dir=checkpoints_dir(write),
        backup_every=backup_every,
        history_csv=history_file(write),
        callbacks=callbacks,
        validation_data=test_data,
        verbose=verbose,
    )
    test = model.evaluate(test_data, return_dict=True, verbose=0)
    check_finite_result(model, test, checkpoints_dir(write), step=epochs * steps_per_epoch)
    return test
