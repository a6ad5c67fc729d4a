"""VQ-VAE train-step throughput: our EMA quantiser vs Sonnet 2's, same model, same run.

    python bench/train_step_speed.py [--batch-size 64] [--steps 10] [--repeats 7]
                                     [--warmup 3] [--no-jit]

One `tfvqvae.VQVAE` with the paper's CIFAR-10 sizes (hidden 128, residual
hidden 32, 2 residual layers, K = 512, D = 64, EMA decay 0.99, Adam 3e-4) on
32x32x3 inputs, built twice from the same seed: with `tfvqvae.VectorQuantizerEMA`
and with ``snt.nets.VectorQuantizerEMA`` through `bench/sonnet_quantizer.py`.
Each is compiled without and with ``jit_compile=True`` (XLA), so four train
functions. Inputs are one fixed batch of uniform random images (the step's
cost does not depend on the data).

Warm-up: ``--warmup`` calls per model (tracing, XLA compilation) are not
timed. Then ``--repeats`` rounds; in each round every model runs ``--steps``
train steps back to back (``train_on_batch``, which waits for the result),
ours and Sonnet's model of one configuration run back to back (order
alternating between rounds, pairs rotating), so load from other processes
falls on both alike. Reported: images/s per model (median
over rounds) and the ratio ours / Sonnet per round (median), with and
without XLA. Writes the ``train_step_speed`` section of bench/RESULTS.md.
"""

import argparse
import os
import statistics
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
from sonnet_quantizer import SonnetVectorQuantizerEMA  # noqa: E402

SIZES = dict(hidden_channels=128, residual_channels=32, num_residual_layers=2)
QUANTIZER = dict(num_embeddings=512, embedding_dim=64, commitment_cost=0.25, decay=0.99)


def build(kind, jit):
    keras.utils.set_random_seed(0)
    quantizer_class = SonnetVectorQuantizerEMA if kind == "sonnet" else tfvqvae.VectorQuantizerEMA
    model = tfvqvae.VQVAE(image_channels=3, quantizer=quantizer_class(**QUANTIZER), **SIZES)
    model.compile(optimizer=keras.optimizers.Adam(3e-4), jit_compile=jit)
    return model


def quantizer_step(kind, jit, batch_size, code_size):
    """tf.function of one training quantisation (EMA update included) on encoder-sized input."""
    quantizer_class = SonnetVectorQuantizerEMA if kind == "sonnet" else tfvqvae.VectorQuantizerEMA
    layer = quantizer_class(**QUANTIZER)
    layer.build((None, QUANTIZER["embedding_dim"]))
    z = tf.random.stateless_normal(
        (batch_size, code_size, code_size, QUANTIZER["embedding_dim"]), (0, 0), stddev=0.2)

    @tf.function(jit_compile=jit)
    def step():
        out = layer.quantize_with_losses(z, training=True)
        return out.commitment_loss + out.perplexity

    return lambda: float(step())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model per round")
    parser.add_argument("--repeats", type=int, default=7, help="rounds")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model")
    parser.add_argument("--no-jit", action="store_true", help="skip the XLA variants")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    rng = np.random.default_rng(0)
    images = rng.random((args.batch_size, args.image_size, args.image_size, 3), np.float32)
    jits = (False,) if args.no_jit else (False, True)
    models = {(kind, jit): build(kind, jit) for jit in jits for kind in ("ours", "sonnet")}
    steps = {key: (lambda m=model: m.train_on_batch(images)) for key, model in models.items()}
    code_size = args.image_size // 4
    quantizer_steps = {
        ("quantiser", kind, jit): quantizer_step(kind, jit, args.batch_size, code_size)
        for jit in jits for kind in ("ours", "sonnet")
    }
    for key, model in models.items():
        assert model.jit_compile == key[1]
    for fn in [*steps.values(), *quantizer_steps.values()]:
        for _ in range(args.warmup):
            fn()

    rates = {key: [] for key in [*steps, *quantizer_steps]}
    calls = {**steps, **quantizer_steps}
    # Pairs (ours, Sonnet) of one configuration run back to back, in alternating
    # order (ABBA), so both see the same load; the pairs' order rotates.
    groups = [[k for k in calls if k[:-2] == key[:-2] and k[-1] == key[-1]]
              for key in calls if key[-2] == "ours"]
    for round_index in range(args.repeats):
        shift = round_index % len(groups)
        for group in groups[shift:] + groups[:shift]:
            for key in (group if round_index % 2 == 0 else group[::-1]):
                fn = calls[key]
                n = args.steps * (10 if key[0] == "quantiser" else 1)
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                rates[key].append(n * args.batch_size / (time.perf_counter() - t0))
                print(f"round {round_index} {key}: {rates[key][-1]:.1f} images/s", flush=True)

    for key, model in models.items():  # Sonnet's EMA really ran in every step
        if key[0] == "sonnet":
            assert model.quantizer.sonnet_steps == args.warmup + args.repeats * args.steps

    rows = []
    for prefix, what in (((), "train step"), (("quantiser",), "quantiser alone")):
        for jit in jits:
            ours, sonnet = rates[(*prefix, "ours", jit)], rates[(*prefix, "sonnet", jit)]
            ratios = [a / b for a, b in zip(ours, sonnet)]
            rows.append([
                what,
                "XLA" if jit else "no XLA",
                int(round(statistics.median(ours))),
                int(round(statistics.median(sonnet))),
                f"{statistics.median(ratios):.3f}x",
                f"{min(ratios):.3f}–{max(ratios):.3f}",
            ])
    xla_ratio = {}
    if len(jits) == 2:
        for kind in ("ours", "sonnet"):
            r = [a / b for a, b in zip(rates[(kind, True)], rates[(kind, False)])]
            xla_ratio[kind] = statistics.median(r)
    wall = time.perf_counter() - start
    table = markdown_table(
        ["what", "compile", "ours (images/s)", "Sonnet quantiser (images/s)",
         "ours / Sonnet (median of rounds)", "range over rounds"],
        rows,
    )
    lines = [
        "## Train-step speed: our EMA quantiser vs Sonnet's (issue 6)",
        "",
        f"`{command_line()}` ({wall:.0f} s wall). {machine_line()}, dm-sonnet "
        f"{version('dm-sonnet')}.",
        "",
        "`tfvqvae.VQVAE` with the paper's sizes (hidden 128, residual hidden 32, 2 residual "
        "layers, K = 512, D = 64, EMA decay 0.99, Adam 3e-4), "
        f"{args.image_size}x{args.image_size}x3 random images, batch {args.batch_size}; "
        "the same model and seed with `tfvqvae.VectorQuantizerEMA` (ours) and with "
        "`snt.nets.VectorQuantizerEMA` via `bench/sonnet_quantizer.py`. "
        f"{args.warmup} warm-up steps per model untimed, then {args.repeats} rounds of "
        f"{args.steps} steps per model; in each round the ours/Sonnet pair of one "
        "configuration runs back to back (order alternating between rounds) and the "
        "pairs' order rotates; "
        "images/s is the median over rounds, the ratio the median of per-round ratios. "
        "\"Quantiser alone\": one training quantisation (distances, argmin, EMA update, "
        f"losses) of a ({args.batch_size}, {args.image_size // 4}, {args.image_size // 4}, 64) "
        "random encoder output inside `tf.function`, 10x as many calls per round; "
        "XLA means `jit_compile=True` (`compile(jit_compile=True)` for the model).",
        "",
        table,
        "",
    ]
    if xla_ratio:
        lines.append(
            "Sonnet's module runs under XLA unchanged (its EMA counters and one-hot "
            "matmuls compile). XLA / no XLA, same model: ours "
            f"{xla_ratio['ours']:.2f}x, Sonnet's {xla_ratio['sonnet']:.2f}x."
        )
    markdown = "\n".join(lines)
    print(markdown)
    if not args.no_write:
        write_section("train_step_speed", markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
