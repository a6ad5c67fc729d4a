"""MNIST and Fashion-MNIST: VQ-VAE-2 reconstruction quality and prior bits/dim.

    python bench/mnist_quality.py [--datasets mnist,fashion_mnist] [--epochs 2]
                                  [--prior-epochs 3] [--max-train-examples 20000]
                                  [--data-dir ../shared/data] [--out DIR]

For each dataset, the package's own pipeline (`tfvqvae.training.pipeline.run_pipeline`,
what ``tfvqvae pipeline`` runs) with the ``mnist`` preset as a two-level
VQ-VAE-2 at image size 32 (K = 128, D = 32 per level, hidden 64, k-means
init and restarts after 20 steps, Adam 1e-3, batch 128): train the VQ-VAE-2
on the first ``--max-train-examples`` training images, encode every
training and test image, train the class-conditional gated PixelCNN priors
(hidden 32, 4 blocks, kernel 3; top, then bottom given top) on the codes of
all training images, and sample. The export stage is skipped. The defaults
are the settings of the MNIST prior row of bench/RESULTS.md, which took
6 min 20 s with the export.

Reported on the 10 000 test images: MSE, PSNR, per level perplexity (mean
over test batches of 128), usage % and dead codes (over the test set), and
each prior's test NLL in bits per code (log2 K = 7 for a uniform prior).
Writes the ``mnist_quality`` section of bench/RESULTS.md.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# bench/ for its helpers; tfvqvae is the installed package (pip install -e .).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import command_line  # noqa: E402
from _results import machine_line  # noqa: E402
from _results import markdown_table  # noqa: E402
from _results import write_section  # noqa: E402
from tfvqvae.training.config import PRESETS  # noqa: E402
from tfvqvae.training.config import TrainConfig  # noqa: E402
from tfvqvae.training.pipeline import PRIOR_PRESETS  # noqa: E402
from tfvqvae.training.pipeline import run_pipeline  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def run_dataset(dataset, args, out):
    config = TrainConfig.from_dict({
        **PRESETS["mnist"],
        "dataset": dataset,
        "data_dir": args.data_dir,
        "model": "vqvae2",
        "image_size": 32,
        "max_train_examples": args.max_train_examples,
        "epochs": args.epochs,
        "out": str(out),
    })
    # All extracted code records, as before the mnist preset capped its priors.
    prior_options = dict(PRIOR_PRESETS["mnist"], epochs=args.prior_epochs, max_train_examples=None)
    summary = run_pipeline(config, prior_options, overwrite=True, verbose=2,
                           export_formats=())
    vqvae_metrics = json.loads((out / "metrics.json").read_text())
    prior_metrics = {
        level: json.loads((out / f"prior-{level}" / "metrics.json").read_text())
        for level in ("top", "bottom")
    }
    return summary, vqvae_metrics, prior_metrics


def section(args, quality, priors, wall, finished):
    lines = [
        "## MNIST and Fashion-MNIST: VQ-VAE-2 quality and priors (issue 6)",
        "",
        f"`{command_line()}` ({wall / 60:.1f} min wall, `nice -n 19`, while other jobs "
        f"shared the 2 cores).{'' if finished else ' **Partial: later datasets still running.**'} "
        f"{machine_line()}.",
        "",
        "`tfvqvae.training.pipeline.run_pipeline` per dataset, `mnist` preset as VQ-VAE-2 "
        "at 32x32 (K = 128, D = 32 per level, hidden 64, k-means init + restarts after 20 "
        f"steps, Adam 1e-3, batch 128), {args.epochs} epochs on the first "
        f"{args.max_train_examples} training images; class-conditional gated PixelCNN "
        f"priors (hidden 32, 4 blocks, kernel 3) trained {args.prior_epochs} epochs on the "
        "codes of all 60 000 training images; export skipped. Test metrics on the 10 000 "
        "test images; perplexity is the mean over test batches of 128 images, usage and "
        "dead codes count over the whole test set.",
        "",
        markdown_table(
            ["dataset", "train images", "test images", "test MSE", "PSNR (dB)",
             "perplexity top / bottom", "usage % top / bottom", "dead codes top / bottom",
             "VQ-VAE-2 time (s)", "pipeline time (s)"],
            quality,
        ),
        "",
        markdown_table(
            ["dataset", "prior", "code map", "test NLL (nats / code)", "bits / dim",
             "uniform", "time (s)"],
            priors,
        ),
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="mnist,fashion_mnist")
    parser.add_argument("--epochs", type=int, default=2, help="VQ-VAE-2 epochs")
    parser.add_argument("--prior-epochs", type=int, default=3)
    parser.add_argument("--max-train-examples", type=int, default=20000)
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--out", help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    start = time.perf_counter()

    quality, priors = [], []
    with tempfile.TemporaryDirectory(prefix="mnist-quality-") as temp:
        root = Path(args.out) if args.out else Path(temp)
        for dataset in datasets:
            t0 = time.perf_counter()
            summary, vq, prior = run_dataset(dataset, args, root / dataset)
            wall = time.perf_counter() - t0
            test, levels = vq["test"], vq["test"]["levels"]
            print(dataset, json.dumps(summary), flush=True)
            quality.append([
                dataset, vq["num_train_images"], vq["num_test_images"],
                round(test["mse"], 5), round(test["psnr_db"], 2),
                f"{levels['top']['perplexity']:.1f} / {levels['bottom']['perplexity']:.1f}",
                f"{levels['top']['usage_percent']:.1f} / {levels['bottom']['usage_percent']:.1f}",
                f"{levels['top']['dead_codes']} / {levels['bottom']['dead_codes']}",
                round(vq["wall_time_s"]), round(wall),
            ])
            for level, name in (("top", "top"), ("bottom", "bottom (given top)")):
                p = prior[level]
                priors.append([
                    dataset, name, "x".join(map(str, p["code_shape"])),
                    round(p["test"]["nll_nats"], 3), round(p["test"]["bits_per_dim"], 3),
                    round(p["uniform_bits_per_dim"], 2), round(p["wall_time_s"]),
                ])
            finished = len(quality) == len(datasets)
            markdown = section(args, quality, priors, time.perf_counter() - start, finished)
            if not args.no_write:
                write_section("mnist_quality", markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
