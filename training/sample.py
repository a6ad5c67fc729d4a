"""Ancestral sampling down the levels, then the decoder: the library behind ``tfvqvae sample``.

Algorithm 2 of VQ-VAE-2, lines 10-13, for any number of levels: the top
codes from the top prior, then each lower level's codes from its prior given
the codes just drawn for the level directly above (bottom given top for
VQ-VAE-2; middle given top, bottom given middle for three levels; a one-level
VQVAE stops at the top), then the VQ-VAE decoder. The chain is the library's
one hierarchical sampler, `tfvqvae.models.sampling.sample_levels`, which the
exported ``sample`` signature runs too (`levels_sampler`): the same ``seed``
gives the same codes and images in both.
"""

from pathlib import Path

import numpy as np

from tfvqvae import run_folder
from tfvqvae.models.sampling import check_chain
from tfvqvae.models.sampling import sample_levels
from tfvqvae.run_folder import samples_file
from tfvqvae.training.images import save_png
from tfvqvae.training.images import tile

# The sampler `sample_images` uses, under the name earlier releases exported:
# sample_codes(priors, num_samples, labels, temperature, seed, method) ->
# {level: int32 (B, h, w) or (B, h, w, Q)}, top first. Not a second implementation.
sample_codes = sample_levels


def load_priors(run, model):
    """{level: PixelCNNPrior} for every level of ``model``, top first (`tfvqvae.run_folder.load_priors`).

    Raises:
        FileNotFoundError: a level has no prior (the message names the
            ``train-prior`` command that makes it).
        ValueError: a prior file cannot be loaded, or is not a prior.
    """
    return run_folder.load_priors(run, model.levels)


def _labels(priors, num_samples, class_label):
    num_classes = {p.num_classes for p in priors.values()} - {None}
    if not num_classes:
        if class_label is not None:
            raise ValueError("--class was given but the priors are not class-conditional.")
        return None
    (count,) = num_classes
    if class_label is None:
        return np.arange(num_samples) % count  # one of each class in turn
    if not 0 <= class_label < count:
        raise ValueError(
            f"--class must lie in [0, {count}) for these priors. Received: {class_label}"
        )
    return np.full(num_samples, class_label)


def sample_images(run, num_samples=16, class_label=None, temperature=1.0, seed=0,
                  method="cached", out=None):
    """Samples images from a run's priors and decoder; writes a PNG grid.

    Returns:
        (images float32 (B, H, W, C) clipped to [0, 1], codes {level: array},
        the PNG path).
    """
    if out is not None and not Path(out).parent.is_dir():
        raise FileNotFoundError(
            f"--out {out}: the folder {Path(out).parent} does not exist (create it first)."
        )
    out = Path(out) if out is not None else samples_file(run, seed)
    model = run_folder.load_model(run)
    priors = load_priors(run, model)
    check_chain(priors)  # a broken chain is named before anything is drawn
    labels = _labels(priors, num_samples, class_label)
    codes = sample_levels(priors, num_samples, labels, temperature, seed, method)
    images = np.clip(model.decode_levels(codes).numpy(), 0.0, 1.0)
    save_png(out, tile(images, columns=min(8, num_samples)))
    return images, {k: v.numpy() for k, v in codes.items()}, out


def main(args):
    """Entry point of ``tfvqvae sample``."""
    _, codes, out = sample_images(
        args.run, args.num_samples, args.class_label, args.temperature, args.seed,
        args.method, args.out,
    )
    shapes = ", ".join(f"{level} {tuple(c.shape[1:])}" for level, c in codes.items())
    print(f"wrote {out} ({args.num_samples} samples; codes {shapes})")
    return 0
