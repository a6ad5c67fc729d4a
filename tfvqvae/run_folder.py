"""A run folder: its layout, and reading what ``tfvqvae train`` and its sequels wrote.

The one module that names the files of a run, for the training programs and
the exporters alike (the exporters never import training code)::

    RUN/                           `tfvqvae train --out RUN`
      model.keras                  the trained VQVAE / VQVAE2        MODEL_FILE
      config.json                  its TrainConfig                  CONFIG_FILE
      metrics.json                 test metrics; written last:      METRICS_FILE
                                   the run is finished
      history.csv                  one line of metrics per epoch    HISTORY_FILE
      logs/                        TensorBoard                      LOGS_DIR
      reconstructions.png          test originals and reconstructions
                                                                    RECONSTRUCTIONS_FILE
      checkpoints/                 what a killed run resumes from   CHECKPOINTS_DIR
        latest.json                the newest complete checkpoint   LATEST_FILE
        epoch-NNNN.keras, step-NNNNNNNN.keras   (tfvqvae.training.checkpoints)
      codes/                       `tfvqvae extract-codes`          CODES_DIR
        codes-train.tfrecord       code_file(RUN, "train"): the base path of
                                   the split's shards, code_shards(RUN, "train"):
        codes-train-00000-of-000NN.tfrecord, ...
        codes-test.tfrecord        code_file(RUN, "test"), the same
      prior-top/                   `tfvqvae train-prior --level top`, prior_dir(RUN, "top"):
        model.keras, config.json,  the files of a run, same names
        metrics.json, history.csv,
        checkpoints/
      prior-bottom/                the same for the bottom level (VQVAE2)
      samples-seed<SEED>.png       `tfvqvae sample --seed SEED`     samples_file(RUN, SEED)
      export/                      `tfvqvae pipeline`'s export      EXPORT_DIR
      evaluation/                  `tfvqvae evaluate`               EVALUATION_DIR
        evaluation.json            CAS and rate-distortion          evaluation_file(RUN)
        evaluation.md              the same as markdown tables      evaluation_table_file(RUN)
        samples-per-class.png      one row of samples per class     class_samples_file(RUN)
        codebook-usage-<level>.png per-code counts of each level    usage_histogram_file(RUN, L)
        logs/                      TensorBoard (histograms, images) evaluation_logs_dir(RUN)

Every path has a function of the folder (``model_file(RUN)``,
``checkpoints_dir(prior_dir(RUN, "top"))``, ...); the file names are the
module's constants. A prior's folder is laid out like a run's, so the
functions of its files take either.

Reading, with the same one-line error naming the file everywhere:

* `load_model`: the run's VQ-VAE (``RUN/model.keras``);
* `load_priors`: the priors of the run's levels (``RUN/prior-<level>/model.keras``);
* `read_run_config`: ``RUN/config.json`` as a dict;
* `read_config`: any ``config.json`` as a dict (a JSON object);
* `load_keras_file`: a saved Keras model;
* `load_run_images`: a split of the dataset a run trained on, with the run's
  ``image_size``, ``crop`` and ``channels`` applied at load time.
"""

import json
import zipfile
from pathlib import Path

import keras

from tfvqvae.data import code_files
from tfvqvae.data import load_dataset


def _one_line(error):
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
LOGS_DIR = "logs"
RECONSTRUCTIONS_FILE = "reconstructions.png"
CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest.json"
CODES_DIR = "codes"
PRIOR_DIR_PREFIX = "prior-"
EXPORT_DIR = "export"
EVALUATION_DIR = "evaluation"


def model_file(folder):
    """The trained model of a run or prior folder: ``FOLDER/model.keras``."""
    return Path(folder) / MODEL_FILE


def config_file(folder):
    """The configuration of a run or prior folder: ``FOLDER/config.json``."""
    return Path(folder) / CONFIG_FILE


def metrics_file(folder):
    """The final metrics of a run or prior folder (its end mark): ``FOLDER/metrics.json``."""
    return Path(folder) / METRICS_FILE


def history_file(folder):
    """The per-epoch CSV log of a run or prior folder: ``FOLDER/history.csv``."""
    return Path(folder) / HISTORY_FILE


def logs_dir(folder):
    """The TensorBoard logs of a run: ``FOLDER/logs``."""
    return Path(folder) / LOGS_DIR


def reconstructions_file(run):
    """The grid of test images and their reconstructions: ``RUN/reconstructions.png``."""
    return Path(run) / RECONSTRUCTIONS_FILE


def checkpoints_dir(folder):
    """The checkpoints of a run or prior folder: ``FOLDER/checkpoints``."""
    return Path(folder) / CHECKPOINTS_DIR


def latest_file(checkpoints):
    """The pointer to the newest complete checkpoint: ``CHECKPOINTS/latest.json``.

    Args:
        checkpoints: a checkpoint folder (`checkpoints_dir` of a run).
    """
    return Path(checkpoints) / LATEST_FILE


def codes_dir(run):
    """Where ``extract-codes`` writes a run's code files: ``RUN/codes``."""
    return Path(run) / CODES_DIR


def code_file_name(split):
    """The file name of a split's codes: ``codes-<split>.tfrecord``."""
    return f"codes-{split}.tfrecord"


def code_file(run, split):
    """A split's code file: ``RUN/codes/codes-<split>.tfrecord``.

    The base path of the split's shards (``codes-<split>-00000-of-000NN.tfrecord``,
    ...), which `tfvqvae.data.load_codes` and `read_code_metadata` open; the file
    itself exists only in the single-file layout of earlier releases.
    """
    return codes_dir(run) / code_file_name(split)


def code_shards(run, split):
    """The files holding a split's codes, in record order (`tfvqvae.data.code_files`).

    Raises:
        FileNotFoundError: no codes of ``split``, or a shard is missing.
        ValueError: shards of two sets, or a single file and shards, side by side.
    """
    return code_files(code_file(run, split))


def prior_dir(run, level):
    """Where the prior of ``level`` lives: ``RUN/prior-<level>``."""
    return Path(run) / f"{PRIOR_DIR_PREFIX}{level}"


def samples_file(run, seed):
    """The sample grid of ``tfvqvae sample --seed SEED``: ``RUN/samples-seed<SEED>.png``."""
    return Path(run) / f"samples-seed{seed}.png"


def evaluation_dir(run):
    """What ``tfvqvae evaluate`` writes: ``RUN/evaluation``."""
    return Path(run) / EVALUATION_DIR


def evaluation_file(run):
    """CAS and rate-distortion results: ``RUN/evaluation/evaluation.json``."""
    return evaluation_dir(run) / "evaluation.json"


def evaluation_table_file(run):
    """The evaluation as markdown tables: ``RUN/evaluation/evaluation.md``."""
    return evaluation_dir(run) / "evaluation.md"


def class_samples_file(run):
    """Generated samples, one row per class: ``RUN/evaluation/samples-per-class.png``."""
    return evaluation_dir(run) / "samples-per-class.png"


def usage_histogram_file(run, level):
    """Per-code counts of ``level``: ``RUN/evaluation/codebook-usage-<level>.png``."""
    return evaluation_dir(run) / f"codebook-usage-{level}.png"


def evaluation_logs_dir(run):
    """TensorBoard events of the evaluation: ``RUN/evaluation/logs``."""
    return evaluation_dir(run) / LOGS_DIR


def export_dir(run):
    """The export ``tfvqvae pipeline`` writes: ``RUN/export``."""
    return Path(run) / EXPORT_DIR


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


def load_model(run, compile=True):
    """The trained VQ-VAE of a run folder: ``RUN/model.keras``.

    Args:
        run: the run folder.
        compile: passed to ``load_model`` (False skips the optimizer state).
            Defaults to True.

    Returns:
        The `VQVAE`, `VQVAE2` or `HierarchicalVQVAE` (a
        `QuantizedAutoencoder`).

    Raises:
        FileNotFoundError: no such folder, or no ``model.keras`` in it.
        NotADirectoryError: ``run`` is a file.
        ValueError: ``model.keras`` cannot be loaded (`load_keras_file`), or
            holds another kind of model.
    """
    from tfvqvae.models.autoencoder import QuantizedAutoencoder

    run = Path(run)
    if not run.exists():
        raise FileNotFoundError(f"Run folder not found: {run}")
    if not run.is_dir():
        raise NotADirectoryError(f"{run} is a file, not a run folder of `tfvqvae train`.")
    path = model_file(run)
    if not path.is_file():
        raise FileNotFoundError(
            f"{run} is not a tfvqvae run folder: it has no {MODEL_FILE} "
            f"(train one with `tfvqvae train --out {run}`)."
        )
    model = load_keras_file(path, "model", compile=compile)
    if not isinstance(model, QuantizedAutoencoder):
        raise ValueError(
            f"{path} holds a {type(model).__name__}, not a tfvqvae VQVAE or VQVAE2."
        )
    return model


def load_priors(run, levels, required=True, compile=True):
    """The priors of ``levels`` in a run folder: ``RUN/prior-<level>/model.keras``.

    Args:
        run: the run folder.
        levels: level names, top first (``model.levels``).
        required: raise for a level without a prior (else leave it out).
            Defaults to True.
        compile: passed to ``load_model``. Defaults to True.

    Returns:
        ``{level: PixelCNNPrior}`` in the order of ``levels``. Whether a
        prior fits the model (code shapes, conditioning) is left to the
        caller.

    Raises:
        FileNotFoundError: a ``required`` level has no prior file.
        ValueError: a prior file cannot be loaded (`load_keras_file`) or
            holds something other than a `PixelCNNPrior`.
    """
    from tfvqvae.models.pixelcnn_prior import PixelCNNPrior

    priors = {}
    for level in levels:
        path = model_file(prior_dir(run, level))
        if not path.is_file():
            if required:
                raise FileNotFoundError(
                    f"No {level} prior at {path}: run `tfvqvae train-prior --run {run} "
                    f"--level {level}` first."
                )
            continue
        prior = load_keras_file(path, f"{level} prior", compile=compile)
        if not isinstance(prior, PixelCNNPrior):
            raise ValueError(f"{path} holds a {type(prior).__name__}, not a PixelCNNPrior.")
        priors[level] = prior
    return priors


def read_run_config(run, missing_ok=False):
    """A run's (or prior folder's) ``config.json`` as a dict.

    Args:
        run: the folder.
        missing_ok: return ``{}`` when there is no ``config.json``. Defaults
            to False.

    Raises:
        FileNotFoundError: no ``config.json`` (unless ``missing_ok``).
        ValueError: see `read_config`.
    """
    path = config_file(run)
    if missing_ok and not path.is_file():
        return {}
    return read_config(path)


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
        skip_corrupt=bool(config.get("skip_corrupt")),
    )
