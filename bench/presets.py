"""Wall time and results of ``tfvqvae pipeline --preset P`` for each preset.

    python bench/presets.py [--presets quickstart,mnist,cifar10]
                            [--data-dir ../shared/data] [--out DIR] [--no-write]

Runs the command exactly as a user would (a fresh interpreter, a fresh run
folder; ``--data-dir`` for the presets that read files, i.e. all but
quickstart), then reads the run folder: the time of each stage from when its
last file was written (``metrics.json``, the code files, ``prior-*/metrics.json``,
the samples PNG, ``export/export.json``; the first stage includes starting
Python and TensorFlow, the last one the export's verification), the VQ-VAE's
test PSNR and codebook usage and the priors' test bits per dimension. Writes
the ``presets`` section of bench/RESULTS.md. Measure on an idle machine: the
presets are sized so that each pipeline takes about 10-15 minutes at most on
two CPU cores.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import command_line  # noqa: E402
from _results import machine_line  # noqa: E402
from _results import markdown_table  # noqa: E402
from _results import write_section  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OFFLINE = ("quickstart",)  # presets whose dataset ships with the package


def pipeline_command(preset, out, data_dir):
    command = [sys.executable, "-m", "tfvqvae_cli", "pipeline", "--preset", preset,
               "--out", str(out)]
    if preset not in OFFLINE:
        command += ["--data-dir", str(data_dir)]
    return command


STAGES = ("train", "extract", "top prior", "bottom prior", "sample", "export", "verify")


def stage_times(out, start, end):
    """{stage: seconds} from the times each stage's last file was written (None: no stage)."""
    def mtime(path):
        return path.stat().st_mtime if path.exists() else None

    marks = {
        "train": mtime(out / "metrics.json"),
        "extract": max(mtime(p) for p in (out / "codes").glob("*.tfrecord")),
        "top prior": mtime(out / "prior-top" / "metrics.json"),
        "bottom prior": mtime(out / "prior-bottom" / "metrics.json"),
        "sample": max(mtime(p) for p in out.glob("samples-*.png")),
        "export": mtime(out / "export" / "export.json"),
        "verify": end,
    }
    times, previous = {}, start
    for stage in STAGES:
        if marks[stage] is None:
            times[stage] = None
            continue
        times[stage] = round(marks[stage] - previous, 1)
        previous = marks[stage]
    return times


def results(out):
    """Test PSNR, codebook usage % per level and prior bits/dim per level."""
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["test"]
    levels = test.get("levels", {"top": test})
    order = [level for level in ("top", "bottom") if level in levels]  # as the headers say
    usage = " / ".join(f"{levels[level]['usage_percent']:.0f}" for level in order)
    bits = " / ".join(
        f"{json.loads((out / f'prior-{level}' / 'metrics.json').read_text())['test']['bits_per_dim']:.2f}"
        for level in order
    )
    return test["psnr_db"], usage, bits, metrics["num_train_images"]


EXPORT_LINE = re.compile(r"^export (\S+): ([\d.]+) % codes equal to Keras", re.MULTILINE)
ARTIFACTS = ("savedmodel", "tflite-float32", "tflite-dynamic_range", "tflite-int8", "onnx")


def run_and_echo(command):
    """Runs ``command``, echoing its output; returns what it printed (fails on exit != 0)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    lines = []
    for line in process.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    if process.wait() != 0:
        raise subprocess.CalledProcessError(process.returncode, command)
    return "".join(lines)


def export_agreement(printed):
    """% of codes equal to Keras per artifact, from the pipeline's "export ..." lines."""
    found = dict(EXPORT_LINE.findall(printed))
    return [found.get(a, "—") for a in ARTIFACTS] + [
        ", ".join(f"{k} {v}" for k, v in found.items() if k not in ARTIFACTS) or "—"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="quickstart,mnist,cifar10",
                        help="comma-separated presets (default %(default)s)")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA),
                        help="local MNIST / CIFAR-10 files (default ../shared/data)")
    parser.add_argument("--out", help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]

    rows, stages, exports = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-presets-") as temp:
        root = Path(args.out) if args.out else Path(temp)
        for preset in presets:
            out = root / preset
            command = pipeline_command(preset, out, args.data_dir)
            print(" ".join(command), flush=True)
            start = time.time()
            printed = run_and_echo(command)
            end = time.time()
            exports.append([preset, *export_agreement(printed)])
            psnr, usage, bits, images = results(out)
            times = stage_times(out, start, end)
            print(preset, times, flush=True)
            rows.append([preset, images, round(end - start), round(psnr, 2), usage, bits])
            stages.append([preset, *("—" if times[s] is None else round(times[s])
                                     for s in STAGES)])

    text = "\n".join([
        "## Presets: `tfvqvae pipeline --preset P` (issue 10)",
        "",
        f"`{command_line()}`. {machine_line()}. Each preset's whole pipeline (train, extract "
        "codes, priors, sample, export to SavedModel / TFLite / ONNX and verify on 256 test "
        "images) in a fresh process and run folder; `tfvqvae presets` lists what each sets.",
        "",
        markdown_table(["preset", "train images", "wall (s)", "test PSNR (dB)",
                        "usage % (top / bottom)", "prior bits/dim (top / bottom)"], rows),
        "",
        "Stage times (s), from when each stage's last file was written (train includes "
        "starting Python and TensorFlow):",
        "",
        markdown_table(["preset", *STAGES], stages),
        "",
        "Exports: % of code indices equal to Keras on 256 test images (`--verify`):",
        "",
        markdown_table(["preset", *ARTIFACTS, "other"], exports),
    ])
    print(text)
    if not args.no_write:
        write_section("presets", text)


if __name__ == "__main__":
    main()
