"""Naive vs cached PixelCNN sampling: time to draw 16 code maps, same run.

    python bench/sampling_speed.py [--sizes 8,16,32] [--batch 16]

Both samplers run on the same randomly initialised prior (speed does not
depend on the weights) after one warm-up call each (tracing excluded), and
must return identical code maps for the same seed. Prints a markdown table;
only the ratio is the claim, absolute times depend on the machine.
"""

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfvqvae  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="8,16,32")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--num-embeddings", type=int, default=512)
    parser.add_argument("--hidden-channels", type=int, default=32)
    parser.add_argument("--num-blocks", type=int, default=4)
    parser.add_argument("--kernel-size", type=int, default=3)
    args = parser.parse_args()

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; tensorflow {tf.__version__}")
    print(f"prior: K={args.num_embeddings}, hidden {args.hidden_channels}, "
          f"{args.num_blocks} gated blocks, kernel {args.kernel_size}; batch {args.batch}\n")
    print("| code map | naive (s) | cached (s) | naive / cached | identical maps |")
    print("| --- | ---: | ---: | ---: | --- |")
    for size in (int(s) for s in args.sizes.split(",")):
        prior = tfvqvae.PixelCNNPrior(
            args.num_embeddings, (size, size), hidden_channels=args.hidden_channels,
            num_blocks=args.num_blocks, kernel_size=args.kernel_size,
        )
        times = {}
        maps = {}
        for method in ("naive", "cached"):
            prior.sample(args.batch, seed=1, method=method)  # trace once
            times[method], maps[method] = timed(
                lambda m=method: prior.sample(args.batch, seed=7, method=m).numpy()
            )
        same = np.array_equal(maps["naive"], maps["cached"])
        print(f"| {size}x{size} | {times['naive']:.2f} | {times['cached']:.2f} | "
              f"{times['naive'] / times['cached']:.1f}x | {'yes' if same else 'NO'} |",
              flush=True)


if __name__ == "__main__":
    main()
