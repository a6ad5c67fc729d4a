"""Ancestral sampling top → bottom → decoder: the library behind ``tfvqvae sample``.

Algorithm 2 of VQ-VAE-2, lines 10-13: top codes from the top prior, bottom
codes from the bottom prior given the top codes (a one-level VQVAE stops at
the top), then the VQ-VAE decoder. The same ``seed`` gives the same images.
"""

from pathlib import Path

import numpy as np

from tfvqvae.models.sampling import LEVEL_SEED_STRIDE
from tfvqvae.run_folder import load_keras_file
from tfvqvae.training.images import save_png
from tfvqvae.training.images import tile
from tfvqvae.training.train_prior import load_vqvae
from tfvqvae.run_folder import prior_dir


def load_priors(run, model):
    """{level: PixelCNNPrior} for every level of ``model``, from ``RUN/prior-<level>``."""
    priors = {}
    for level in model.levels:
        path = prior_dir(run, level) / "model.keras"
        if not path.is_file():
            raise FileNotFoundError(
                f"No {level} prior at {path}: run `tfvqvae train-prior --run {run} "
                f"--level {level}` first."
            )
        priors[level] = load_keras_file(path, f"{level} prior")
    return priors


def sample_codes(priors, num_samples, labels=None, temperature=1.0, seed=0, method="cached"):
    """{level: int32 (B, h, w)}: the top level first, each later level given the top."""
    codes = {}
    for offset, (level, prior) in enumerate(priors.items()):
        codes[level] = prior.sample(
            num_samples,
            labels=labels if prior.num_classes is not None else None,
            condition=codes["top"] if prior.is_conditioned else None,
            temperature=temperature,
            seed=seed + LEVEL_SEED_STRIDE * offset,
            method=method,
        )
    return codes


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
    out = Path(out) if out is not None else Path(run) / f"samples-seed{seed}.png"
    model = load_vqvae(run)
    priors = load_priors(run, model)
    labels = _labels(priors, num_samples, class_label)
    codes = sample_codes(priors, num_samples, labels, temperature, seed, method)
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
