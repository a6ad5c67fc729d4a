"""The ``tfvqvae`` command, installed as the import name ``tfvqvae_cli``.

    tfvqvae pipeline [--preset quickstart] [...]   (every command below, in order)
    tfvqvae train [--preset quickstart] [--out DIR] [...]
    tfvqvae extract-codes --run DIR [--splits train,test] [--out DIR] [...]
    tfvqvae train-prior --run DIR [--level top|bottom] [--preset NAME] [...]
    tfvqvae sample --run DIR [--num-samples 16] [--temperature 1.0] [--seed 0] [...]
    tfvqvae evaluate --run DIR [--num-samples 10000] [--temperature 1.0] [--seed 0] [...]
    tfvqvae export --run DIR --out OUT [--format savedmodel,tflite,onnx] [--verify] [...]
    tfvqvae prepare --images FOLDER --out DIR [--split train] [--shards N | --shard-size MB] [...]
    tfvqvae compress --run DIR IMAGE... --out FOLDER [--labels L...]
    tfvqvae decompress FILE... --run DIR --out FOLDER
    tfvqvae presets [NAME ...]

This package lies outside ``tfvqvae`` because importing ``tfvqvae`` imports
TensorFlow (its models must be registered for ``keras.saving.load_model``):
help, argument errors and ``presets`` answer without it, and a command's
module (``COMMANDS``) is imported only once its arguments parse. That module's
``main(args)`` does the work; a ValueError, TypeError or OSError it raises
becomes one line on stderr and exit status 2, a FloatingPointError (a run
that diverged: NaN or Inf) one line and exit status 1.
"""

import importlib
import sys

from tfvqvae_cli.parser import COMMANDS
from tfvqvae_cli.parser import build_parser
from tfvqvae_cli.parser import preset_lines


def one_line(error):
    """An exception's message on one line."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def main(argv=None):
    """Runs ``tfvqvae`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    prog = f"tfvqvae {args.command}"
    try:
        if args.command == "presets":
            print("\n".join(preset_lines(args.names)))
            return 0
        module = importlib.import_module(COMMANDS[args.command][0])
        return module.main(args)
    except (ValueError, TypeError, OSError) as error:
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except FloatingPointError as error:  # a diverged run: nothing non-finite was saved
        print(flush=True)  # end the progress bar's line: the error starts on its own
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return 1
