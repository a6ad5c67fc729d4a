"""Streaming input (issue 12): peak RSS against dataset size, input pipeline against train
step, code extraction to one file against shards.

    python bench/streaming.py [--quick] [--no-write] [--skip-extraction]
                              [--scratch bench/scratch/streaming]

Synthetic image folders (smooth random colour patterns + noise, so JPEG sizes
are realistic; 10 class sub-folders, a small ``test`` split beside ``train``)
are written once under ``--scratch`` (git-ignored) by ``tf.io.encode_jpeg`` in
a parallel ``tf.data`` map, and reused by later runs (a folder counts as
complete once its marker file exists): 64x64 JPEG with 10k and 100k training
files, and 320x288 JPEG (2k files) read at ``--image-size 256`` so that
decoding and resizing both cost.

1. Peak RSS. Each training runs in a fresh interpreter (this script with
   ``--child``; one at a time), calling `tfvqvae.training.train` on
   ``folder:PATH`` (``--image-size 64``, one epoch, a small VQ-VAE) with a
   Keras callback that stops after a fixed number of steps, so every run
   trains exactly the same steps whatever the folder's size. "Streamed" is the
   library as it is (`tfvqvae.data.ImageFolder`); "in memory" replaces the
   training split's loader with the old in-memory path,
   `tfvqvae.data.load_image_folder` (every pixel in one NumPy array). Peak
   RSS is the child's ``ru_maxrss`` from ``os.wait4``. Target: streamed
   100k / 10k <= 1.1.
2. Input pipeline against train step, alternating rounds in this process
   (the median over rounds). Pipeline: a fresh iterator of
   ``folder.epochs_dataset(32, ...)`` per round (read, decode, convert,
   batch; no model), a warm-up of untimed batches, then timed batches.
   Train step: the ``cifar10`` preset's network and batch (32), built by
   `tfvqvae.training.build_model` and compiled as ``train`` compiles it,
   ``train_on_batch`` on one batch held in memory (no input pipeline).
   Target at 64x64: pipeline >= 2x train step; 256x256 reported.
3. Extraction: `tfvqvae.data.write_codes` of the 10k folder with a small
   model, one shard against several, alternating rounds, images/s.

Writes the ``streaming`` section of bench/RESULTS.md. ``--quick`` (1k and 2k
files, few steps, about two minutes) is for trying the script; its figures
are not the benchmark's.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# bench/ for its helpers; tfvqvae is the installed package (pip install -e .).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import command_line  # noqa: E402
from _results import machine_line  # noqa: E402
from _results import markdown_table  # noqa: E402
from _results import write_section  # noqa: E402

SCRATCH = Path(__file__).resolve().parent / "scratch" / "streaming"
MARKER = ".complete"  # hidden: the folder lister ignores it
CLASSES = 10

FULL = dict(
    small=10_000, large=100_000, test=100, big_files=2_000,
    rss_steps=100, rss_batch=64, rss_repeats=2,
    warmup={64: 50, 256: 20}, pipe_batches={64: 200, 256: 25},
    train_warmup={64: 3, 256: 2}, train_steps={64: 20, 256: 2}, repeats=5,
    extract_shards=8, extract_repeats=5,
)
QUICK = dict(
    small=1_000, large=2_000, test=50, big_files=128,
    rss_steps=10, rss_batch=32, rss_repeats=1,
    warmup={64: 10, 256: 5}, pipe_batches={64: 20, 256: 5},
    train_warmup={64: 2, 256: 1}, train_steps={64: 2, 256: 1}, repeats=2,
    extract_shards=4, extract_repeats=1,
)
BATCH = 32  # the cifar10 preset's batch
# The network of the peak-RSS runs: small, so that the runs stay short; the
# pipeline's memory does not depend on it.
RSS_NETWORK = dict(hidden_channels=32, residual_channels=16, num_residual_layers=1,
                   num_embeddings=64, embedding_dim=16)
EXTRACT_NETWORK = RSS_NETWORK


# ------------------------------------------------------------------ folders
def folder_spec(name, files, test, height, width):
    return dict(name=name, files=files, test=test, height=height, width=width)


def make_folder(root, spec):
    """Writes ``root/{train,test}/class_K/NNNNNNN.jpg`` unless the marker says it is done."""
    import tensorflow as tf

    if (root / MARKER).is_file():
        return json.loads((root / MARKER).read_text())
    if root.exists():
        shutil.rmtree(root)
    height, width = spec["height"], spec["width"]
    start = time.perf_counter()
    total_bytes = 0
    for split, count, base in (("train", spec["files"], 0), ("test", spec["test"], 10**7)):
        for k in range(CLASSES):
            (root / split / f"class_{k}").mkdir(parents=True)
        prefix = str(root / split) + "/class_"

        def write(i, prefix=prefix, base=base):
            seed = tf.stack([tf.constant(12, tf.int64), i + base])
            p = tf.random.stateless_uniform([16], seed)
            y = tf.linspace(0.0, 1.0, height)[:, None, None]
            x = tf.linspace(0.0, 1.0, width)[None, :, None]
            freq = 0.5 + 4.0 * p[0:3]
            angle = 6.2832 * p[3:6]
            phase = 6.2832 * p[6:9]
            waves = 0.5 + 0.3 * tf.sin(
                6.2832 * freq * (tf.cos(angle) * x + tf.sin(angle) * y) + phase)
            cy, cx, radius = p[9], p[10], 0.1 + 0.3 * p[11]
            blob = tf.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (radius ** 2))
            colour = p[12:15] - 0.5
            image = waves + 0.4 * blob * colour
            image += tf.random.stateless_normal([height, width, 3], seed + 1, stddev=0.03)
            pixels = tf.cast(tf.clip_by_value(image, 0.0, 1.0) * 255.0 + 0.5, tf.uint8)
            data = tf.io.encode_jpeg(pixels, quality=90)
            path = tf.strings.join([prefix, tf.strings.as_string(i % CLASSES), "/",
                                    tf.strings.as_string(i, width=7, fill="0"), ".jpg"])
            with tf.control_dependencies([tf.io.write_file(path, data)]):
                return tf.cast(tf.strings.length(data), tf.int64)

        sizes = tf.data.Dataset.range(count).map(
            write, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
        total_bytes += int(sizes.reduce(tf.constant(0, tf.int64), lambda a, b: a + b))
    info = dict(spec, mean_bytes=total_bytes / (spec["files"] + spec["test"]),
                seconds=round(time.perf_counter() - start, 1))
    (root / MARKER).write_text(json.dumps(info))
    print(f"wrote {root} ({spec['files']} + {spec['test']} files, "
          f"{info['mean_bytes']:.0f} B each, {info['seconds']} s)", flush=True)
    return info


# ------------------------------------------------------------- peak RSS
def proc_status(field):
    """``VmRSS`` / ``VmHWM`` of this process in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child_train(spec):
    """Runs in the child interpreter: train ``spec["steps"]`` steps, print a JSON line."""
    import importlib

    import keras

    from tfvqvae.data import load_image_folder
    from tfvqvae.training import TrainConfig
    from tfvqvae.training import train

    start = time.perf_counter()
    after_imports = proc_status("VmRSS")
    train_module = importlib.import_module("tfvqvae.training.train")
    root = Path(spec["root"])
    if spec["loader"] == "memory":  # the old in-memory path for the training split
        streamed = train_module.load_run_images

        def load_run_images(config, split, data_dir=None):
            if split == "train":
                return load_image_folder(root / "train", image_size=config["image_size"])
            return streamed(config, split, data_dir)

        train_module.load_run_images = load_run_images

    marks = {}

    class StopAfter(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                marks["first_step"] = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            marks["steps"] = batch + 1
            if batch == 1:
                marks["second_step"] = time.perf_counter()
            if batch + 1 >= spec["steps"]:
                marks["last_step"] = time.perf_counter()
                self.model.stop_training = True

    config = TrainConfig(
        out=spec["out"], dataset=f"folder:{root}", image_size=spec["image_size"], epochs=1,
        batch_size=spec["batch"], **RSS_NETWORK)
    train(config, overwrite=True, callbacks=[StopAfter()], verbose=0, backup_every=None)
    steps = marks["steps"]
    timed = steps - 2
    print("RESULT " + json.dumps(dict(
        steps=steps,
        after_imports_mb=after_imports,
        hwm_mb=proc_status("VmHWM"),
        to_first_step_s=marks["first_step"] - start,
        images_per_s=timed * spec["batch"] / (marks["last_step"] - marks["second_step"])
        if timed > 0 else float("nan"),
    )), flush=True)


def run_child(spec):
    """``(result dict, peak RSS MB)`` of one training in a fresh interpreter."""
    command = [sys.executable, __file__, "--child", json.dumps(spec)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, command, output)
    result = json.loads(output.split("RESULT ", 1)[1].splitlines()[0])
    return result, usage.ru_maxrss / 1024  # kB on Linux


# ------------------------------------------------- pipeline vs train step
def pipeline_rate(folder, warmup, batches, seed):
    """images/s of a fresh ``epochs_dataset`` iterator, after ``warmup`` untimed batches."""
    steps_per_epoch = len(folder) // BATCH
    epochs = (warmup + batches) // steps_per_epoch + 2
    dataset = folder.epochs_dataset(BATCH, seed=seed, first_epoch=0, epochs=epochs)
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(iterator)
    _ = float(batch[0, 0, 0, 0])
    rate = batches * BATCH / (time.perf_counter() - start)
    del iterator
    return rate, batch


def cifar10_model(size, images):
    import keras

    from tfvqvae.training import PRESETS
    from tfvqvae.training import TrainConfig
    from tfvqvae.training import build_model

    preset = {k: v for k, v in PRESETS["cifar10"].items()
              if k not in ("dataset", "max_train_examples", "epochs")}
    config = TrainConfig(**preset, image_size=size)
    assert config.batch_size == BATCH, config.batch_size
    keras.utils.set_random_seed(config.seed)
    model = build_model(config, data_variance=float(images.numpy().var()), image_channels=3)
    # as tfvqvae.training.resumable.restore_or_build compiles it
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  jit_compile=config.jit_compile)
    return model, config


def pipeline_vs_train(folder, size, q, seed_base):
    """Rounds alternating pipeline and train step; the per-round figures."""
    _, images = pipeline_rate(folder, 2, 1, seed=999)
    model, config = cifar10_model(size, images)
    for _ in range(q["train_warmup"][size]):  # tracing, k-means init
        model.train_on_batch(images)
    pipe, step = [], []
    for r in range(q["repeats"]):
        order = ("pipe", "train") if r % 2 == 0 else ("train", "pipe")
        for what in order:
            if what == "pipe":
                rate, _ = pipeline_rate(folder, q["warmup"][size], q["pipe_batches"][size],
                                        seed=seed_base + r)
                pipe.append(rate)
            else:
                n = q["train_steps"][size]
                start = time.perf_counter()
                for _ in range(n):
                    model.train_on_batch(images)
                step.append(n * BATCH / (time.perf_counter() - start))
        print(f"{size}x{size} round {r}: pipeline {pipe[-1]:.0f} images/s, "
              f"train step {step[-1]:.1f} images/s", flush=True)
    del model
    return pipe, step


# ------------------------------------------------------------ extraction
def extraction(folder, q, work):
    import keras

    from tfvqvae.data import write_codes
    from tfvqvae.training import TrainConfig
    from tfvqvae.training import build_model

    keras.utils.set_random_seed(0)
    config = TrainConfig(image_size=64, **EXTRACT_NETWORK)
    model = build_model(config, image_channels=3)
    batch = next(iter(folder.to_tf_dataset(256)))
    model(batch[:2])
    work.mkdir(parents=True, exist_ok=True)
    write_codes(work / "warmup.tfrecord", model, folder.take(512), num_shards=1)  # tracing
    counts = (1, q["extract_shards"])
    rates = {n: [] for n in (*counts, "input")}
    for r in range(q["extract_repeats"]):
        start = time.perf_counter()  # the images alone, as write_codes reads them
        for images, _ in folder.to_tf_dataset(256, with_labels=True):
            pass
        rates["input"].append(len(folder) / (time.perf_counter() - start))
        for n in (counts if r % 2 == 0 else counts[::-1]):
            for stale in work.glob("codes*"):
                stale.unlink()
            start = time.perf_counter()
            meta = write_codes(work / "codes.tfrecord", model, folder, num_shards=n)
            rates[n].append(len(folder) / (time.perf_counter() - start))
            written = sorted(work.glob("codes*.tfrecord"))
            assert meta["num_shards"] == n and len(written) == n, (meta, written)
            print(f"extraction round {r}, {n} shard(s): {rates[n][-1]:.0f} images/s", flush=True)
    size = sum(p.stat().st_size for p in work.glob("codes*.tfrecord"))
    shutil.rmtree(work)
    return rates, size


def extraction_available():
    import inspect

    from tfvqvae.data import write_codes

    return "num_shards" in inspect.signature(write_codes).parameters


# ------------------------------------------------------------------ main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="1k / 2k files, few steps (about 2 minutes): to try the script")
    parser.add_argument("--scratch", type=Path, default=SCRATCH,
                        help="where the synthetic folders live (reused between runs)")
    parser.add_argument("--skip-extraction", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_train(json.loads(args.child))
        return 0
    wall = time.perf_counter()
    q = QUICK if args.quick else FULL

    import tensorflow as tf  # noqa: F401  (after argument parsing: --help stays fast)

    from tfvqvae.data import load_dataset

    specs = {
        "small": folder_spec(f"jpeg64-{q['small']}", q["small"], q["test"], 64, 64),
        "large": folder_spec(f"jpeg64-{q['large']}", q["large"], q["test"], 64, 64),
        "big": folder_spec(f"jpeg320x288-{q['big_files']}", q["big_files"], q["test"], 288, 320),
    }
    infos = {key: make_folder(args.scratch / spec["name"], spec) for key, spec in specs.items()}
    roots = {key: args.scratch / spec["name"] for key, spec in specs.items()}

    # 1. peak RSS, one child at a time
    # (streamed: rss_repeats runs each, alternating sizes, the largest peak kept;
    # in memory: one run each)
    rss = {}
    for loader in ("stream", "memory"):
        for repeat in range(q["rss_repeats"] if loader == "stream" else 1):
            for key in ("small", "large"):
                spec = dict(root=str(roots[key]), loader=loader, image_size=64,
                            steps=q["rss_steps"], batch=q["rss_batch"],
                            out=str(args.scratch / "runs" / f"{loader}-{key}"))
                result, peak = run_child(spec)
                assert result["steps"] == q["rss_steps"], result
                runs = rss.setdefault((loader, key), [])
                runs.append(dict(result, peak_mb=peak))
                print(f"peak RSS {loader} {specs[key]['files']} files: {peak:.0f} MB "
                      f"({result})", flush=True)
    for key, runs in list(rss.items()):
        rss[key] = dict(max(runs, key=lambda r: r["peak_mb"]),
                        all_peaks=[round(r["peak_mb"]) for r in runs])
    shutil.rmtree(args.scratch / "runs", ignore_errors=True)

    # 2. input pipeline vs train step
    speed = {}
    for size, key, crop in ((64, "small", "none"), (256, "big", "center")):
        folder = load_dataset(f"folder:{roots[key]}", "train", image_size=size, channels=3,
                              crop=crop)
        speed[size] = pipeline_vs_train(folder, size, q, seed_base=10 * size)

    # 3. extraction
    extract = None
    if not args.skip_extraction and extraction_available():
        folder = load_dataset(f"folder:{roots['small']}", "train", image_size=64, channels=3)
        extract = extraction(folder, q, args.scratch / "codes")

    markdown = report(args, q, specs, infos, rss, speed, extract, time.perf_counter() - wall)
    print(markdown)
    if not args.no_write:
        write_section("streaming", markdown)
    return 0


def report(args, q, specs, infos, rss, speed, extract, wall):
    small, large = specs["small"]["files"], specs["large"]["files"]

    def k(n):
        return f"{n // 1000}k" if n % 1000 == 0 else str(n)

    lines = [
        "## Streaming input (issue 12)",
        "",
        f"`{command_line()}` ({wall / 60:.0f} min wall). {machine_line()}. The CPUs were "
        "shared with other jobs: medians over alternating rounds, ratios from one run."
        + (" **Quick mode: small folders, few steps; not the benchmark's figures.**"
           if args.quick else ""),
        "",
        f"Synthetic folders (`bench/streaming.py` writes them once under `bench/scratch/`): "
        f"10 class folders of JPEG (quality 90) smooth random colour patterns with noise, "
        f"64x64 ({infos['small']['mean_bytes'] / 1000:.1f} kB a file) and 320x288 "
        f"({infos['big']['mean_bytes'] / 1000:.1f} kB), plus a {q['test']}-image test split.",
        "",
        "### Peak RSS against dataset size",
        "",
        f"`tfvqvae.training.train` on `folder:PATH --image-size 64`, {q['rss_steps']} steps of "
        f"{q['rss_batch']} images (a Keras callback stops the one epoch there; validation on "
        f"the test split, checkpoint and model saved as usual), VQ-VAE hidden "
        f"{RSS_NETWORK['hidden_channels']}, residual {RSS_NETWORK['residual_channels']} x "
        f"{RSS_NETWORK['num_residual_layers']}, K = {RSS_NETWORK['num_embeddings']}, D = "
        f"{RSS_NETWORK['embedding_dim']}; each in a fresh interpreter, peak RSS = its "
        f"`ru_maxrss` (streamed: the largest of {q['rss_repeats']} runs, listed below the "
        "table; in memory: one run). In memory: the training split loaded by the old "
        "`tfvqvae.data.load_image_folder` (pixels in a NumPy array) instead of streamed. "
        "\"After imports\": RSS once TensorFlow and tfvqvae are imported; \"to first step\": "
        "from then until the first step starts (listing or loading the folder, building "
        "the model); \"train images/s\": steps 3 to the last, input pipeline included.",
        "",
    ]
    rows = []
    for loader, label in (("stream", "streamed (`ImageFolder`)"),
                          ("memory", "in memory (`load_image_folder`)")):
        a, b = rss[loader, "small"], rss[loader, "large"]
        rows.append([label, round(a["after_imports_mb"]), round(a["peak_mb"]),
                     round(b["peak_mb"]), f"{b['peak_mb'] / a['peak_mb']:.3f}",
                     f"{a['to_first_step_s']:.1f} / {b['to_first_step_s']:.1f}",
                     f"{a['images_per_s']:.0f} / {b['images_per_s']:.0f}"])
    lines.append(markdown_table(
        ["path", "after imports (MB)", f"peak RSS {k(small)} (MB)", f"peak RSS {k(large)} (MB)",
         f"{k(large)} / {k(small)}", f"to first step {k(small)} / {k(large)} (s)",
         f"train images/s {k(small)} / {k(large)}"], rows))
    ratio = rss["stream", "large"]["peak_mb"] / rss["stream", "small"]["peak_mb"]
    lines += ["", "Streamed runs' peaks (MB): " + "; ".join(
        f"{k(specs[key]['files'])}: {', '.join(map(str, rss['stream', key]['all_peaks']))}"
        for key in ("small", "large")) + "."]
    lines += ["", f"Target streamed {k(large)} / {k(small)} <= 1.1: "
              f"{'met' if ratio <= 1.1 else 'NOT met'} ({ratio:.3f}).", ""]

    lines += [
        "### Input pipeline against train step",
        "",
        "Pipeline: `load_dataset(\"folder:PATH\", \"train\", image_size=S, channels=3)` "
        f"then `epochs_dataset({BATCH}, ...)`, a fresh iterator per round (read, decode, "
        "convert, batch; float32 out; no model), "
        f"{q['warmup'][64]} (64) / {q['warmup'][256]} (256) untimed warm-up batches, then "
        f"{q['pipe_batches'][64]} / {q['pipe_batches'][256]} timed. 64x64 from the "
        f"{k(small)}-file 64x64 folder (`--image-size 64`); 256x256 from the "
        f"{k(specs['big']['files'])}-file 320x288 folder (`--image-size 256 --crop center`: "
        "decode, crop, antialiased resize). Train step: the `cifar10` preset's network "
        "(hidden 128, residual 32 x 2, K = 512, D = 64, EMA, k-means init, restarts; "
        f"batch {BATCH}, Adam 3e-4, no XLA) at the same size, `train_on_batch` on one batch "
        f"held in memory, {q['train_steps'][64]} (64) / {q['train_steps'][256]} (256) steps "
        "a round after untimed warm-up steps. Rounds alternate pipeline and train step; "
        f"{q['repeats']} rounds, medians; the ratio is the median of per-round ratios.",
        "",
    ]
    rows = []
    for size in (64, 256):
        pipe, step = speed[size]
        ratios = [a / b for a, b in zip(pipe, step)]
        rows.append([f"{size}x{size}", round(statistics.median(pipe)),
                     round(statistics.median(step), 1), f"{statistics.median(ratios):.0f}x",
                     f"{min(ratios):.0f}x–{max(ratios):.0f}x",
                     ">= 2x" if size == 64 else "(reported)"])
    lines.append(markdown_table(
        ["size", "pipeline (images/s)", "train step (images/s)", "pipeline / train step",
         "range over rounds", "target"], rows))
    pipe, step = speed[64]
    ratio64 = statistics.median([a / b for a, b in zip(pipe, step)])
    lines += ["", f"Target at 64x64 (pipeline >= 2x the train step on 2 cores): "
              f"{'met' if ratio64 >= 2 else 'NOT met'} ({ratio64:.0f}x).", ""]

    lines += ["### Code extraction: one file against shards", ""]
    if extract is None:
        lines.append("Not measured (`--skip-extraction`, or `write_codes` without "
                     "`num_shards`).")
    else:
        rates, size = extract
        one, many = (1, q["extract_shards"])
        lines += [
            f"`tfvqvae.data.write_codes` of the {k(small)}-file 64x64 folder (streamed, "
            f"batch 256) in this one process, with an untrained VQ-VAE of the peak-RSS "
            f"runs' sizes (16x16 codes, {size / 1e6:.1f} MB of codes), `num_shards=1` "
            f"against `num_shards={many}`, {q['extract_repeats']} alternating rounds, "
            "medians; the time includes reading and decoding the images.",
            "",
            markdown_table(
                ["what", "images/s", "range over rounds"],
                [[label, round(statistics.median(rates[n])),
                  f"{min(rates[n]):.0f}–{max(rates[n]):.0f}"]
                 for n, label in ((one, "`num_shards=1` (one file)"),
                                  (many, f"`num_shards={many}`"),
                                  ("input", "reading + decoding alone "
                                            "(`to_tf_dataset(256)`, no model, no writing)"))]),
            "",
            f"{many} shards / 1: "
            f"{statistics.median(rates[many]) / statistics.median(rates[one]):.2f}x. "
            "Encoding and reading dominate here; the shard writer's serialising and "
            "writing (a few MB) is small at this size, so the shard count does not change "
            "the rate.",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
