"""The learned image codec vs JPEG and WebP on MNIST and Fashion-MNIST: bytes per image vs PSNR.

    python bench/codec.py [--datasets mnist,fashion_mnist] [--examples 1000]
                          [--quality-step 5] [--runs NAME,...] [--train]
                          [--baselines-only] [--data-dir ../shared/data] [--no-write]

Images: the first ``--examples`` TEST images of each dataset at their original
28x28, uint8, with their labels (`tfvqvae.data.load_dataset(name, "test",
data_dir=...)`, the IDX files).

Baselines (Pillow, grey 'L' images, one file per image, decoded back to
uint8): JPEG with ``optimize=True`` (optimised Huffman tables; Pillow's
default writes its fixed tables, +160 bytes per 28x28 file) and lossy WebP
with ``method=6`` (slowest, smallest) and with Pillow's default ``method=4``,
at qualities 0, step, ..., 100 (10 always included).

PSNR = 10 log10(1 / MSE), the MSE pooled over every pixel of the N images in
[0, 1] (uint8 / 255) -- not the mean of per-image PSNRs. This definition
reproduces the issue's numbers on the first 1000 MNIST test images: WebP q10
145.1 bytes at 29.35 dB (method 4, Pillow's default; method 6 gives 140.0
bytes at 28.85 dB) and JPEG q10 239.0 bytes at 22.93 dB (optimize=True;
Pillow 13.0, libwebp 1.6.0, libjpeg-turbo 6.2). The mean of per-image PSNRs
is 0.15-0.2 dB higher (29.50 and 23.11 dB there).

Ours (`tfvqvae.codec.ImageCodec.from_run(run)` for each run below): compress
the N images with their labels (when ``codec.num_classes`` is not None),
decompress, round to uint8 (``np.round(x * 255)``), PSNR against the 28x28
originals as above; mean bytes per file (the whole file, header included);
``rate_bits / 8``, the ideal bytes under the priors; the payload (file minus
its 8-byte header) against the rate: Σ payload / Σ rate, the per-file excess
(mean and max) and the share of files within the issue's bound (payload ≤
1.01 · rate / 8 + 4 bytes); the share of files whose decoded code maps and
label equal the encoder's (`code_maps_agree`, every file); encode and decode
images/s (one call over all N images each, after a warm-up call on 8).

"bytes ratio vs X at equal PSNR": X's bytes per image at our PSNR, linear in
PSNR between two consecutive quality points whose PSNRs bracket ours (the
smallest such value where the curve is not monotonic), divided by our bytes
per file; > 1 means ours is smaller. "-" when our PSNR is outside X's range.

Runs (all: VQ-VAE at 32x32, or at the images' own 28x28 for the ``-28px``
run, on the whole training split, 1 epoch, K codes of
D = 32, hidden 64, EMA decay 0.99, k-means init, restarts after 20 steps,
Adam 1e-3, batch 128; codes of both splits extracted; class-conditional gated
PixelCNN per level, hidden 32, 4 blocks, kernel 3, 3 epochs, batch 128):

* ``vqvae2-4x4+8x8-k128``: bench/scratch/evaluation/DATASET, the VQ-VAE-2 of
  bench/evaluation.py (``python bench/evaluation.py --datasets DATASET
  --pipeline-only``), K = 128, top 4x4 + bottom 8x8.
* ``vqvae-4x4-k64`` (lower rate), ``vqvae-7x7-k256-28px`` (no resize: the
  codec neither enlarges the images to 32x32 nor maps them back) and
  ``vqvae-16x16-k512`` (higher rate):
  bench/scratch/codec/DATASET-NAME, one-level VQ-VAEs trained by `train_run`,
  i.e. (mnist shown; DATASET=fashion_mnist the same)::

    tfvqvae pipeline --out bench/scratch/codec/mnist-vqvae-4x4-k64 \\
        --dataset mnist --data-dir ../shared/data --image-size 32 \\
        --batch-size 128 --learning-rate 0.001 --embedding-dim 32 \\
        --hidden-channels 64 --residual-channels 32 --num-residual-layers 2 \\
        --commitment-cost 0.25 --decay 0.99 --kmeans-init \\
        --restart-unused-after 20 --seed 0 --epochs 1 \\
        --model vqvae --num-downsamples 3 --num-embeddings 64 \\
        --prior-epochs 3 --prior-batch-size 128 --prior-learning-rate 0.001 \\
        --prior-hidden-channels 32 --prior-num-blocks 4 --prior-kernel-size 3 \\
        --prior-class-conditional --export-formats ''
    # vqvae-16x16-k512: the same with --out .../mnist-vqvae-16x16-k512
    #     --num-downsamples 1 --num-embeddings 512
    # vqvae-7x7-k256-28px: --out .../mnist-vqvae-7x7-k256-28px --image-size 28
    #     --num-downsamples 2 --num-embeddings 256

  (`pipeline` = train + extract-codes + train-prior --level top
  --class-conditional + sample; the same options as the evaluation runs'
  config.json and prior-top/config.json.) ``--train`` runs these (and the
  evaluation pipeline) for any run folder that is not complete; the pipeline
  keeps finished stages. Wall times measured (nice 10 on 2 cores shared with
  another job): vqvae-4x4-k64 2.6 min (mnist) / 2.4 min (fashion_mnist),
  vqvae-16x16-k512 17.7 / 20.0 min (its 16x16 prior is 14 min of it); the
  evaluation runs' pipelines took about 15 and 20 min. Test PSNR at 32x32 /
  prior bits per code: mnist 18.8 dB / 2.66 (4x4, K 64), 30.0 dB / 1.49
  (16x16, K 512); fashion_mnist 19.3 dB / 2.64, 28.8 dB / 2.60.

Writes the ``codec`` section of bench/RESULTS.md,
bench/figures/codec_rate_distortion_DATASET.png (bytes per image, log scale,
vs PSNR: JPEG, WebP, our runs labelled) and the raw numbers to
bench/scratch/codec/results-DATASET.json.
"""

import argparse
import io
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# bench/ for its helpers; tfvqvae is the installed package (pip install -e .).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import command_line  # noqa: E402
from _results import machine_line  # noqa: E402
from _results import markdown_table  # noqa: E402
from _results import write_section  # noqa: E402

BENCH = Path(__file__).resolve().parent
DEFAULT_DATA = BENCH.parents[1] / "shared" / "data"
FIGURES = BENCH / "figures"
CODEC_RUNS = BENCH / "scratch" / "codec"
EVALUATION_RUNS = BENCH / "scratch" / "evaluation"

# ---------------------------------------------------------------------------
# The runs and how they are trained.
# ---------------------------------------------------------------------------

# The options every extra run shares: those of bench/scratch/evaluation/*/config.json
# and prior-*/config.json (the mnist preset's sizes on the whole training split).
COMMON_TRAIN = [
    "--batch-size", "128", "--learning-rate", "0.001",
    "--embedding-dim", "32", "--hidden-channels", "64", "--residual-channels", "32",
    "--num-residual-layers", "2", "--commitment-cost", "0.25", "--decay", "0.99",
    "--kmeans-init", "--restart-unused-after", "20", "--seed", "0", "--epochs", "1",
]
COMMON_PRIOR = [
    "--prior-epochs", "3", "--prior-batch-size", "128", "--prior-learning-rate", "0.001",
    "--prior-hidden-channels", "32", "--prior-num-blocks", "4", "--prior-kernel-size", "3",
    "--prior-class-conditional",
]
# name -> the options that differ per run (codes at image size / 2**num_downsamples).
EXTRA_RUNS = {
    "vqvae-4x4-k64": ["--image-size", "32", "--model", "vqvae", "--num-downsamples", "3",
                      "--num-embeddings", "64"],
    "vqvae-16x16-k512": ["--image-size", "32", "--model", "vqvae", "--num-downsamples", "1",
                         "--num-embeddings", "512"],
    # At the images' own 28x28 (no resize on the way in or out): 7x7 codes.
    "vqvae-7x7-k256-28px": ["--image-size", "28", "--model", "vqvae", "--num-downsamples", "2",
                            "--num-embeddings", "256"],
}
EVALUATION_RUN = "vqvae2-4x4+8x8-k128"
# Lowest rate first.
RUN_NAMES = ("vqvae-4x4-k64", EVALUATION_RUN, "vqvae-7x7-k256-28px", "vqvae-16x16-k512")


def run_folder(dataset, name):
    if name == EVALUATION_RUN:
        return EVALUATION_RUNS / dataset
    return CODEC_RUNS / f"{dataset}-{name}"


def tfvqvae_command():
    """The ``tfvqvae`` console script (or the same entry point through this Python)."""
    exe = shutil.which("tfvqvae")
    if exe:
        return [exe]
    return [sys.executable, "-c", "import sys, tfvqvae_cli; sys.exit(tfvqvae_cli.main())"]


def training_command(dataset, name, data_dir):
    """The command that trains run ``name`` of ``dataset`` (everything the codec needs)."""
    if name == EVALUATION_RUN:
        return [sys.executable, str(BENCH / "evaluation.py"), "--datasets", dataset,
                "--pipeline-only", "--data-dir", str(data_dir),
                "--out", str(EVALUATION_RUNS)]
    return [*tfvqvae_command(), "pipeline", "--out", str(run_folder(dataset, name)),
            "--dataset", dataset, "--data-dir", str(data_dir), *COMMON_TRAIN,
            *EXTRA_RUNS[name], *COMMON_PRIOR, "--export-formats", ""]


def run_levels(folder):
    """The level names of a run folder, from its config.json (None without one)."""
    config_file = Path(folder) / "config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text())
    count = {"vqvae": 1, "vqvae2": 2}.get(config["model"]) or config["levels"]
    if count == 1:
        return ("top",)
    if count == 2:
        return ("top", "bottom")
    if count == 3:
        return ("top", "middle", "bottom")
    return ("top", *(f"level_{n}" for n in range(count - 1, 1, -1)), "bottom")


def run_complete(folder):
    """Whether ``folder`` has the model, both code files and a prior per level."""
    folder = Path(folder)
    levels = run_levels(folder)
    return (levels is not None and (folder / "model.keras").is_file()
            and len(list((folder / "codes").glob("codes-test-*.tfrecord"))) > 0
            and len(list((folder / "codes").glob("codes-train-*.tfrecord"))) > 0
            and all((folder / f"prior-{level}" / "metrics.json").is_file() for level in levels))


def train_run(dataset, name, data_dir):
    """Runs `training_command` (at the caller's niceness); returns the wall seconds."""
    command = training_command(dataset, name, data_dir)
    print("$", " ".join(shlex.quote(a) for a in command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------
# Data, PSNR and the baselines.
# ---------------------------------------------------------------------------


def load_test(dataset, examples, data_dir):
    """The first ``examples`` test images (uint8, (N, 28, 28, 1)) and labels (int64)."""
    from tfvqvae.data import load_dataset

    data = load_dataset(dataset, "test", data_dir=data_dir)
    images = np.asarray(data.images[:examples])
    if images.dtype != np.uint8:
        raise ValueError(f"{dataset}: expected uint8 images, got {images.dtype}")
    return images, np.asarray(data.labels[:examples]), data.num_classes


def psnr(decoded, original):
    """10 log10(1 / MSE), the MSE over every pixel of every image, both uint8 in [0, 255]."""
    diff = decoded.astype(np.float64) / 255.0 - original.astype(np.float64) / 255.0
    mse = float(np.mean(diff * diff))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


BASELINES = {
    # name -> (Pillow format, save options)
    "JPEG": ("JPEG", {"optimize": True}),
    "WebP m6": ("WEBP", {"method": 6}),
    "WebP m4": ("WEBP", {"method": 4}),
}


def baseline_point(images, fmt, quality, options):
    """One quality of one format: mean bytes, PSNR, encode and decode images/s."""
    grey = images[..., 0]
    files = []
    start = time.perf_counter()
    for image in grey:
        buffer = io.BytesIO()
        Image.fromarray(image, "L").save(buffer, fmt, quality=quality, **options)
        files.append(buffer.getvalue())
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("L")) for f in files])
    decode_s = time.perf_counter() - start
    return {"quality": quality, "bytes": float(np.mean([len(f) for f in files])),
            "psnr": psnr(decoded[..., None], images),
            "encode_images_per_s": len(files) / encode_s,
            "decode_images_per_s": len(files) / decode_s}


def baseline_curves(images, qualities):
    return {name: [baseline_point(images, fmt, q, options) for q in qualities]
            for name, (fmt, options) in BASELINES.items()}


def bytes_at_psnr(curve, target):
    """The curve's bytes at PSNR ``target``, linear between bracketing qualities (nan outside)."""
    best = math.nan
    for a, b in zip(curve, curve[1:]):
        low, high = sorted((a, b), key=lambda p: p["psnr"])
        if not low["psnr"] <= target <= high["psnr"]:
            continue
        if high["psnr"] == low["psnr"]:
            value = min(low["bytes"], high["bytes"])
        else:
            t = (target - low["psnr"]) / (high["psnr"] - low["psnr"])
            value = low["bytes"] + t * (high["bytes"] - low["bytes"])
        best = value if math.isnan(best) else min(best, value)
    return best


# ---------------------------------------------------------------------------
# Our codec.
# ---------------------------------------------------------------------------


def code_maps_agree(codec, images, labels, files):
    """Per file, whether it decodes to the encoder's code maps and label (bool array).

    ``codec.encode_codes(images)`` (what `compress` codes) against
    ``codec.decode_codes(files)`` (every level, the checksum verified too).
    """
    encoded = codec.encode_codes(images)
    decoded_maps, decoded_labels = codec.decode_codes(files)
    agree = np.ones(len(files), dtype=bool)
    for name in encoded:
        a, b = np.asarray(encoded[name]), np.asarray(decoded_maps[name])
        agree &= np.all(a.reshape(len(a), -1) == b.reshape(len(b), -1), axis=1)
    if labels is not None:
        agree &= np.asarray(decoded_labels) == np.asarray(labels)
    return agree


def codec_point(codec, images, labels):
    """Compress, decompress and measure every image."""
    from tfvqvae.codec.file_format import HEADER_BYTES

    labels = labels if codec.num_classes is not None else None
    warm_labels = None if labels is None else labels[:8]
    codec.decompress(codec.compress(images[:8], labels=warm_labels))
    start = time.perf_counter()
    files = codec.compress(images, labels=labels)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded = codec.decompress(files)
    decode_s = time.perf_counter() - start
    decoded = np.asarray(decoded)
    if decoded.shape != images.shape:
        raise ValueError(f"decompress gave shape {decoded.shape}, expected {images.shape}")
    rounded = np.clip(np.round(decoded * 255.0), 0, 255).astype(np.uint8)
    sizes = np.array([len(f) for f in files], dtype=np.float64)
    rate = np.asarray(codec.rate_bits(images, labels=labels), dtype=np.float64)
    payload = sizes - HEADER_BYTES
    overhead = payload - rate / 8.0  # coder flush and quantisation, bytes per file
    agree = code_maps_agree(codec, images, labels, files)
    return {
        "psnr": psnr(rounded, images),
        "bytes": float(sizes.mean()),
        "bytes_max": float(sizes.max()),
        "rate_bytes": float(rate.mean() / 8.0),
        "payload_over_rate": float(payload.sum() / (rate.sum() / 8.0)),
        "overhead_mean": float(overhead.mean()),
        "overhead_max": float(overhead.max()),
        "within_target": float(np.mean(payload <= rate / 8.0 * 1.01 + 4)),
        "agree": float(np.mean(agree)),
        "agree_checked": int(len(agree)),
        "encode_images_per_s": len(images) / encode_s,
        "decode_images_per_s": len(images) / decode_s,
    }


BACK_METHODS = ("least-squares inverse (the codec)", "bilinear, antialiased", "lanczos3")


def back_to_size(images, size, method):
    """float64 images (N, h, w, C) in [0, 1] taken to ``size`` by ``method`` (BACK_METHODS)."""
    import tensorflow as tf

    from tfvqvae.codec.resampling import inverse_resize

    if method == BACK_METHODS[0]:
        return inverse_resize(images, size)
    kind = "bilinear" if method == BACK_METHODS[1] else "lanczos3"
    return tf.image.resize(images, size, kind, antialias=True).numpy()


def resize_comparison(codec, images):
    """PSNR at 28x28 of each way back from the model's size, for the codec's codes and alone.

    Returns {method: (PSNR of the decoded images taken back, PSNR of the
    original images resized to the model's size and back: the way back's own
    ceiling)}, or None when the model codes the images at their own size.
    """
    from tfvqvae.codec.resampling import resize_batch

    size = images.shape[1:3]
    if tuple(codec.image_shape[:2]) == tuple(size):
        return None
    decoded = np.clip(np.asarray(codec.model.decode_levels(codec.encode_codes(images)),
                                 np.float64), 0, 1)
    enlarged = resize_batch(images, codec.image_shape[:2]).numpy().astype(np.float64) / 255

    def rounded(x):
        return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)

    return {method: (psnr(rounded(back_to_size(decoded, size, method)), images),
                     psnr(rounded(back_to_size(enlarged, size, method)), images))
            for method in BACK_METHODS}


def evaluate_run(name, folder, images, labels, log):
    """The point of one run: every level coded."""
    from tfvqvae.codec import ImageCodec

    codec = ImageCodec.from_run(folder)
    point = codec_point(codec, images, labels)
    point["back_to_size"] = resize_comparison(codec, images)
    return [point]


def run_description(folder):
    config = json.loads((Path(folder) / "config.json").read_text())
    shapes = []
    for level in run_levels(folder):
        shape = json.loads((Path(folder) / f"prior-{level}" / "metrics.json").read_text())[
            "code_shape"]
        shapes.append("x".join(str(s) for s in shape))
    return f"{config['model']}, {' + '.join(shapes)}, K {config['num_embeddings']}"


# ---------------------------------------------------------------------------
# The figure (Pillow: matplotlib is not installed here).
# ---------------------------------------------------------------------------

COLOURS = {"JPEG": (31, 119, 180), "WebP m6": (44, 160, 44), "WebP m4": (152, 223, 138)}
LEGEND = {"JPEG": "JPEG (optimize)", "WebP m6": "WebP (method 6)",
          "WebP m4": "WebP (method 4, Pillow's default)"}
OURS_COLOUR = (214, 39, 40)


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def plot(path, title, curves, ours):
    """bytes per image (x, log) vs PSNR (y): baseline lines, our points labelled."""
    width, height = 960, 640
    left, right, top, bottom = 80, 30, 50, 70
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(15), _font(12)
    points = [(p["bytes"], p["psnr"]) for c in curves.values() for p in c]
    points += [(p["bytes"], p["psnr"]) for _, p in ours]
    points = [(b, s) for b, s in points if b > 0 and math.isfinite(s)]
    x_low = 10 ** math.floor(math.log10(min(b for b, _ in points)))
    x_high = 10 ** math.ceil(math.log10(max(b for b, _ in points)))
    y_low = 5 * math.floor(min(s for _, s in points) / 5)
    y_high = 5 * math.ceil(max(s for _, s in points) / 5)

    def xy(b, s):
        fx = (math.log10(b) - math.log10(x_low)) / (math.log10(x_high) - math.log10(x_low))
        fy = (s - y_low) / (y_high - y_low)
        return (left + fx * (width - left - right), height - bottom - fy * (height - top - bottom))

    # Axes, grid and ticks.
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    decade = x_low
    while decade <= x_high:
        for m in (1, 2, 5):
            b = decade * m
            if x_low <= b <= x_high:
                x, _ = xy(b, y_low)
                draw.line([x, top, x, height - bottom], fill=(225, 225, 225))
                draw.line([x, height - bottom, x, height - bottom + 5], fill="black")
                label = f"{b:g}"
                draw.text((x, height - bottom + 8), label, fill="black", font=small, anchor="mt")
        decade *= 10
    for s in range(int(y_low), int(y_high) + 1, 5):
        _, y = xy(x_low, s)
        draw.line([left, y, width - right, y], fill=(225, 225, 225))
        draw.line([left - 5, y, left, y], fill="black")
        draw.text((left - 8, y), f"{s}", fill="black", font=small, anchor="rm")
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    draw.text(((left + width - right) / 2, height - 22), "bytes per image (log scale)",
              fill="black", font=font, anchor="mm")
    label = Image.new("RGBA", (200, 24), (255, 255, 255, 0))
    ImageDraw.Draw(label).text((100, 12), "PSNR (dB)", fill="black", font=font, anchor="mm")
    image.paste(label.rotate(90, expand=True), (8, int((top + height - bottom) / 2 - 100)),
                label.rotate(90, expand=True))
    draw.text((width / 2, 22), title, fill="black", font=font, anchor="mm")

    # Baselines: lines through the qualities, small dots, a few quality labels.
    for name, curve in curves.items():
        colour = COLOURS[name]
        xys = [xy(p["bytes"], p["psnr"]) for p in curve if math.isfinite(p["psnr"])]
        draw.line(xys, fill=colour, width=2)
        for (x, y), p in zip(xys, curve):
            draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=colour)
            if name != "WebP m4" and p["quality"] in (10, 50, 90):
                draw.text((x + 5, y + 3), f"q{p['quality']}", fill=colour, font=small,
                          anchor="lt")
    # Ours.
    for name, point in ours:
        x, y = xy(point["bytes"], point["psnr"])
        draw.rectangle([x - 4, y - 4, x + 4, y + 4], fill=OURS_COLOUR)
        draw.text((x + 7, y - 4), name, fill=OURS_COLOUR, font=small, anchor="lb")

    # Legend, top left (the curves rise to the right).
    entries = [(LEGEND[name], COLOURS[name], "line") for name in curves]
    if ours:
        entries.append(("tfvqvae codec (runs labelled)", OURS_COLOUR, "box"))
    x0, y0 = left + 12, top + 12
    draw.rectangle([x0 - 6, y0 - 6, x0 + 260, y0 + 20 * len(entries)], fill="white",
                   outline=(160, 160, 160))
    for i, (text, colour, kind) in enumerate(entries):
        y = y0 + 20 * i + 7
        if kind == "line":
            draw.line([x0, y, x0 + 24, y], fill=colour, width=2)
        else:
            draw.rectangle([x0 + 8, y - 4, x0 + 16, y + 4], fill=colour)
        draw.text((x0 + 32, y), text, fill="black", font=small, anchor="lm")
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    image.save(temp, format="PNG")
    os.replace(temp, path)


# ---------------------------------------------------------------------------


def _fmt(value, spec):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="mnist,fashion_mnist")
    parser.add_argument("--examples", type=int, default=1000,
                        help="the first N test images of each dataset")
    parser.add_argument("--quality-step", type=int, default=5,
                        help="JPEG / WebP qualities 0, step, ..., 100 (and 10)")
    parser.add_argument("--runs", default=",".join(RUN_NAMES),
                        help=f"runs per dataset (of {', '.join(RUN_NAMES)})")
    parser.add_argument("--train", action="store_true",
                        help="train the runs whose folders are not complete first")
    parser.add_argument("--baselines-only", action="store_true",
                        help="JPEG and WebP only (no tfvqvae.codec needed)")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--no-write", action="store_true",
                        help="print only (no RESULTS.md section, figures or JSON)")
    args = parser.parse_args(argv)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    run_names = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = sorted(set(run_names) - set(RUN_NAMES))
    if unknown:
        parser.error(f"unknown run(s) {unknown}; known: {list(RUN_NAMES)}")
    qualities = sorted(set(range(0, 101, args.quality_step)) | {10, 100})

    def log(message):
        print(message, flush=True)

    start = time.perf_counter()
    trained = []
    if args.train and not args.baselines_only:
        for dataset in datasets:
            for name in run_names:
                if not run_complete(run_folder(dataset, name)):
                    wall = train_run(dataset, name, args.data_dir)
                    trained.append(f"{dataset}/{name} {wall / 60:.1f} min")

    baseline_tables, ours_rows, speeds, notes, figures = [], [], [], [], []
    back_rows = []
    for dataset in datasets:
        images, labels, _ = load_test(dataset, args.examples, args.data_dir)
        log(f"{dataset}: {len(images)} test images {images.shape[1]}x{images.shape[2]}")
        curves = baseline_curves(images, qualities)
        rows = []
        for i, q in enumerate(qualities):
            row = [q]
            for name in BASELINES:
                p = curves[name][i]
                row += [f"{p['bytes']:.1f}", f"{p['psnr']:.2f}"]
            rows.append(row)
        header = ["quality"] + [f"{name} {what}" for name in BASELINES
                                for what in ("bytes", "PSNR dB")]
        table = markdown_table(header, rows)
        log(table)
        baseline_tables += [f"#### {dataset}", "", table, ""]
        for name, curve in curves.items():
            speeds.append(
                f"{dataset} {name}: encode {np.mean([p['encode_images_per_s'] for p in curve]):.0f}"
                f", decode {np.mean([p['decode_images_per_s'] for p in curve]):.0f} images/s "
                "(mean over qualities)")

        ours = []
        results = {"examples": len(images), "qualities": qualities, "baselines": curves,
                   "runs": {}}
        if not args.baselines_only:
            for name in run_names:
                folder = run_folder(dataset, name)
                if not run_complete(folder):
                    notes.append(f"{dataset}/{name}: {folder} is not complete (--train trains it)")
                    log(notes[-1])
                    continue
                log(f"{dataset}/{name}: coding {len(images)} images")
                points = evaluate_run(name, folder, images, labels, log)
                results["runs"][name] = {"folder": str(folder), "points": points}
                description = run_description(folder)
                for point in points:
                    ours.append((name, point))
                    ratios = [bytes_at_psnr(curves[b], point["psnr"]) / point["bytes"]
                              for b in BASELINES]
                    smallest = min(p["bytes"] for p in curves["WebP m4"]) / point["bytes"]
                    ours_rows.append([
                        dataset, name, description, f"{point['psnr']:.2f}",
                        f"{point['bytes']:.1f}", f"{point['rate_bytes']:.1f}",
                        f"{point['payload_over_rate']:.4f}",
                        f"{point['overhead_mean']:.2f} / {point['overhead_max']:.2f}",
                        f"{100 * point['within_target']:.1f} %",
                        f"{100 * point['agree']:.1f} % of {point['agree_checked']}",
                        f"{point['encode_images_per_s']:.0f}",
                        f"{point['decode_images_per_s']:.0f}",
                        *[_fmt(r, ".2f") for r in ratios], f"{smallest:.2f}"])
                    if point["back_to_size"]:
                        back_rows.append([dataset, name, *[
                            f"{point['back_to_size'][m][0]:.2f} / {point['back_to_size'][m][1]:.2f}"
                            for m in BACK_METHODS]])
                    log(" | ".join(str(v) for v in ours_rows[-1]))
        if not args.no_write:
            figure = FIGURES / f"codec_rate_distortion_{dataset}.png"
            plot(figure, f"{dataset}: first {len(images)} test images, 28x28 grey", curves, ours)
            figures.append(f"`{os.path.relpath(figure, BENCH.parent)}`")
            CODEC_RUNS.mkdir(parents=True, exist_ok=True)
            (CODEC_RUNS / f"results-{dataset}.json").write_text(json.dumps(results, indent=1))

    wall = (time.perf_counter() - start) / 60
    lines = [
        "## Learned image codec vs JPEG and WebP: bytes per image at equal PSNR",
        "",
        f"`{command_line()}` ({wall:.1f} min wall, other jobs sharing the 2 cores). "
        f"{machine_line()}, Pillow {Image.__version__}.",
        "",
        f"The first {args.examples} test images of each dataset at 28x28, uint8. PSNR = "
        "10 log10(1 / MSE) with the MSE pooled over all pixels of all images in [0, 1] "
        "(decoded images rounded to uint8). Bytes: whole files, headers included, mean "
        "per image. JPEG `optimize=True`, WebP lossy `method=6` and `method=4` (Pillow's "
        "default), grey 'L' images.",
        "",
    ]
    if trained:
        lines += ["Trained by this run: " + "; ".join(trained) + ".", ""]
    if not args.baselines_only:
        lines += [
            "### tfvqvae.codec",
            "",
            "Bytes / file: whole files, the 8-byte header included. rate_bits / 8: the "
            "ideal bytes Σ −log2 P(z) / 8 under the priors (label included). Payload / rate: "
            "Σ payload bytes / Σ rate_bits / 8 over the images. Payload overhead: payload "
            "bytes − rate_bits / 8 per file (mean / max; the coder's flush). Within target: "
            "files whose payload ≤ 1.01 × rate_bits / 8 + 4 bytes. Code maps equal: files "
            "whose decoded maps and label equal the encoder's (`code_maps_agree`). Ratios: "
            "the baseline's bytes at our PSNR (interpolated between its qualities) / our "
            "bytes; > 1: ours is smaller; '-': our PSNR is outside the baseline's range. "
            "WebP q0 / ours: WebP's smallest files (quality 0, method 4) / ours.",
            "",
            markdown_table(["dataset", "run", "codes", "PSNR dB", "bytes / file",
                            "rate_bits / 8", "payload / rate", "payload overhead mean / max",
                            "within target", "code maps equal",
                            "encode img/s", "decode img/s", "vs JPEG", "vs WebP m6",
                            "vs WebP m4", "WebP q0 / ours"], ours_rows) if ours_rows else "(no run complete)",
            "",
        ]
        if back_rows:
            lines += [
                "From the model's 32x32 back to 28x28: PSNR of the decoded images taken back "
                "by each method / PSNR of the original images enlarged to 32x32 (as the codec's "
                "encoder does) and taken back (the method's own ceiling).",
                "",
                markdown_table(["dataset", "run", *BACK_METHODS], back_rows),
                "",
            ]
        lines += [f"- {note}" for note in notes] + ([""] if notes else [])
    else:
        lines += ["(`--baselines-only`: the codec's rows need `tfvqvae.codec`.)", ""]
    lines += ["### Baselines", "", *baseline_tables,
              "Speeds (one image per call, Pillow): " + "; ".join(speeds) + ".", ""]
    if figures:
        lines += ["Figures: " + ", ".join(figures) + "."]
    markdown = "\n".join(lines)
    print(markdown, flush=True)
    if not args.no_write:
        write_section("codec", markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
