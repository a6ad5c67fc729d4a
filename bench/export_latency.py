"""Per-image latency of encode and decode in every exported format, same run.

    python bench/export_latency.py [--model RUN] [--data-dir ../shared/data]
                                   [--batch-sizes 1,64] [--seconds 1.0]

Exports the run (``tfvqvae.export.export_run``: SavedModel, TFLite float32 /
dynamic range / weight only / int8 / int16x8, ONNX) into a temporary folder and times ``encode``
(images -> codes) and ``decode`` (codes -> images) on real test images with
Keras (eager calls, and the same calls inside ``tf.function``), the
SavedModel's signatures, LiteRT and onnxruntime, all on CPU with every core.
Without ``--model`` it first trains a small MNIST run (the ``mnist`` preset,
2 epochs on 20 000 images, as the slow MNIST test). Each cell is the median over repeated calls
(after warm-up) divided by the batch size. Prints markdown tables: latency
and size on disk, then ``verify``'s agreement with Keras on 1000 test images;
writes them to bench/RESULTS.md, section ``export_latency``.
Absolute times depend on the machine; compare within one table.
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import command_line  # noqa: E402
from _results import write_section  # noqa: E402

from tfvqvae.export import KerasRunner  # noqa: E402
from tfvqvae.export import export_run  # noqa: E402
from tfvqvae.export import format_table  # noqa: E402
from tfvqvae.export import load_run  # noqa: E402
from tfvqvae.export import open_runners  # noqa: E402
from tfvqvae.export import verify_export  # noqa: E402
from tfvqvae.export._files import human_size  # noqa: E402
from tfvqvae.export.tflite import TFLITE_MODES  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class CompiledKerasRunner(KerasRunner):
    """The Keras model's encode / decode inside tf.function (traced once per shape)."""

    def __init__(self, model):
        super().__init__(model)
        self._encode = tf.function(model.encode_levels)
        self._decode = tf.function(model.decode_levels)

    def encode(self, images):
        return {k: v.numpy() for k, v in self._encode(tf.constant(images)).items()}

    def decode(self, codes):
        return self._decode({k: tf.constant(v) for k, v in codes.items()}).numpy()


def per_image_ms(fn, batch_size, seconds):
    for _ in range(3):  # warm-up: tracing, allocation, delegate set-up
        fn()
    times = []
    deadline = time.perf_counter() + seconds
    while len(times) < 5 or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times) / batch_size


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def train_small_run(folder, data_dir):
    from tfvqvae.training import PRESETS
    from tfvqvae.training import TrainConfig
    from tfvqvae.training import train

    config = TrainConfig(**{**PRESETS["mnist"], "out": str(folder), "data_dir": str(data_dir),
                            "max_train_examples": 20000, "epochs": 2})
    print(f"training a small MNIST run in {folder} ...", file=sys.stderr, flush=True)
    train(config, verbose=0)
    return folder


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="run folder (default: train a small MNIST run)")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--batch-sizes", default="1,64")
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="minimum timing time per cell (default 1.0)")
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    with tempfile.TemporaryDirectory() as temp:
        run_dir = Path(args.model) if args.model else train_small_run(Path(temp) / "mnist",
                                                                      args.data_dir)
        result = export_run(run_dir, Path(temp) / "export", formats="savedmodel,tflite,onnx",
                            sample=False, data_dir=args.data_dir, tflite_modes=TFLITE_MODES)
        run = load_run(run_dir, data_dir=args.data_dir)
        images = run.images("test", max(batch_sizes))
        runners = {"keras (eager)": KerasRunner(run.model),
                   "keras (tf.function)": CompiledKerasRunner(run.model),
                   **open_runners(result)}
        sizes = {"keras (eager)": (run_dir / "model.keras").stat().st_size, **result.sizes}

        lines = []

        def emit(text=""):
            print(text, flush=True)
            lines.extend(str(text).split("\n"))

        model = run.model
        shapes = model.code_shapes(run.image_shape[:2])
        emit(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, {platform.system()} "
              f"{platform.machine()}; python {platform.python_version()}")
        emit("versions: " + ", ".join(
            f"{name} {version(name)}" for name in
            ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert",
              "ai-edge-quantizer")))
        emit(f"run: {run_dir.name}, {type(model).__name__}, images {run.image_shape}, codes "
              + ", ".join(f"{level} {shapes[level]} K={k}"
                          for level, k in model.level_num_embeddings.items()))
        emit("\nms per image (median; lower is better); size on disk "
              "(keras: model.keras with optimizer state; onnx: the three files together)\n")
        header = ["runtime", "size"] + [f"{op} b={b}" for op in ("encode", "decode")
                                        for b in batch_sizes]
        emit("| " + " | ".join(header) + " |")
        emit("| --- | ---: |" + " ---: |" * (len(header) - 2))
        for name, runner in runners.items():
            cells = []
            for op in ("encode", "decode"):
                for batch_size in batch_sizes:
                    batch = images[:batch_size]
                    if op == "encode":
                        fn = lambda r=runner, x=batch: r.encode(x)  # noqa: E731
                    else:
                        codes = runners["keras (eager)"].encode(batch)
                        fn = lambda r=runner, c=codes: r.decode(c)  # noqa: E731
                    cells.append(f"{per_image_ms(fn, batch_size, args.seconds):.3f}")
            size = human_size(sizes[name]) if name in sizes else "(same)"
            emit(f"| {name} | {size} | " + " | ".join(cells) + " |")

        emit("\nagreement with Keras on 1000 test images (tfvqvae export --verify):\n")
        emit(format_table(verify_export(result, run_dir, num_images=1000,
                                        data_dir=args.data_dir)))
    write_section("export_latency", "\n".join([
        "## Export latency, size and agreement (bench/export_latency.py)", "",
        f"`{command_line()}`", "", *lines]))


if __name__ == "__main__":
    main()
