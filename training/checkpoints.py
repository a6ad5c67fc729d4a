"""Per-epoch checkpoints that a killed run can resume from.

Layout under the checkpoint folder::

    epoch-0003.keras   whole model: weights, EMA state, optimizer state
    latest.json        {"epoch": 3, "path": "epoch-0003.keras"}

Both are written atomically (temporary file + rename) and ``latest.json`` only
after the checkpoint it names is complete, so a run killed at any moment leaves
either the previous checkpoint or the new one, never a half-written file.
"""

import json
from pathlib import Path

import keras

from tfvqvae import atomic

LATEST = "latest.json"


def latest_checkpoint(folder):
    """Returns ``(epoch, path)`` of the newest complete checkpoint, or None."""
    pointer = Path(folder) / LATEST
    if not pointer.is_file():
        return None
    record = json.loads(pointer.read_text())
    path = Path(folder) / record["path"]
    if not path.is_file():
        raise FileNotFoundError(
            f"{pointer} names a checkpoint that does not exist: {path}"
        )
    return int(record["epoch"]), path


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the whole model at the end of every epoch, atomically.

    Args:
        folder: where checkpoints go (created if missing).
        keep: how many recent checkpoints to keep. Defaults to 2.
    """

    def __init__(self, folder, keep=2):
        super().__init__()
        self.folder = Path(folder)
        self.keep = keep
        atomic.remove_stale_temporaries(self.folder)

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1  # Keras counts epochs from 0; we name them by count.
        name = f"epoch-{done:04d}.keras"
        with atomic.atomic_path(self.folder / name) as temp:
            self.model.save(temp)
        atomic.write_json(self.folder / LATEST, {"epoch": done, "path": name})
        kept = sorted(self.folder.glob("epoch-*.keras"))
        for old in kept[: -self.keep]:
            old.unlink()
