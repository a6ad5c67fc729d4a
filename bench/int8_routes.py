"""How many of Keras' codes each quantised TFLite route keeps, and what limits them.

    python bench/int8_routes.py RUN [RUN ...] [--data-dir ../shared/data] [--images 1000]

For each run folder (``tfvqvae train`` / ``pipeline``), on its first
``--images`` test images, the % of code indices (all levels) equal to the
Keras model's ``encode``:

1. Routes: every quantised mode (dynamic range, weight only, int8, int16x8) converted from
   a SavedModel with each search of `tfvqvae.export.quantized_search`
   ("exact": the float export's; "scores"; "window"); the shipped pairing is
   ``tflite.SEARCH_FOR_MODE``. Calibration: 200 training images, seed 0, as
   ``tfvqvae export``.
2. Ceilings: the quantised encoder's output z, dequantised, with the exact
   nearest-code search done afterwards in float64 NumPy: what a perfect
   search on top of each mode's encoder would keep.
3. The Keras model with its kernels rounded per output channel to b bits
   (`tfvqvae.models.kernel_grid`, as TFLite's int8 weights; float activations).
4. The same model after `snap_kernels` (what ``tfvqvae train --int8-kernels``
   saves), against its own Keras codes: each mode with the search it ships
   with, the int16x8 ceiling (2.), and the test PSNR before and after snapping.

Writes the tables to bench/RESULTS.md, section ``int8``. The runs measured
there: ``tfvqvae train --preset quickstart`` and ``--preset mnist`` (the
latter with ``--data-dir ../shared/data``) and the CIFAR-10 VQ-VAE-2 of
``bench/evaluation.py``.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import command_line  # noqa: E402
from _results import machine_line  # noqa: E402
from _results import write_section  # noqa: E402

from tfvqvae.export import load_run  # noqa: E402
from tfvqvae.export import tflite as tflite_export  # noqa: E402
from tfvqvae.export.quantized_search import quantization_search  # noqa: E402
from tfvqvae.export.saved_model import export_saved_model  # noqa: E402
from tfvqvae.metrics import psnr  # noqa: E402
from tfvqvae.models.kernel_grid import kernel_layers  # noqa: E402
from tfvqvae.models.kernel_grid import snap_kernel  # noqa: E402
from tfvqvae.models.kernel_grid import snap_kernels  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MODES = ("dynamic_range", "weight_only", "int8", "int16x8")
SEARCHES = ("exact", "scores", "window", "split_window")


def agreement(codes, reference):
    equal = np.concatenate([(codes[k] == reference[k]).ravel() for k in reference])
    return 100.0 * float(equal.mean())


def encode_all(runner, images, levels, batch=50):
    parts = [runner.encode(images[i:i + batch]) for i in range(0, len(images), batch)]
    return {level: np.concatenate([p[level] for p in parts]) for level in levels}


def route_rows(run, calibration, images, reference, folder, pairs=None):
    """{(search, mode): "% kept"} for every search and mode, or only ``pairs``."""
    rows = {}
    for search in SEARCHES:
        modes = [m for m in MODES if pairs is None or (search, m) in pairs]
        if not modes:
            continue
        source = folder / f"source-{search}"
        if search == "exact":
            export_saved_model(run.model, source, run.image_shape, tflite_only=True)
        else:
            with quantization_search(run.model, search, calibration):
                export_saved_model(run.model, source, run.image_shape, tflite_only=True)
        for mode in modes:
            try:
                content = tflite_export.convert_tflite(source, mode, calibration)
            except Exception as error:  # noqa: BLE001 - the converter's refusal is the result
                rows[(search, mode)] = f"refused ({str(error).splitlines()[-1][:70]})"
                continue
            path = folder / f"{search}-{mode}.tflite"
            path.write_bytes(content)
            runner = tflite_export.TFLiteRunner(path, run.model.levels)
            codes = encode_all(runner, images, run.model.levels)
            rows[(search, mode)] = f"{agreement(codes, reference):.2f} %"
    return rows


def ceiling_rows(run, calibration, images, reference, folder,
                 modes=("dynamic_range", "int8", "int16x8")):
    """Exact float64 search on each mode's dequantised encoder output."""
    model = run.model
    quantizers = model._level_quantizers()
    captured = []

    def recorder(level, original):
        def indices(inputs):
            captured.append((level, inputs))
            return original(inputs)
        return indices

    def encode_z(images_in):
        captured.clear()
        model.encode_levels(images_in)
        return {f"{level}_z": z for level, z in captured}

    for level, quantizer in quantizers.items():
        object.__setattr__(quantizer, "indices", recorder(level, quantizer.indices))
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("encode", encode_z, input_signature=[
            tf.TensorSpec([None, *run.image_shape], tf.float32, name="images")])
        archive.write_out(str(folder / "z-source"), verbose=False)
    finally:
        for quantizer in quantizers.values():
            quantizer.__dict__.pop("indices", None)
    rows = {}
    for mode in modes:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(folder / "z-source"),
                                                             signature_keys=["encode"])
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode in ("int8", "int16x8"):
            converter.representative_dataset = lambda: (
                ("encode", {"images": calibration[i:i + 16]})
                for i in range(0, len(calibration), 16))
        if mode == "int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        elif mode == "int16x8":
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        try:
            content = converter.convert()
        except Exception as error:  # noqa: BLE001 - the converter's refusal is the result
            rows[mode] = f"refused ({str(error).splitlines()[-1][:70]})"
            continue
        encode = Interpreter(model_content=content).get_signature_runner("encode")
        codes = {level: [] for level in quantizers}
        for i in range(0, len(images), 50):
            out = encode(images=images[i:i + 50])
            for level, quantizer in quantizers.items():
                z = out[f"{level}_z"].astype(np.float64)
                e = np.asarray(quantizer.codebook, np.float64)
                flat = z.reshape(-1, e.shape[1])
                d = (flat**2).sum(1)[:, None] - 2.0 * flat @ e.T + (e**2).sum(1)
                codes[level].append(d.argmin(axis=1).reshape(z.shape[:-1]))
        codes = {level: np.concatenate(parts) for level, parts in codes.items()}
        rows[mode] = f"{agreement(codes, reference):.2f} %"
    return rows


def rounded_weight_rows(run, images, reference, bits=(8, 10, 12)):
    model = run.model
    layers = kernel_layers(model)
    kernels = [layer.kernel for layer, _ in layers]
    originals = [k.numpy() for k in kernels]
    rows = {}
    try:
        for b in bits:
            for (layer, axis), value in zip(layers, originals):
                layer.kernel.assign(snap_kernel(value, axis, b))
            codes = {k: v.numpy() for k, v in model.encode_levels(tf.constant(images)).items()}
            rows[b] = f"{agreement(codes, reference):.2f} %"
    finally:
        for kernel, value in zip(kernels, originals):
            kernel.assign(value)
    return rows


def test_psnr(model, images, batch=100):
    squared = [np.mean((model.predict(images[i:i + batch], verbose=0) - images[i:i + batch]) ** 2)
               * len(images[i:i + batch]) for i in range(0, len(images), batch)]
    return psnr(float(np.sum(squared) / len(images)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()

    tables = []
    for run_dir in args.runs:
        run = load_run(run_dir, data_dir=args.data_dir)
        calibration = run.images("train", 200, seed=0)
        images = run.images("test", args.images)
        reference = {k: v.numpy() for k, v in run.model.encode_levels(tf.constant(images)).items()}
        shapes = run.model.code_shapes(run.image_shape[:2])
        title = (f"**{Path(run_dir).name}** ({len(images)} test images; "
                 f"{type(run.model).__name__}, codes "
                 + ", ".join(f"{level} {shapes[level]} K={k}"
                             for level, k in run.model.level_num_embeddings.items()) + ")")
        with tempfile.TemporaryDirectory() as temp:
            routes = route_rows(run, calibration, images, reference, Path(temp))
            ceilings = ceiling_rows(run, calibration, images, reference, Path(temp))
        rounded = rounded_weight_rows(run, images, reference)
        psnr_before = test_psnr(run.model, images)
        snap_kernels(run.model)
        psnr_after = test_psnr(run.model, images)
        snapped_reference = {k: v.numpy() for k, v in
                             run.model.encode_levels(tf.constant(images)).items()}
        moved = 100.0 - agreement(snapped_reference, reference)
        shipped = {("exact" if search is None else search, mode)
                   for mode, search in tflite_export.SEARCH_FOR_MODE.items() if mode in MODES}
        with tempfile.TemporaryDirectory() as temp:
            snapped = route_rows(run, calibration, images, snapped_reference, Path(temp),
                                 pairs=shipped)
        with tempfile.TemporaryDirectory() as temp:
            snapped_ceiling = ceiling_rows(run, calibration, images, snapped_reference,
                                           Path(temp), modes=("int16x8",))["int16x8"]
        lines = [title, "", "| search | " + " | ".join(MODES) + " |",
                 "| --- |" + " ---: |" * len(MODES)]
        for search in SEARCHES:
            cells = []
            for mode in MODES:
                cell = routes[(search, mode)]
                shipped = tflite_export.SEARCH_FOR_MODE[mode] == (None if search == "exact"
                                                                  else search)
                if shipped and mode == "int16x8" and len(run.model.levels) > 1:
                    cell += " (export refuses: multi-level)"
                    shipped = False
                cells.append(f"**{cell}**" if shipped else cell)
            lines.append(f"| {search} | " + " | ".join(cells) + " |")
        lines.append(f"| exact search in float64 on the mode's encoder output (ceiling) | "
                     f"{ceilings['dynamic_range']} | | {ceilings['int8']} | "
                     f"{ceilings['int16x8']} |")
        lines += ["", "Keras with kernels rounded per output channel (float activations): "
                  + ", ".join(f"{b} bits {value}" for b, value in rounded.items()), "",
                  f"Kernels snapped to the int8 grid (`snap_kernels`, `tfvqvae train "
                  f"--int8-kernels`): {moved:.2f} % of the codes move, PSNR on these images "
                  f"{psnr_before:.2f} -> {psnr_after:.2f} dB; each mode (its shipped search) "
                  "against the snapped model's own codes: "
                  + ", ".join(f"{mode} {cell}" for (_, mode), cell in
                              sorted(snapped.items(), key=lambda kv: MODES.index(kv[0][1])))
                  + f"; the exact search in float64 on the int16x8 encoder's output "
                  f"{snapped_ceiling}", ""]
        table = "\n".join(lines)
        print(table, flush=True)
        tables.append(table)

    markdown = "\n".join([
        "## int8: quantised TFLite routes (bench/int8_routes.py)", "",
        f"`{command_line()}`", "", machine_line(), "",
        f"% of code indices equal to Keras on the first {args.images} test images (or all of a "
        "smaller test split); bold: "
        "the search each mode ships with (`tfvqvae.export.tflite.SEARCH_FOR_MODE`). "
        "int16x8 with a multi-level model shows TF 2.21's 16x8 calibration mixing up the "
        "weights its encode and decode share; `tfvqvae export` refuses it "
        "(`tflite.check_mode_for_levels`).", "",
        *tables])
    write_section("int8", markdown)


if __name__ == "__main__":
    main()
