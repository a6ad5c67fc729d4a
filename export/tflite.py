"""TFLite export, converted from the SavedModel, and a runner for it (LiteRT).

One ``.tflite`` file per mode, each with the signatures ``encode``,
``decode`` and ``reconstruct`` (int16x8: no ``reconstruct``, see
``MODE_SIGNATURES``) (same names, inputs and outputs as the
SavedModel; the sampler is not converted). Built-in TFLite ops only (no
Select TF ops):

* ``float32``: no quantisation.
* ``dynamic_range``: int8 weights, float activations (no data needed); the
  kernels quantise the activations on the fly, so compute is int8.
* ``weight_only``: int8 weights (per output channel, symmetric) that a
  DEQUANTIZE op turns back into float32 before float compute
  (ai-edge-quantizer's ``weight_only_wi8_afp32`` recipe on the float32
  file; no data needed). Same size as ``dynamic_range``; it differs from
  Keras only by the rounding of the kernels, so a model whose kernels lie on
  the int8 grid (`tfvqvae.models.kernel_grid.snap_kernels`) keeps its codes.
* ``int8``: int8 weights and activations (``TFLITE_BUILTINS_INT8``),
  calibrated on a representative set of training images; the interface stays
  float32 images / int32 codes.
* ``int16x8``: int8 weights, int16 activations (TFLite's 16x8 mode,
  calibrated like int8); the arg-max of the search, which has no 16-bit
  kernel, runs in float32 (built-in ops still). Its search splits the
  codebook so that int8 weights hold it to 1 / 16 000 of its range
  (``"split_window"``): on the MNIST preset run with snapped kernels it keeps
  99.88 % of the codes, where the int16 encoder alone (exact search on its
  output) keeps 99.96 %. One-level models only (`check_mode_for_levels`).

The quantised modes are converted from a SavedModel whose search is built
to survive quantisation (`tfvqvae.export.quantized_search`: ``SEARCH_FOR_MODE``).

Agreement with Keras (``tfvqvae export --verify``, which holds quantised
files to 99 % unless told otherwise): float32 gives the same codes (100 %);
the quantised modes pick a near code, not always the nearest. On the MNIST
preset run, rounding the kernels alone (``weight_only``) moved 1.5 % of the
codes; after `snap_kernels`, 0.01 % (bench/RESULTS.md section ``int8``).
With the exact search, int8 gives the (N, K) distance tensor one scale: on
the MNIST preset run (K=128) its step was 208 / 255 while the nearest and
second-nearest codes were typically 0.44 apart, and 50 % of indices matched
Keras; the "window" search raises that (bench/RESULTS.md section ``int8``),
but the int8 encoder itself moves codes: see `tfvqvae.export.quantized_search`.
Measure your own run with --verify.

The converter drops the graphs' assertions; a code outside [0, K) given to
``decode`` fails in the GATHER kernel ("gather index out of bounds", a
RuntimeError from LiteRT), never silently (`tfvqvae.export.signatures`).

Files are run with ``ai_edge_litert.interpreter.Interpreter`` (the
``tf.lite.Interpreter`` of TensorFlow 2.21 is deprecated): `TFLiteRunner`.
"""

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfvqvae import atomic
from tfvqvae.export._optional import require

TFLITE_MODES = ("float32", "dynamic_range", "weight_only", "int8", "int16x8")
# What an export writes unless asked (int16x8 on request: ``--tflite-modes``).
DEFAULT_TFLITE_MODES = ("float32", "dynamic_range", "weight_only", "int8")
# The search of the SavedModel each mode converts from (None: the exact search).
SEARCH_FOR_MODE = {"float32": None, "dynamic_range": None, "weight_only": None,
                   "int8": "window", "int16x8": "split_window"}
# Modes calibrated on representative images.
CALIBRATED_MODES = ("int8", "int16x8")
TFLITE_SIGNATURES = ("encode", "decode", "reconstruct")
# The signatures each mode's file holds. TF 2.21's 16x8 calibration of a file
# whose ``encode`` and ``reconstruct`` share the encoder's weights broke both
# (1.3 % of the MNIST preset's codes; 98.2 % without ``reconstruct``), so its
# file has no ``reconstruct``: `TFLiteRunner` runs decode(encode(images)).
MODE_SIGNATURES = {mode: TFLITE_SIGNATURES for mode in TFLITE_MODES}
MODE_SIGNATURES["int16x8"] = ("encode", "decode")


def check_mode_for_levels(mode, levels):
    """Refuses int16x8 for a model of more than one level.

    TF 2.21's 16x8 calibration mixes up weights that two signatures of one
    file share. A VQ-VAE-2's ``encode`` runs the top decoder that ``decode``
    runs too: its int16x8 file kept 86 % (quick start) and 67 % (CIFAR-10) of
    the codes, at 23.0 instead of 28.8 dB on the quick start, where the
    one-level MNIST preset run's kept 98.5 %, and 99.88 % with snapped kernels
    (bench/RESULTS.md section ``int8``).

    Raises:
        ValueError: ``mode`` is "int16x8" and ``levels`` names more than one level.
    """
    if mode == "int16x8" and len(levels) > 1:
        raise ValueError(
            "TFLite int16x8 export takes a one-level model (TF 2.21's 16x8 calibration "
            "mixes up the weights a multi-level model's encode and decode share); use "
            f"int8 or dynamic_range. Received: a model with levels {list(levels)}")


def check_modes(modes):
    """Tuple of TFLite modes from a sequence or a comma-separated string."""
    if isinstance(modes, str):
        modes = [m.strip() for m in modes.split(",") if m.strip()]
    modes = tuple(dict.fromkeys(modes))
    unknown = [m for m in modes if m not in TFLITE_MODES]
    if unknown or not modes:
        raise ValueError(
            f"Unknown TFLite mode(s) {unknown}: choose from {', '.join(TFLITE_MODES)}. "
            f"Received: {modes!r}"
        )
    return modes


def _representative_dataset(saved_model_dir, images, batch_size, keys=TFLITE_SIGNATURES):
    """(signature_key, {input_name: array}) pairs for multi-signature calibration.

    ``decode`` is calibrated on the codes the SavedModel's ``encode`` gives
    for the same images.
    """
    encode = tf.saved_model.load(str(saved_model_dir)).signatures["encode"]
    images = np.asarray(images, np.float32)

    def generate():
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            outputs = encode(images=tf.constant(batch))
            codes = {name: value.numpy() for name, value in outputs.items()}
            yield "encode", {"images": batch}
            yield "decode", codes
            if "reconstruct" in keys:
                yield "reconstruct", {"images": batch}

    return generate


def convert_tflite(saved_model_dir, mode="float32", representative_images=None, batch_size=16):
    """Converts the SavedModel's encode/decode/reconstruct signatures to TFLite bytes.

    Args:
        saved_model_dir: the SavedModel (`tfvqvae.export.export_saved_model`).
        mode: "float32", "dynamic_range", "weight_only", "int8" or "int16x8".
            Defaults to "float32".
        representative_images: float32 images (N, H, W, C) in [0, 1] for
            calibration (draw them from the training data); required for
            "int8" and "int16x8", ignored otherwise.
        batch_size: images per calibration step. Defaults to 16.

    Returns:
        The flatbuffer as bytes.
    """
    (mode,) = check_modes([mode])
    if mode == "weight_only":
        return weight_only(convert_tflite(saved_model_dir, "float32"))
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model_dir), signature_keys=list(MODE_SIGNATURES[mode])
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode in CALIBRATED_MODES:
        if representative_images is None or len(representative_images) == 0:
            raise ValueError(
                f"{mode} TFLite export needs representative images for calibration.")
        converter.representative_dataset = _representative_dataset(
            saved_model_dir, representative_images, batch_size, MODE_SIGNATURES[mode]
        )
    if mode == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    elif mode == "int16x8":
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,  # float kernels where 16x8 has none (ARG_MAX)
        ]
    with warnings.catch_warnings():
        # int8 calibration runs tf.lite.Interpreter, which warns that it is deprecated.
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        return converter.convert()


def weight_only(float_model):
    """The float32 flatbuffer with its weights stored as int8 (ai-edge-quantizer).

    Each constant weight of a supported op (CONV_2D, FULLY_CONNECTED, ...) is
    rounded per output channel c to W_q = s_c * round(W / s_c), s_c =
    max|W[..., c]| / 127, stored as int8 and dequantized to float32 before the
    op runs (the ``weight_only_wi8_afp32`` recipe). Returns bytes.

    Raises:
        ImportError: ai-edge-quantizer is not installed.
    """
    quantizer = require("ai_edge_quantizer.quantizer", "TFLite weight_only export")
    recipe = require("ai_edge_quantizer.recipe", "TFLite weight_only export")
    # It prints a size report and draws progress bars on stderr.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        result = quantizer.Quantizer(bytearray(float_model),
                                     recipe.weight_only_wi8_afp32()).quantize()
    return bytes(result.quantized_model)


def export_tflite(saved_model_dir, path, mode="float32", representative_images=None):
    """Converts (`convert_tflite`) and writes ``path`` atomically; returns it as a Path."""
    content = convert_tflite(saved_model_dir, mode, representative_images)
    path = Path(path)
    atomic.write_bytes(path, content)
    return path


def tflite_operators(path):
    """Names of the operators in a .tflite file (built-ins by name, others "CUSTOM:<name>")."""
    schema = require("ai_edge_litert.schema_py_generated", "Reading a TFLite file")
    names = {value: key for key, value in vars(schema.BuiltinOperator).items()
             if not key.startswith("_")}
    model = schema.Model.GetRootAs(Path(path).read_bytes(), 0)
    operators = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            operators.add(f"CUSTOM:{code.CustomCode().decode()}")
        else:
            operators.add(names.get(builtin, str(builtin)))
    return operators


class TFLiteRunner:
    """Runs an exported .tflite file with LiteRT; NumPy in, NumPy out.

    Args:
        path: the .tflite file.
        levels: the model's levels (``model.levels``), top first; a ValueError
            when the file's ``encode`` outputs are not their codes.
        num_threads: CPU threads. Defaults to ``os.cpu_count()``.

    Methods take and return the signatures' tensors: ``encode(images)`` ->
    {level: int32 codes}, ``decode({level: codes})`` -> float32 images,
    ``reconstruct(images)`` -> float32 images.
    """

    def __init__(self, path, levels, num_threads=None):
        litert = require("ai_edge_litert.interpreter", "Running a TFLite export")
        self.path = Path(path)
        self.levels = tuple(levels)
        self._interpreter = litert.Interpreter(
            model_path=str(self.path), num_threads=num_threads or os.cpu_count()
        )
        self._runners = {
            key: self._interpreter.get_signature_runner(key)
            for key in self._interpreter.get_signature_list()
        }
        outputs = set(self._interpreter.get_signature_list().get("encode", {}).get("outputs", ()))
        expected = {f"{level}_codes" for level in self.levels}
        if outputs != expected:
            raise ValueError(
                f"{self.path} encodes to {sorted(outputs)}, not the codes of the levels given "
                f"({sorted(expected)}). Received: levels={list(self.levels)}")

    def encode(self, images):
        out = self._runners["encode"](images=np.asarray(images, np.float32))
        return {level: out[f"{level}_codes"] for level in self.levels}

    def decode(self, codes):
        inputs = {f"{level}_codes": np.asarray(codes[level], np.int32) for level in self.levels}
        return self._runners["decode"](**inputs)["images"]

    def reconstruct(self, images):
        if "reconstruct" not in self._runners:  # int16x8 (MODE_SIGNATURES)
            return self.decode(self.encode(images))
        return self._runners["reconstruct"](images=np.asarray(images, np.float32))[
            "reconstructions"
        ]
