"""The ``tfvqvae`` command: a thin dispatcher over the training library.

    tfvqvae pipeline [--preset quickstart] [...]   (every command below, in order)
    tfvqvae train [--preset quickstart] [--out DIR] [...]
    tfvqvae extract-codes --run DIR [--splits train,test] [--out DIR] [...]
    tfvqvae train-prior --run DIR --level top|bottom [...]
    tfvqvae sample --run DIR [--num-samples 16] [--temperature 1.0] [--seed 0] [...]
    tfvqvae export --model DIR --out OUT [--format savedmodel,tflite,onnx] [--verify] [...]

Each subcommand lives in its own module with ``add_arguments(parser)`` and
``main(args)``; this file only wires them to argparse.
"""

import argparse
import importlib
import sys


SUBCOMMANDS = {
    "pipeline": (
        "tfvqvae.training.pipeline",
        "train the VQ-VAE, extract codes, train the priors and sample, in one go",
    ),
    "train": (
        "tfvqvae.training.train",
        "train a VQ-VAE and write model, checkpoints, images, metrics",
    ),
    "extract-codes": (
        "tfvqvae.training.extract_codes",
        "encode a dataset with a trained model and write its code maps (TFRecord)",
    ),
    "train-prior": (
        "tfvqvae.training.train_prior",
        "train a gated PixelCNN prior on the extracted codes of one level",
    ),
    "sample": (
        "tfvqvae.training.sample",
        "sample codes from the priors (top, then bottom) and decode them to images",
    ),
    "export": (
        "tfvqvae.export.cli",
        "export a run to SavedModel (TF Serving), TFLite and ONNX; --verify compares with Keras",
    ),
}


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="tfvqvae", description="VQ-VAE training and tools for TensorFlow / Keras."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {}
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(commands.add_parser(name, help=help_text, description=help_text))
        modules[name] = module
    args = parser.parse_args(argv)
    try:
        return modules[args.command].main(args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError) as error:
        print(f"tfvqvae {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
