"""The seeds' two evaluations on MNIST, Fashion-MNIST and the CIFAR-10 subset.

    python bench/evaluation.py [--datasets mnist,fashion_mnist,cifar10]
                               [--epochs 1] [--prior-epochs 3] [--num-samples 10000]
                               [--temperature 1.0] [--data-dir ../shared/data]
                               [--out bench/scratch/evaluation]

For each dataset: ``tfvqvae pipeline`` (`run_pipeline`, export skipped) trains a
VQ-VAE-2 at 32x32 on the **whole** training split, extracts the codes of
both splits and trains class-conditional gated PixelCNN priors (top given the
class, bottom given the top); then ``tfvqvae evaluate`` (`evaluate_run`)
computes the classification accuracy score (real, reconstructed, generated)
and the rate-distortion table. The budget of each stage is in the tables.
Run folders are kept under ``--out`` (git-ignored under bench/scratch/), and a
rerun keeps every finished stage (the pipeline's own resume), so it only
repeats the evaluation.

Writes the ``evaluation`` section of bench/RESULTS.md.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import command_line  # noqa: E402
from _results import machine_line  # noqa: E402
from _results import markdown_table  # noqa: E402
from _results import write_section  # noqa: E402
from tfvqvae.training.config import PRESETS  # noqa: E402
from tfvqvae.training.config import PRIOR_PRESETS  # noqa: E402
from tfvqvae.training.config import TrainConfig  # noqa: E402
from tfvqvae.training.pipeline import run_pipeline  # noqa: E402

BENCH = Path(__file__).resolve().parent
DEFAULT_DATA = BENCH.parents[1] / "shared" / "data"

# The preset each dataset's VQ-VAE-2 and priors start from.
PRESET_OF = {"mnist": "mnist", "fashion_mnist": "mnist", "cifar10": "cifar10"}


def run_dataset(dataset, args, out):
    preset = PRESET_OF[dataset]
    config = TrainConfig.from_dict({
        **PRESETS[preset],
        "dataset": dataset,
        "data_dir": args.data_dir,
        "model": "vqvae2",
        "image_size": 32,
        "max_train_examples": None,  # the whole training split
        "epochs": args.epochs,
        "out": str(out),
    })
    prior_options = dict(PRIOR_PRESETS[preset], epochs=args.prior_epochs,
                         max_train_examples=None, class_conditional=True)
    start = time.perf_counter()
    run_pipeline(config, prior_options, verbose=2, export_formats=())
    pipeline_s = time.perf_counter() - start
    if args.pipeline_only:
        return None
    from tfvqvae.training.evaluate import evaluate_run

    from tfvqvae.run_folder import evaluation_file

    saved = evaluation_file(out)
    result = json.loads(saved.read_text()) if saved.is_file() else None
    wanted = {"num_samples": args.num_samples, "temperature": args.temperature, "seed": 0}
    if result is not None and all(result["settings"].get(k) == v for k, v in wanted.items()) \
            and "cas" in result:
        print(f"{dataset}: kept {saved} (same settings)", flush=True)
        evaluate_s = sum(result["seconds"].values())
        result["kept"] = True
    else:
        start = time.perf_counter()
        result = evaluate_run(out, num_samples=args.num_samples,
                              temperature=args.temperature, seed=0, data_dir=args.data_dir)
        evaluate_s = time.perf_counter() - start
    vq = json.loads((out / "metrics.json").read_text())
    priors = {level: json.loads((out / f"prior-{level}" / "metrics.json").read_text())
              for level in ("top", "bottom")}
    return config, prior_options, result, vq, priors, pipeline_s, evaluate_s


def _budget(config, prior_options, vq, priors):
    steps = -(-vq["num_train_images"] // config.batch_size) * config.epochs
    return (f"VQ-VAE-2 K = {config.num_embeddings}, D = {config.embedding_dim}, hidden "
            f"{config.hidden_channels}, Adam {config.learning_rate:g}, batch "
            f"{config.batch_size}, {config.epochs} epoch(s) of {vq['num_train_images']} "
            f"images ({steps} steps, {vq['wall_time_s']:.0f} s); priors hidden "
            f"{prior_options['hidden_channels']}, {prior_options['num_blocks']} blocks, "
            f"kernel {prior_options['kernel_size']}, {prior_options['epochs']} epochs "
            f"({priors['top']['wall_time_s']:.0f} s top, "
            f"{priors['bottom']['wall_time_s']:.0f} s bottom)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="mnist,fashion_mnist,cifar10")
    parser.add_argument("--epochs", type=int, default=1, help="VQ-VAE-2 epochs")
    parser.add_argument("--prior-epochs", type=int, default=3)
    parser.add_argument("--num-samples", type=int, default=10000)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--out", default=str(BENCH / "scratch" / "evaluation"))
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--pipeline-only", action="store_true",
                        help="train the runs only (a later run evaluates them)")
    args = parser.parse_args(argv)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    start = time.perf_counter()
    cas_rows, rd_rows, budgets = [], [], []
    for dataset in datasets:
        ran = run_dataset(dataset, args, Path(args.out) / dataset)
        if ran is None:
            continue
        config, prior_options, result, vq, priors, pipeline_s, evaluate_s = ran
        cas = result["cas"]
        real = cas["real"]["top1"]
        for row, label in (("real", "real data"),
                           ("reconstructed", "real data after reconstructing"),
                           ("generated", "VQ-VAE-2 samples")):
            value = cas[row]
            top5 = "-" if value.get("top5") is None else f"{value['top5']:.2f}"
            cas_rows.append([dataset, label, f"{value['top1']:.2f}", top5,
                             f"{value['top1'] / real:.3f}"])
        rd = result["rate_distortion"]
        for level in rd["levels"]:
            rate = rd["priors"][level]
            rd_rows.append([
                dataset, f"{level} prior",
                f"{rate['train']['bits_per_dim']:.3f}",
                f"{rate['validation']['bits_per_dim']:.3f}",
                f"{rate['train']['bits_per_image']:.1f}",
                f"{rate['validation']['bits_per_image']:.1f}", "-", "-"])
        dec = rd["decoder"]
        rd_rows.append([dataset, "VQ decoder", "-", "-", "-", "-",
                        f"{dec['train']['mse']:.5f} ({dec['train']['psnr']:.2f} dB)",
                        f"{dec['validation']['mse']:.5f} ({dec['validation']['psnr']:.2f} dB)"])
        total = rd["total_bits_per_image"]
        rd_rows.append([dataset, f"total (naive Σ log2 K = {rd['naive_bits_per_image']:.0f})",
                        "-", "-", f"{total['train']:.1f}", f"{total['validation']:.1f}",
                        "-", "-"])
        budgets.append(f"- {dataset}: {_budget(config, prior_options, vq, priors)}; "
                       f"pipeline {pipeline_s:.0f} s, evaluate {evaluate_s:.0f} s"
                       f"{' (kept from an earlier run of this command)' if result.get('kept') else ''} "
                       f"(CAS classifier {result['settings']['classifier_steps']} steps per "
                       "row).")
        finished = len(budgets) == len(datasets)
        lines = [
            "## The seeds' evaluations: CAS and rate-distortion (issue 13)",
            "",
            f"`{command_line()}` ({(time.perf_counter() - start) / 60:.1f} min wall, other "
            f"jobs sharing the 2 cores).{'' if finished else ' **Partial: later datasets still running.**'} "
            f"{machine_line()}.",
            "",
            "Per dataset, `tfvqvae pipeline` (export skipped) on the whole training split "
            "at 32x32 (the CIFAR-10 subset has 20 000 training and 1 000 test images), "
            "class-conditional priors, then `tfvqvae evaluate --run RUN --num-samples "
            f"{args.num_samples} --temperature {args.temperature:g}`. CAS: the fixed "
            "classifier (`tfvqvae.evaluation.classifier`) trained with the same budget on "
            f"{args.num_samples} class-balanced pairs per row, tested on the real test "
            "split. Budgets:",
            "",
            *budgets,
            "",
            "### Classification Accuracy Score",
            "",
            markdown_table(["dataset", "training data", "top-1 %", "top-5 %",
                            "top-1 / real"], cas_rows),
            "",
            "### Rate-distortion (bits/dim = bits per code; MSE of images in [0, 1])",
            "",
            markdown_table(["dataset", "", "train NLL (bits/dim)",
                            "validation NLL (bits/dim)", "train bits / image",
                            "validation bits / image", "train MSE", "validation MSE"],
                           rd_rows),
        ]
        markdown = "\n".join(lines)
        print(markdown, flush=True)
        if not args.no_write:
            # One section per temperature, so both can be reported side by side.
            name = "evaluation" if args.temperature == 1.0 else f"evaluation_t{args.temperature:g}"
            write_section(name, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
