"""The quantizer family on CIFAR-10 at equal steps: test NMSE, codebook usage, speed.

    python bench/quantizer_family.py [--steps 500] [--batch-size 32]
                                     [--data-dir ../shared/data] [--no-write]

Sonnet's VQ-VAE example setting (van den Oord et al. 2017, section 4.1, as in
Sonnet's ``vqvae_example``): CIFAR-10 32x32 RGB (the 20k / 1k subset in
shared/data), a `tfvqvae.VQVAE` with 128 hidden channels, 32 residual
channels, 2 residual layers, 2 downsamples (8x8 codes), Adam 3e-4, batch 32,
commitment cost 0.25, EMA decay 0.99; every row trains ``--steps`` steps with
``model.fit`` on the same shuffled order from the same seed. The quantizers,
at roughly equal bits per position (log2 of the codes a position can take):

* VQ-EMA, K = 512, D = 64 (9 bits): `VectorQuantizerEMA`, the package's
  defaults otherwise (k-means init, restarts after 20 unused steps);
* cosine VQ-EMA, the same with ``use_cosine_similarity=True``;
* FSQ, levels (8, 8, 8) (9 bits): `FiniteScalarQuantizer`;
* LFQ, D = 9 (9 bits): `LookupFreeQuantizer`;
* residual VQ, Q = 2 stages of K = 23 (9.05 bits) and Q = 4 of K = 5
  (9.29 bits): `ResidualVectorQuantizer` (EMA stages), D = 64.

Metrics on the 1k test images, from ``model.encode`` / ``model.decode``:
NMSE = mean((x − x̂)²) / training pixel variance; usage = % of the codes a
position can take that appear in the test codes (per stage for residual VQ,
then averaged; FSQ / LFQ over their implied codebook); perplexity = exp of
the entropy of the test codes' histogram (per stage, averaged); train
images/s = steps · batch / wall seconds of ``fit``. Then a quantizer step:
``quantize_with_losses(z, training=True)`` on (4096, D) encoder-sized inputs
under ``tf.function``, median of 20 calls (ms). Writes bench/RESULTS.md
section ``quantizer_family``.
"""

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from _results import command_line  # noqa: E402
from _results import machine_line  # noqa: E402
from _results import write_section  # noqa: E402
import tfvqvae  # noqa: E402
from tfvqvae.data import load_dataset  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZES = dict(hidden_channels=128, residual_channels=32, num_residual_layers=2,
             num_downsamples=2)
EMA = dict(commitment_cost=0.25, decay=0.99)


def quantizers():
    """[(name, bits per position, codes per stage, stages, factory)]."""
    return [
        ("VQ-EMA K=512 D=64", 9.0, 512, 1,
         lambda: tfvqvae.VectorQuantizerEMA(512, 64, **EMA)),
        ("cosine VQ-EMA K=512 D=64", 9.0, 512, 1,
         lambda: tfvqvae.VectorQuantizerEMA(512, 64, use_cosine_similarity=True, **EMA)),
        ("FSQ levels 8,8,8", 9.0, 512, 1,
         lambda: tfvqvae.FiniteScalarQuantizer([8, 8, 8])),
        ("LFQ D=9", 9.0, 512, 1,
         lambda: tfvqvae.LookupFreeQuantizer(9)),
        ("residual VQ Q=2 K=23 D=64", 2 * math.log2(23), 23, 2,
         lambda: tfvqvae.ResidualVectorQuantizer(2, 23, 64, **EMA)),
        ("residual VQ Q=4 K=5 D=64", 4 * math.log2(5), 5, 4,
         lambda: tfvqvae.ResidualVectorQuantizer(4, 5, 64, **EMA)),
    ]


def evaluate(model, test, variance, num_codes, stages, batch=500):
    encode, decode = tf.function(model.encode), tf.function(model.decode)
    sq, counts = 0.0, np.zeros((stages, num_codes), np.int64)
    for start in range(0, len(test), batch):
        x = test[start:start + batch]
        codes = encode(tf.constant(x))
        sq += float(np.square(x.astype(np.float64) - decode(codes).numpy()).sum())
        flat = codes.numpy().reshape(-1, stages)
        for stage in range(stages):
            counts[stage] += np.bincount(flat[:, stage], minlength=num_codes)
    usage, perplexity = [], []
    for row in counts:
        p = row[row > 0] / row.sum()
        usage.append(100.0 * (row > 0).sum() / num_codes)
        perplexity.append(float(np.exp(-(p * np.log(p)).sum())))
    return sq / test.size / variance, float(np.mean(usage)), float(np.mean(perplexity))


def quantizer_step_ms(factory, repeats=20):
    quantizer = factory()
    z = tf.random.stateless_normal((4096, quantizer.embedding_dim), seed=(0, 1))
    step = tf.function(lambda x: quantizer.quantize_with_losses(x, training=True).quantized)
    for _ in range(3):
        step(z)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(z).numpy()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--only", default="",
                        help="comma-separated words; run the rows whose name contains one")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    train = load_dataset("cifar10", "train", data_dir=args.data_dir)
    test = load_dataset("cifar10", "test", data_dir=args.data_dir).as_float()
    variance = train.pixel_variance()
    print(f"cifar10: {len(train)} train, {len(test)} test, pixel variance {variance:.5f}",
          flush=True)
    rows = []
    only = [word for word in args.only.split(",") if word]
    for name, bits, num_codes, stages, factory in quantizers():
        if only and not any(word in name for word in only):
            continue
        keras.utils.set_random_seed(0)
        model = tfvqvae.VQVAE(image_channels=3, quantizer=factory(), data_variance=variance,
                              **SIZES)
        model.compile(optimizer=keras.optimizers.Adam(3e-4))
        data = train.to_tf_dataset(args.batch_size, shuffle=True, seed=0, repeat=True)
        start = time.perf_counter()
        model.fit(data, steps_per_epoch=args.steps, epochs=1, verbose=0)
        seconds = time.perf_counter() - start
        nmse, usage, perplexity = evaluate(model, test, variance, num_codes, stages)
        step = quantizer_step_ms(factory)
        rows.append((name, bits, nmse, usage, perplexity,
                     args.steps * args.batch_size / seconds, step))
        print(f"{name:28s} {bits:5.2f} bits  NMSE {nmse:.4f}  usage {usage:5.1f} %  "
              f"perplexity {perplexity:6.1f}  {rows[-1][5]:6.1f} img/s  step {step:.2f} ms",
              flush=True)

    lines = [
        "## The quantizer family on CIFAR-10 (bench/quantizer_family.py)", "",
        f"`{command_line()}`", "", machine_line(), "",
        f"Sonnet's VQ-VAE setting, {args.steps} steps of {args.batch_size} images each row, "
        "same seed and order; test split of the 20k / 1k CIFAR-10 subset. Usage and "
        "perplexity per stage, averaged over stages for residual VQ. Quantizer step: "
        "`quantize_with_losses(training=True)` on (4096, D) under `tf.function`.", "",
        "| quantizer | bits / position | test NMSE | usage | perplexity | train img/s "
        "| quantizer step (ms) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, bits, nmse, usage, perplexity, speed, step in rows:
        lines.append(f"| {name} | {bits:.2f} | {nmse:.4f} | {usage:.1f} % | {perplexity:.1f} "
                     f"| {speed:.1f} | {step:.2f} |")
    print("\n".join(lines))
    if not args.no_write:
        write_section("quantizer_family", "\n".join(lines))


if __name__ == "__main__":
    main()
