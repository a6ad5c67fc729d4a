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
"""

import json
from pathlib import Path

import keras

from tfvqvae import atomic

LATEST = "latest.json"


def latest_state(folder):
    """The newest complete checkpoint's record ``{"epoch", "step", "path"}``, or None.

    ``step`` is None for checkpoints written without a step count; ``path``
    is the full path.
    """
    pointer = Path(folder) / LATEST
    if not pointer.is_file():
        return None
    try:
        record = json.loads(pointer.read_text())
        epoch, name = int(record["epoch"]), record["path"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{pointer} is not a checkpoint pointer: {error}") from error
    path = Path(folder) / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{pointer} names a checkpoint that does not exist: {path}"
        )
    step = record.get("step")
    return {"epoch": epoch, "step": None if step is None else int(step), "path": path}


def latest_checkpoint(folder):
    """Returns ``(completed epochs, path)`` of the newest complete checkpoint, or None."""
    state = latest_state(folder)
    return None if state is None else (state["epoch"], state["path"])


def _save(model, folder, name, epoch, step):
    folder.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(folder / name) as temp:
        model.save(temp)
    atomic.write_json(folder / LATEST, {"epoch": epoch, "step": step, "path": name})


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
        for name, value in (("every", every), ("steps_per_epoch", steps_per_epoch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer. Received: {value!r}")
        self.folder = Path(folder)
        self.every = every
        self.steps_per_epoch = steps_per_epoch
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
