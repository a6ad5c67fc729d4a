"""The ``tfvqvae`` argument tree, built without importing TensorFlow.

Options of ``train`` and ``train-prior`` come from the fields of `TrainConfig`
and `PriorConfig` (type, default, choices, help); the other commands' options
are listed here. Every option's help ends with its default. Defaults that a
library module owns (strategies, export formats, ...) are repeated as literals
so that parsing needs no TensorFlow; tests/training/test_cli.py checks that
they agree with the library.
"""

import argparse
import dataclasses
import math

from tfvqvae_cli.config import PRESETS
from tfvqvae_cli.config import PRIOR_PRESETS
from tfvqvae_cli.config import PriorConfig
from tfvqvae_cli.config import TrainConfig
from tfvqvae_cli.config import number_in
from tfvqvae_cli.config import positive_int
from tfvqvae_cli.config import value_type

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")  # tfvqvae.distribute
DEFAULT_BACKUP_EVERY = 100  # tfvqvae.training.resumable
EXPORT_FORMATS = ("savedmodel", "tflite", "onnx")  # tfvqvae.export.exporter.FORMATS
TFLITE_MODES = ("float32", "dynamic_range", "weight_only", "int8")  # tfvqvae.export.tflite.DEFAULT_TFLITE_MODES
SAMPLE_METHODS = ("cached", "naive")  # tfvqvae.export.signatures
SAMPLERS = ("cached", "compiled", "naive")  # tfvqvae.models.sampling.METHODS
EXTRACT_SPLITS = ("train", "test")  # tfvqvae.training.extract_codes.DEFAULT_SPLITS
PREPARE_SHARD_SIZE_MB = 128  # tfvqvae.data.image_shards.DEFAULT_SHARD_SIZE_MB

# A prior option of `pipeline` is --prior-<field>; these come from the VQ-VAE's.
PIPELINE_PRIOR_SKIP = ("run", "level", "seed", "mixed_precision", "jit_compile")

COMMANDS = {  # name: (module run after parsing, one line of help)
    "pipeline": ("tfvqvae.training.pipeline",
                 "train the VQ-VAE, extract codes, train the priors, sample and export, "
                 "in one go"),
    "train": ("tfvqvae.training.train",
              "train a VQ-VAE and write model, checkpoints, images, metrics"),
    "extract-codes": ("tfvqvae.training.extract_codes",
                      "encode a dataset with a trained model and write its code maps "
                      "(TFRecord)"),
    "train-prior": ("tfvqvae.training.train_prior",
                    "train a gated PixelCNN prior on the extracted codes of one level"),
    "sample": ("tfvqvae.training.sample",
               "sample codes from the priors (top first, each level given the one above) "
               "and decode them to images"),
    "evaluate": ("tfvqvae.training.evaluate",
                 "measure a run: classification accuracy score (real, reconstructed, "
                 "generated) and rate-distortion (priors' NLL, decoder MSE/PSNR)"),
    "export": ("tfvqvae.export.cli",
               "export a run to SavedModel (TF Serving), TFLite and ONNX; --verify "
               "compares with Keras"),
    "prepare": ("tfvqvae.training.prepare",
                "pack an image folder into shuffled TFRecord shards (+ dataset.json) that "
                "stream at any scale: --dataset tfrecord:OUT"),
    "compress": ("tfvqvae.training.codec",
                 "compress images into files whose size is the priors' rate (entropy coding "
                 "of the code maps): FOLDER/<name>.tfvq"),
    "decompress": ("tfvqvae.training.codec",
                   "decompress .tfvq files written by `compress` into PNGs"),
    "presets": (None, "print what each --preset sets, for train and for its priors"),
}


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``PROG: error: MESSAGE``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def shown(value):
    """A default as the help text shows it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


def add(parser, flag, help, default=None, shown_default=None, **kwargs):
    """``parser.add_argument`` with the default at the end of the help line.

    Boolean options (``action=BooleanOptionalAction``) get ``--x/--no-x``.
    ``shown_default`` is the default to print when it differs from
    ``default`` (None where a preset may still fill the value in).
    """
    text = shown(default if shown_default is None else shown_default)
    help = f"{help} (default: {text})".replace("%", "%%")
    action = kwargs.get("action")
    if action is argparse.BooleanOptionalAction:
        # Python 3.11's BooleanOptionalAction appends its own default unless it is None.
        parser.add_argument(flag, help=help, default=None, **kwargs)
        parser.set_defaults(**{kwargs.get("dest", flag[2:].replace("-", "_")): default})
    else:
        parser.add_argument(flag, help=help, default=default, **kwargs)


def add_config_fields(parser, config_class, prefix="", skip=(), required=()):
    """One option per field of ``config_class``; parsed values default to None.

    None means "not given": the command fills in its preset and then the
    field's default (shown in the help).
    """
    for field in dataclasses.fields(config_class):
        if field.name in skip or not field.metadata.get("flag", True):
            continue
        meta, kind = field.metadata, value_type(field)
        flag = "--" + prefix + field.name.replace("_", "-")
        kwargs = dict(dest=prefix.replace("-", "_") + field.name)
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = (positive_int if meta.get("positive")
                              else number_in(meta["interval"]) if meta.get("interval")
                              else kind)
            if not meta.get("choices"):
                kwargs["metavar"] = {int: "N", float: "X"}.get(kind, field.name.upper())
            if meta.get("choices"):
                kwargs["choices"] = meta["choices"]
        if field.name in required:
            parser.add_argument(flag, required=True, help=meta["help"], **kwargs)
            continue
        add(parser, flag, meta["help"], None, shown(field.default), **kwargs)


def add_preset(parser, presets):
    add(parser, "--preset", "start from a named configuration; options given override it "
        "(`tfvqvae presets` lists what each sets)", choices=sorted(presets),
        shown_default="none: the defaults below")


def add_run_flags(parser, resume=True):
    if resume:
        add(parser, "--resume", "continue the run in the output folder from its last "
            "checkpoint", False, action=argparse.BooleanOptionalAction)
    add(parser, "--overwrite", "delete a non-empty output folder first", False,
        action=argparse.BooleanOptionalAction)


def add_distribution(parser):
    """``--strategy``, ``--cpu-replicas``, ``--tpu`` and ``--backup-every`` (train and train-prior)."""
    add(parser, "--strategy", "tf.distribute strategy: default (one device), mirrored (this "
        "host's GPUs), multiworker (cluster from TF_CONFIG), tpu; --batch-size is the global "
        "batch, split evenly over replicas", "default", choices=STRATEGIES)
    add(parser, "--cpu-replicas", "with --strategy mirrored and no GPU: split the CPU into "
        "this many logical devices (for trying distribution on one machine)",
        type=positive_int, metavar="N")
    add(parser, "--tpu", "TPU name or address for --strategy tpu")
    add(parser, "--backup-every", "steps between mid-epoch backups a killed run resumes "
        "from (0: only at epoch ends)", DEFAULT_BACKUP_EVERY, type=int, metavar="STEPS")


def add_train(parser):
    add_preset(parser, PRESETS)
    add_config_fields(parser, TrainConfig)
    add_distribution(parser)
    add_run_flags(parser)


def add_pipeline(parser):
    add_preset(parser, PRESETS)
    add_config_fields(parser, TrainConfig)
    prior = parser.add_argument_group(
        "priors", "the priors' options (the preset's, else train-prior's defaults); their "
        "seed, --mixed-precision and --jit-compile are the VQ-VAE's")
    add_config_fields(prior, PriorConfig, prefix="prior-", skip=PIPELINE_PRIOR_SKIP)
    add(parser, "--num-samples", "images in the samples grid", 16, type=positive_int)
    add(parser, "--sample-seed", "sampling seed", 0, type=int)
    add(parser, "--export-formats", "formats to export and verify ('' to skip)",
        ",".join(EXPORT_FORMATS))
    add_distribution(parser)
    add_run_flags(parser)


def add_train_prior(parser):
    add_preset(parser, PRIOR_PRESETS)
    add_config_fields(parser, PriorConfig, required=("run",))
    add_distribution(parser)
    add_run_flags(parser)


def add_extract_codes(parser):
    parser.add_argument("--run", required=True, help="the training run folder (train --out)")
    add(parser, "--model-file", "model file to encode with", shown_default="RUN/model.keras")
    parser.add_argument("--model", action=_Renamed, new="--model-file (the model file)")
    add(parser, "--dataset", "dataset to encode", shown_default="the run's config.json")
    add(parser, "--data-dir", "data folder", shown_default="the run's config.json")
    add(parser, "--splits", "comma-separated splits", ",".join(EXTRACT_SPLITS))
    add(parser, "--out", "output folder", shown_default="RUN/codes")
    add(parser, "--batch-size", "images per encoding step", 256, type=positive_int)
    add(parser, "--num-shards", "code files per split (codes-<split>-NNNNN-of-NNNNN.tfrecord)",
        shown_default="shards of about 128 MB", type=positive_int, metavar="N")
    add(parser, "--overwrite", "replace existing code files", False,
        action=argparse.BooleanOptionalAction)


def add_sample(parser):
    parser.add_argument("--run", required=True, help="run folder with model.keras and prior-*/")
    add(parser, "--num-samples", "images to sample", 16, type=positive_int)
    add(parser, "--class", "class label for class-conditional priors", dest="class_label",
        type=int, shown_default="cycle through all classes")
    add(parser, "--temperature", "softmax temperature of the priors", 1.0, type=float)
    add(parser, "--seed", "sampling seed", 0, type=int)
    add(parser, "--method", "sampler: cached (fast), compiled (the cached sampler compiled "
        "by XLA: fastest after a few seconds of compiling) or naive (a full pass per code); "
        "all give the same codes", "cached", choices=SAMPLERS)
    add(parser, "--out", "PNG path, in an existing folder",
        shown_default="RUN/samples-seed<SEED>.png")


CAS_STEPS = 800  # tfvqvae.evaluation.classifier.CAS_STEPS
EVALUATE_NUM_SAMPLES = 10000  # tfvqvae.training.evaluate.DEFAULT_NUM_SAMPLES
EVALUATE_BATCH_SIZE = 250  # tfvqvae.training.evaluate.DEFAULT_BATCH_SIZE


def add_evaluate(parser):
    parser.add_argument("--run", required=True, help="run folder with model.keras, codes/ "
                        "and prior-*/ (tfvqvae pipeline, or train + extract-codes + "
                        "train-prior)")
    add(parser, "--num-samples", "class-balanced training images per CAS row: real images, "
        "their reconstructions, generated images", EVALUATE_NUM_SAMPLES, type=positive_int)
    add(parser, "--temperature", "softmax temperature of the priors for the generated row",
        1.0, type=number_in((0, math.inf, "()")))
    add(parser, "--seed", "seed of the real subset, the sampler and the classifier", 0,
        type=int)
    add(parser, "--classifier-steps", "training steps of the CAS classifier (the same for "
        "every row)", CAS_STEPS, type=positive_int)
    add(parser, "--max-examples", "use at most this many images / code maps per split for "
        "the rate-distortion table and the CAS test set", shown_default="all",
        type=positive_int, metavar="N")
    add(parser, "--batch-size", "images per encoding / sampling step", EVALUATE_BATCH_SIZE,
        type=positive_int)
    add(parser, "--data-dir", "data folder", shown_default="the run's config.json")
    add(parser, "--cas", "compute the classification accuracy score", True,
        action=argparse.BooleanOptionalAction)


class _Renamed(argparse.Action):
    """A removed option: refuses it, naming its new name and the value received."""

    def __init__(self, *args, new, **kwargs):
        self.new = new
        super().__init__(*args, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is now {self.new}. Received: {option_string} {values}")


def percentage(text):
    """argparse type: a float in [0, 100]."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 100.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 100]. Received: {text!r}")
    return value


def add_export(parser):
    parser.add_argument("--run", required=True,
                        help="run folder of `tfvqvae train` (model.keras, config.json, prior-*/)")
    parser.add_argument("--model", action=_Renamed, new="--run (the run folder)")
    parser.add_argument("--out", required=True, help="export folder (must not exist)")
    add(parser, "--format", f"comma-separated, any of {','.join(EXPORT_FORMATS)}; TFLite and "
        "ONNX are converted from the SavedModel", "savedmodel")
    add(parser, "--name", "model name in OUT/savedmodel/NAME/VERSION",
        shown_default="the run folder's name")
    add(parser, "--version", "SavedModel version", 1, type=positive_int)
    add(parser, "--overwrite", "replace an earlier export in --out (a folder with "
        "export.json)", False, action=argparse.BooleanOptionalAction)
    add(parser, "--tflite-modes", "comma-separated TFLite modes (also int16x8: int16 activations)",
        shown_default=",".join(TFLITE_MODES) + " (int8 left out for codes with a depth axis)")
    add(parser, "--opset", "ONNX opset, 17 or 18", 17, type=int)
    add(parser, "--calibration-images", "training images for int8 calibration", 200,
        type=positive_int)
    add(parser, "--sample", "include the `sample` signature when the run has a prior for "
        "every level", True, action=argparse.BooleanOptionalAction)
    add(parser, "--sample-method", "sampler inside the `sample` signature", "cached",
        choices=SAMPLE_METHODS)
    add(parser, "--image-size", "image size of the graphs", type=positive_int,
        shown_default="the run's")
    add(parser, "--data-dir", "data folder", shown_default="the run's config.json")
    add(parser, "--verify", "run every artifact on the run's test images and compare with "
        "Keras", False, action=argparse.BooleanOptionalAction)
    add(parser, "--verify-images", "test images for --verify", 1000, type=positive_int)
    add(parser, "--min-agreement", "% of code indices that float artifacts (SavedModel, "
        "TFLite float32, ONNX) must share with Keras under --verify", 100.0, type=percentage)
    add(parser, "--min-quantized-agreement", "the same for dynamic-range, weight-only, int8 and "
        "int16x8 TFLite (0: reported, not enforced)", 99.0,  # verify.MIN_QUANTIZED_AGREEMENT
        type=percentage)


def add_prepare(parser):
    parser.add_argument("--images", required=True, help="image folder: one sub-folder per "
                        "class, or a flat folder of images; FOLDER/SPLIT when it exists")
    parser.add_argument("--out", required=True, help="output folder for the shards and "
                        "dataset.json (other splits in it are kept)")
    add(parser, "--split", "split name (part of the shard file names)", "train")
    size = parser.add_mutually_exclusive_group()
    add(size, "--shards", "number of shards (have at least as many as training workers)",
        type=positive_int, metavar="N", shown_default="one per --shard-size")
    add(size, "--shard-size", "target shard size in MiB of image files", type=number_in(
        (0, math.inf, "()")), metavar="MB", shown_default=PREPARE_SHARD_SIZE_MB)
    add(parser, "--seed", "seed of the record order", 0, type=int)
    add(parser, "--skip-corrupt", "skip unreadable image files (counted in dataset.json) "
        "instead of failing", False, action=argparse.BooleanOptionalAction)
    add(parser, "--overwrite", "replace the split when dataset.json already holds it", False,
        action=argparse.BooleanOptionalAction)


def add_compress(parser):
    parser.add_argument("--run", required=True,
                        help="run folder with model.keras and a prior-<level>/ per level")
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files (JPEG, PNG, BMP, GIF, WebP), any size")
    parser.add_argument("--out", required=True, help="folder for the .tfvq files")
    add(parser, "--labels", "class labels when the priors are class-conditional: one for all "
        "images or one per image", type=int, nargs="+", metavar="LABEL")
    add(parser, "--overwrite", "replace existing files", False,
        action=argparse.BooleanOptionalAction)


def add_decompress(parser):
    parser.add_argument("files", nargs="+", metavar="FILE", help=".tfvq files")
    parser.add_argument("--run", required=True, help="the run folder that compressed them")
    parser.add_argument("--out", required=True, help="folder for the PNG files")
    add(parser, "--overwrite", "replace existing files", False,
        action=argparse.BooleanOptionalAction)


def add_presets(parser):
    parser.add_argument("names", nargs="*", metavar="PRESET",
                        help=f"presets to show (default: all of {', '.join(PRESETS)})")


BUILDERS = {
    "pipeline": add_pipeline,
    "train": add_train,
    "extract-codes": add_extract_codes,
    "train-prior": add_train_prior,
    "sample": add_sample,
    "evaluate": add_evaluate,
    "export": add_export,
    "prepare": add_prepare,
    "compress": add_compress,
    "decompress": add_decompress,
    "presets": add_presets,
}


def build_parser():
    """The whole ``tfvqvae`` parser (no TensorFlow import)."""
    parser = Parser(prog="tfvqvae",
                    description="VQ-VAE training and tools for TensorFlow / Keras.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=Parser)
    for name, (_, help_text) in COMMANDS.items():
        BUILDERS[name](commands.add_parser(name, help=help_text, description=help_text))
    return parser


def preset_lines(names=None):
    """What each preset sets, as the options that would set it."""
    names = names or list(PRESETS)
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise ValueError(f"unknown preset {unknown[0]!r}; presets: {', '.join(PRESETS)}")

    def flags(values, prefix=""):
        parts = []
        for key, value in values.items():
            flag = f"--{prefix}{key.replace('_', '-')}"
            parts.append(flag if value is True else f"--no-{prefix}{key.replace('_', '-')}"
                         if value is False else f"{flag} {value}")
        return " ".join(parts)

    lines = []
    for name in names:
        lines.append(f"{name}:")
        lines.append(f"  train:       {flags(PRESETS[name]) or '(defaults)'}")
        lines.append(f"  train-prior: {flags(PRIOR_PRESETS.get(name, {})) or '(defaults)'}")
    lines.append("Options given on the command line override a preset; with --preset, "
                 "--out defaults to runs/PRESET.")
    return lines
