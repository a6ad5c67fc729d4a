"""TFLite export, converted from the SavedModel, and a runner for it (LiteRT).

One ``.tflite`` file per mode, each with the signatures ``encode``,
``decode`` and ``reconstruct`` (same names, inputs and outputs as the
SavedModel; the sampler is not converted). Built-in TFLite ops only (no
Select TF ops):

* ``float32``: no quantisation.
* ``dynamic_range``: int8 weights, float activations (no data needed).
* ``int8``: int8 weights and activations (``TFLITE_BUILTINS_INT8``),
  calibrated on a representative set of training images; the interface stays
  float32 images / int32 codes.

Agreement with Keras (``tfvqvae export --verify``): float32 gives the same
codes (100 %); the quantised modes pick a near code, not always the nearest.
In int8 the (N, K) distance tensor ‖e‖² − 2 z·e has one scale: on an MNIST
run (K=128) its step was ~2.0 while the nearest and second-nearest codes were
typically ~0.4 apart, and 45 % of indices matched Keras (PSNR 19.3 instead of
20.1 dB); dynamic range matched 97.8 %. Measure your own run with --verify.

The converter drops the graphs' assertions; a code outside [0, K) given to
``decode`` fails in the GATHER kernel ("gather index out of bounds", a
RuntimeError from LiteRT), never silently (`tfvqvae.export.signatures`).

Files are run with ``ai_edge_litert.interpreter.Interpreter`` (the
``tf.lite.Interpreter`` of TensorFlow 2.21 is deprecated): `TFLiteRunner`.
"""

import os
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfvqvae import atomic
from tfvqvae.export._optional import require

TFLITE_MODES = ("float32", "dynamic_range", "int8")
TFLITE_SIGNATURES = ("encode", "decode", "reconstruct")


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


def _representative_dataset(saved_model_dir, images, batch_size):
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
            yield "reconstruct", {"images": batch}

    return generate


def convert_tflite(saved_model_dir, mode="float32", representative_images=None, batch_size=16):
    """Converts the SavedModel's encode/decode/reconstruct signatures to TFLite bytes.

    Args:
        saved_model_dir: the SavedModel (`tfvqvae.export.export_saved_model`).
        mode: "float32", "dynamic_range" or "int8". Defaults to "float32".
        representative_images: float32 images (N, H, W, C) in [0, 1] for
            int8 calibration (draw them from the training data); required
            for "int8", ignored otherwise.
        batch_size: images per calibration step. Defaults to 16.

    Returns:
        The flatbuffer as bytes.
    """
    (mode,) = check_modes([mode])
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model_dir), signature_keys=list(TFLITE_SIGNATURES)
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "int8":
        if representative_images is None or len(representative_images) == 0:
            raise ValueError("int8 TFLite export needs representative images for calibration.")
        converter.representative_dataset = _representative_dataset(
            saved_model_dir, representative_images, batch_size
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with warnings.catch_warnings():
        # int8 calibration runs tf.lite.Interpreter, which warns that it is deprecated.
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        return converter.convert()


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
        levels: the model's levels (``model.levels``), top first.
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
            key: self._interpreter.get_signature_runner(key) for key in TFLITE_SIGNATURES
        }

    def encode(self, images):
        out = self._runners["encode"](images=np.asarray(images, np.float32))
        return {level: out[f"{level}_codes"] for level in self.levels}

    def decode(self, codes):
        inputs = {f"{level}_codes": np.asarray(codes[level], np.int32) for level in self.levels}
        return self._runners["decode"](**inputs)["images"]

    def reconstruct(self, images):
        return self._runners["reconstruct"](images=np.asarray(images, np.float32))[
            "reconstructions"
        ]
