"""A three-level hierarchical VQ-VAE on MNIST: per-level codes, Figure 3 and prior-chain samples.

    python bench/three_level.py [--data-dir ../shared/data] [--epochs 3]
                                [--prior-epochs 3] [--max-train-examples 20000] [--out DIR]

The package's pipeline (`tfvqvae.training.pipeline.run_pipeline`, what
``tfvqvae pipeline --model hierarchical --levels 3`` runs) with the ``mnist``
preset's sizes (K = 128, D = 32 per level, hidden 64, k-means init and
restarts after 20 steps, Adam 1e-3, batch 128) on MNIST resized to 32x32, so
the top, middle and bottom code maps are 2x2, 4x4 and 8x8. It trains the
VQ-VAE on the first ``--max-train-examples`` training images, encodes every
image, trains the class-conditional gated PixelCNN chain (top; middle given
top; bottom given middle) and samples one digit per class. The export stage
is skipped.

Reported on the 10 000 test images: MSE and PSNR, per level perplexity,
usage % and dead codes, each prior's test bits per code; and (VQ-VAE-2
Figure 3) the PSNR of the reconstructions from the top level alone, top +
middle, and all three, on the first 1000 test images, with the levels below
drawn from the prior chain (`sample_levels(given=...)`) or zeroed
(`HierarchicalVQVAE.decode_top_levels`). Writes
bench/figures/three_level_reconstructions.png (rows: originals, then top,
top + middle, all, lower levels sampled), bench/figures/three_level_samples.png
and the ``three_level`` section of bench/RESULTS.md.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# bench/ for its helpers; tfvqvae is the installed package (pip install -e .).
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from _results import command_line  # noqa: E402
from _results import machine_line  # noqa: E402
from _results import markdown_table  # noqa: E402
from _results import write_section  # noqa: E402
from tfvqvae.metrics import psnr  # noqa: E402
from tfvqvae.models.sampling import sample_levels  # noqa: E402
from tfvqvae.run_folder import load_priors  # noqa: E402
from tfvqvae.run_folder import load_run_images  # noqa: E402
from tfvqvae.run_folder import metrics_file  # noqa: E402
from tfvqvae.run_folder import model_file  # noqa: E402
from tfvqvae.run_folder import prior_dir  # noqa: E402
from tfvqvae.training.config import PRESETS  # noqa: E402
from tfvqvae.training.config import PRIOR_PRESETS  # noqa: E402
from tfvqvae.training.config import TrainConfig  # noqa: E402
from tfvqvae.training.images import save_png  # noqa: E402
from tfvqvae.training.images import tile  # noqa: E402
from tfvqvae.training.pipeline import run_pipeline  # noqa: E402

BENCH = Path(__file__).resolve().parent
FIGURES = BENCH / "figures"
DEFAULT_DATA = BENCH.parents[1] / "shared" / "data"
NUM_FIGURE_IMAGES = 8
NUM_PSNR_IMAGES = 1000


def train(args, out):
    config = TrainConfig.from_dict({
        **PRESETS["mnist"],
        "data_dir": args.data_dir,
        "model": "hierarchical",
        "levels": 3,
        "image_size": 32,
        "max_train_examples": args.max_train_examples,
        "epochs": args.epochs,
        "out": str(out),
    })
    prior_options = dict(PRIOR_PRESETS["mnist"], epochs=args.prior_epochs)
    return config, run_pipeline(config, prior_options, overwrite=True, verbose=2,
                                export_formats=())


def top_level_reconstructions(run, config):
    """Test PSNR decoded from the top 1, 2 and 3 levels, two ways, and the figure's rows.

    "sampled": the levels below the kept ones are drawn from the prior chain
    given the kept codes and the image's label (`sample_levels(given=...)`,
    seed 0): what the kept levels pin down. "zeroed": the maps below are
    zero vectors (`decode_top_levels`). Both on the first
    ``NUM_PSNR_IMAGES`` test images; the figure shows the sampled ones.
    """
    model = keras.saving.load_model(model_file(run), compile=False)
    priors = load_priors(run, model.levels, compile=False)
    data = load_run_images(config.to_dict(), "test")
    images = data.as_float()[:NUM_PSNR_IMAGES]
    labels = data.labels[:NUM_PSNR_IMAGES].astype(np.int32)
    levels = model.levels
    squared = {(way, keep): 0.0 for way in ("sampled", "zeroed")
               for keep in range(1, len(levels) + 1)}
    rows = {keep: [] for keep in range(1, len(levels) + 1)}
    for start in range(0, len(images), 250):
        batch, batch_labels = images[start:start + 250], labels[start:start + 250]
        codes = model.encode(batch)
        for keep in range(1, len(levels) + 1):
            given = dict(zip(levels[:keep], codes[:keep]))
            completed = sample_levels(priors, labels=batch_labels, seed=0, given=given)
            decoded = {
                "sampled": model.decode(*(completed[level] for level in levels)),
                "zeroed": model.decode_top_levels(codes, keep),
            }
            for way, value in decoded.items():
                value = keras.ops.convert_to_numpy(value)
                squared[way, keep] += float(np.sum((value - batch) ** 2))
                if way == "sampled" and start == 0:
                    rows[keep] = np.clip(value[:NUM_FIGURE_IMAGES], 0, 1)
    FIGURES.mkdir(exist_ok=True)
    save_png(FIGURES / "three_level_reconstructions.png",
             tile(np.concatenate([images[:NUM_FIGURE_IMAGES], *rows.values()]),
                  columns=NUM_FIGURE_IMAGES))
    return {key: psnr(total / images.size) for key, total in squared.items()}, levels


def section(args, metrics, priors, partial, levels, wall):
    test = metrics["test"]
    level_rows = [
        [level, f"{entry['perplexity']:.1f}", f"{entry['usage_percent']:.1f}",
         entry["dead_codes"], entry["num_embeddings"], f"{priors[level]:.3f}"]
        for level, entry in ((level, test["levels"][level]) for level in levels)
    ]
    kept = ["top", "top + middle", "top + middle + bottom"]
    partial_rows = [[kept[keep - 1], f"{partial['sampled', keep]:.2f}",
                     f"{partial['zeroed', keep]:.2f}"] for keep in range(1, len(levels) + 1)]
    return "\n".join([
        "## Three levels on MNIST: per-level codes, Figure 3, prior-chain samples (issue 11)",
        "",
        f"`{command_line()}` ({wall / 60:.1f} min wall"
        f"{', evaluation only: the run was trained earlier' if args.reuse else ''}). "
        f"{machine_line()}.",
        "",
        f"`HierarchicalVQVAE(num_levels=3)` at 32x32 (top 2x2, middle 4x4, bottom 8x8), "
        f"the `mnist` preset's sizes, {args.epochs} epochs on the first "
        f"{args.max_train_examples} training images; class-conditional PixelCNN chain "
        f"(middle given top, bottom given middle), {args.prior_epochs} epochs. "
        f"Test set (10 000 images): MSE {test['mse']:.5f}, PSNR {test['psnr_db']:.2f} dB.",
        "",
        markdown_table(["level", "perplexity", "usage %", "dead codes", "K",
                        "prior bits/code"], level_rows),
        "",
        f"Reconstructions from the top levels alone, PSNR on the first {NUM_PSNR_IMAGES} "
        "test images: the levels below drawn from the prior chain given the kept codes "
        "and the label (`sample_levels(..., given=...)`, seed 0), or set to zero vectors "
        "(`decode_top_levels`):",
        "",
        markdown_table(["levels kept", "PSNR, lower levels sampled (dB)",
                        "PSNR, lower maps zeroed (dB)"], partial_rows),
        "",
        "Figures: `bench/figures/three_level_reconstructions.png` (rows: originals, then "
        "decoded from top, top + middle, all, the lower levels sampled), "
        "`bench/figures/three_level_samples.png` (one digit per class from the prior "
        "chain, seed 0).",
    ])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--prior-epochs", type=int, default=3)
    parser.add_argument("--max-train-examples", type=int, default=20000)
    parser.add_argument("--out", help="run folder to keep (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true",
                        help="skip training: use the finished run in --out")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as temp:
        out = Path(args.out) if args.out else Path(temp) / "three_level"
        if args.reuse:
            config = TrainConfig.load(out / "config.json")
        else:
            config, _ = train(args, out)
        metrics = json.loads(metrics_file(out).read_text())
        partial, levels = top_level_reconstructions(out, config)
        priors = {
            level: json.loads(metrics_file(prior_dir(out, level)).read_text())["test"][
                "bits_per_dim"]
            for level in levels
        }
        FIGURES.mkdir(exist_ok=True)
        shutil.copy(out / "samples-seed0.png", FIGURES / "three_level_samples.png")
    wall = time.perf_counter() - start
    text = section(args, metrics, priors, partial, levels, wall)
    write_section("three_level", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
