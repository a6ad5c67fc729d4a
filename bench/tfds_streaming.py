"""Streaming a TFDS dataset at 256x256 (issue 12): input pipeline images/s, a training
run's peak RSS and images/s, and peak RSS against the dataset's size.

    python bench/tfds_streaming.py [--quick] [--no-write] [--data-dir bench/scratch/tfds]

TFDS cannot download anything here, so this script makes a real TFDS dataset
offline: the builder `Synthetic256` below (a ``tfds.core.GeneratorBasedBuilder``
named ``tfvqvae_synthetic256``) writes deterministic synthetic images (smooth
random colour patterns + noise, so JPEG sizes are realistic) of mixed sizes,
256-320 px a side, JPEG-encoded (quality 90) in a
``tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg")`` with a
``ClassLabel(num_classes=10)``. Two configs: ``n3000`` (3000 training examples)
and ``n6000`` (6000: twice as many), each with a 200-example ``test`` split and
the training split in 8 files. ``download_and_prepare`` writes them into
``--data-dir`` (git-ignored) once; later runs reuse them.

The training runs are the CLI, ``python -m tfvqvae_cli train --dataset
tfvqvae_synthetic256/n3000 --data-dir DIR ...``, in a fresh interpreter that
never imports this script: TFDS finds no registered builder of that name and
reads the prepared files under ``--data-dir`` by name (``tfds.builder`` falls
back to ``builder_from_files``). The script checks that first (`check_name`).

1. Input pipeline alone, in this process: ``load_dataset(NAME, "train",
   data_dir=DIR, image_size=256, crop="center").epochs_dataset(16, seed=r,
   first_epoch=0, epochs=1)`` (read, decode, crop, antialiased resize, batch;
   float32 out; no model), a fresh iterator per round, warm-up batches
   untimed, the rest of the epoch timed; median over rounds.
2. Training (the CLI, one child at a time; peak RSS = the child's
   ``ru_maxrss`` from ``os.wait4``): images/s from the times at which Keras'
   progress bar reports each step (read from the child's stdout as it comes),
   steps 3 to the last (so tracing and start-up are excluded).
   a. A VQ-VAE-2 of moderate size, a fixed number of steps
      (``--max-train-examples``), on ``n3000`` and on ``n6000``.
   b. Peak RSS against dataset size: a small VQ-VAE-2, one whole epoch over
      ``n3000`` and over ``n6000`` (no ``--max-train-examples``).

Writes the ``tfds_streaming`` section of bench/RESULTS.md. ``--quick`` (400 /
800 examples, few steps, about two minutes once prepared) is for trying the
script; its figures are not the benchmark's.
"""

import argparse
import json
import os
import re
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

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(__file__).resolve().parent / "scratch" / "tfds"
NAME = "tfvqvae_synthetic256"
CLASSES = 10
TEST_EXAMPLES = 200
TRAIN_SHARDS = 8
SIZE = 256
BATCH = 16

FULL = dict(small=3000, large=6000, pipe_warmup=20, pipe_rounds=3,
            model_steps=40, model_repeats=2, plain_repeats=1, epoch_repeats=1)
QUICK = dict(small=400, large=800, pipe_warmup=5, pipe_rounds=2,
             model_steps=6, model_repeats=1, plain_repeats=1, epoch_repeats=1)
# a. the moderate network (the brief's flags); b. a small one, so that a whole
# epoch over 6000 images at 256x256 fits in a few minutes.
MODEL_FLAGS = ["--model", "vqvae2", "--hidden-channels", "64", "--residual-channels", "32",
               "--num-embeddings", "512", "--embedding-dim", "64"]
SMALL_FLAGS = ["--model", "vqvae2", "--hidden-channels", "16", "--residual-channels", "8",
               "--num-residual-layers", "1", "--num-embeddings", "64", "--embedding-dim", "16"]


# ------------------------------------------------------------------ dataset
def synthetic_image(index, split_id):
    """A deterministic ``(H, W, 3)`` uint8 image, H and W in [256, 320]."""
    import numpy as np

    rng = np.random.default_rng([20250, split_id, index])
    height, width = (int(v) for v in rng.integers(256, 321, size=2))
    p = rng.random(16)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    freq = 0.5 + 4.0 * p[0:3]
    angle = 2 * np.pi * p[3:6]
    phase = 2 * np.pi * p[6:9]
    waves = 0.5 + 0.3 * np.sin(
        2 * np.pi * freq * (np.cos(angle) * x + np.sin(angle) * y) + phase)
    cy, cx, radius = p[9], p[10], 0.1 + 0.3 * p[11]
    blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / radius ** 2)
    image = waves + 0.4 * blob * (p[12:15] - 0.5)
    image += 0.03 * rng.standard_normal((height, width, 3), dtype=np.float32)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


_BUILDER = []


def define_builder():
    """Defines (and so registers with TFDS) the builder class, once; returns it."""
    if _BUILDER:
        return _BUILDER[0]
    import tensorflow as tf
    import tensorflow_datasets as tfds

    class Synthetic256(tfds.core.GeneratorBasedBuilder):
        """Synthetic JPEG images of 256-320 px a side, 10 classes (offline)."""

        name = NAME
        VERSION = tfds.core.Version("1.0.0")
        BUILDER_CONFIGS = [
            tfds.core.BuilderConfig(name=f"n{n}", description=f"{n} training examples")
            for n in sorted({FULL["small"], FULL["large"], QUICK["small"], QUICK["large"]})
        ]

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=(None, None, 3),
                                                 encoding_format="jpeg"),
                    "label": tfds.features.ClassLabel(num_classes=CLASSES),
                }),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            del dl_manager  # nothing to download
            train = int(self.builder_config.name[1:])
            return {"train": self._generate_examples(train, 0),
                    "test": self._generate_examples(TEST_EXAMPLES, 1)}

        def _generate_examples(self, count, split_id):
            for i in range(count):
                pixels = synthetic_image(i, split_id)
                data = tf.io.encode_jpeg(pixels, quality=90).numpy()
                yield i, {"image": data, "label": i % CLASSES}

    _BUILDER.append(Synthetic256)
    return Synthetic256


def prepare(data_dir, train_examples):
    """Prepares config ``n{train_examples}`` under ``data_dir`` unless it is there already.

    Returns ``(name, info dict)``.
    """
    import tensorflow_datasets as tfds

    builder_cls = define_builder()
    name = f"{NAME}/n{train_examples}"
    builder = builder_cls(config=f"n{train_examples}", data_dir=str(data_dir))
    start = time.perf_counter()
    prepared = builder.is_prepared()
    if not prepared:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            try_download_gcs=False, num_shards=TRAIN_SHARDS))
    folder = Path(builder.data_dir)
    train_files = sorted(folder.glob(f"{NAME}-train.*"))
    info = dict(
        name=name, folder=str(folder), train=builder.info.splits["train"].num_examples,
        test=builder.info.splits["test"].num_examples, train_files=len(train_files),
        mean_bytes=sum(f.stat().st_size for f in train_files)
        / builder.info.splits["train"].num_examples,
        seconds=None if prepared else round(time.perf_counter() - start, 1))
    print(("prepared " if not prepared else "reusing ") + json.dumps(info), flush=True)
    return name, info


def check_name(name, data_dir):
    """Opens ``name`` in a fresh interpreter that never defines the builder class.

    Returns what that interpreter reports: the builder's class (TFDS's
    ``ReadOnlyBuilder`` when it read the prepared files by name) and the split.
    """
    code = (
        "import json, sys\n"
        "import tensorflow_datasets as tfds\n"
        "from tfvqvae.data import load_dataset\n"
        "name, data_dir = sys.argv[1:3]\n"
        "registered = name.split('/')[0] in tfds.list_builders()\n"
        "ds = load_dataset(name, 'train', data_dir=data_dir, image_size=256, crop='center')\n"
        "batch = next(iter(ds.epochs_dataset(4, seed=0, first_epoch=0, epochs=1)))\n"
        "print('RESULT ' + json.dumps(dict(registered=registered, "
        "builder=type(ds.builder).__name__, repr=repr(ds), batch=list(batch.shape))))\n"
    )
    output = subprocess.run([sys.executable, "-c", code, name, str(data_dir)], check=True,
                            capture_output=True, text=True, cwd=ROOT).stdout
    result = json.loads(output.split("RESULT ", 1)[1].splitlines()[0])
    print(f"resolved by name in a fresh interpreter: {result}", flush=True)
    assert not result["registered"], result
    assert result["batch"] == [4, SIZE, SIZE, 3], result
    return result


# ----------------------------------------------------------- input pipeline
def pipeline_rates(name, data_dir, q):
    """images/s of ``epochs_dataset(BATCH, ...)`` per round (fresh iterator each)."""
    from tfvqvae.data import load_dataset

    source = load_dataset(name, "train", data_dir=str(data_dir), image_size=SIZE,
                          crop="center")
    assert type(source).__name__ == "TFDSImages", source
    rates = []
    for r in range(q["pipe_rounds"]):
        iterator = iter(source.epochs_dataset(BATCH, seed=r, first_epoch=0, epochs=1))
        for _ in range(q["pipe_warmup"]):
            next(iterator)
        start = time.perf_counter()
        timed = 0
        for batch in iterator:
            timed += 1
        _ = float(batch[0, 0, 0, 0])
        assert tuple(batch.shape) == (BATCH, SIZE, SIZE, 3) and batch.dtype == "float32"
        rates.append(timed * BATCH / (time.perf_counter() - start))
        print(f"pipeline round {r}: {rates[-1]:.0f} images/s ({timed} batches timed)",
              flush=True)
        del iterator
    return source, rates


# ----------------------------------------------------------------- training
# Keras' progress bar: "\r" (or a new line), then "STEP/TOTAL " in bold (ANSI escapes).
STEP = re.compile(rb"[\r\n](?:\x1b\[[0-9;]*m)?\s*(\d+)/(\d+)(?:\x1b\[[0-9;]*m)? ")


def vm(pid, field):
    """``VmRSS`` / ``VmHWM`` of process ``pid`` in MB, or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def train_cli_args(name, data_dir, out, flags, max_examples):
    args = ["train", "--dataset", name, "--data-dir", str(data_dir),
            "--image-size", str(SIZE), "--crop", "center", "--batch-size", str(BATCH),
            "--epochs", "1", "--backup-every", "0", *flags, "--out", str(out), "--overwrite"]
    if max_examples is not None:
        args += ["--max-train-examples", str(max_examples)]
    return args


def shown(args, data_dir):
    """The command as a user would type it (relative paths)."""
    text = " ".join(["tfvqvae", *args])
    return text.replace(str(data_dir), os.path.relpath(data_dir, ROOT))


def run_training(args):
    """Runs ``python -m tfvqvae_cli ARGS`` and times the steps from its progress bar.

    Returns a dict: steps, peak_mb (``ru_maxrss``), rss_mb at the end of step
    3 and of the last step, to_first_step_s (from the start of the process to
    the end of step 1), images_per_s (steps 3 to the last), wall_s.
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "tfvqvae_cli", *args], cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen, rss, buffer, log = {}, {}, b"", []
    while True:
        chunk = os.read(process.stdout.fileno(), 65536)
        if not chunk:
            break
        now = time.perf_counter()
        log.append(chunk)
        buffer = (buffer + chunk)[-4096:]
        for match in STEP.finditer(buffer):
            step, total = int(match.group(1)), int(match.group(2))
            if step not in seen:
                seen[step] = now
                rss[step] = vm(process.pid, "VmRSS")
                seen["total"] = total
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    output = b"".join(log).decode(errors="replace")
    if code != 0 or "total" not in seen:
        raise RuntimeError(f"tfvqvae {' '.join(args)} exited {code} (steps seen: "
                           f"{sorted(k for k in seen if k != 'total')}):\n{output[-3000:]}")
    total = seen.pop("total")
    last = max(seen)
    assert last == total and sorted(seen) == list(range(1, total + 1)), (sorted(seen), total)
    result = dict(
        steps=total, peak_mb=usage.ru_maxrss / 1024,
        rss_step3_mb=rss.get(3), rss_last_mb=rss[last],
        to_first_step_s=seen[1] - start,
        images_per_s=(last - 2) * BATCH / (seen[last] - seen[2]) if last > 2 else float("nan"),
        wall_s=wall)
    rounded = {k: round(v, 1) if isinstance(v, float) else v for k, v in result.items()}
    print(f"  {json.dumps(rounded)}", flush=True)
    return result


def median_run(runs):
    keys = ("peak_mb", "rss_step3_mb", "rss_last_mb", "to_first_step_s", "images_per_s",
            "wall_s")
    merged = {k: statistics.median(r[k] for r in runs if r[k] is not None) for k in keys}
    merged["steps"] = runs[0]["steps"]
    merged["peaks"] = [round(r["peak_mb"]) for r in runs]
    merged["rates"] = [round(r["images_per_s"], 1) for r in runs]
    return merged


# --------------------------------------------------------------------- main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="400 / 800 examples, few steps: to try the script")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR,
                        help="TFDS data_dir for the synthetic dataset (reused between runs)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--prepare-only", action="store_true",
                        help="prepare the datasets (and check the name), measure nothing")
    args = parser.parse_args(argv)
    wall = time.perf_counter()
    q = QUICK if args.quick else FULL
    data_dir = args.data_dir.resolve()
    runs_dir = data_dir.parent / "tfds_runs"

    import tensorflow as tf  # noqa: F401  (after argument parsing: --help stays fast)

    names, infos = {}, {}
    for key in ("small", "large"):
        names[key], infos[key] = prepare(data_dir, q[key])
    resolved = check_name(names["small"], data_dir)
    if args.prepare_only:
        return 0

    # 1. the input pipeline alone
    source, pipe = pipeline_rates(names["small"], data_dir, q)
    source_repr = repr(source)
    del source

    # 2a. the moderate network, a fixed number of steps, on both sizes (alternating)
    commands = {}
    model = {key: [] for key in ("small", "large")}
    for r in range(q["model_repeats"]):
        for key in (("small", "large") if r % 2 == 0 else ("large", "small")):
            cli = train_cli_args(names[key], data_dir, runs_dir / f"model-{key}", MODEL_FLAGS,
                                 q["model_steps"] * BATCH)
            commands.setdefault(("model", key), shown(cli, data_dir))
            print(f"training (a) {names[key]}, round {r}", flush=True)
            model[key].append(run_training(cli))
    # 2a'. the same without the pixel-variance pass (--no-normalize-mse)
    plain = []
    for r in range(q["plain_repeats"]):
        cli = train_cli_args(names["small"], data_dir, runs_dir / "plain", MODEL_FLAGS,
                             q["model_steps"] * BATCH) + ["--no-normalize-mse"]
        commands.setdefault("plain", shown(cli, data_dir))
        print(f"training (a') {names['small']} --no-normalize-mse, round {r}", flush=True)
        plain.append(run_training(cli))
    # 2b. the small network, one whole epoch over each size
    epoch = {key: [] for key in ("small", "large")}
    for r in range(q["epoch_repeats"]):
        for key in (("small", "large") if r % 2 == 0 else ("large", "small")):
            cli = train_cli_args(names[key], data_dir, runs_dir / f"epoch-{key}", SMALL_FLAGS,
                                 None)
            commands.setdefault(("epoch", key), shown(cli, data_dir))
            print(f"training (b) {names[key]}, whole epoch, round {r}", flush=True)
            epoch[key].append(run_training(cli))
    shutil.rmtree(runs_dir, ignore_errors=True)

    results = dict(model={k: median_run(v) for k, v in model.items()},
                   plain=median_run(plain),
                   epoch={k: median_run(v) for k, v in epoch.items()})
    markdown = report(args, q, infos, resolved, source_repr, pipe, results, commands,
                      time.perf_counter() - wall)
    print(markdown)
    if not args.no_write:
        write_section("tfds_streaming", markdown)
    return 0


def report(args, q, infos, resolved, source_repr, pipe, results, commands, wall):
    from tfvqvae.data.source import VARIANCE_BATCH  # the variance pass's batch
    small, large = infos["small"], infos["large"]
    decoded_gb = lambda n: n * SIZE * SIZE * 3 * 4 / 1e9  # noqa: E731  float32 pixels
    lines = [
        "## Streaming a TFDS dataset at 256x256 (issue 12)",
        "",
        f"`{command_line()}` ({wall / 60:.0f} min wall). {machine_line()}. The CPUs were "
        "shared with other jobs (a test suite); medians where runs were repeated."
        + (" **Quick mode: small datasets, few steps; not the benchmark's figures.**"
           if args.quick else ""),
        "",
        f"Dataset: `{NAME}`, a TFDS `GeneratorBasedBuilder` defined in the script (TFDS "
        "cannot download here) and prepared once with `download_and_prepare` into "
        "`bench/scratch/tfds`: JPEG (quality 90) smooth random colour patterns with noise, "
        "each side 256-320 px (mixed sizes), `tfds.features.Image(shape=(None, None, 3), "
        f"encoding_format=\"jpeg\")` + `ClassLabel(10)`; configs `n{small['train']}` and "
        f"`n{large['train']}` (training examples; {TRAIN_SHARDS} files each; "
        f"{small['mean_bytes'] / 1000:.1f} kB an example), a {small['test']}-example test "
        "split each. At 256x256x3 the training split would take "
        f"{decoded_gb(small['train']):.1f} / {decoded_gb(large['train']):.1f} GB decoded "
        "(float32) if it were materialised.",
        "",
        f"Resolved by name: the CLI runs in a fresh interpreter that never imports the "
        f"builder (`{NAME}` is not in `tfds.list_builders()` there); "
        f"`--dataset {small['name']} --data-dir bench/scratch/tfds` works as is: "
        "`tfds.builder` finds no registered class and reads the prepared files under "
        f"`data_dir` (a `{resolved['builder']}`). No wrapper is needed.",
        "",
        "### Input pipeline alone",
        "",
        f"`load_dataset(\"{small['name']}\", \"train\", data_dir=..., image_size=256, "
        f"crop=\"center\")` (`{source_repr}`) then `epochs_dataset({BATCH}, seed=r, "
        "first_epoch=0, epochs=1)`: read the encoded records, shuffle, decode, crop the "
        "centre square, antialiased resize to 256x256, batch (float32); no model. A fresh "
        f"iterator per round, {q['pipe_warmup']} untimed warm-up batches, the rest of the "
        f"epoch timed; {q['pipe_rounds']} rounds.",
        "",
        markdown_table(["dataset", "images/s (median)", "range over rounds"],
                       [[small["name"], round(statistics.median(pipe)),
                         f"{min(pipe):.0f}–{max(pipe):.0f}"]]),
        "",
        "### Training through the CLI",
        "",
        "Each run is `python -m tfvqvae_cli train ...` in a fresh interpreter, one at a time "
        "(validation on the test split, checkpoint, model and metrics written as usual). "
        "Peak RSS = the child's `ru_maxrss` (`os.wait4`); RSS at steps 3 and last = its "
        "`VmRSS` when Keras' progress bar reported those steps (read from its stdout as it "
        "comes). Train images/s: steps 3 to the last, from the progress bar's times (start-"
        "up, tracing and the final test excluded; the input pipeline runs alongside, on "
        "the same 2 cores). \"To step 1\": process start to the end of step 1 (imports, "
        "opening the dataset, pixel variance over the training images, building, "
        "tracing).",
        "",
        f"(a) VQ-VAE-2, hidden 64, residual 32 x 2, K = 512, D = 64, batch {BATCH}, "
        f"{q['model_steps']} steps (`--max-train-examples {q['model_steps'] * BATCH}`), "
        f"{q['model_repeats']} run(s) each, alternating datasets; medians:",
        "",
        f"    {commands[('model', 'small')]}",
        "",
        "(a') As (a) on the smaller dataset with `--no-normalize-mse`: `train` then skips "
        "`pixel_variance()` (the variance the normalised MSE divides by), which streams the "
        f"first 10k training images in float32 batches of {VARIANCE_BATCH} and sums them in "
        f"float64 (at 256x256 a batch is {VARIANCE_BATCH * SIZE * SIZE * 3 * 4 / 1e6:.0f} MB "
        f"in float32, {VARIANCE_BATCH * SIZE * SIZE * 3 * 8 / 1e6:.0f} MB per float64 copy); "
        f"{q['plain_repeats']} run(s).",
        "",
        f"(b) Peak RSS against dataset size: a small VQ-VAE-2 (hidden 16, residual 8 x 1, "
        f"K = 64, D = 16), one whole epoch over every training example (no "
        f"`--max-train-examples`), {q['epoch_repeats']} run(s) each:",
        "",
        f"    {commands[('epoch', 'small')]}",
        "",
    ]
    def row(label, info, r):
        return [label, f"`{info['name']}` ({info['train']})", r["steps"], round(r["peak_mb"]),
                f"{r['rss_step3_mb']:.0f} / {r['rss_last_mb']:.0f}",
                round(r["images_per_s"], 1), f"{r['to_first_step_s']:.0f}", f"{r['wall_s']:.0f}"]

    rows = [row("(a) VQ-VAE-2 h64", info, results["model"][key])
            for key, info in (("small", small), ("large", large))]
    rows.append(row("(a') the same, `--no-normalize-mse`", small, results["plain"]))
    rows += [row("(b) VQ-VAE-2 h16, whole epoch", info, results["epoch"][key])
             for key, info in (("small", small), ("large", large))]
    lines.append(markdown_table(
        ["run", "dataset (train examples)", "steps", "peak RSS (MB)",
         "RSS at step 3 / last (MB)", "train images/s", "to step 1 (s)", "wall (s)"], rows))
    ratio_a = results["model"]["large"]["peak_mb"] / results["model"]["small"]["peak_mb"]
    ratio_b = results["epoch"]["large"]["peak_mb"] / results["epoch"]["small"]["peak_mb"]
    lines += [
        "",
        f"Peak RSS, {large['train']} / {small['train']} examples: (a) {ratio_a:.3f} (same "
        f"steps), (b) {ratio_b:.3f} (a whole epoch each: twice the steps and images). "
        "Peaks of every run (MB): " + "; ".join(
            f"{what} {infos[key]['train']}: "
            f"{', '.join(map(str, results[what][key]['peaks']))}"
            for what in ("model", "epoch") for key in ("small", "large")) + ".",
    ]
    extra = results["model"]["small"]["peak_mb"] - results["plain"]["peak_mb"]
    lines += [
        "",
        f"The pixel-variance pass accounts for {extra:.0f} MB of the peak of (a) "
        f"({results['model']['small']['peak_mb']:.0f} MB with it, "
        f"{results['plain']['peak_mb']:.0f} MB without): it happens before step 1 and "
        "the allocator keeps the pages, hence the flat RSS from step 3 on. Its size "
        f"depends on the image size and its batch ({VARIANCE_BATCH} images), "
        "not on the number of images.",
    ]
    pipe_rate = statistics.median(pipe)
    train_rate = results["model"]["small"]["images_per_s"]
    lines += ["", f"Input pipeline alone / training (a): {pipe_rate / train_rate:.0f}x."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
