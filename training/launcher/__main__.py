"""``python -m tfvqvae_cli``: the ``tfvqvae`` command."""

import sys

from tfvqvae_cli import main

sys.exit(main())
