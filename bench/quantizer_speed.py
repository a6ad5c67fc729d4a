"""Quantizer training-step speed against Sonnet, vector-quantize-pytorch and the matmul.

    python bench/quantizer_speed.py                  # full run, writes its RESULTS.md section
    python bench/quantizer_speed.py --quick          # N = 4096 only, 3 repeats, no write

For each shape (N vectors of D = 64, K codes) it times one training step:
forward + backward with the EMA update, the gradient of
sum(quantized * g) + commitment_loss with respect to z (g a fixed random
cotangent), for

  * ours: ``tfvqvae.VectorQuantizerEMA.quantize_with_losses(z, training=True)``
    under a GradientTape in a ``tf.function``, without and with
    ``jit_compile=True``;
  * Sonnet 2: ``snt.nets.VectorQuantizerEMA(z, is_training=True)``, the same
    tf.function + tape form, same process;
  * vector-quantize-pytorch: ``VectorQuantize`` with EMA, plain straight-through
    (``rotation_trick=False``), no k-means init, in a worker subprocess
    (``bench/vqtorch_quantizer_speed.py``) with the same number of threads;
  * the physical limit: the distance matmul alone, (N, D) x (D, K) = 2·N·D·K
    FLOPs, with ``tf.linalg.matmul`` in a tf.function and with NumPy's BLAS
    (``np.matmul`` into a preallocated output).

All implementations start from the same codebook; before timing, the script
checks that they pick the same indices (and compares each with a float64
NumPy argmin). Repetitions are interleaved (A, B, C, A, B, C, ...) so load
changes hit every implementation alike; medians are reported. Absolute times
depend on the machine and its load: the ratios, measured in one run, are what
is claimed.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
D = 64
DECAY = 0.99
BETA = 0.25
TARGETS = {"matmul": 1.5, "sonnet": 3.0, "vqtorch": 8.0}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[4096, 65536], help="vectors per batch")
    parser.add_argument("--k", type=int, nargs="+", default=[512, 8192], help="codebook sizes")
    parser.add_argument("--dim", type=int, default=D, help="D (default 64)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per implementation")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (compiles)")
    parser.add_argument("--threads", type=int, default=2, help="TF intra-op, BLAS and torch threads")
    parser.add_argument("--pause", type=float, default=0.2,
                        help="idle seconds before each timed call, so the previous "
                        "implementation's spinning worker threads (OpenBLAS, OpenMP, "
                        "Eigen) have gone to sleep")
    parser.add_argument("--vqtorch-max-elements", type=int, default=1 << 28,
                        help="skip vector-quantize-pytorch where N*K is larger: at "
                        "N=65536, K=8192 its worker grew past 13 GB and was OOM-killed "
                        "on a 24 GB machine")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", nargs="*", default=[], choices=["sonnet", "vqtorch", "jit"],
                        help="leave implementations out")
    parser.add_argument("--quick", action="store_true",
                        help="N = 4096 only, 3 repeats, 1 warm-up; implies --no-write")
    parser.add_argument("--no-write", action="store_true", help="do not touch bench/RESULTS.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.repeats, args.warmup, args.no_write = [4096], 3, 1, True
    return args


ARGS = parse_args()
# Thread counts before NumPy / TensorFlow start their pools.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(ARGS.threads))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# bench/ for its helpers; tfvqvae is the installed package (pip install -e .).
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(ARGS.threads)

import tfvqvae  # noqa: E402
from _results import command_line  # noqa: E402
from _results import machine_line  # noqa: E402
from _results import markdown_table  # noqa: E402
from _results import write_section  # noqa: E402


def pkg_version(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return None


# ------------------------------------------------------------------ helpers
def numpy_nearest(z, codebook, rows=2048):
    """float64 argmin of ‖z − e‖², in row blocks (N x K float64 would not fit)."""
    e = codebook.astype(np.float64)
    e2 = np.sum(e * e, axis=1)
    out = np.empty(len(z), np.int64)
    for start in range(0, len(z), rows):
        block = z[start:start + rows].astype(np.float64)
        d = np.sum(block * block, axis=1, keepdims=True) - 2.0 * block @ e.T + e2
        out[start:start + rows] = np.argmin(d, axis=1)
    return out


def step_fn(quantize):
    """tf.function body: gradient of sum(quantized * g) + commitment w.r.t. z."""
    def step(z, g):
        with tf.GradientTape() as tape:
            tape.watch(z)
            quantized, commitment = quantize(z)
            loss = tf.reduce_sum(quantized * g) + commitment
        return tape.gradient(loss, z)
    return step


class TorchWorker:
    """The vector-quantize-pytorch subprocess (one JSON line per request)."""

    def __init__(self, threads):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "vqtorch_quantizer_speed.py"),
             "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )
        self.info = self._read()

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"vqtorch worker exited (rc={self.proc.poll()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def ask(self, **request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write('{"cmd": "quit"}\n')
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)


# -------------------------------------------------------------- one shape
def run_shape(n, k, args, worker, tmp):
    rng = np.random.default_rng(args.seed + n + k)
    z_np = rng.standard_normal((n, args.dim), dtype=np.float32)
    g_np = rng.standard_normal((n, args.dim), dtype=np.float32)
    codebook = rng.standard_normal((k, args.dim), dtype=np.float32)
    z, g, book = tf.constant(z_np), tf.constant(g_np), tf.constant(codebook)

    def ours_layer():
        layer = tfvqvae.VectorQuantizerEMA(k, args.dim, commitment_cost=BETA, decay=DECAY)
        layer.build((None, args.dim))
        layer.codebook.assign(codebook)
        layer.ema_embedding_sum.assign(codebook)  # N = 1, m = e
        layer.ema_cluster_size.assign(np.ones(k, np.float32))
        return layer

    def ours_quantize(layer):
        def quantize(z):
            out = layer.quantize_with_losses(z, training=True)
            return out.quantized, out.commitment_loss
        return quantize

    # ---- indices on the shared codebook, before any EMA step
    reference = numpy_nearest(z_np, codebook)
    probe = ours_layer()
    picked = {
        "ours": probe.quantize_with_losses(z, training=False).indices.numpy(),
        "ours indices()": probe.indices(z).numpy(),
    }
    impls = {}  # name -> callable running one step synchronously
    layer = ours_layer()
    ours = tf.function(step_fn(ours_quantize(layer)))
    impls["ours"] = lambda: ours(z, g)
    if "jit" not in args.skip:
        layer_jit = ours_layer()
        ours_jit = tf.function(step_fn(ours_quantize(layer_jit)), jit_compile=True)
        impls["ours (XLA)"] = lambda: ours_jit(z, g)
    if "sonnet" not in args.skip:
        import sonnet as snt

        snt_vq = snt.nets.VectorQuantizerEMA(
            embedding_dim=args.dim, num_embeddings=k, commitment_cost=BETA, decay=DECAY
        )
        snt_vq.embeddings.assign(codebook.T)  # Sonnet stores (D, K)
        picked["Sonnet"] = snt_vq(z, is_training=False)["encoding_indices"].numpy()

        def snt_quantize(z):
            out = snt_vq(z, is_training=True)
            return out["quantize"], out["loss"]

        snt_step = tf.function(step_fn(snt_quantize))
        impls["Sonnet"] = lambda: snt_step(z, g)
    if worker is not None and n * k > args.vqtorch_max_elements:
        print(f"  vqtorch skipped: N*K = {n * k} > --vqtorch-max-elements", flush=True)
    elif worker is not None:
        data = os.path.join(tmp, f"shape_{n}_{k}.npz")
        np.savez(data, z=z_np, g=g_np, codebook=codebook)
        reply = worker.ask(cmd="setup", data=data, decay=DECAY, beta=BETA)
        picked["vqtorch"] = np.load(reply["indices"])
        impls["vqtorch"] = lambda: worker.ask(cmd="step")["ms"] / 1e3
    tf_matmul = tf.function(lambda a, b: tf.linalg.matmul(a, b, transpose_b=True))
    impls["matmul TF"] = lambda: tf_matmul(z, book)
    book_t = np.ascontiguousarray(codebook.T)
    product = np.empty((n, k), np.float32)
    impls["matmul NumPy"] = lambda: np.matmul(z_np, book_t, out=product)

    agreement = {
        name: {
            "numpy": float(np.mean(idx.reshape(-1) == reference)),
            "ours": float(np.mean(idx.reshape(-1) == picked["ours"].reshape(-1))),
        }
        for name, idx in picked.items()
    }
    for name, agree in agreement.items():
        print(f"  indices {name:>15}: {100 * agree['ours']:.4f} % equal to ours, "
              f"{100 * agree['numpy']:.4f} % equal to the float64 NumPy argmin", flush=True)
    del probe

    # ---- timing: warm-up, then interleaved repetitions
    for fn in impls.values():
        for _ in range(args.warmup):
            fn()
    times = {name: [] for name in impls}
    for rep in range(args.repeats):
        for name, fn in impls.items():
            time.sleep(args.pause)
            start = time.perf_counter()
            remote = fn()
            elapsed = time.perf_counter() - start
            # The worker times its own step (no pipe latency).
            times[name].append(remote if name == "vqtorch" else elapsed)
    medians = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
    minima = {name: 1e3 * float(np.min(t)) for name, t in times.items()}
    return medians, minima, agreement


# ------------------------------------------------------------------ report
def main(args=ARGS):
    versions = {
        "tfvqvae": pkg_version("tfvqvae") or "checkout",
        "dm-sonnet": None if "sonnet" in args.skip else pkg_version("dm-sonnet"),
        "torch": None,
        "vector-quantize-pytorch": None,
    }
    worker = None
    if "vqtorch" not in args.skip:
        worker = TorchWorker(args.threads)
        versions["torch"] = worker.info["torch"]
        versions["vector-quantize-pytorch"] = worker.info["vector_quantize_pytorch"]
    print(machine_line())
    print("versions:", ", ".join(f"{k} {v}" for k, v in versions.items() if v))
    print(f"threads: TF intra-op {args.threads}, BLAS {os.environ['OPENBLAS_NUM_THREADS']}"
          + (f", torch {worker.info['threads']}" if worker else ""))
    results = []
    load_start = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory(prefix="quantizer_speed.") as tmp:
            for n in args.n:
                for k in args.k:
                    print(f"N={n} D={args.dim} K={k}", flush=True)
                    medians, minima, agreement = run_shape(n, k, args, worker, tmp)
                    results.append((n, k, medians, minima, agreement))
                    print("  median ms: " + ", ".join(
                        f"{name} {ms:.2f}" for name, ms in medians.items()), flush=True)
                    print("  minimum ms: " + ", ".join(
                        f"{name} {ms:.2f}" for name, ms in minima.items()), flush=True)
                    print("  medians: " + summary(medians), flush=True)
                    print("  minima:  " + summary(minima), flush=True)
    finally:
        if worker is not None:
            worker.close()
    load = (load_start, os.getloadavg()[0])
    print(f"load average: {load[0]:.1f} at the start, {load[1]:.1f} at the end")
    section = render(args, versions, results, load)
    if args.no_write:
        print(section)
    else:
        write_section("quantizer_speed", section)
        print("wrote the quantizer_speed section of bench/RESULTS.md")


def limit(medians):
    """(faster matmul's name, its median ms)."""
    name = min(("matmul TF", "matmul NumPy"), key=lambda m: medians[m])
    return ("TF" if name == "matmul TF" else "NumPy"), medians[name]


def summary(medians):
    which, mm = limit(medians)
    parts = [f"ours / matmul({which}) {medians['ours'] / mm:.2f}"]
    if "ours (XLA)" in medians:
        parts.append(f"ours XLA / matmul {medians['ours (XLA)'] / mm:.2f}")
    for name in ("Sonnet", "vqtorch"):
        if name in medians:
            parts.append(f"{name} / ours {medians[name] / medians['ours']:.2f}")
    return ", ".join(parts)


def verdict_rows(results):
    """Per shape: whether each target holds on the medians and on the minima."""
    def check(med):
        _, mm = limit(med)
        out = [med["ours"] / mm <= TARGETS["matmul"]]
        for name in ("Sonnet", "vqtorch"):
            out.append(med[name] / med["ours"] >= TARGETS[name.lower()] if name in med else None)
        return out

    def word(flag):
        return "-" if flag is None else ("yes" if flag else "no")

    return [
        [n, k] + [f"{word(a)} / {word(b)}" for a, b in zip(check(med), check(mins))]
        for n, k, med, mins, _ in results
    ]


def render(args, versions, results, load):
    names = ["ours", "ours (XLA)", "Sonnet", "vqtorch"]
    header = ["N", "K", "matmul TF ms", "matmul NumPy ms"] + [
        f"{m.replace('(XLA)', 'XLA')} ms"
        for m in names
        if m in results[0][2] or m == "vqtorch" and "vqtorch" not in args.skip
    ] + ["ours / matmul", "ours XLA / matmul", "Sonnet / ours", "vqtorch / ours"]
    rows, agree_rows = [], []
    def ratios(med):
        which, mm = limit(med)
        return [
            f"{med['ours'] / mm:.2f}x ({which})",
            f"{med['ours (XLA)'] / mm:.2f}x" if "ours (XLA)" in med else "-",
            f"{med['Sonnet'] / med['ours']:.2f}x" if "Sonnet" in med else "-",
            f"{med['vqtorch'] / med['ours']:.2f}x" if "vqtorch" in med else "not run",
        ]

    for n, k, med, mins, agree in results:
        row = [n, k, round(med["matmul TF"], 2), round(med["matmul NumPy"], 2)]
        row += [
            round(med[m], 2) if m in med else "not run"
            for m in names
            if m in results[0][2] or m == "vqtorch" and "vqtorch" not in args.skip
        ]
        row += [  # "ratio of medians [ratio of minima]"
            a if a == b and not a[0].isdigit() else f"{a} [{b.split(' ')[0]}]"
            for a, b in zip(ratios(med), ratios(mins))
        ]
        rows.append(row)
        agree_rows.append([n, k] + [
            f"{100 * agree[m]['ours']:.3f} % / {100 * agree[m]['numpy']:.3f} %"
            if m in agree else "-"
            for m in ("ours indices()", "Sonnet", "vqtorch")
        ] + [f"{100 * agree['ours']['numpy']:.3f} %"])
    version_text = ", ".join(f"{k} {v}" for k, v in versions.items() if v)
    text = f"""
## Quantizer training step against Sonnet, vector-quantize-pytorch and the matmul (issue 6)

`{command_line()}`

{machine_line()}; {version_text}.
Threads: TF intra-op {args.threads}, OpenBLAS {args.threads}, torch {args.threads}.

One EMA training step, D = {args.dim}, decay {DECAY}, β = {BETA}: forward + backward
(gradient of sum(quantized · g) + commitment loss w.r.t. z) with the codebook
update, in a `tf.function` for ours (plain and `jit_compile=True`) and Sonnet 2's
`snt.nets.VectorQuantizerEMA`, and in PyTorch (`VectorQuantize`, EMA, plain
straight-through, no k-means init) in a worker process. "matmul" is the distance
matmul alone, (N, D) x (D, K), with `tf.linalg.matmul` in a tf.function and with
`np.matmul` into a preallocated output; ratios to the faster of the two (named).
Times are medians of {args.repeats} interleaved repetitions after {args.warmup} warm-up
call(s), {args.pause} s idle before each call (OpenBLAS threads spin for ~0.1 s
after a call and would slow whatever runs next), in milliseconds. Ratio cells
give the ratio of medians, then [the ratio of minima]: the machine was shared
with other jobs (1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the
end, on {os.cpu_count()} cores), which inflates every time and adds stalls to
the short calls; minima are the least disturbed estimate.
Absolute times are printed for reference only; the ratios, taken within one
run, are what is claimed.

{markdown_table(header, rows)}

Indices on the same codebook and inputs before timing (equal to ours / equal
to a float64 NumPy argmin; "ours" is the blocked training path,
"ours indices()" the single-matmul export path):

{markdown_table(["N", "K", "ours indices()", "Sonnet", "vqtorch", "ours vs NumPy"], agree_rows)}

"not run": vector-quantize-pytorch is skipped where N·K > {args.vqtorch_max_elements}
(`--vqtorch-max-elements`): at N = 65536, K = 8192 its worker process grew past
13 GB (the (N, K) distances, their square root, the one-hot and their
gradients) and was OOM-killed on this 24 GB machine.

Targets (ours, plain tf.function): ≤ {TARGETS['matmul']}x the same-run matmul,
≥ {TARGETS['sonnet']}x faster than Sonnet, ≥ {TARGETS['vqtorch']}x faster than
vector-quantize-pytorch. Met in this run (on the ratio of medians / of minima):

{markdown_table(["N", "K", "ours ≤ 1.5x matmul", "≥ 3x faster than Sonnet",
                 "≥ 8x faster than vqtorch"], verdict_rows(results))}
"""
    return text


if __name__ == "__main__":
    main()
