"""Checkpoints that a killed run resumes from: every epoch, and every N steps.

Layout under the checkpoint folder::

    epoch-0003.keras      whole model (weights, EMA state, optimizer state)
                          at the end of epoch 3; the last two are kept
    step-00000250.keras   the newest mid-epoch backup (`StepBackup`)
    latest.json           {"epoch": 3, "step": 250, "path": "step-00000250.keras"}

``step`` counts completed training steps from the start of the run (global
batches); ``epoch`` counts completed epochs. Files are written atomically
(temporary file + rename) and ``latest.json`` only after the checkpoint it
names is complete, so a run killed at any moment leaves the previous state or
the new one, never a half-written file, and the file ``latest.json`` names is
never deleted.

Keras' own ``BackupAndRestore`` (Keras 3.15) records the batch but restores
only the epoch, and writes in place; these callbacks restore the step. Under
multi-worker training every worker must run the saves (reading a variable
synchronised on read is a collective op); only the chief passes the run's
folder, the others a scratch folder.

`StopOnNonFinite` stops a run at the first training step whose loss or
gradients were NaN or Inf (the models skip such a step: ``nonfinite`` = 1.0
in its logs); it runs before the checkpoint callbacks, so nothing is saved
after that step and ``latest.json`` keeps naming the last good checkpoint.
"""

import json
import logging
import math
import re
from pathlib import Path

import keras

from tfvqvae import atomic
from tfvqvae.finite import check_finite_weights
from tfvqvae.finite import describe_nonfinite
from tfvqvae.finite import nonfinite_weights
from tfvqvae.killpoints import killpoint
from tfvqvae.run_folder import LATEST_FILE
from tfvqvae.validation import positive_int

logger = logging.getLogger(__name__)

LATEST = LATEST_FILE  # the pointer file: its name belongs to tfvqvae.run_folder


def latest_state(folder):
    """The newest complete checkpoint's record ``{"epoch", "step", "path"}``, or None.

    ``step`` is None for checkpoints written without a step count; ``path``
    is the full path.
    """
    pointer = Path(folder) / LATEST
    if not pointer.is_file():
        return None
    text = pointer.read_text(errors="replace")
    try:
        record = json.loads(text)
        epoch, name, step = record["epoch"], record["path"], record.get("step")
        if not _is_count(epoch) or not (step is None or _is_count(step)):
            raise ValueError("epoch and step must be non-negative integers")
        if not isinstance(name, str) or not name or Path(name).name != name:
            raise ValueError("path must be a file name")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        shown = text if len(text) <= 200 else text[:200] + "..."
        raise ValueError(
            f"{pointer} is not a checkpoint pointer ({type(error).__name__}: {error}). "
            f"Received: {' '.join(shown.split())}"
        ) from None
    path = Path(folder) / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{pointer} names a checkpoint that does not exist: {path}"
        )
    return {"epoch": epoch, "step": step, "path": path}


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def latest_checkpoint(folder):
    """Returns ``(completed epochs, path)`` of the newest complete checkpoint, or None."""
    state = latest_state(folder)
    return None if state is None else (state["epoch"], state["path"])


_CHECKPOINT_NAME = re.compile(r"^(epoch|step)-(\d+)\.keras$")


def checkpoint_candidates(folder, steps_per_epoch):
    """Every checkpoint file of ``folder``, newest first: ``[(step, path), ...]``.

    The fallbacks of `latest_state` when the file it names cannot be
    loaded: ``epoch-NNNN.keras`` is at step ``NNNN * steps_per_epoch``,
    ``step-NNNNNNNN.keras`` at step ``NNNNNNNN``. Temporary files are not
    checkpoints.
    """
    found = []
    for path in Path(folder).glob("*.keras"):
        match = _CHECKPOINT_NAME.match(path.name)
        if match is None:
            continue
        count = int(match.group(2))
        found.append((count * steps_per_epoch if match.group(1) == "epoch" else count, path))
    return sorted(found, key=lambda item: (-item[0], item[1].name))


def describe_latest(folder):
    """One sentence naming the newest good checkpoint of ``folder`` (or that there is none)."""
    if folder is None:
        return "No checkpoint folder was given."
    try:
        state = latest_state(folder)
    except (ValueError, FileNotFoundError) as error:
        return f"The checkpoint pointer in {folder} is unreadable: {error}"
    if state is None:
        return f"No checkpoint has been written yet in {folder}."
    step = "" if state["step"] is None else f", step {state['step']}"
    return f"The newest good checkpoint is {state['path']} (epoch {state['epoch']}{step})."


def check_finite_result(model, results, checkpoint_dir, step):
    """Raises FloatingPointError unless the final weights and test ``results`` are finite.

    Called before the final model is written, so that a diverged run keeps
    only its good checkpoints and no ``model.keras`` a later command trusts.

    Raises:
        FloatingPointError: one line naming the step, the first non-finite
            weight or metric, and the newest good checkpoint.
    """
    problem = None
    bad = nonfinite_weights(model)
    if bad:
        problem = describe_nonfinite(bad)
    else:
        names = [name for name, value in results.items() if not math.isfinite(value)]
        if names:
            problem = f"non-finite test {', '.join(names)}"
    if problem:
        raise FloatingPointError(
            f"Training diverged by step {step}: {problem}; model.keras was not written. "
            f"{describe_latest(checkpoint_dir)} Lower --learning-rate or check the data, "
            "then rerun."
        )


def write_pointer(folder, path, step, steps_per_epoch):
    """Points ``latest.json`` of ``folder`` at the checkpoint ``path`` (at global ``step``)."""
    atomic.write_json(Path(folder) / LATEST, {
        "epoch": step // steps_per_epoch, "step": step, "path": Path(path).name})


def _save(model, folder, name, epoch, step):
    """Saves a checkpoint and then points ``latest.json`` at it, refusing NaN / Inf weights."""
    folder = Path(folder)
    where = f"step {step}" if step is not None else f"epoch {epoch}"
    try:
        check_finite_weights(model, f"model at {where}")
    except FloatingPointError as error:
        raise FloatingPointError(
            f"{error} It was not saved as a checkpoint. {describe_latest(folder)} "
            "Lower the learning rate or check the data, then rerun."
        ) from None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_path(folder / name) as temp:
            model.save(temp)
            killpoint("checkpoint:staged")
        killpoint("checkpoint:renamed")
        atomic.write_json(folder / LATEST, {"epoch": epoch, "step": step, "path": name})
    except OSError as error:
        message = (
            f"Checkpoint at {where} not saved: {error.strerror or error}. "
            f"{describe_latest(folder)} Free space (or fix the folder) and rerun the same command."
        )
        if error.errno is None:
            raise OSError(message) from error
        raise type(error)(error.errno, message) from error
    killpoint("checkpoint:saved")


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the whole model at the end of every epoch, atomically.

    Args:
        folder: where checkpoints go (created if missing).
        keep: how many recent epoch checkpoints to keep. Defaults to 2.
        steps_per_epoch: training steps per epoch, recorded as ``step`` in
            ``latest.json`` (None: not recorded).
    """

    def __init__(self, folder, keep=2, steps_per_epoch=None):
        super().__init__()
        self.folder = Path(folder)
        self.keep = keep
        self.steps_per_epoch = steps_per_epoch
        atomic.remove_stale_temporaries(self.folder)

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1  # Keras counts epochs from 0; we name them by count.
        step = None if self.steps_per_epoch is None else done * self.steps_per_epoch
        _save(self.model, self.folder, f"epoch-{done:04d}.keras", done, step)
        for old in sorted(self.folder.glob("epoch-*.keras"))[: -self.keep]:
            old.unlink()
        for old in self.folder.glob("step-*.keras"):
            old.unlink()  # superseded by this epoch's checkpoint


class StepBackup(keras.callbacks.Callback):
    """Saves the whole model every ``every`` training steps, atomically.

    Steps are counted from the start of the run, so a resumed run backs up
    at the same steps as an uninterrupted one. Steps that end an epoch are
    left to `EpochCheckpoint`.

    Args:
        folder: the checkpoint folder (shared with `EpochCheckpoint`).
        every: positive number of steps between backups.
        steps_per_epoch: training steps per epoch.
        initial_step: global step the current ``fit`` starts from; an
            epoch's first step is ``max(epoch * steps_per_epoch,
            initial_step)`` (the first epoch of a resumed run is partial).
    """

    def __init__(self, folder, every, steps_per_epoch, initial_step=0):
        super().__init__()
        self.folder = Path(folder)
        self.every = positive_int("every", every)
        self.steps_per_epoch = positive_int("steps_per_epoch", steps_per_epoch)
        self.initial_step = initial_step
        self._epoch_start = initial_step

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = max(epoch * self.steps_per_epoch, self.initial_step)

    def on_train_batch_end(self, batch, logs=None):
        step = self._epoch_start + batch + 1
        if step % self.every or step % self.steps_per_epoch == 0:
            return
        name = f"step-{step:08d}.keras"
        _save(self.model, self.folder, name, step // self.steps_per_epoch, step)
        for old in self.folder.glob("step-*.keras"):
            if old.name != name:
                old.unlink()


class StopOnNonFinite(keras.callbacks.Callback):
    """Raises FloatingPointError after a training step that was skipped as non-finite.

    `VQVAE`, `VQVAE2` and `PixelCNNPrior` skip a step whose loss or
    gradients hold NaN or Inf (no weight, codebook, EMA or optimizer update)
    and log ``nonfinite`` = 1.0 for it. This callback turns that flag into an
    error naming the step and the newest good checkpoint. List it before the
    checkpoint callbacks (Keras calls callbacks in list order), so that none
    of them saves after the bad step.

    Args:
        folder: the checkpoint folder (``latest.json``), or None.
        steps_per_epoch: training steps per epoch, or None (the message then
            gives the epoch and batch only).
        initial_step: global step the current ``fit`` starts from (as
            `StepBackup`).

    Raises (from ``on_train_batch_end``):
        FloatingPointError: the message names the global step (1-based: the
            step that would have completed step ``G``), the epoch and batch,
            and the checkpoint that ``latest.json`` names (or that there is
            none yet).
    """

    def __init__(self, folder=None, steps_per_epoch=None, initial_step=0):
        super().__init__()
        self.folder = None if folder is None else Path(folder)
        self.steps_per_epoch = steps_per_epoch
        self.initial_step = initial_step
        self._epoch = 0
        self._epoch_start = initial_step

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self.steps_per_epoch is not None:
            self._epoch_start = max(epoch * self.steps_per_epoch, self.initial_step)

    def on_train_batch_end(self, batch, logs=None):
        flag = (logs or {}).get("nonfinite")
        if flag is None or not float(flag) > 0.0:
            return
        where = f"epoch {self._epoch + 1}, batch {batch + 1}"
        if self.steps_per_epoch is not None:
            where = f"global step {self._epoch_start + batch + 1} ({where})"
        raise FloatingPointError(
            f"Training stopped at {where}: its loss or gradients were NaN or Inf "
            "(a bad batch or a diverged model). The step was skipped, so the "
            "weights, codebook, EMA statistics and optimizer state are those of "
            f"the step before. {self._checkpoint_text()}"
        )

    def _checkpoint_text(self):
        text = describe_latest(self.folder)
        if text.startswith("The newest good checkpoint"):
            text = text[:-1] + (
                "; resume from it after fixing the data or lowering the learning rate."
            )
        return text
