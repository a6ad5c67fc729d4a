"""CIFAR-10 reconstruction quality in Sonnet's notebook setting: ours vs Sonnet's quantiser.

    python bench/cifar_quality.py [--steps 1000] [--variants ours,sonnet,ours_kmeans]
                                  [--data-dir ../shared/data] [--section NAME]

Sonnet's VQ-VAE example (``vqvae_example.ipynb``): batch 32, K = 512, D = 64,
β = 0.25, EMA decay 0.99, Adam 3e-4, hidden 128, residual hidden 32, 2
residual layers, loss = MSE / train variance + commitment. Our `tfvqvae.VQVAE`
has that architecture; images are in [0, 1] and the encoder subtracts 0.5, as
Sonnet's [-0.5, 0.5] inputs (normalised MSE does not change with the shift).

Variants, trained one after another in the same run, each from the same
seed (same encoder / decoder / codebook initialisation, same batches):

* ``ours``: `tfvqvae.VectorQuantizerEMA`, plain;
* ``ours_kmeans``: the same with ``kmeans_init=True, restart_unused_after=20``
  (what the package's ``mnist`` and ``quickstart`` presets use);
* ``sonnet``: ``snt.nets.VectorQuantizerEMA`` in our model
  (`bench/sonnet_quantizer.py`).

Data: the partial CIFAR-10 in ``--data-dir`` (20 000 training images, the
first 1 000 test images). Reported per variant: train time, normalised MSE
and per-batch perplexity over the last 100 training steps (what Sonnet's
notebook prints), and on the 1 000 test images: NMSE (MSE / training-pixel
variance), PSNR, perplexity per batch of 32 and over the whole test set,
codebook usage and dead codes. For ``sonnet`` it also checks that our
nearest-code rule on Sonnet's trained codebook gives Sonnet's indices.

Writes the section ``cifar_quality`` (default 1000 steps) or
``cifar_quality_<steps>`` of bench/RESULTS.md, rewritten after every variant
so a run stopped early keeps the variants it finished.
"""

import argparse
import math
import os
import sys
import time
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# bench/ for its helpers; tfvqvae is the installed package (pip install -e .).
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfvqvae  # noqa: E402
from _results import command_line  # noqa: E402
from _results import machine_line  # noqa: E402
from _results import markdown_table  # noqa: E402
from _results import write_section  # noqa: E402
from tfvqvae.data import load_dataset  # noqa: E402
from tfvqvae.metrics import psnr  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZES = dict(hidden_channels=128, residual_channels=32, num_residual_layers=2)
QUANTIZER = dict(num_embeddings=512, embedding_dim=64, commitment_cost=0.25, decay=0.99)
BATCH_SIZE = 32
LEARNING_RATE = 3e-4
LOG_EVERY = 100  # steps per Keras "epoch": history holds means over 100 steps
VARIANTS = {
    "ours": "(i) ours, plain EMA",
    "sonnet": "(iii) Sonnet's `VectorQuantizerEMA` in our model",
    "ours_kmeans": "(ii) ours, k-means init + restarts after 20 steps",
}
SONNET_PUBLISHED = dict(steps=10000, train_nmse=0.056, train_perplexity=326)


def build_model(variant, data_variance):
    keras.utils.set_random_seed(0)
    if variant == "sonnet":
        from sonnet_quantizer import SonnetVectorQuantizerEMA

        quantizer = SonnetVectorQuantizerEMA(**QUANTIZER)
    elif variant == "ours_kmeans":
        quantizer = tfvqvae.VectorQuantizerEMA(
            **QUANTIZER, kmeans_init=True, restart_unused_after=20)
    else:
        quantizer = tfvqvae.VectorQuantizerEMA(**QUANTIZER)
    model = tfvqvae.VQVAE(image_channels=3, quantizer=quantizer,
                          data_variance=data_variance, **SIZES)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE))
    return model


def perplexity(counts):
    p = counts / counts.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


class Progress(keras.callbacks.Callback):
    def __init__(self, name, variance):
        super().__init__()
        self.name, self.variance, self.start = name, variance, time.perf_counter()
        self.last_step_done = self.start

    def on_epoch_end(self, epoch, logs=None):
        self.last_step_done = time.perf_counter()
        print(f"[{self.name}] step {(epoch + 1) * LOG_EVERY}: nmse "
              f"{logs['mse'] / self.variance:.4f} perplexity {logs['perplexity']:.1f} "
              f"({time.perf_counter() - self.start:.0f} s)", flush=True)


def run_variant(variant, steps, train, test_images, variance):
    model = build_model(variant, variance)
    train_ds = train.to_tf_dataset(BATCH_SIZE, shuffle=True, seed=0, repeat=True,
                                   drop_remainder=True)
    progress = Progress(variant, variance)
    history = model.fit(train_ds, steps_per_epoch=LOG_EVERY, epochs=steps // LOG_EVERY,
                        verbose=0, callbacks=[progress]).history
    fit_time = time.perf_counter() - progress.start
    train_time = progress.last_step_done - progress.start

    test_ds = tf.data.Dataset.from_tensor_slices(test_images).batch(BATCH_SIZE)
    test = model.evaluate(test_ds, return_dict=True, verbose=0)
    codes = np.concatenate([model.encode(batch).numpy().ravel() for batch in test_ds])
    counts = np.bincount(codes, minlength=model.quantizer.num_embeddings).astype(np.float64)
    result = dict(
        variant=variant,
        steps=steps,
        train_time_s=train_time,
        fit_return_s=fit_time,
        train_nmse_last100=history["mse"][-1] / variance,
        train_perplexity_last100=history["perplexity"][-1],
        test_nmse=test["mse"] / variance,
        test_psnr=psnr(test["mse"]),
        test_perplexity_batch=test["perplexity"],
        test_perplexity_all=perplexity(counts),
        usage=100.0 * float((counts > 0).mean()),
        dead_codes=int((counts == 0).sum()),
    )
    assert result["dead_codes"] == round(test["dead_codes"])
    if variant == "sonnet":
        quantizer = model.quantizer
        # Sonnet's EMA updated the codebook on every training step.
        assert quantizer.sonnet_steps == steps, (quantizer.sonnet_steps, steps)
        reference = tfvqvae.VectorQuantizerEMA(**QUANTIZER)
        reference.build((None, QUANTIZER["embedding_dim"]))
        reference.codebook.assign(quantizer.sonnet_codebook)
        equal = total = 0
        for batch in test_ds:
            z_e = model.encoder(batch, training=False)
            theirs = quantizer.quantize_with_losses(z_e, training=False).indices
            equal += int(tf.reduce_sum(tf.cast(reference.indices(z_e) == theirs, tf.int32)))
            total += int(tf.size(theirs))
        result["index_agreement"] = 100.0 * equal / total
        result["index_vectors"] = total
    print(result, flush=True)
    return result


def section(args, results, variance, wall, finished):
    rows = []
    for r in results:
        rows.append([
            VARIANTS[r["variant"]], r["steps"], round(r["train_time_s"]),
            round(1000 * r["train_time_s"] / r["steps"], 1),
            round(r["train_nmse_last100"], 4), round(r["train_perplexity_last100"], 1),
            round(r["test_nmse"], 4), round(r["test_psnr"], 2),
            round(r["test_perplexity_batch"], 1), round(r["test_perplexity_all"], 1),
            round(r["usage"], 1), r["dead_codes"],
        ])
    rows.append([
        "Sonnet notebook, published", SONNET_PUBLISHED["steps"], "—", "—",
        SONNET_PUBLISHED["train_nmse"], f"≈ {SONNET_PUBLISHED['train_perplexity']}",
        "—", "—", "—", "—", "—", "—",
    ])
    table = markdown_table(
        ["variant", "steps", "train time (s)", "ms / step", "train NMSE (last 100)",
         "train perplexity (last 100)", "test NMSE", "test PSNR (dB)",
         "test perplexity (batch 32)", "test perplexity (1k images)", "usage %",
         "dead codes"],
        rows,
    )
    status = "" if finished else (
        f" **Partial: {len(results)} of {len(args.variants)} variants finished so far.**")
    lines = [
        f"## CIFAR-10 quality, Sonnet's notebook setting, {args.steps} steps (issue 6)",
        "",
        f"`{command_line()}` ({wall / 60:.1f} min wall so far, all variants in one "
        f"process, `nice -n 19`).{status} {machine_line()}, dm-sonnet {version('dm-sonnet')}.",
        "",
        f"`tfvqvae.VQVAE`, hidden 128, residual hidden 32, 2 residual layers, K = 512, "
        f"D = 64, β = 0.25, EMA decay 0.99, Adam 3e-4, batch 32, {args.steps} steps on the "
        f"20 000 CIFAR-10 training images in `../shared/data` (train pixel variance "
        f"{variance:.5f}); test on its 1 000 test images. NMSE = MSE / train variance. "
        "Every variant starts from the same seed (same weights, same codebook, same "
        "batches). \"Last 100\" columns are means over the last 100 training batches, "
        "which is what Sonnet's notebook prints; Sonnet's published numbers are from "
        "its own run of 10 000 steps on all 50 000 training images.",
        "",
        table,
    ]
    lines += ["", (
        "Train time runs from the start of `fit` to the end of its last step (tracing "
        "included); `fit` itself returned after "
        + ", ".join(f"{r['fit_return_s']:.0f} s" for r in results)
        + " (the rest is after the last step, see the report).")]
    agreements = [r for r in results if "index_agreement" in r]
    if agreements:
        lines += ["", (
            "Adapter check: on the test images' encoder outputs, our nearest-code rule on "
            "Sonnet's trained codebook picks the same code as Sonnet's module for "
            f"{agreements[0]['index_agreement']:.3f} % of the "
            f"{agreements[0]['index_vectors']} vectors; Sonnet's EMA ran on "
            f"all {agreements[0]['steps']} steps.")]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--variants", default="ours,sonnet,ours_kmeans",
                        help="comma-separated, run in this order: " + ", ".join(VARIANTS))
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--section", help="RESULTS.md section (default cifar_quality "
                        "for 1000 steps, else cifar_quality_<steps>)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}")
    if args.steps % LOG_EVERY:
        parser.error(f"--steps must be a multiple of {LOG_EVERY}")
    name = args.section or ("cifar_quality" if args.steps == 1000
                            else f"cifar_quality_{args.steps}")
    start = time.perf_counter()

    train = load_dataset("cifar10", "train", data_dir=args.data_dir)
    test = load_dataset("cifar10", "test", data_dir=args.data_dir)
    variance = train.pixel_variance()
    test_images = test.as_float()
    print(f"{len(train)} train, {len(test)} test images, variance {variance:.5f}", flush=True)

    results = []
    for variant in args.variants:
        results.append(run_variant(variant, args.steps, train, test_images, variance))
        finished = len(results) == len(args.variants)
        markdown = section(args, results, variance, time.perf_counter() - start, finished)
        if not args.no_write:
            write_section(name, markdown)
    print(markdown)
    if not all(math.isfinite(r["test_nmse"]) for r in results):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
