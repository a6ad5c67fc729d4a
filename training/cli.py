"""``tfvqvae.training.cli.main``: the ``tfvqvae`` command under its library name.

The command itself is ``tfvqvae_cli.main`` (source: training/launcher/), which
parses without importing TensorFlow; see its docstring for the commands.
"""

import sys

from tfvqvae_cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
