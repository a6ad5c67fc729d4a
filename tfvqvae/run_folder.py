"""Reading a run folder's files: ``config.json``, ``*.keras`` models and the run's images.

The one place where the training programs and the exporters load what
``tfvqvae train`` wrote, so that a damaged or missing file gives the same
one-line error, naming the file, everywhere:

* `read_config`: ``config.json`` as a dict (a JSON object);
* `load_keras_file`: a saved Keras model;
* `load_run_images`: a split of the dataset a run trained on, with the run's
  ``image_size``, ``crop`` and ``channels`` applied at load time;
* `prior_dir`: where a level's prior lives, ``RUN/prior-<level>``.
"""

import json
import zipfile
from pathlib import Path

import keras

from tfvqvae.data import load_dataset


def _one_line(error):
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def prior_dir(run, level):
    """Where the prior of ``level`` lives: ``RUN/prior-<level>``."""
    return Path(run) / f"prior-{level}"


def read_config(path):
    """The JSON object in ``path`` as a dict.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not JSON, or holds something other than an
            object; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Configuration not found: {path}")
    try:
        values = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {_one_line(error)}") from None
    if not isinstance(values, dict):
        raise ValueError(
            f"{path} must hold a JSON object of settings. Received: a JSON "
            f"{type(values).__name__}"
        )
    return values


def load_keras_file(path, what="model", compile=True):
    """``keras.saving.load_model(path)`` with errors that name ``path``.

    Args:
        path: a ``.keras`` file.
        what: what the file should hold, for the message ("model", "top prior").
        compile: passed to ``load_model`` (False skips the optimizer state).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file cannot be loaded (empty, truncated, not a zip,
            damaged, written by incompatible code); the message names the file
            and the cause.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No {what} file at {path}")
    if not zipfile.is_zipfile(path):  # Keras would say "File not found"
        size = path.stat().st_size
        raise ValueError(
            f"Could not load the {what} {path}: it is not a complete .keras file (a zip "
            f"archive); it is {'empty' if size == 0 else f'{size} bytes, truncated or damaged'}."
        )
    try:
        return keras.saving.load_model(path, compile=compile)
    except Exception as error:  # Keras raises many kinds (BadZipFile, KeyError, ...)
        raise ValueError(
            f"Could not load the {what} {path}: {type(error).__name__}: {_one_line(error)}"
        ) from error


def load_run_images(config, split, data_dir=None):
    """The ``split`` of a run's dataset, resized and converted as the run trained on it.

    Args:
        config: the run's configuration as a dict (``config.json``):
            ``dataset``, and optionally ``data_dir``, ``image_size``, ``crop``
            and ``channels``.
        split: "train" or "test" (the whole split; ``max_train_examples`` is
            left to the caller).
        data_dir: overrides the configuration's ``data_dir``.
    """
    return load_dataset(
        config["dataset"],
        split,
        data_dir=data_dir if data_dir is not None else config.get("data_dir"),
        image_size=config.get("image_size"),
        crop=config.get("crop") or "none",
        channels=config.get("channels"),
    )
